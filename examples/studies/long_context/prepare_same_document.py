"""A corpus of collections -> the same-document task: two sentence_prediction data-bins.

    python -m examples.studies.long_context.prepare_same_document --corpus docs-corpus \\
        --pretraining-data data-bin --destdir same-document

Each example is a part A of a document followed by two parts B1 and B2 (each at most (N - 2) / 3
pieces): one is the part of A's document that begins --gap-tokens after A, the other a part of
another document of the same collection; the label says which comes first (first or second). Each
triple gives both orders, so the first --truncate-tokens (part A's start) and any bag-of-pieces
model are at chance by construction; see examples/studies/long_context/same_document.py. CORPUS
holds one folder per collection with train.txt, valid.txt and test.txt (or .txt.xz/.gz/.bz2) in the
pretraining layout; valid and test examples come only from valid and test documents. Writes destdir/bin/window-N and
destdir/bin/truncated-T (the same rows cut to T tokens), destdir/tsv/, destdir/pairs/SPLIT.jsonl
(where each row comes from) and destdir/long_documents.json (counts, distinct documents, CPU
baselines). Then:

    fairseq-train same-document/bin/window-4096 --task sentence_prediction --num-classes 2 \\
        --max-positions 4096 --init-token 0 --separator-token 2 ...
"""

import argparse
import os

from examples.studies.long_context.prepare_data import parse_build_args
from examples.studies.long_context.same_document import corpus_collections, prepare_same_document
from linformer_plugin.data.common import DataPrepError, PreprocessError, add_pretraining_vocab_args


def add_task_args(parser):
    """The task's options (also the study's, which can build the data first)."""
    parser.add_argument("--collections", nargs="+", metavar="NAME",
                        help="these collections of --corpus, in this order (default: every folder with a train file)")
    parser.add_argument("--window-tokens", type=int, default=4096,
                        help="longest example, in model tokens with <s> and </s> (default 4096): parts of "
                        "(N - 2) / 3 pieces")
    parser.add_argument("--truncate-tokens", type=int, default=512,
                        help="length of the truncated variant (default 512)")
    parser.add_argument("--gap-tokens", type=int, default=512,
                        help="pieces of the document skipped between A and its own B (default 512)")
    parser.add_argument("--stride", type=int, default=1024,
                        help="valid and test: a pair every this many pieces of a document (default 1024; "
                        "pairs overlap, which multiplies the examples of few held-out documents)")
    parser.add_argument("--train-stride", type=int,
                        help="train: a pair every this many pieces (default: a pair's span, no overlap)")
    parser.add_argument("--max-train-pairs", type=int,
                        help="at most this many train pairs (2 examples each), sampled (default: all)")
    parser.add_argument("--max-pairs-per-document", type=int, default=16,
                        help="at most this many pairs from one document, sampled, in every split (default 16: "
                        "fewer correlated rows from the longest held-out documents)")
    parser.add_argument("--seed", type=int, default=1, help="for sampling and pairing (default 1)")


def task_options(args) -> dict:
    return {"window_tokens": args.window_tokens, "truncate_tokens": args.truncate_tokens,
            "gap_tokens": args.gap_tokens, "stride": args.stride, "train_stride": args.train_stride,
            "max_train_pairs": args.max_train_pairs, "max_pairs_per_document": args.max_pairs_per_document,
            "seed": args.seed}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="one folder per collection, each with train/valid/test")
    parser.add_argument("--destdir", required=True, help="the directory to write")
    add_pretraining_vocab_args(parser)
    add_task_args(parser)
    args = parse_build_args(parser, argv)
    try:
        manifest = prepare_same_document(
            args.destdir, corpus_collections(args.corpus, args.collections), spm_model=args.spm_model,
            dictionary=args.dict, workers=args.workers, keep_tsv=not args.no_tsv, force=args.force,
            **task_options(args))
    except (DataPrepError, PreprocessError, FileExistsError) as e:
        parser.exit(1, f"{parser.prog}: error: {e}\n")
    for split, examples in manifest["examples"].items():
        print(f"{split}: " + ", ".join(f"{label} {n}" for label, n in examples["per_class"].items())
              + f", A from {manifest['documents'][split]['a_documents']} documents")
    print(f"fairseq-train {os.path.join(args.destdir, manifest['variants']['window']['data'])} --task "
          f"sentence_prediction --num-classes 2 --max-positions {args.window_tokens} --init-token 0 "
          "--separator-token 2 ...")


if __name__ == "__main__":
    main()
