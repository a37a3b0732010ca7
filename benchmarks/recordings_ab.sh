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
# shellcheck source=benchmarks/_transformers_serve.sh
. benchmarks/_transformers_serve.sh
M=${MODEL:-/tmp/demo2g-f32}
[ -d "$M" ] || headstart demo-model "$M" --size 2G --dtype float32
A=$OUT/cache-A; B=$OUT/cache-B
rm -rf "$A" "$B"; mkdir -p "$A" "$B"
echo "== A: recorded by headstart run (one cold start, 300 MB/s)"
HEADSTART_CACHE=$A record_by_run "$M" "$OUT/record-A"
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
