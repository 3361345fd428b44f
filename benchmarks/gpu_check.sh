#!/usr/bin/env bash
# The GPU path in one run: the demo on --device cuda (fp32, bf16), extraction vs the bare forward, heads on the
# GPU vs the CPU, pinned-memory copies; one table (benchmarks/gpu_check.py). Without CUDA it says so and exits 0.
# Usage: benchmarks/gpu_check.sh [--device cuda:N] [--data demo|demo:tiny|ROOT] [--skip demo] ...
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu check: no CUDA device on this machine ($("$PY" -c 'import torch; print("torch", torch.__version__, "CUDA build:", torch.version.cuda or "no")')); nothing to check"
    exit 0
fi
exec "$PY" benchmarks/gpu_check.py "$@"
