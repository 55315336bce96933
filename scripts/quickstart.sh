#!/usr/bin/env bash
# The main job: raw text -> sentencepiece + fairseq-preprocess -> fairseq-train a small
# linformer_roberta (masked LM) -> fairseq-validate, on CPU, on the Python-docs slice shipped in
# examples/quickstart/data. Outputs go to $OUT_DIR (default: quickstart-out/).
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
DATA=examples/quickstart/data
OUT_DIR=${OUT_DIR:-quickstart-out}
MAX_UPDATE=${MAX_UPDATE:-300}
mkdir -p "$OUT_DIR"
set -x
python scripts/prepare_pretraining_data.py --train $DATA/train.txt --valid $DATA/valid.txt \
  --destdir "$OUT_DIR/data-bin" --vocab-size 4000 --workers 2 --force
fairseq-train "$OUT_DIR/data-bin" --user-dir linformer_plugin \
  --task masked_lm --criterion masked_lm --arch linformer_roberta_small \
  --tokens-per-sample 512 --compressed-dim 64 --sample-break-mode complete --skip-invalid-size-inputs-valid-test \
  --optimizer adam --adam-betas '(0.9,0.98)' --weight-decay 0.01 --clip-norm 1.0 \
  --lr 1e-3 --lr-scheduler polynomial_decay --warmup-updates 50 --total-num-update "$MAX_UPDATE" \
  --batch-size 8 --max-update "$MAX_UPDATE" --validate-interval-updates 100 --save-interval-updates 100 \
  --keep-interval-updates 1 --no-epoch-checkpoints --save-dir "$OUT_DIR/checkpoints" \
  --log-format simple --log-interval 25 --num-workers 0 --seed 1 --cpu
fairseq-validate "$OUT_DIR/data-bin" --user-dir linformer_plugin --task masked_lm \
  --path "$OUT_DIR/checkpoints/checkpoint_last.pt" --batch-size 8 --num-workers 0 --cpu
