#!/usr/bin/env bash
# Reproduces docs/results.md: the blog's ablations at scale=cpu (synthetic avatars, 32x32,
# the small model), each experiment with the same budget and seeds, then a larger
# evaluation of every final EMA model, the comparison table and the figures.
#
#   bash experiments/cpu_ablations.sh [OUT_DIR]      (default: outputs/cpu_ablations)
#
# JOBS=2 (default) trains two runs at a time with one thread each (on 2 cores that beats one
# run on 2 threads); SEEDS="0 1" and EPOCHS=4 are the budget docs/results.md used: about
# 18 minutes per run, 2 hours for all 14 runs on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/cpu_ablations}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-"0 1"}
EPOCHS=${EPOCHS:-4}
PY=${PYTHON:-python}
EXPERIMENTS="fig10_11_onehot fig07_09_raw fig13_14_mha4 fig12_tau2x fig15_16_final
  fig03_05_vanilla_pm1 fig01_02_vanilla_unit"
mkdir -p "$OUT"

train_and_evaluate() {  # $1 experiment, $2 seed
  local dir="$OUT/${1}_s$2" guidance=2
  [[ $1 == *vanilla* ]] && guidance=0  # unconditional: nothing to guide
  if [[ ! -f $dir/model_ema.pt ]]; then
    OMP_NUM_THREADS=1 $PY run.py experiment="$1" scale=cpu seed="$2" \
      trainer.max_epochs="$EPOCHS" evaluate.every_epochs=2 trainer.progress_bar=false \
      hydra.run.dir="$dir" > "$dir.log" 2>&1
  fi
  # 256 held-out conditions: a quarter of the n=64 in-training evaluation's noise.
  OMP_NUM_THREADS=1 $PY -m cartoondiff.evaluate checkpoint="$dir/model_ema.pt" n=256 \
    guidance=$guidance sampler=dpmpp2m steps=25 out="$dir/eval_final.json" > "$dir.eval.log" 2>&1
  echo "done $1 seed=$2"
}
export -f train_and_evaluate
export OUT EPOCHS PY

for seed in $SEEDS; do for e in $EXPERIMENTS; do echo "$e $seed"; done; done |
  xargs -P "$JOBS" -L 1 bash -c 'train_and_evaluate "$0" "$1"'

runs() { for e in "$@"; do for s in $SEEDS; do echo "$OUT/${e}_s$s"; done; done; }
KEYS=faithfulness_mean,hair_color,frechet_classifier
$PY -m cartoondiff.report $(runs $EXPERIMENTS) keys=$KEYS final=eval_final.json \
  out="$OUT/table.md"
$PY -m cartoondiff.figures curves $(runs fig01_02_vanilla_unit fig03_05_vanilla_pm1) \
  key=eval/frechet_classifier smooth=0 out="$OUT/normalize_frechet.png"
$PY -m cartoondiff.figures curves $(runs fig07_09_raw fig10_11_onehot fig12_tau2x \
  fig13_14_mha4 fig15_16_final) from_step=150 out="$OUT/loss.png"
$PY -m cartoondiff.figures curves $(runs fig07_09_raw fig10_11_onehot fig12_tau2x \
  fig13_14_mha4 fig15_16_final) key=eval/hair_color smooth=0 out="$OUT/hair_color.png"
$PY -m cartoondiff.figures compare "$OUT"/fig01_02_vanilla_unit_s0 \
  "$OUT"/fig03_05_vanilla_pm1_s0 out="$OUT/normalize.png"
$PY -m cartoondiff.figures compare "$OUT"/fig07_09_raw_s0 "$OUT"/fig10_11_onehot_s0 \
  out="$OUT/encoding.png"
$PY -m cartoondiff.figures compare "$OUT"/fig10_11_onehot_s0 "$OUT"/fig12_tau2x_s0 \
  "$OUT"/fig13_14_mha4_s0 "$OUT"/fig15_16_final_s0 out="$OUT/attention_tau.png"
