"""Which SDPA kernels ours' attention runs, chosen by a benchmark, to weigh the library's rule
(``linformer_attention._sdpa``: cuDNN's attention only for unpadded training batches, whose one
shape lets cuDNN build its plan once) against the alternatives on the same batches:

    library          the rule as it is
    flash            every call: flash first, then memory-efficient, math, cuDNN
    efficient        every call: memory-efficient first, then flash, math, cuDNN
    cudnn            every call: cuDNN first, then flash, memory-efficient, math
    cudnn-bucketed   cuDNN first, the queries zero-padded to a multiple of 64 and the output cut back
                     (exact: each query attends on its own), so batches whose lengths round to the
                     same multiple share cuDNN's plans

    with sdpa_backends("efficient"):
        ...  # every LinformerSelfAttention in this process

``--sdpa`` of ``examples.benchmarks.attention``, ``profile_attention`` and ``profile_train_step``.
Backends a device lacks are skipped by SDPA (on the CPU: its flash kernel, then math).
"""

from contextlib import contextmanager

import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from linformer_plugin.modules import linformer_attention

BUCKET = 64
_FLASH, _EFFICIENT, _MATH, _CUDNN = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH,
                                     SDPBackend.CUDNN_ATTENTION)
ORDERS = {
    "flash": [_FLASH, _EFFICIENT, _MATH, _CUDNN],
    "efficient": [_EFFICIENT, _FLASH, _MATH, _CUDNN],
    "cudnn": [_CUDNN, _FLASH, _EFFICIENT, _MATH],
}
ORDERS["cudnn-bucketed"] = ORDERS["cudnn"]  # the same order, the queries padded (forced_sdpa)
CHOICES = ("library", *ORDERS)


def forced_sdpa(choice):
    """A stand-in for ``linformer_attention._sdpa`` that runs every call with ``choice``'s order."""
    order, bucket = ORDERS[choice], BUCKET if choice.endswith("-bucketed") else None

    def sdpa(q, k, v, mask, dropout_p, padded):
        length = q.size(-2)
        if bucket and length % bucket:
            q = F.pad(q, (0, 0, 0, bucket - length % bucket))
        with sdpa_kernel(order, set_priority=True):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return out[..., :length, :] if out.size(-2) != length else out

    return sdpa


@contextmanager
def sdpa_backends(choice):
    """Within the block, ours' attention runs SDPA as ``choice`` says (see the module's docstring)."""
    if choice not in CHOICES:
        raise ValueError(f"unknown SDPA choice {choice!r}: give one of {', '.join(CHOICES)}")
    if choice == "library":
        yield
        return
    library = linformer_attention._sdpa
    linformer_attention._sdpa = forced_sdpa(choice)
    try:
        yield
    finally:
        linformer_attention._sdpa = library
