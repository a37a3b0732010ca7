#!/usr/bin/env bash
# The zygote on `transformers serve` (5.25 loads the model in a spawned process): one
# `headstart bench` at 300 MB/s, cold and warm, 3 runs per cell, interleaved: baseline,
# `headstart run` (zygote on) and `headstart run --no-zygote`, on one profile recorded
# first by one cold `headstart run` start in a fresh HEADSTART_CACHE. As root (disk
# throttle); about 12 minutes on 2 cores.
#
#   bash benchmarks/zygote_ab.sh [OUT]        # MODEL=/tmp/demo2g (bfloat16) by default
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-out/zygote-ab}
# shellcheck source=benchmarks/_transformers_serve.sh
. benchmarks/_transformers_serve.sh
M=${MODEL:-/tmp/demo2g}
[ -d "$M" ] || headstart demo-model "$M" --size 2G --dtype bfloat16
export HEADSTART_CACHE=$OUT/cache
rm -rf "$HEADSTART_CACHE"; mkdir -p "$HEADSTART_CACHE"
echo "== the profile: recorded by one cold headstart run start, 300 MB/s"
record_by_run "$M" "$OUT/record"
# shellcheck disable=SC2046
headstart bench --ready-request "$URL" "$(body "$M")" --model "$M" --runs "${RUNS:-3}" \
  --modes cold,warm --disk-bps 300MB --out "$OUT/ab-300MB" \
  --variant "headstart-nozygote=$PY -m headstart run --no-zygote -- $(serve "$M")" \
  -- $(serve "$M") | grep -E '^\| (cold|warm|mode)'
