#!/usr/bin/env bash
# The whole quality study of docs/results.md, from raw text to tables, on a GPU machine:
#   bash examples/studies/quality/run.sh DOCS_CORPUS_DIR SST2_DIR OUT_DIR [study flags...]
# DOCS_CORPUS_DIR holds one folder per collection ({train,valid,test}.txt.xz), SST2_DIR {train,dev,test}.tsv.
# COLLECTIONS (default "python linux", the 2026-11-28 study) names the collections to pretrain on.
# Extra flags go to examples.studies.quality.study (e.g. --lr 5e-4, --runs roberta linformer_k128, --add-run ...).
set -euo pipefail
CORPUS=${1:?docs-corpus folder}; SST2=${2:?sst-2 folder}; OUT=${3:?output folder}; shift 3
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."  # the repository root: python -m examples... runs from there
mkdir -p "$OUT/raw"
COLLECTIONS=${COLLECTIONS:-python linux}
for split in train valid test; do  # the collections in order, documents kept whole (a blank line between)
  [ -s "$OUT/raw/$split.txt" ] || {
    first=1
    for c in $COLLECTIONS; do [ $first = 1 ] || echo; first=0; xz -dc "$CORPUS/$c/$split.txt.xz"; done > "$OUT/raw/$split.tmp"
    mv "$OUT/raw/$split.tmp" "$OUT/raw/$split.txt"
  }
done
# a no-op when the data-bin's data-prep.json matches the text and options (a rerun on a warm machine)
python scripts/prepare_pretraining_data.py --train "$OUT/raw/train.txt" --valid "$OUT/raw/valid.txt" \
  --test "$OUT/raw/test.txt" --destdir "$OUT/data-bin" --vocab-size 16000 --workers "$(nproc)"
[ -d "$OUT/sst2-bin" ] || python scripts/prepare_classification_data.py --train "$SST2/train.tsv" \
  --valid "$SST2/dev.tsv" --test "$SST2/test.tsv" --pretraining-data "$OUT/data-bin" --destdir "$OUT/sst2-bin"
python -m examples.studies.quality.study --data "$OUT/data-bin" --sst2 "$OUT/sst2-bin" --out "$OUT/study" "$@"
python -m examples.studies.quality.report "$OUT/study/results.jsonl" --out-dir "$OUT/report"
