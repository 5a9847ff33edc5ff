#!/usr/bin/env bash
# Before/after check of a change to the package (issue #13): two snapshots of autocmr/ train the same fold for
# a few short epochs and predict the same volumes, taking turns (A B A B) so that a slow spell of a shared
# machine does not fall on one of them; one torch thread each.
#
#   git archive OLD autocmr | tar -x -C /tmp/code_A;  git archive NEW autocmr | tar -x -C /tmp/code_B
#   AUTOCMR_HOME=... bash benchmarks/code_ab.sh /tmp/code_A /tmp/code_B MODEL_FOLDER IMAGES_DIR OUT [ROUNDS]
#
# AUTOCMR_HOME must hold a planned and preprocessed Dataset101 (e.g. a cross-validation run's home);
# MODEL_FOLDER is a trained model with fold_0; IMAGES_DIR a few images to predict. Prints one line per run:
# prediction wall time (whole command) and the epoch times from the training log.
set -euo pipefail
A=${1:?code dir A}; B=${2:?code dir B}; MODEL=${3:?model folder}; IMAGES=${4:?images}; OUT=${5:?output dir}
ROUNDS=${6:-2}
PY=${PYTHON:-python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"
for round in $(seq "$ROUNDS"); do
  for v in A B; do
    CODE=$([ "$v" = A ] && echo "$A" || echo "$B")
    rm -rf "$OUT/train_$v$round" "$OUT/pred_$v$round"
    (cd "$CODE" && PYTHONPATH="$CODE" "$PY" -m autocmr.cli.train 101 2d 0 -p autocmrPlans_cpu --epochs 3 \
      --iterations 100 --val-iterations 20 --no-final-validation --device cpu --seed 0 -o "$OUT/train_$v$round" \
      > "$OUT/train_$v$round.log" 2>&1)
    start=$(date +%s.%N)
    (cd "$CODE" && PYTHONPATH="$CODE" "$PY" -m autocmr.cli.predict -i "$IMAGES" -o "$OUT/pred_$v$round" -m "$MODEL" \
      -f 0 -j 1 > "$OUT/pred_$v$round.log" 2>&1)
    end=$(date +%s.%N)
    epochs=$(grep -o '[0-9.]* s$' "$OUT/train_$v$round/fold_0/log.txt" | tr '\n' ' ')
    echo "$v round $round: predict $(echo "$end - $start" | bc) s; epochs: $epochs"
  done
done
