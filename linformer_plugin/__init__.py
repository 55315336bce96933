"""Linformer for fairseq: ``fairseq-train --user-dir linformer_plugin --arch linformer_roberta_base``.

Importing this package registers the ``linformer_roberta`` model and its architectures, and
lets fairseq's checkpoint loader read fairseq checkpoints on torch >= 2.6 (and name a truncated one),
on every rank of a data-parallel run; ``fairseq-train --bf16`` trains on the run's own device
rather than asking for a TPU (fairseq 0.12's parser adds ``--tpu``).
"""

import os

from .checkpoint import allow_fairseq_checkpoints, explain_unreadable_checkpoints, trust_checkpoints_broadcast_by_rank0
from .precision import keep_bf16_off_tpu

allow_fairseq_checkpoints()
explain_unreadable_checkpoints()
trust_checkpoints_broadcast_by_rank0()
keep_bf16_off_tpu()

from . import models  # noqa: E402,F401  (registers the model)

__version__ = "0.1.0"
USER_DIR = os.path.dirname(os.path.abspath(__file__))
__all__ = ["USER_DIR", "__version__", "models"]
