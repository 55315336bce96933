#!/usr/bin/env python3
"""Train a sentencepiece model on raw text, or encode text files into pieces for fairseq-preprocess.

    python scripts/sentencepiece_text.py train --input train.txt --model-prefix out/spm --vocab-size 8000
    python scripts/sentencepiece_text.py encode --model out/spm.model train.txt out/train.spm valid.txt out/valid.spm
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from linformer_plugin.data.sentencepiece_text import encode_file, train_sentencepiece  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a sentencepiece model")
    train.add_argument("--input", nargs="+", required=True, help="raw text file(s)")
    train.add_argument("--model-prefix", required=True, help="writes PREFIX.model and PREFIX.vocab")
    train.add_argument("--vocab-size", type=int, default=8000)
    train.add_argument("--model-type", default="unigram", choices=["unigram", "bpe", "char", "word"])
    encode = sub.add_parser("encode", help="encode text files into space-separated pieces")
    encode.add_argument("--model", required=True, help="a sentencepiece .model")
    encode.add_argument("pairs", nargs="+", metavar="SRC DST", help="input and output paths, in pairs")
    args = parser.parse_args(argv)
    if args.command == "train":
        path = train_sentencepiece(args.input, args.model_prefix, args.vocab_size, args.model_type)
        print(f"wrote {path}")
    else:
        if len(args.pairs) % 2:
            parser.error("encode takes input/output paths in pairs: SRC DST [SRC DST ...]")
        for src, dst in zip(args.pairs[::2], args.pairs[1::2]):
            print(f"{src} -> {dst}: {encode_file(args.model, src, dst)} lines")


if __name__ == "__main__":
    main()
