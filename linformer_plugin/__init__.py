"""Linformer for fairseq: ``fairseq-train --user-dir linformer_plugin --arch linformer_roberta_base``.

Importing this package registers the ``linformer_roberta`` model and its architectures, lets
fairseq's checkpoint loader read fairseq checkpoints on torch >= 2.6 (checkpoint.py's allow-list),
and applies the fixes of ``fairseq_fixes`` to fairseq 0.12: a truncated checkpoint is named as
such, every rank of a data-parallel run can resume, ``fairseq-train --bf16`` trains on the
run's own device rather than asking for a TPU, and ``--fp16`` where torch has no CUDA is refused
with the way out. A fix that does not fit the installed fairseq is
skipped with a warning (``fairseq_fixes.APPLIED`` / ``SKIPPED`` say which).
"""

import os

from . import fairseq_fixes
from .checkpoint import allow_fairseq_checkpoints

allow_fairseq_checkpoints()
fairseq_fixes.apply_all()

from . import models  # noqa: E402,F401  (registers the model)

__version__ = "0.1.0"
USER_DIR = os.path.dirname(os.path.abspath(__file__))
__all__ = ["USER_DIR", "__version__", "models"]
