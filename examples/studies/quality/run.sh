#!/usr/bin/env bash
# The whole quality study of docs/results.md, from raw text to tables, on a GPU machine:
#   bash examples/studies/quality/run.sh DOCS_CORPUS_DIR SST2_DIR OUT_DIR [study flags...]
# DOCS_CORPUS_DIR holds python/ and linux/ ({train,valid,test}.txt.xz), SST2_DIR {train,dev,test}.tsv.
# Extra flags go to examples.studies.quality.study (e.g. --lr 5e-4, --runs roberta linformer_k128, --add-run ...).
set -euo pipefail
CORPUS=${1:?docs-corpus folder}; SST2=${2:?sst-2 folder}; OUT=${3:?output folder}; shift 3
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."  # the repository root: python -m examples... runs from there
mkdir -p "$OUT/raw"
for split in train valid test; do  # both collections, documents kept whole (blank line between)
  [ -s "$OUT/raw/$split.txt" ] || { xz -dc "$CORPUS/python/$split.txt.xz"; echo; xz -dc "$CORPUS/linux/$split.txt.xz"; } > "$OUT/raw/$split.txt"
done
# a no-op when the data-bin's data-prep.json matches the text and options (a rerun on a warm machine)
python scripts/prepare_pretraining_data.py --train "$OUT/raw/train.txt" --valid "$OUT/raw/valid.txt" \
  --test "$OUT/raw/test.txt" --destdir "$OUT/data-bin" --vocab-size 16000 --workers "$(nproc)"
[ -d "$OUT/sst2-bin" ] || python scripts/prepare_classification_data.py --train "$SST2/train.tsv" \
  --valid "$SST2/dev.tsv" --test "$SST2/test.tsv" --pretraining-data "$OUT/data-bin" --destdir "$OUT/sst2-bin"
python -m examples.studies.quality.study --data "$OUT/data-bin" --sst2 "$OUT/sst2-bin" --out "$OUT/study" "$@"
python -m examples.studies.quality.report "$OUT/study/results.jsonl" --out-dir "$OUT/report"
