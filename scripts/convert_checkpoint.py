#!/usr/bin/env python3
"""Warm-start Linformer checkpoints for long inputs.

    # a fairseq RoBERTa checkpoint (model zoo layout or fairseq-train's) -> linformer_roberta, n = 4096
    python scripts/convert_checkpoint.py roberta-to-linformer roberta.base/model.pt linformer.pt \\
        --compressed-dim 256 --max-positions 4096
    # a linformer_roberta checkpoint -> a longer max_positions
    python scripts/convert_checkpoint.py extend linformer/checkpoint_best.pt linformer-4096.pt --max-positions 4096

The same command as the installed `linformer-convert-checkpoint` (linformer_plugin/cli.py);
--help lists every flag.
"""

import sys

from linformer_plugin.cli import main_convert_checkpoint as main

if __name__ == "__main__":
    sys.exit(main())
