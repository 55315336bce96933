#!/usr/bin/env python3
"""Raw text -> sentencepiece -> fairseq-preprocess: a data-bin for masked-LM pretraining.

    python scripts/prepare_pretraining_data.py --train train.txt --valid valid.txt --destdir data-bin \\
        --vocab-size 8000 [--model-type unigram|bpe] [--workers 8] [--force]
    python scripts/prepare_pretraining_data.py --train more.txt --destdir data-bin2 \\
        --spm-model data-bin/sentencepiece.bpe.model --srcdict data-bin/dict.txt

The same command as the installed `linformer-prepare-pretraining-data` (linformer_plugin/cli.py);
--help lists every flag.
"""

import sys

from linformer_plugin.cli import main_prepare_pretraining_data as main

if __name__ == "__main__":
    sys.exit(main())
