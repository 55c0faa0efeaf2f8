#!/usr/bin/env bash
# Reproduces docs/results.md: the blog's ablations at scale=cpu (synthetic avatars, 32x32,
# the small model), each experiment with the same budget and seeds, then a larger
# evaluation of every final EMA model, the comparison table and the figures.
#
#   bash experiments/cpu_ablations.sh [OUT_DIR]      (default: outputs/cpu_ablations)
#
# EXPERIMENTS (a subset), EXTRA (more overrides for every run), EVAL_N (256) and FROM_STEP
# (150, where the loss curves start) change the plan; tests/test_readme.py runs this script
# with two tiny experiments.
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
EXPERIMENTS=${EXPERIMENTS:-"fig10_11_onehot fig07_09_raw fig13_14_mha4 fig12_tau2x fig15_16_final
  fig03_05_vanilla_pm1 fig01_02_vanilla_unit"}
EXTRA=${EXTRA:-}
EVAL_N=${EVAL_N:-256}
FROM_STEP=${FROM_STEP:-150}  # loss curves start here: the early drop would flatten the rest
mkdir -p "$OUT"

train_and_evaluate() {  # $1 experiment, $2 seed
  local dir="$OUT/${1}_s$2" guidance=2
  [[ $1 == *vanilla* ]] && guidance=0  # unconditional: nothing to guide
  if [[ ! -f $dir/model_ema.pt ]]; then
    OMP_NUM_THREADS=1 $PY run.py experiment="$1" scale=cpu seed="$2" \
      trainer.max_epochs="$EPOCHS" evaluate.every_epochs=2 trainer.progress_bar=false \
      trainer.precision=fp32 \
      hydra.run.dir="$dir" $EXTRA > "$dir.log" 2>&1
  fi
  # 256 held-out conditions: a quarter of the n=64 in-training evaluation's noise.
  OMP_NUM_THREADS=1 $PY -m cartoondiff.evaluate checkpoint="$dir/model_ema.pt" n="$EVAL_N" \
    guidance=$guidance sampler=dpmpp2m steps=25 out="$dir/eval_final.json" > "$dir.eval.log" 2>&1
  echo "done $1 seed=$2"
}
export -f train_and_evaluate
export OUT EPOCHS PY EXTRA EVAL_N

for seed in $SEEDS; do for e in $EXPERIMENTS; do echo "$e $seed"; done; done |
  xargs -P "$JOBS" -L 1 bash -c 'train_and_evaluate "$0" "$1"'

# The run folders of these experiments that this plan trained (all seeds).
runs() { for e in "$@"; do for s in $SEEDS; do if [[ -d $OUT/${e}_s$s ]]; then echo "$OUT/${e}_s$s"; fi; done; done; }
# A figure over some of the runs; skipped (with a note) when fewer than $1 of them were trained.
figure() {
  local need=$1 name=$2 command=$3; shift 3
  local dirs; dirs=$(runs "$@")
  if (( $(wc -w <<< "$dirs") < need )); then echo "skipped $name: its runs are not in this plan"; return; fi
  # shellcheck disable=SC2086  # word splitting of $dirs and $FIGURE_ARGS is meant
  $PY -m cartoondiff.figures "$command" $dirs $FIGURE_ARGS out="$OUT/$name"
}
KEYS=faithfulness_mean,hair_color,frechet_classifier
# shellcheck disable=SC2046,SC2086
$PY -m cartoondiff.report $(runs $EXPERIMENTS) keys=$KEYS final=eval_final.json \
  out="$OUT/table.md"
FIGURE_ARGS="key=eval/frechet_classifier smooth=0" figure 1 normalize_frechet.png curves \
  fig01_02_vanilla_unit fig03_05_vanilla_pm1
FIGURE_ARGS="from_step=$FROM_STEP" figure 1 loss.png curves \
  fig07_09_raw fig10_11_onehot fig12_tau2x fig13_14_mha4 fig15_16_final
FIGURE_ARGS="key=eval/hair_color smooth=0" figure 1 hair_color.png curves \
  fig07_09_raw fig10_11_onehot fig12_tau2x fig13_14_mha4 fig15_16_final
FIGURE_ARGS="key=eval/hair_color" figure 1 loss_vs_hair_color.png loss_quality \
  fig07_09_raw fig10_11_onehot fig12_tau2x fig13_14_mha4 fig15_16_final
SEEDS=${SEEDS%% *}  # grids side by side: the first seed of each experiment
FIGURE_ARGS="" figure 2 normalize.png compare fig01_02_vanilla_unit fig03_05_vanilla_pm1
FIGURE_ARGS="" figure 2 encoding.png compare fig07_09_raw fig10_11_onehot
FIGURE_ARGS="" figure 2 attention_tau.png compare fig10_11_onehot fig12_tau2x fig13_14_mha4 \
  fig15_16_final
