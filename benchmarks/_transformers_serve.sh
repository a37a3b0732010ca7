# Sourced by the benchmarks that start `transformers serve` on a local model (bash): the
# server command, its ready request, and a profile recorded by `headstart run` itself.
BIN=$(cd "$(dirname "$(command -v headstart)")" && pwd)
PY=$BIN/python
PORT=8812
URL=http://127.0.0.1:$PORT/v1/chat/completions
export HF_HUB_OFFLINE=1

body() { printf '{"model": "%s", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "temperature": 0, "stream": false}' "$1"; }
serve() { echo "$BIN/transformers serve --host 127.0.0.1 --port $PORT $1"; }
record_by_run() {  # MODEL OUT: one cold `headstart run` start at 300 MB/s, which records the
  # profile of MODEL into HEADSTART_CACHE (the default one when unset); prints its cold rows
  # shellcheck disable=SC2046
  headstart bench --ready-request "$URL" "$(body "$1")" --model "$1" --runs 1 --modes cold \
    --disk-bps 300MB --no-headstart-variant --out "$2" \
    --variant "recording=$PY -m headstart run -- $(serve "$1")" -- $(serve "$1") \
    | grep -E '^\| cold' || true
  sleep 4  # the recording is written once the server is idle or gone
}
