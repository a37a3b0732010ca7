#!/usr/bin/env bash
# Two recordings of the same start, benched side by side: profile A recorded by `headstart
# run` itself (one cold start at 300 MB/s), profile B by `headstart record`, each in its own
# HEADSTART_CACHE; then one `headstart bench` at 300 MB/s, 3 cold runs per variant,
# interleaved: baseline, A, B. Shows how much a 3-run cell measures its recording.
# As root (disk throttle); about 8 minutes on 2 cores.
#
#   bash benchmarks/recordings_ab.sh [OUT]        # MODEL=/tmp/demo2g-f32 by default
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-out/recordings-ab}
BIN=$(cd "$(dirname "$(command -v headstart)")" && pwd)
PY=$BIN/python
PORT=8812
URL=http://127.0.0.1:$PORT/v1/chat/completions
M=${MODEL:-/tmp/demo2g-f32}
export HF_HUB_OFFLINE=1
[ -d "$M" ] || headstart demo-model "$M" --size 2G --dtype float32
body() { printf '{"model": "%s", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "temperature": 0, "stream": false}' "$1"; }
serve() { echo "$BIN/transformers serve --host 127.0.0.1 --port $PORT $1"; }
A=$OUT/cache-A; B=$OUT/cache-B
rm -rf "$A" "$B"; mkdir -p "$A" "$B"
echo "== A: recorded by headstart run (one cold start, 300 MB/s)"
# shellcheck disable=SC2046
HEADSTART_CACHE=$A headstart bench --ready-request "$URL" "$(body "$M")" --model "$M" \
  --runs 1 --modes cold --disk-bps 300MB --no-headstart-variant --out "$OUT/record-A" \
  --variant "recording=env HEADSTART_CACHE=$A $PY -m headstart run -- $(serve "$M")" \
  -- $(serve "$M") | grep -E '^\| cold' || true
sleep 4  # the recording is written once the server is idle or gone
HEADSTART_CACHE=$A headstart profiles list
echo "== B: recorded by headstart record"
# shellcheck disable=SC2046
HEADSTART_CACHE=$B headstart record --ready-request "$URL" "$(body "$M")" -- $(serve "$M") \
  | grep -E 'ready after|bytes'
echo "== side by side, 300 MB/s"
# shellcheck disable=SC2046
headstart bench --ready-request "$URL" "$(body "$M")" --model "$M" --runs 3 --modes cold \
  --disk-bps 300MB --no-headstart-variant --out "$OUT/ab-300MB" \
  --variant "auto=env HEADSTART_CACHE=$A $PY -m headstart run -- $(serve "$M")" \
  --variant "record=env HEADSTART_CACHE=$B $PY -m headstart run -- $(serve "$M")" \
  -- $(serve "$M") | grep -E '^\|'
