#!/usr/bin/env bash
# One call on the GPU machine (bench/gpu_session.py says what it runs), ending within
# BUDGET_S (default 450 s) plus the wheel install:
#   bash bench/gpu_session.sh OUT_DIR            # GPU: installs .whl/*.whl first (no index)
#   TINY=1 bash bench/gpu_session.sh OUT_DIR     # the CPU rehearsal the tests run
# The wheels (hydra-core, omegaconf, wandb, diffusers, ... for Python 3.12) come from
# bench/fetch_gpu_wheels.sh and travel with the call in .whl/ (git-ignored).
set -uo pipefail
OUT=${1:?usage: bash bench/gpu_session.sh OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
PY=${PYTHON:-python3}
TINY=${TINY:-0}
export GPU_SESSION_WHEELS="not installed"
if [ "$TINY" = "0" ] && [ -z "${SKIP_WHEELS:-}" ] && compgen -G ".whl/*.whl" > /dev/null; then
  start=$SECONDS
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl; then
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    GPU_SESSION_WHEELS="$(ls .whl/*.whl | wc -l) wheels installed in $((SECONDS - start)) s"
  else
    GPU_SESSION_WHEELS="pip install of .whl/ failed"
  fi
fi
echo "wheels: $GPU_SESSION_WHEELS"
if ! "$PY" -c "import hydra, omegaconf, torch" 2> "$OUT/import_error.txt"; then
  # Fail in seconds, not after minutes of device time: the wheels did not come (carry .whl).
  echo "hydra-core / omegaconf / torch not importable: run bench/fetch_gpu_wheels.sh here and" \
       "carry .whl" | tee -a "$OUT/import_error.txt"
  exit 3
fi
rm -f "$OUT/import_error.txt"
command -v nvidia-smi > /dev/null && nvidia-smi -L
BUDGET=${BUDGET_S:-$([ "$TINY" = "0" ] && echo 450 || echo 120)}
# A hard stop past the script's own deadline, in case something hangs beyond its timeouts.
PYTHON="$PY" timeout -k 10 $((${BUDGET%.*} + 45)) "$PY" -u bench/gpu_session.py "$OUT"
rc=$?
ls -la "$OUT"
exit $rc
