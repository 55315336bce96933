#!/usr/bin/env bash
# The same-n study (issue #15, the paper's Fig. 3) from raw text, on a GPU machine, in chunks:
#   bash examples/studies/quality/run_same_n.sh DOCS_CORPUS_DIR SST2_DIR OUT_DIR [--deadline-at EPOCH] [study flags...]
# All eight docs-corpus collections, one sentencepiece model and dictionary for every run; at n = 512,
# 1024, 2048, 4096: roberta and linformer k = 128, 256 (default options), 1,500 updates of 65,536 tokens
# (about 3 epochs), the n = 512 roberta and k = 128 fine-tuned on SST-2 with seeds 1-3. Run it again
# (same OUT_DIR) until it prints "left for the next chunk (--resume): none"; --runs A B ... picks the order.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
[ $# -ge 3 ] || { echo "usage: $0 DOCS_CORPUS_DIR SST2_DIR OUT_DIR [study flags...]" >&2; exit 2; }
COLLECTIONS="python linux java sagemath perl erlang racket vim" exec bash "$here/run.sh" "$1" "$2" "$3" --runs same-n \
  --resume --tokens 65536 --max-update 1500 --lr 5e-4 --valid-interval 100 --jobs-per-gpu 3 \
  --finetune-seeds 1 2 3 --finetune-updates 1900 --finetune-valid-interval 950 "${@:4}"
