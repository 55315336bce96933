#!/usr/bin/env python3
"""Warm-start Linformer checkpoints for long inputs.

    # a fairseq RoBERTa checkpoint (model zoo layout or fairseq-train's) -> linformer_roberta, n = 4096
    python scripts/convert_checkpoint.py roberta-to-linformer roberta.base/model.pt linformer.pt \\
        --compressed-dim 256 --max-positions 4096
    # a linformer_roberta checkpoint -> a longer max_positions
    python scripts/convert_checkpoint.py extend linformer/checkpoint_best.pt linformer-4096.pt --max-positions 4096

Then train at the new length with --restore-file OUT --reset-optimizer --reset-lr-scheduler
--reset-meters --reset-dataloader (and --tokens-per-sample / --max-positions N). See
linformer_plugin/convert.py for how positions and projections are initialised.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from linformer_plugin.convert import (  # noqa: E402
    extend_linformer_positions, load_checkpoint, roberta_to_linformer, save_checkpoint,
)
from linformer_plugin.options import INIT_METHODS  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("roberta-to-linformer", help="RoBERTa -> linformer_roberta")
    convert.add_argument("--compressed-dim", type=int, required=True, help="k")
    convert.add_argument("--sharing", choices=["headwise", "kv", "layerwise"], default="headwise")
    convert.add_argument("--seed", type=int, default=1, help="for the new projections")
    convert.add_argument("--compressed-init", choices=INIT_METHODS, default="xavier",
                         help="initial values of the new projections (as fairseq-train's --compressed-init)")
    extend = sub.add_parser("extend", help="linformer_roberta -> longer max_positions")
    for p in (convert, extend):
        p.add_argument("input")
        p.add_argument("output")
        p.add_argument("--max-positions", type=int, required=p is extend,
                       help="new n, a multiple of the checkpoint's (default: keep it)")
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


if __name__ == "__main__":
    main()
