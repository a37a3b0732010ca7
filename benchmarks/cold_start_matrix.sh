#!/usr/bin/env bash
# The cold-start matrix behind README's "Startup profiles" tables: `transformers serve` on a
# 2 GB model, baseline against `headstart run`, every cell a `headstart bench` (3 runs per
# cell, interleaved, cold = model and Python environment evicted). As root (disk throttle).
#
#   bash benchmarks/cold_start_matrix.sh [OUT]          # about 50 minutes on 2 cores (47 on the VM of README)
#   CELLS="R1-300MB reversed-300MB" bash benchmarks/cold_start_matrix.sh [OUT]   # a few
#
# 1. a first start with no profile (a fresh HEADSTART_CACHE every run; with and without the
#    recording it makes), 2. recording R1 made by `headstart run` itself, benched at 150 MB/s,
#    300 MB/s, 1 GB/s and unthrottled, and warm with 8 runs per variant, 3. recordings R2 and
#    R3 by `headstart record`, at the same four speeds (cold,warm at 300 MB/s, cold at the
#    others), 4. two more checkpoint layouts (transformers' save_pretrained; every shard's tensors in
#    reverse order), each recorded by `headstart run`, 300 MB/s.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-out/matrix}
# shellcheck source=benchmarks/_transformers_serve.sh
. benchmarks/_transformers_serve.sh
mkdir -p "$OUT"

bench() {  # NAME MODEL BPS MODES [bench options...]
  local name=$1 model=$2 bps=$3 modes=$4; shift 4
  local throttle=(); [ "$bps" = none ] || throttle=(--disk-bps "$bps")
  echo "== $name ($bps, $modes)"
  # shellcheck disable=SC2046
  headstart bench --ready-request "$URL" "$(body "$model")" --model "$model" --runs 3 \
    --modes "$modes" "${throttle[@]}" --out "$OUT/$name" "$@" -- $(serve "$model") \
    | grep -E '^\|' || true
}
keys_of() {  # MODEL: the keys of its profiles (transformers-NAME-HASH)
  headstart profiles list 2>/dev/null | awk '{print $1}' \
    | grep -E "^transformers-$(basename "$1")-[0-9a-f]{16}$" || true
}
fresh_profile() {  # MODEL: forget its profile
  keys_of "$1" | while read -r key; do headstart profiles rm "$key" >/dev/null; done
}
auto_record() {  # MODEL: one cold `headstart run` start at 300 MB/s, which records the profile
  fresh_profile "$1"
  record_by_run "$1" "$OUT/record-$(basename "$1")"
  [ -n "$(keys_of "$1")" ] && echo "recorded: $(keys_of "$1")" || echo "no profile recorded for $1"
}

# CELLS="R1-300MB warm-8 reversed-300MB": only those cells (and the recordings they need)
CELLS=${CELLS:-all}
want() { local c; for c in "$@"; do
  [ "$CELLS" = all ] || [[ " $CELLS " == *" $c "* ]] && return 0; done; return 1; }
cell() { want "$1" && bench "$@"; return 0; }  # NAME MODEL BPS MODES [options...]

M=${MODEL:-/tmp/demo2g-f32}
[ -d "$M" ] || headstart demo-model "$M" --size 2G --dtype float32
if want R1-300MB R1-150MB R1-1GB R1-none warm-8; then
  auto_record "$M"                                   # R1
  cell R1-300MB "$M" 300MB cold,warm
fi
# shellcheck disable=SC2016
cell first-start "$M" 300MB cold \
  --no-headstart-variant \
  --variant "first=sh -c 'HEADSTART_CACHE=\$(mktemp -d) exec $PY -m headstart run -- $(serve "$M")'" \
  --variant "first-norecord=sh -c 'HEADSTART_AUTO_RECORD=0 HEADSTART_CACHE=\$(mktemp -d) exec $PY -m headstart run -- $(serve "$M")'"

for bps in 150MB 1GB none; do cell "R1-$bps" "$M" "$bps" cold,warm; done
cell warm-8 "$M" none warm --runs 8                  # warm: median of 8 runs each
for r in R2 R3; do
  want "$r-300MB" "$r-150MB" "$r-1GB" "$r-none" || continue
  fresh_profile "$M"
  headstart record --ready-request "$URL" "$(body "$M")" -- $(serve "$M") | grep -E 'ready after|bytes'
  cell "$r-300MB" "$M" 300MB cold,warm
  # warm does not depend on the throttle (nothing is read): the 300 MB/s cell's warm is the
  # limit of these cold-only cells too
  for bps in 150MB 1GB none; do cell "$r-$bps" "$M" "$bps" cold; done
done

for layout in save_pretrained reversed; do
  want "$layout-300MB" || continue
  L=/tmp/demo2g-$layout
  [ -d "$L" ] || python benchmarks/relayout_model.py "$M" "$L" --layout "$layout"
  auto_record "$L"
  cell "$layout-300MB" "$L" 300MB cold,warm
done

"$PY" benchmarks/matrix_table.py "$OUT"              # README's tables from this run
