"""Labelled text collections -> long windows -> two data-bins for --task sentence_prediction.

    python -m examples.studies.long_context.prepare_data \\
        --train python=docs/python/train.txt.xz linux=docs/linux/train.txt.xz \\
        --valid python=docs/python/valid.txt.xz linux=docs/linux/valid.txt.xz \\
        --test  python=docs/python/test.txt.xz  linux=docs/linux/test.txt.xz \\
        --pretraining-data data-bin --window-tokens 4096 --truncate-tokens 512 --destdir long-docs

Each LABEL=PATH collection is one class: raw text in the pretraining layout (one paragraph per
line, a blank line between documents; .xz/.gz/.bz2 read as such). Every document is cut into
non-overlapping windows of at most --window-tokens tokens (<s> and </s> included), cut at word
starts; windows shorter than --min-tokens (short documents, tails) are dropped. Each split is
balanced by sampling the larger classes down (--seed), then written as tsv files (destdir/tsv/) and
binarized with the pretraining sentencepiece model and dictionary twice: destdir/bin/window-N at full
length and destdir/bin/truncated-T with the same examples cut to their first T tokens.
destdir/long_documents.json lists the options and the windows per split and class. With --task
continuation the label says instead whether a window's second half continues its first half (same)
or comes from another document of its collection (other): a task its first 512 tokens cannot
decide. Then:

    fairseq-train long-docs/bin/window-4096 --task sentence_prediction --num-classes 2 \\
        --max-positions 4096 --init-token 0 --separator-token 2 ...
"""

import argparse
import os

from examples.studies.long_context.long_documents import TASKS, prepare_long_document_data
from linformer_plugin.data.common import (DataPrepError, PreprocessError, add_pretraining_vocab_args,
                                          resolve_pretraining_vocab)


def parse_build_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Adds the build's options (--workers, --no-tsv, --force; this CLI's and prepare_same_document's),
    parses argv and resolves the pretraining vocabulary's paths."""
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="fairseq-preprocess processes (default: cores, at most 8)")
    parser.add_argument("--no-tsv", action="store_true",
                        help="remove destdir/tsv once binarized (the data-bins hold the same examples)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty destdir")
    args = parser.parse_args(argv)
    resolve_pretraining_vocab(parser, args)
    return args


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", nargs="+", required=True, metavar="LABEL=PATH",
                        help="one text file per class (at least two classes)")
    parser.add_argument("--valid", "--dev", dest="valid", nargs="+", metavar="LABEL=PATH",
                        help="the same classes, from other documents")
    parser.add_argument("--test", nargs="+", metavar="LABEL=PATH", help="the same classes, from other documents")
    parser.add_argument("--destdir", required=True, help="the directory to write")
    add_pretraining_vocab_args(parser)
    parser.add_argument("--window-tokens", type=int, default=4096,
                        help="longest window, in model tokens with <s> and </s> (default 4096)")
    parser.add_argument("--truncate-tokens", type=int, default=512,
                        help="length of the truncated variant (default 512)")
    parser.add_argument("--min-tokens", type=int, default=1024,
                        help="drop windows shorter than this: short documents and tails (default 1024)")
    parser.add_argument("--max-windows-per-class", type=int,
                        help="at most this many windows per class in each split, sampled (default: all)")
    parser.add_argument("--task", choices=TASKS, default="collection",
                        help="collection (default): the label is the window's collection; continuation: a "
                        "window's first half followed by its own second half (same) or by another document's "
                        "of the same collection (other), joined past --truncate-tokens, so that the truncated "
                        "variant cannot tell them apart (needs --min-tokens >= 2 x --truncate-tokens)")
    parser.add_argument("--seed", type=int, default=1, help="for balancing the classes (default 1)")
    args = parse_build_args(parser, argv)
    collections = {"train": args.train, "valid": args.valid, "test": args.test}
    try:
        manifest = prepare_long_document_data(
            args.destdir, collections, spm_model=args.spm_model, dictionary=args.dict,
            window_tokens=args.window_tokens, truncate_tokens=args.truncate_tokens, min_tokens=args.min_tokens,
            seed=args.seed, max_windows_per_class=args.max_windows_per_class, task=args.task, workers=args.workers,
            keep_tsv=not args.no_tsv, force=args.force)
    except (DataPrepError, PreprocessError, FileExistsError) as e:
        parser.exit(1, f"{parser.prog}: error: {e}\n")
    for split, examples in manifest["examples"].items():
        print(f"{split}: " + ", ".join(f"{label} {n}" for label, n in examples["per_class"].items()))
    window = manifest["variants"]["window"]
    print(f"fairseq-train {os.path.join(args.destdir, window['data'])} --task sentence_prediction "
          f"--num-classes {window['num_classes']} --max-positions {args.window_tokens} "
          "--init-token 0 --separator-token 2 ...")


if __name__ == "__main__":
    main()
