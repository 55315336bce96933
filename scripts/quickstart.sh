#!/usr/bin/env bash
# The main job, on CPU: raw text -> sentencepiece + fairseq-preprocess -> fairseq-train a small
# linformer_roberta (masked LM) -> fairseq-validate -> fine-tune a code-or-prose classifier with
# fairseq's sentence_prediction (fairseq-hydra-train, examples/linformer_roberta/config/finetuning/
# quickstart.yaml) -> predict from Python through the hub. Data: the Python-docs slice shipped in
# examples/quickstart/ (PSF License, see its NOTICE files). Outputs go to $OUT_DIR (default
# quickstart-out/); each run starts fresh: it removes the four folders it writes there.
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
DATA=examples/quickstart/data
OUT_DIR=${OUT_DIR:-quickstart-out}
MAX_UPDATE=${MAX_UPDATE:-300}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
# A re-run must not resume from checkpoint_last.pt (it would train one more update at lr 0).
rm -rf "$OUT_DIR/data-bin" "$OUT_DIR/checkpoints" "$OUT_DIR/classification-bin" "$OUT_DIR/classifier"
start=$SECONDS
set -x
linformer-prepare-pretraining-data --train $DATA/train.txt --valid $DATA/valid.txt \
  --destdir "$OUT_DIR/data-bin" --vocab-size 4000 --workers 2
# --skip-invalid-size-inputs-valid-test: a few valid paragraphs are longer than 512 tokens; fairseq
# logs "N samples have invalid sizes and will be skipped" for them.
fairseq-train "$OUT_DIR/data-bin" --user-dir linformer_plugin \
  --task masked_lm --criterion masked_lm --arch linformer_roberta_small \
  --tokens-per-sample 512 --compressed-dim 64 --sample-break-mode complete --skip-invalid-size-inputs-valid-test \
  --optimizer adam --adam-betas '(0.9,0.98)' --weight-decay 0.01 --clip-norm 1.0 \
  --lr 5e-4 --lr-scheduler polynomial_decay --warmup-updates 50 --total-num-update "$MAX_UPDATE" \
  --batch-size 8 --max-update "$MAX_UPDATE" --validate-interval-updates 100 --save-interval-updates 100 \
  --keep-interval-updates 1 --no-epoch-checkpoints --save-dir "$OUT_DIR/checkpoints" \
  --log-format simple --log-interval 25 --num-workers 0 --seed 1 --cpu
fairseq-validate "$OUT_DIR/data-bin" --user-dir linformer_plugin --task masked_lm \
  --path "$OUT_DIR/checkpoints/checkpoint_last.pt" --batch-size 8 --num-workers 0 --cpu
# The labelled set: 240 train / 60 dev paragraphs, "code" (API signatures) or "prose"
# (built by examples/quickstart/make_classification_data.py), encoded with the pretraining vocabulary.
linformer-prepare-classification-data --train examples/quickstart/classification/train.tsv \
  --valid examples/quickstart/classification/dev.tsv --pretraining-data "$OUT_DIR/data-bin" \
  --destdir "$OUT_DIR/classification-bin"
fairseq-hydra-train --config-dir examples/linformer_roberta/config/finetuning --config-name quickstart \
  task.data="$OUT_DIR/classification-bin" checkpoint.restore_file="$OUT_DIR/checkpoints/checkpoint_last.pt" \
  checkpoint.save_dir="$OUT_DIR/classifier" common.user_dir="$(linformer-user-dir)"
python - "$OUT_DIR" <<'PY'
import os, sys
from linformer_plugin.models import LinformerModel

out = sys.argv[1]
clf = LinformerModel.from_pretrained(os.path.join(out, "classifier"), "checkpoint_best.pt",
                                     os.path.join(out, "classification-bin")).eval()
labels = clf.task.label_dictionary
texts = ["int PyList_Append(PyObject *list, PyObject *item)",
         "The module provides functions for working with files."]
scores = clf.predict("sentence_classification_head", clf.encode_batch(texts))
for text, best in zip(texts, scores.argmax(-1).tolist()):
    print(f"{labels[best + labels.nspecial]:>5}  {text}")
PY
{ set +x; } 2>/dev/null
cat <<EOF

Done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s. Everything is in $OUT_DIR:
  data-bin/             sentencepiece model, dict.txt, binarized train/valid text
  checkpoints/          the masked LM (linformer_roberta_small, n = 512, k = 64): checkpoint_last.pt
  classification-bin/   the code-or-prose set, binarized (input0/, label/)
  classifier/           the fine-tuned classifier: checkpoint_best.pt, hydra_train.log, .hydra/
Next, in your shell:
  source .venv/bin/activate      # puts fairseq-train, linformer-* and the package on your path
  then the README's "Use from Python (hub)" and "Fine-tune" sections, with these paths.
EOF
