#!/usr/bin/env bash
# 5-fold, subject-level cross-validation of a training recipe on the 80 shared ACDC patients, on the CPU
# (issue #15). Resumable: a fold whose final validation exists is skipped, a fold cut short is resumed with
# --continue. Outputs stay outside the work tree, under $AUTOCMR_HOME (default ~/autocmr_data)/cv_RUN.
#
#   bash benchmarks/acdc_cross_validation.sh RUN [autocmr_train flags...]
#   e.g. bash benchmarks/acdc_cross_validation.sh baseline --epochs 16
#
# The budget is given as epochs, not wall-clock (--time-budget), so that the figures do not depend on what
# else the machine is doing: 16 epochs of 250 iterations is what 30 minutes give on the idle 2-core machine
# (2.5 it/s, README training benchmark), final validation included.
# Set AUTOCMR_CODE to a snapshot of the package (e.g. `git archive HEAD | tar -x -C DIR`) to run a fixed
# version of the code while the work tree changes; THREADS sets torch's threads (default: torch's choice).
# PLAN_FLAGS are passed to autocmr_plan (e.g. PLAN_FLAGS="--context-slices 1" for the 2.5D recipe).
# FOLDS picks the folds (default "0 1 2 3 4"); two folds can train at once, each in its own invocation with
# THREADS=1, once the first invocation has planned (its log shows "fold N:").
# Each fold, once trained, is evaluated on its own into benchmarks/results/acdc_cv_RUN_foldsN.json (per-case
# rows, no images): a machine and what it held under $AUTOCMR_HOME can be replaced between sessions, and these
# files, committed, are what `acdc_cv_report.py --pool` pools into the five-fold table.
set -euo pipefail
RUN=${1:?usage: acdc_cross_validation.sh RUN [autocmr_train flags...]}; shift
HERE=$(cd "$(dirname "$0")" && pwd)
HOME_ROOT=${AUTOCMR_HOME:-$HOME/autocmr_data}
export AUTOCMR_HOME=$HOME_ROOT/cv_$RUN
ACDC=${ACDC:-$HERE/../../shared/data/acdc/training}
CODE=${AUTOCMR_CODE:-$HERE/..}
[ -n "${THREADS:-}" ] && export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
cd "$CODE"  # `python -m` imports the package from here
python -c "import autocmr, sys; print('autocmr from', autocmr.__file__)"
mkdir -p "$AUTOCMR_HOME"
if [ ! -f "$AUTOCMR_HOME/raw/Dataset101_ACDC/dataset.json" ]; then python -m autocmr.cli.convert acdc "$ACDC" -d 101; fi
python -m autocmr.cli.plan -d 101 --target cpu -c 2d ${PLAN_FLAGS:-}
MODEL=$AUTOCMR_HOME/results/Dataset101_ACDC/autocmrPlans_cpu__2d
for FOLD in ${FOLDS:-0 1 2 3 4}; do
  if [ -f "$MODEL/fold_$FOLD/validation/summary.json" ]; then echo "fold $FOLD done"; continue; fi
  CONT=(); [ -f "$MODEL/fold_$FOLD/checkpoint_latest.pth" ] && CONT=(--continue)
  echo "fold $FOLD: $(date -Is)"
  python -m autocmr.cli.train 101 2d "$FOLD" --device cpu --seed 0 "${CONT[@]}" "$@"
  AUTOCMR_HOME=$HOME_ROOT python "$HERE/acdc_cv_report.py" "$RUN" --folds "$FOLD" \
    || echo "fold $FOLD: its report failed; run: python benchmarks/acdc_cv_report.py $RUN --folds $FOLD" >&2
done
echo "folds ${FOLDS:-0 1 2 3 4} done: $(date -Is)"
