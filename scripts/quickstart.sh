#!/usr/bin/env bash
# The README's first command: set up .venv, then run the whole product offline on real data
# (scikit-learn's 1,797 handwritten digits): write them as an image folder, convert it with
# data_prep.folder, train a small PyramidNet (flags/demo.flags), evaluate it, export a
# SavedModel and classify the held-out digits with `predict`.
#   bash scripts/quickstart.sh [OUTPUT_DIR, default runs/quickstart]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup_env.sh
PY=.venv/bin/python
OUT="${1:-runs/quickstart}"
rm -rf "$OUT"
mkdir -p "$OUT"
echo "== 1/5 writing the digits as an image folder"
$PY -m data_prep.digits_demo --output_dir="$OUT/digits"
echo "== 2/5 converting the folder to TFRecords"
$PY -m data_prep.folder --source="$OUT/digits/images" --output_dir="$OUT/data" \
  --val_fraction=0.2 --workers=1
echo "== 3/5 training (flags/demo.flags)"
$PY -m pyramidnet_tf.train --flagfile=flags/demo.flags --data_dir="$OUT/data" \
  --model_dir="$OUT/model" 2>&1 | grep -v "^result: " || true
[[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "training failed" >&2; exit 1; }
echo "== 4/5 evaluating on the validation split"
$PY -m pyramidnet_tf.evaluate --model_dir="$OUT/model" --data_dir="$OUT/data" \
  > "$OUT/eval.json"
cat "$OUT/eval.json"
echo "== 5/5 exporting a SavedModel and classifying the held-out digits"
$PY -m pyramidnet_tf.export --model_dir="$OUT/model" --export_dir="$OUT/export"
holdout=()
for digit in 0 1 2 3 4 5 6 7 8 9; do
  holdout+=("$(ls "$OUT"/digits/holdout/"${digit}"_*.jpg | head -1)")
done
$PY -m pyramidnet_tf.predict --saved_model="$OUT/export" "${holdout[@]}" | tee "$OUT/predict.txt"
error=$($PY -c "import json,sys; print(round(json.load(open(sys.argv[1]))['top1_error'], 2))" \
  "$OUT/eval.json")
echo
echo "quickstart done in $(( $(date +%s) - start )) s: validation top-1 error ${error} %" \
  "(accuracy $($PY -c "print(round(100 - $error, 2))") %)"
echo "TensorBoard logs: $OUT/model   (view: .venv/bin/tensorboard --logdir $OUT/model)"
