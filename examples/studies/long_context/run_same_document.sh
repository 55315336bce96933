#!/usr/bin/env bash
# The same-document comparison of issue #15 (docs/long_sequences.md) from raw text, on a GPU machine, in chunks:
#   bash examples/studies/long_context/run_same_document.sh DOCS_CORPUS_DIR SST2_DIR OUT_DIR [--deadline-at EPOCH] \
#       [--models linformer-4096 roberta-512 roberta-4096] [--linformer-k 128|256] [same_document_study flags...]
# 1. Pretrains, as the same-n study does (run_same_n.sh --resume, into OUT_DIR/study), RoBERTa at 4,096 and 512 and
#    Linformer k = 128 and 256 at 4,096; their records are the same-n study's runs, their checkpoints stay in
#    OUT_DIR/study/checkpoints. A record whose checkpoint is gone (a fresh machine) is pretrained again.
# 2. Builds the task (OUT_DIR/same-document) with the pretraining's sentencepiece model and dictionary, and fine-tunes
#    Linformer at 4,096 (the k with the lower validation perplexity), RoBERTa at 4,096 and RoBERTa at 512 on the
#    truncated rows (same_document_study, 3 seeds, into OUT_DIR/same-document-results).
# --models fine-tunes (and pretrains) only these; --linformer-k takes that k instead of pretraining both to choose.
# Run it again with the same OUT_DIR until the table has every seed; --deadline-at stops both steps in time.
# Another fine-tuning setup (e.g. --updates 1485 --lr 5e-5) needs its own results folder: add --out-dir OUT_DIR/NAME
# after it (the study's last --out-dir wins); the checkpoints and the task are shared. E.g. both 4,096 models with
# three passes, k = 256 as chosen before:
#   ... --models linformer-4096 roberta-4096 --linformer-k 256 --updates 1485 --out-dir OUT_DIR/same-document-3-passes
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 DOCS_CORPUS_DIR SST2_DIR OUT_DIR [--deadline-at EPOCH] [--models M...] [--linformer-k K] [study flags...]" >&2; exit 2; }
CORPUS=$(realpath "$1"); SST2=$(realpath "$2"); mkdir -p "$3"; OUT=$(realpath "$3"); shift 3
DEADLINE=()
if [ "${1:-}" = --deadline-at ]; then DEADLINE=(--deadline-at "$2"); END=$2; shift 2; fi
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."  # the repository root
WANT=(linformer-4096 roberta-512 roberta-4096); K=""
while [ "${1:-}" = --models ] || [ "${1:-}" = --linformer-k ]; do
  if [ "$1" = --linformer-k ]; then
    case "${2:-}" in 128|256) K=$2; shift 2 ;; *) echo "--linformer-k takes 128 or 256 (the same-n study's k), not '${2:-}'" >&2; exit 2 ;; esac
  else
    shift; WANT=()
    while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do
      case "$1" in linformer-4096|roberta-512|roberta-4096) WANT+=("$1"); shift ;;
        *) echo "--models takes linformer-4096, roberta-512 and roberta-4096, not '$1'" >&2; exit 2 ;; esac
    done
    [ ${#WANT[@]} -gt 0 ] || { echo "--models needs at least one of linformer-4096 roberta-512 roberta-4096" >&2; exit 2; }
  fi
done
RUNS=()
for m in "${WANT[@]}"; do
  case $m in
    roberta-4096) RUNS+=(roberta_n4096) ;;
    roberta-512) RUNS+=(roberta_n512) ;;
    linformer-4096) if [ -n "$K" ]; then RUNS+=("linformer_n4096_k$K"); else RUNS+=(linformer_n4096_k128 linformer_n4096_k256); fi ;;
  esac
done
CKPT=$OUT/study/checkpoints
bash examples/studies/quality/run_same_n.sh "$CORPUS" "$SST2" "$OUT" "${DEADLINE[@]}" --keep-checkpoints --runs "${RUNS[@]}"

LIN=linformer_n4096_k$K
[ -n "$K" ] || LIN=$(python - "$OUT/study/results.jsonl" <<'EOF'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
done = [r for r in runs if r.get("n") == 4096 and r.get("k") and r.get("valid_ppl")]
print(min(done, key=lambda r: r["valid_ppl"])["name"] if done else "")
EOF
)
MODELS=()
for m in "${WANT[@]}"; do
  case $m in linformer-4096) run=$LIN ;; roberta-512) run=roberta_n512 ;; roberta-4096) run=roberta_n4096 ;; esac
  f=$CKPT/$run/pretrain/checkpoint_last.pt
  if [ -n "$run" ] && [ -f "$f" ]; then MODELS+=("--$m" "$f"); fi
done
if [ ${#MODELS[@]} -lt $(( 2 * ${#WANT[@]} )) ]; then
  echo "same-document: not every checkpoint is pretrained yet; run this again"; exit 0
fi
LEFT=()
if [ -n "${END:-}" ]; then
  left=$(( END - $(date +%s) ))
  if [ $left -lt 120 ]; then echo "same-document: ${left}s left of the deadline; run this again"; exit 0; fi
  LEFT=(--deadline "$left")
fi
echo "same-document: ${WANT[*]}; linformer-4096 is $LIN ($([ -n "$K" ] && echo "--linformer-k" || echo "the k with the lower validation perplexity"))"
python -m examples.studies.long_context.same_document_study --task-data "$OUT/same-document" --corpus "$CORPUS" \
  --collections python linux java sagemath perl erlang racket vim --pretraining-data "$OUT/data-bin" \
  --max-train-pairs 4000 "${MODELS[@]}" --out-dir "$OUT/same-document-results" --work-dir "$OUT/same-document-work" \
  "${LEFT[@]}" "$@"
