#!/usr/bin/env python3
"""GLUE-style tsv -> sentencepiece -> fairseq-preprocess: a data-bin for --task sentence_prediction.

    python scripts/prepare_classification_data.py --train SST-2/train.tsv --valid SST-2/dev.tsv \\
        --test SST-2/test.tsv --pretraining-data data-bin --destdir SST-2-bin [--force]
    python scripts/prepare_classification_data.py --train RTE/train.tsv --valid RTE/dev.tsv \\
        --sentence-columns sentence1 sentence2 --spm-model spm.model --dict data-bin/dict.txt --destdir RTE-bin

The same command as the installed `linformer-prepare-classification-data` (linformer_plugin/cli.py);
--help lists every flag.
"""

import sys

from linformer_plugin.cli import main_prepare_classification_data as main

if __name__ == "__main__":
    sys.exit(main())
