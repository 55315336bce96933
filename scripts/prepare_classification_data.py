#!/usr/bin/env python3
"""GLUE-style tsv -> sentencepiece -> fairseq-preprocess: a data-bin for --task sentence_prediction.

    python scripts/prepare_classification_data.py --train SST-2/train.tsv --valid SST-2/dev.tsv \\
        --test SST-2/test.tsv --pretraining-data data-bin --destdir SST-2-bin [--force]
    python scripts/prepare_classification_data.py --train RTE/train.tsv --valid RTE/dev.tsv \\
        --sentence-columns sentence1 sentence2 --spm-model spm.model --dict data-bin/dict.txt --destdir RTE-bin

Each tsv has a header row; train and valid need the label column, test may lack it. The text is
encoded with the pretraining sentencepiece model and binarized with the pretraining dictionary
(input0/, input1/ for pairs); labels get their own dictionary (label/dict.txt, sorted labels:
class i is the i-th line). Then: fairseq-train SST-2-bin --task sentence_prediction --num-classes K ...
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from linformer_plugin.data.classification import prepare_classification_data  # noqa: E402
from linformer_plugin.data.common import (  # noqa: E402
    DataPrepError, PreprocessError, add_pretraining_vocab_args, resolve_pretraining_vocab)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="train tsv")
    parser.add_argument("--valid", "--dev", dest="valid", help="valid (dev) tsv")
    parser.add_argument("--test", help="test tsv (the label column is optional)")
    parser.add_argument("--destdir", required=True, help="the data-bin to write")
    add_pretraining_vocab_args(parser)
    parser.add_argument("--sentence-columns", nargs="+", default=["sentence"], metavar="NAME",
                        help="one column, or two for sentence pairs (default: sentence)")
    parser.add_argument("--label-column", default="label", help="default: label")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="fairseq-preprocess processes per text column (default: cores, at most 8)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty destdir")
    args = parser.parse_args(argv)
    resolve_pretraining_vocab(parser, args)
    if len(args.sentence_columns) > 2:
        parser.error("--sentence-columns takes one or two column names")
    try:
        info = prepare_classification_data(args.destdir, args.train, args.valid, args.test, spm_model=args.spm_model,
                                           dictionary=args.dict, sentence_columns=args.sentence_columns,
                                           label_column=args.label_column, workers=args.workers, force=args.force)
    except (DataPrepError, PreprocessError, FileExistsError) as e:
        parser.exit(1, f"{parser.prog}: error: {e}\n")
    print(f"fairseq-train {args.destdir} --task sentence_prediction --num-classes {info['num_classes']} ...")


if __name__ == "__main__":
    main()
