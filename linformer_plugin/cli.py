"""The user commands installed with the package (console entry points in setup.py).

Each ``main_*`` parses its command line and calls a library function that tests call directly;
``scripts/prepare_pretraining_data.py``, ``scripts/prepare_classification_data.py`` and
``scripts/convert_checkpoint.py`` are thin wrappers over the same functions. A command's
docstring is its ``--help`` description. Library modules are imported inside each command so that
one command does not pay for another's imports.
"""

import argparse
import inspect
import os
import sys

# linformer-user-dir: a top-level module of its own, so that it answers without importing fairseq
from linformer_user_dir import main as print_user_dir  # noqa: F401


def _parser(command, prog=None):
    """An argparse parser whose description is ``command``'s docstring, usage lines kept as written."""
    return argparse.ArgumentParser(prog=prog, description=inspect.getdoc(command),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def _default_workers():
    return min(8, os.cpu_count() or 1)


def main_prepare_pretraining_data(argv=None):
    """Raw text -> sentencepiece -> dict.txt and .bin/.idx: a data-bin for masked-LM pretraining.

        linformer-prepare-pretraining-data --train train.txt --valid valid.txt --destdir data-bin \\
            --vocab-size 8000 [--model-type unigram|bpe] [--spm-sample-lines N] [--workers 8] [--force]
        linformer-prepare-pretraining-data --train more.txt --destdir data-bin2 \\
            --spm-model data-bin/sentencepiece.bpe.model --srcdict data-bin/dict.txt

    (or python scripts/prepare_pretraining_data.py with the same flags)

    Text files: one paragraph per line, a blank line between documents. destdir gets dict.txt,
    {train,valid,test}.{bin,idx} (the bytes fairseq-preprocess --only-source writes),
    sentencepiece.bpe.model and data-prep.json (input hashes, options, versions, counts, times). It
    appears only when whole; run again with the same inputs and options, it is reported up to date
    and left alone; an existing non-empty one is otherwise replaced only with --force. The output
    does not depend on --workers.
    """
    from .data.common import DataPrepError, PreprocessError
    from .data.pretraining import prepare_pretraining_data
    from .data.sentencepiece_text import SPM_SAMPLE_LINES, SPM_SEED

    parser = _parser(main_prepare_pretraining_data)
    parser.add_argument("--train", required=True, help="raw text for training (also trains the sentencepiece model)")
    parser.add_argument("--valid", help="raw text for validation")
    parser.add_argument("--test", help="raw text for testing")
    parser.add_argument("--destdir", required=True, help="the data-bin to write")
    parser.add_argument("--vocab-size", type=int, help="sentencepiece pieces to train (default 8000)")
    parser.add_argument("--model-type", choices=["unigram", "bpe"], help="sentencepiece algorithm (default unigram)")
    parser.add_argument("--spm-sample-lines", type=int, metavar="N",
                        help=f"train sentencepiece on N lines of --train chosen with --seed, 0 for all "
                             f"(default {SPM_SAMPLE_LINES:,}; a smaller file is used whole)")
    parser.add_argument("--seed", type=int, help=f"for the sample and sentencepiece (default {SPM_SEED})")
    parser.add_argument("--spm-model", help="reuse this sentencepiece .model instead of training one")
    parser.add_argument("--srcdict", help="reuse this fairseq dict.txt instead of building one from --train")
    parser.add_argument("--workers", type=int, default=_default_workers(),
                        help="threads that encode the text (default: cores, at most 8); the output does not "
                             "depend on it")
    parser.add_argument("--force", action="store_true", help="replace a non-empty destdir, even an up-to-date one")
    args = parser.parse_args(argv)
    training = (args.vocab_size, args.model_type, args.spm_sample_lines, args.seed)
    if args.spm_model and any(option is not None for option in training):
        parser.error("--vocab-size, --model-type, --spm-sample-lines and --seed train a new model; "
                     "they don't apply with --spm-model")
    try:
        prepare_pretraining_data(args.destdir, args.train, args.valid, args.test,
                                 vocab_size=args.vocab_size or 8000, model_type=args.model_type or "unigram",
                                 spm_model=args.spm_model, srcdict=args.srcdict,
                                 spm_sample_lines=SPM_SAMPLE_LINES if args.spm_sample_lines is None
                                 else args.spm_sample_lines, seed=SPM_SEED if args.seed is None else args.seed,
                                 workers=max(1, args.workers), force=args.force)
    except (DataPrepError, PreprocessError, FileExistsError) as e:
        parser.exit(1, f"{parser.prog}: error: {e}\n")


def main_prepare_classification_data(argv=None):
    """GLUE-style tsv -> sentencepiece -> fairseq-preprocess: a data-bin for --task sentence_prediction.

        linformer-prepare-classification-data --train SST-2/train.tsv --valid SST-2/dev.tsv \\
            --test SST-2/test.tsv --pretraining-data data-bin --destdir SST-2-bin [--force]
        linformer-prepare-classification-data --train RTE/train.tsv --valid RTE/dev.tsv \\
            --sentence-columns sentence1 sentence2 --spm-model spm.model --dict data-bin/dict.txt --destdir RTE-bin

    (or python scripts/prepare_classification_data.py with the same flags)

    Each tsv has a header row; train and valid need the label column, test may lack it. The text is
    encoded with the pretraining sentencepiece model and binarized with the pretraining dictionary
    (input0/, input1/ for pairs); labels get their own dictionary (label/dict.txt, sorted labels:
    class i is the i-th line). Then: fairseq-train SST-2-bin --task sentence_prediction --num-classes K ...
    """
    from .data.classification import prepare_classification_data
    from .data.common import DataPrepError, PreprocessError, add_pretraining_vocab_args, resolve_pretraining_vocab

    parser = _parser(main_prepare_classification_data)
    parser.add_argument("--train", required=True, help="train tsv")
    parser.add_argument("--valid", "--dev", dest="valid", help="valid (dev) tsv")
    parser.add_argument("--test", help="test tsv (the label column is optional)")
    parser.add_argument("--destdir", required=True, help="the data-bin to write")
    add_pretraining_vocab_args(parser)
    parser.add_argument("--sentence-columns", nargs="+", default=["sentence"], metavar="NAME",
                        help="one column, or two for sentence pairs (default: sentence)")
    parser.add_argument("--label-column", default="label", help="default: label")
    parser.add_argument("--workers", type=int, default=_default_workers(),
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


def main_convert_checkpoint(argv=None):
    """Warm-start Linformer checkpoints for long inputs.

        # a fairseq RoBERTa checkpoint (model zoo layout or fairseq-train's) -> linformer_roberta, n = 4096
        linformer-convert-checkpoint roberta-to-linformer roberta.base/model.pt linformer.pt \\
            --compressed-dim 256 --max-positions 4096
        # a linformer_roberta checkpoint -> a longer max_positions
        linformer-convert-checkpoint extend linformer/checkpoint_best.pt linformer-4096.pt --max-positions 4096

    (or python scripts/convert_checkpoint.py with the same arguments)

    Then train at the new length with --restore-file OUT --reset-optimizer --reset-lr-scheduler
    --reset-meters --reset-dataloader (and --tokens-per-sample / --max-positions N). See
    linformer_plugin/convert.py for how positions and projections are initialised.
    """
    from .convert import extend_linformer_positions, load_checkpoint, roberta_to_linformer, save_checkpoint
    from .options import DEFAULT_INIT, INIT_METHODS

    parser = _parser(main_convert_checkpoint)
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("roberta-to-linformer", help="RoBERTa -> linformer_roberta")
    convert.add_argument("--compressed-dim", type=int, required=True, help="k")
    convert.add_argument("--sharing", choices=["headwise", "kv", "layerwise"], default="headwise")
    convert.add_argument("--seed", type=int, default=1, help="for the new projections")
    convert.add_argument("--compressed-init", choices=INIT_METHODS, default=DEFAULT_INIT,
                         help="initial values of the new projections (as fairseq-train's --compressed-init)")
    extend = sub.add_parser("extend", help="linformer_roberta -> longer max_positions")
    for p in (convert, extend):
        p.add_argument("input")
        p.add_argument("output")
        p.add_argument("--max-positions", type=int, required=p is extend,
                       help="new n, a multiple of the checkpoint's" + ("" if p is extend else " (default: keep it)"))
    args = parser.parse_args(argv)
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        parser.error("the output must differ from the input: the source checkpoint is never modified")
    try:
        state = load_checkpoint(args.input)
        if args.command == "extend":
            new = extend_linformer_positions(state, args.max_positions)
        else:
            new = roberta_to_linformer(state, args.compressed_dim, args.max_positions, args.sharing, args.seed,
                                       init=args.compressed_init)
    except ValueError as exc:  # ConversionError, or a Linformer option that cannot build (k > n)
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    save_checkpoint(new, args.output)
    print(f"wrote {args.output}")


# fairseq 0.12's --help never lists model options, so say where these flags go.
_WHERE = ("Pass these to fairseq-train or fairseq-validate with --user-dir $(linformer-user-dir) --arch\n"
          "linformer_roberta_base (or another architecture below); in a fairseq-hydra-train config they are\n"
          "model keys spelt with underscores (model.compressed_dim).\n\n")
_SIZES = (("encoder_layers", "layers"), ("encoder_embed_dim", "embed dim"),
          ("encoder_attention_heads", "heads"), ("encoder_ffn_embed_dim", "ffn dim"))


def architecture_sizes():
    """{arch: {"layers": L, "embed dim": H, "heads": A, "ffn dim": F}} for every registered
    ``linformer_roberta`` architecture."""
    from .models.linformer_roberta import architecture_sizes as sizes_by_key

    return {arch: {label: size[key] for key, label in _SIZES} for arch, size in sizes_by_key().items()}


def format_architectures(sizes):
    labels = [label for _, label in _SIZES]
    width = max(map(len, sizes))
    lines = ["  ".join([f"{'--arch':<{width}}"] + labels)]
    for arch, row in sizes.items():
        lines.append("  ".join([f"{arch:<{width}}"] + [f"{row[label]:>{len(label)}}" for label in labels]))
    return "\n".join("  " + line for line in lines)


def format_options(everything=False):
    """The argparse help of the Linformer flags, or with ``everything`` of all ``linformer_roberta``'s
    model flags (RoBERTa's too) followed by the architectures and their sizes."""
    parser = argparse.ArgumentParser(usage=argparse.SUPPRESS, add_help=False)
    if everything:
        from .models.linformer_roberta import LinformerModel

        LinformerModel.add_args(parser.add_argument_group("linformer_roberta model options (RoBERTa's, then the Linformer's)"))
    else:
        from .options import add_linformer_args

        add_linformer_args(parser.add_argument_group("Linformer options"))
    text = _WHERE + parser.format_help()
    if everything:
        text += "\narchitectures (defaults of the registered architecture functions; flags above override them):\n"
        text += format_architectures(architecture_sizes()) + "\n"
    return text


def main_options(argv=None):
    """Print the Linformer model options with their help: fairseq-train --help does not list them.

        linformer-options        # the Linformer flags (--compressed-dim, --compressed-sharing, ...)
        linformer-options --all  # every linformer_roberta model flag, and the architectures' sizes
    """
    parser = _parser(main_options, prog="linformer-options")
    parser.add_argument("--all", action="store_true",
                        help="also RoBERTa's model flags, and the registered architectures with their sizes")
    args = parser.parse_args(argv)
    sys.stdout.write(format_options(everything=args.all))
