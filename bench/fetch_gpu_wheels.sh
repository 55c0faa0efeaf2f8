#!/usr/bin/env bash
# Recreate .whl/ (git-ignored): the pinned Python 3.12 x86-64 wheels of bench/gpu_wheels.txt,
# which travel with a device call and are installed there with no index:
#   bash bench/fetch_gpu_wheels.sh          # then: device run, carry [".whl"]
# antlr4-python3-runtime 4.9.3 (hydra-core's pin) is published as source only: it is built
# here into a pure-Python wheel. Needs PyPI; prints the total size (64 MiB travel at most).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=.whl
rm -rf "$DEST" && mkdir -p "$DEST"
mapfile -t PINS < <(grep -vE '^\s*(#|$)' bench/gpu_wheels.txt)
SOURCE_ONLY=antlr4-python3-runtime
BINARY=()
for pin in "${PINS[@]}"; do [[ $pin == $SOURCE_ONLY==* ]] || BINARY+=("$pin"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any \
  -d "$DEST" "${BINARY[@]}"
for pin in "${PINS[@]}"; do
  if [[ $pin == $SOURCE_ONLY==* ]]; then
    "$PY" -m pip wheel -q --no-deps --no-binary=:all: -w "$DEST" "$pin"
  fi
done
n=$(ls "$DEST"/*.whl | wc -l)
if [ "$n" -ne "${#PINS[@]}" ]; then
  echo "expected ${#PINS[@]} wheels, got $n" >&2; exit 1
fi
du -b "$DEST"/*.whl | sort -n | awk '{printf "%10.2f MiB  %s\n", $1 / 2^20, $2}'
du -cb "$DEST"/*.whl | tail -1 | awk '{printf "%d wheels, %.1f MiB in all\n", '"$n"', $1 / 2^20}'
