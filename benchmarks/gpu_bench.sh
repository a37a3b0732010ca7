#!/usr/bin/env bash
# GPU cold-start comparison in one call (device machine: no network, torch+transformers in
# its python3). A generated model of SIZE (default 6G); the target loads it onto the GPU and
# generates 8 tokens (benchmarks/gpu_load_generate.py). Records a startup profile, then
# benches baseline vs `headstart run` (profile replay) vs `headstart run --no-profile`,
# cold and warm. Reports land in $OUT (default /tmp/gpu-bench-out).
#   SIZE=6G RUNS=2 OUT=/tmp/o bash benchmarks/gpu_bench.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src HF_HUB_OFFLINE=1 HEADSTART_CACHE=/tmp/hs-cache
PY=${PY:-python3}
M=/tmp/gpu-model
OUT=${OUT:-/tmp/gpu-bench-out}
mkdir -p "$OUT"
$PY -c "import torch, transformers; print('torch', torch.__version__, '| transformers', \
transformers.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
nproc; free -g | head -2; df -h /tmp | tail -1
[ -d "$M" ] || $PY -m headstart demo-model "$M" --size "${SIZE:-6G}" 2>&1 | tail -3
T="$PY benchmarks/gpu_load_generate.py $M"
$PY -m headstart record --until-exit --model "$M" -- $T 2>&1 | tail -4
$PY -m headstart bench --until-exit --runs "${RUNS:-2}" --model "$M" --no-plot --out /tmp/gpu-bench \
  --run-args "--model $M --preload torch,transformers" \
  --variant "headstart-no-profile=$PY -m headstart run --no-profile --model $M --preload torch,transformers -- $T" \
  -- $T
cp /tmp/gpu-bench/report.md /tmp/gpu-bench/results.json "$OUT"/ 2>/dev/null
cat "$OUT/report.md" 2>/dev/null | head -30
