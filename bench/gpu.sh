#!/usr/bin/env bash
# The GPU checks in one command, for when a GPU is lent (CI never runs it):
#   bench/gpu.sh [PYTHON]            default PYTHON: .venv/bin/python (or python3)
# BiasInject 500 paragraphs x 10 epochs, head attribution and the steering capture on a
# Llama-3.1-8B-shaped model with random weights, each printed as a ratio to a plain forward pass.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch has no CUDA here: install a CUDA build of torch'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
"$PY" bench/gpu_bench.py "${@:2}"
