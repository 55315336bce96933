#!/usr/bin/env python3
"""Raw text -> sentencepiece -> fairseq-preprocess: a data-bin for masked-LM pretraining.

    python scripts/prepare_pretraining_data.py --train train.txt --valid valid.txt --destdir data-bin \\
        --vocab-size 8000 [--model-type unigram|bpe] [--workers 8] [--force]
    python scripts/prepare_pretraining_data.py --train more.txt --destdir data-bin2 \\
        --spm-model data-bin/sentencepiece.bpe.model --srcdict data-bin/dict.txt

Text files: one paragraph per line, a blank line between documents. destdir gets dict.txt,
{train,valid,test}.{bin,idx} and sentencepiece.bpe.model; it appears only when whole, and an
existing non-empty one is replaced only with --force.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from linformer_plugin.data.common import DataPrepError, PreprocessError  # noqa: E402
from linformer_plugin.data.pretraining import prepare_pretraining_data  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="raw text for training (also trains the sentencepiece model)")
    parser.add_argument("--valid", help="raw text for validation")
    parser.add_argument("--test", help="raw text for testing")
    parser.add_argument("--destdir", required=True, help="the data-bin to write")
    parser.add_argument("--vocab-size", type=int, help="sentencepiece pieces to train (default 8000)")
    parser.add_argument("--model-type", choices=["unigram", "bpe"], help="sentencepiece algorithm (default unigram)")
    parser.add_argument("--spm-model", help="reuse this sentencepiece .model instead of training one")
    parser.add_argument("--srcdict", help="reuse this fairseq dict.txt instead of building one from --train")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="fairseq-preprocess processes (default: cores, at most 8)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty destdir")
    args = parser.parse_args(argv)
    if args.spm_model and (args.vocab_size is not None or args.model_type is not None):
        parser.error("--vocab-size and --model-type train a new model; they don't apply with --spm-model")
    try:
        prepare_pretraining_data(args.destdir, args.train, args.valid, args.test,
                                 vocab_size=args.vocab_size or 8000, model_type=args.model_type or "unigram",
                                 spm_model=args.spm_model, srcdict=args.srcdict, workers=args.workers,
                                 force=args.force)
    except (DataPrepError, PreprocessError, FileExistsError) as e:
        parser.exit(1, f"{parser.prog}: error: {e}\n")


if __name__ == "__main__":
    main()
