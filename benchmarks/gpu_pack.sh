#!/bin/bash
# Pack what benchmarks/gpu_check.sh needs on the lent GPU machine, whose python3 has torch, numpy, scipy,
# scikit-image, pandas, matplotlib and seaborn but no package index: autocmr's other dependencies and nnU-Net
# (the peer) as unpacked cp312 wheels, and a subset of the converted ACDC dataset, each as .tar.xz (the call
# may carry 64 MiB in all, the checkout included: SimpleITK is 52 MB as a wheel, 28 MB this way).
#   bash benchmarks/gpu_pack.sh RAW_DATASET DEST [PATIENTS_PER_GROUP]     (XZ_LEVEL=0: fast, larger; default 9)
# RAW_DATASET: a converted Dataset101_ACDC (autocmr_convert acdc); DEST: a git-ignored folder of the checkout,
# e.g. .gpu (add `/.gpu/` to .git/info/exclude). Then, on the device: carry DEST and run
#   cd DEST && mkdir -p /tmp/site && for a in site_*.tar.xz; do tar xJf $a -C /tmp/site; done &&
#   tar xJf acdc_subset.tar.xz -C /tmp && gzip -1 /tmp/raw/Dataset101_ACDC/*/*.nii && cd .. &&
#   PYTHONPATH=/tmp/site:$PWD bash benchmarks/gpu_check.sh /tmp/raw $OUT 500
set -euo pipefail
RAW=$(realpath "${1:?usage: gpu_pack.sh RAW_DATASET DEST [PATIENTS_PER_GROUP]}")
DEST=$(realpath -m "${2:?usage: gpu_pack.sh RAW_DATASET DEST [PATIENTS_PER_GROUP]}")
PER_GROUP=${3:-3}
WORK=$(mktemp -d /tmp/gpu_pack.XXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
download() {  # the cp312 wheels the machine's Python 3.12 loads; pure-Python packages as any wheel or sdist
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$WORK/wheels" "$@"
}
download SimpleITK pydicom nibabel blosc2 ndindex numexpr batchgenerators batchgeneratorsv2 \
  nnunetv2 dynamic-network-architectures connected-components-3d
python3 -m pip download -q --no-deps -d "$WORK/wheels" acvl-utils  # published as an sdist only
unpack() {  # unpack wheels (and sdists' packages) into one folder and compress it
  local name=$1; shift
  mkdir -p "$WORK/$name"
  for archive in "$@"; do
    case $archive in
      *.whl) unzip -q -o "$archive" -d "$WORK/$name" ;;
      *.tar.gz) tar xzf "$archive" -C "$WORK" && cp -r "$WORK"/acvl_utils-*/acvl_utils "$WORK/$name/" ;;
    esac
  done
  # *.dist-info stays: pydicom reads its own version from it when imported
  tar cf - -C "$WORK/$name" . | xz "-${XZ_LEVEL:-9}" -T1 > "$DEST/$name.tar.xz"
}
unpack site_simpleitk "$WORK"/wheels/simpleitk-*.whl
unpack site_rest $(ls "$WORK"/wheels/* | grep -v -i simpleitk)
# the subset: the first PER_GROUP patients of each pathology group (ED and ES), stored as .nii, which xz
# compresses better than .nii.gz does
mkdir -p "$WORK/raw/Dataset101_ACDC/imagesTr" "$WORK/raw/Dataset101_ACDC/labelsTr"
PATIENTS=$(awk -F, -v n="$PER_GROUP" 'NR == 1 {for (i = 1; i <= NF; i++) col[$i] = i; next}
  $col["phase"] == "ED" && ++seen[$col["group"]] <= n {print $col["subject"]}' "$RAW/cases.csv")
for p in $PATIENTS; do
  for f in "$RAW"/imagesTr/"${p}"_* "$RAW"/labelsTr/"${p}"_*; do
    gunzip -c "$f" > "$WORK/raw/Dataset101_ACDC/$(basename "$(dirname "$f")")/$(basename "$f" .gz)"
  done
done
awk -F, -v list="$PATIENTS" 'BEGIN {n = split(list, a, /[ \n]+/); for (i = 1; i <= n; i++) keep[a[i]] = 1}
  NR == 1 {for (i = 1; i <= NF; i++) col[$i] = i; print; next} keep[$col["subject"]]' "$RAW/cases.csv" \
  > "$WORK/raw/Dataset101_ACDC/cases.csv"
COUNT=$(ls "$WORK/raw/Dataset101_ACDC/imagesTr" | wc -l)
python3 - "$RAW/dataset.json" "$WORK/raw/Dataset101_ACDC/dataset.json" "$COUNT" <<'EOF'
import json, sys
meta = json.load(open(sys.argv[1]))
meta["numTraining"] = int(sys.argv[3])  # nnU-Net checks it against the files
json.dump(meta, open(sys.argv[2], "w"), indent=2)
EOF
tar cf - -C "$WORK" raw | xz "-${XZ_LEVEL:-9}" -T1 > "$DEST/acdc_subset.tar.xz"
echo "$(echo $PATIENTS | wc -w) patients, $COUNT volumes; packed in $DEST:"
du -ch "$DEST"/*.tar.xz
