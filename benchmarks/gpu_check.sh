#!/bin/bash
# GPU check: autocmr's CUDA paths on one GPU, with nnU-Net v2 beside it as the peer, within a time budget.
#   benchmarks/gpu_check.sh RAW_ROOT OUT_DIR [BUDGET_SECONDS] [IMAGES_DIR]
# RAW_ROOT holds Dataset101_ACDC (autocmr's converted ACDC, also nnU-Net's raw format). Steps, most important
# first, each skipped once the budget is spent: predict IMAGES_DIR (default: the dataset's images) with the
# shipped default model on cuda; plan (GPU target); train 2d and 3d_fullres for a few epochs on the GPU plans;
# nnU-Net's 2d planning and a 5-epoch training of the same fold (eager mode, like autocmr: nnUNet_compile=f);
# the same prediction on the machine's CPU. GPU memory and utilisation are sampled every 250 ms (logs/gpu.csv,
# the steps' start and end times in logs/steps.txt), so each step's peak can be read off. Everything lands in
# OUT_DIR/gpu_check.tar.gz, rewritten after every step so that a run cut short still returns what it did.
# nnU-Net runs only where `import nnunetv2` works. Summarise with benchmarks/gpu_check_report.py.
# DEVICE=cpu EPOCHS=1 ITERATIONS=2 checks the script itself on a machine without a GPU.
#
# On the lent H200 machine (no package index there), `benchmarks/gpu_pack.sh` packs the missing packages and a
# 15-patient ACDC subset into a git-ignored folder to carry; its header has the device command that unpacks
# them and runs this script.
set -u
RAW=$(realpath "$1"); OUT=$(realpath "$2"); BUDGET=${3:-540}
IMAGES=${4:-$RAW/Dataset101_ACDC/imagesTr}
DEADLINE=$(( $(date +%s) + BUDGET ))
WORK=$(mktemp -d /tmp/gpu_check.XXXX)
LOGS=$WORK/logs
mkdir -p "$LOGS" "$OUT"
export AUTOCMR_HOME=$WORK/autocmr AUTOCMR_RAW=$RAW PYTHONUNBUFFERED=1
export nnUNet_raw=$RAW nnUNet_preprocessed=$WORK/nnunet/preprocessed nnUNet_results=$WORK/nnunet/results
export nnUNet_compile=f
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
ITER=(); [ -n "${ITERATIONS:-}" ] && ITER=(--iterations "$ITERATIONS" --val-iterations 1)

pack() {  # everything small enough to bring back: logs, plans, training logs, masks and tables
  # --warning/rc 1: the GPU sampler appends to logs/gpu.csv while tar reads it
  (cd "$WORK" && tar --warning=no-file-changed -czf "$OUT/gpu_check.tar.gz.part" logs $(find autocmr nnunet pred_* \( -name log.txt \
      -o -name 'training_log_*.txt' -o -name options.json -o -name '*lans*.json' -o -name 'splits*.json' \
      -o -name '*fingerprint.json' -o -name '*.nii.gz' -o -name '*.csv' -o -name predictions.json \) \
      -not -path '*/preprocessed/*/*/*' 2>/dev/null); [ $? -le 1 ] && mv "$OUT/gpu_check.tar.gz.part" "$OUT/gpu_check.tar.gz")
}

step() {  # step NAME MAX_SECONDS COMMAND...: run it under the smaller of MAX_SECONDS and what is left
  local name=$1 max=$2; shift 2
  local left=$(( DEADLINE - $(date +%s) ))
  if [ "$left" -lt 30 ]; then echo "=== $name skipped: budget spent"; return; fi
  [ "$max" -gt "$left" ] && max=$left
  echo "=== $name $(date +%T) (at most ${max} s): $*"
  echo "$name start $(date +%s.%N)" >> "$LOGS/steps.txt"
  timeout -s TERM -k 20 "$max" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  echo "$name end $(date +%s.%N) rc $rc" >> "$LOGS/steps.txt"
  echo "=== $name rc $rc"
  tail -n 4 "$LOGS/$name.log"
  pack
}

# each sample stamped with the epoch seconds that steps.txt uses: unix time, MiB used, % utilisation
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits -lms 250 2>/dev/null \
  | while IFS= read -r line; do echo "$EPOCHREALTIME, $line"; done > "$LOGS/gpu.csv" &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null; pack' EXIT

step environment 60 $PY -c "
import os, torch, SimpleITK, blosc2, nibabel, pydicom, batchgeneratorsv2
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none',
      'cpus', os.cpu_count(), 'SimpleITK', SimpleITK.Version_VersionString(), 'blosc2', blosc2.__version__)
try:
    import nnunetv2; print('nnunetv2 importable')
except ImportError as e:
    print('no nnunetv2:', e)"
step predict_gpu 150 $PY -m autocmr.cli.predict -i "$IMAGES" -o "$WORK/pred_gpu" --device "$DEVICE"
step plan 120 $PY -m autocmr.cli.plan -d 101 --target gpu
step train_2d 150 $PY -m autocmr.cli.train 101 2d 0 -p autocmrPlans --device "$DEVICE" --epochs "${EPOCHS:-4}" \
  "${ITER[@]}"
if $PY -c "import nnunetv2" 2>/dev/null; then
  step nnunet_plan 120 $PY -m nnunetv2.experiment_planning.plan_and_preprocess_entrypoints -d 101 -c 2d -np 16
  # the same patient-level folds as autocmr's (nnU-Net would split the cases itself; both files are a list of
  # {"train": [...], "val": [...]} of case names)
  cp "$AUTOCMR_HOME/preprocessed/Dataset101_ACDC/splits.json" "$nnUNet_preprocessed/Dataset101_ACDC/splits_final.json"
  step nnunet_train_2d 170 $PY -m nnunetv2.run.run_training 101 2d 0 -tr nnUNetTrainer_5epochs -device "$DEVICE"
fi
step train_3d_fullres 120 $PY -m autocmr.cli.train 101 3d_fullres 0 -p autocmrPlans --device "$DEVICE" \
  --epochs "${EPOCHS:-2}" --iterations "${ITERATIONS:-50}" --val-iterations "${ITERATIONS:-50}" --no-final-validation
step predict_cpu 150 $PY -m autocmr.cli.predict -i "$IMAGES" -o "$WORK/pred_cpu" --device cpu --no-analysis
echo "=== done $(date +%T)"
