#!/usr/bin/env bash
# The same-document comparison of issue #15 (docs/long_sequences.md) from raw text, on a GPU machine, in chunks:
#   bash examples/studies/long_context/run_same_document.sh DOCS_CORPUS_DIR SST2_DIR OUT_DIR [--deadline-at EPOCH] \
#       [same_document_study flags...]
# 1. Pretrains, as the same-n study does (run_same_n.sh --resume, into OUT_DIR/study), RoBERTa at 4,096 and 512 and
#    Linformer k = 128 and 256 at 4,096; their records are the same-n study's runs, their checkpoints stay in
#    OUT_DIR/study/checkpoints. A record whose checkpoint is gone (a fresh machine) is pretrained again.
# 2. Builds the task (OUT_DIR/same-document) with the pretraining's sentencepiece model and dictionary, and fine-tunes
#    Linformer at 4,096 (the k with the lower validation perplexity), RoBERTa at 4,096 and RoBERTa at 512 on the
#    truncated rows (same_document_study, 3 seeds, into OUT_DIR/same-document-results).
# Run it again with the same OUT_DIR until the table has every seed; --deadline-at stops both steps in time.
# Another fine-tuning setup (e.g. --updates 1485 --lr 5e-5) needs its own results folder: add --out-dir OUT_DIR/NAME
# after it (the study's last --out-dir wins); the checkpoints and the task are shared.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 DOCS_CORPUS_DIR SST2_DIR OUT_DIR [--deadline-at EPOCH] [study flags...]" >&2; exit 2; }
CORPUS=$(realpath "$1"); SST2=$(realpath "$2"); mkdir -p "$3"; OUT=$(realpath "$3"); shift 3
DEADLINE=()
if [ "${1:-}" = --deadline-at ]; then DEADLINE=(--deadline-at "$2"); END=$2; shift 2; fi
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."  # the repository root
RUNS=(roberta_n4096 linformer_n4096_k128 roberta_n512 linformer_n4096_k256)
CKPT=$OUT/study/checkpoints
bash examples/studies/quality/run_same_n.sh "$CORPUS" "$SST2" "$OUT" "${DEADLINE[@]}" --keep-checkpoints --runs "${RUNS[@]}"

LIN=$(python - "$OUT/study/results.jsonl" <<'EOF'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
done = [r for r in runs if r.get("n") == 4096 and r.get("k") and r.get("valid_ppl")]
print(min(done, key=lambda r: r["valid_ppl"])["name"] if done else "")
EOF
)
MODELS=()
for m in "linformer-4096=$LIN" roberta-512=roberta_n512 roberta-4096=roberta_n4096; do
  f=$CKPT/${m#*=}/pretrain/checkpoint_last.pt
  if [ -n "${m#*=}" ] && [ -f "$f" ]; then MODELS+=("--${m%%=*}" "$f"); fi
done
if [ ${#MODELS[@]} -lt 6 ]; then echo "same-document: not every checkpoint is pretrained yet; run this again"; exit 0; fi
LEFT=()
if [ -n "${END:-}" ]; then
  left=$(( END - $(date +%s) ))
  if [ $left -lt 120 ]; then echo "same-document: ${left}s left of the deadline; run this again"; exit 0; fi
  LEFT=(--deadline "$left")
fi
echo "same-document: $LIN (the n = 4,096 Linformer with the lower validation perplexity)"
python -m examples.studies.long_context.same_document_study --task-data "$OUT/same-document" --corpus "$CORPUS" \
  --collections python linux java sagemath perl erlang racket vim --pretraining-data "$OUT/data-bin" \
  --max-train-pairs 4000 "${MODELS[@]}" --out-dir "$OUT/same-document-results" --work-dir "$OUT/same-document-work" \
  "${LEFT[@]}" "$@"
