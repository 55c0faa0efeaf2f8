#!/usr/bin/env bash
# The GPU benchmark in one call: blog preset, 64x64, batch 128 (see bench/gpu.py for flags).
#   bash bench/gpu.sh [--modes fp32 bf16 bf16+compile] [--batch 128] [-- hydra overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
exec "$PY" bench/gpu.py "$@"
