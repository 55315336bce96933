"""A candidate for issue #16: under right padding, zero the pads and take the unpadded path's one GEMM.

Same contract as ``linformer_plugin.modules.padding.project_per_sentence``. Under right padding (what
fairseq and the hub produce) real token number p sits at position p, so it meets column p of E as in
an unpadded batch: E[:, :S] @ (x with its pads zeroed) is exact, one pass over x and one GEMM. Finding
right padding reads one bool back from the device, once per mask (kept on it). The zeroed copy is not
kept for the backward (it is made again from x, which q_proj keeps anyway); other paddings take the
library's path. Measured slower than the library's path on the module's 65,536-token batches: the
pass over x costs more than the library's pass over E's per-sentence columns, a third of x's size for
k = 128 (examples/benchmarks/results/2026-12-01-padded-projection-candidates/). The library now zeroes
the pads of small batches in the attention itself, with differentiable ops and the zeroed tensor
shared with q_proj (examples/benchmarks/results/2026-12-01-right-padding-zeroed-pads/).

    python -m examples.benchmarks.zeroed_pads_projection --out-dir OUT          # GPU: check, then time
    python -m examples.benchmarks.zeroed_pads_projection --check-only --cpu     # CPU: float64 and fp32

Checks and timings: examples.benchmarks.projection_candidates (the same for every candidate).
"""

import sys

import torch
from torch import Tensor

from examples.benchmarks.projection_candidates import in_matmul_dtype, main_of
from linformer_plugin.modules.padding import project_per_sentence as library_path
from linformer_plugin.modules.padding import right_padded_keep


def _zeroed(x: Tensor, keep: Tensor) -> Tensor:
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # S-major, whatever x's layout
    return torch.mul(x, keep.to(x.dtype), out=out)


class ZeroedPadsProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, keep: Tensor) -> Tensor:
        seq_len, bsz, channels = x.shape
        ctx.save_for_backward(x, weight, keep)
        return (weight @ _zeroed(x, keep).view(seq_len, -1)).view(-1, bsz, channels)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, keep = ctx.saved_tensors
        seq_len, bsz, channels = x.shape
        grad_2d = grad.reshape(grad.size(0), -1)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:  # pads get no gradient
            grad_x = (weight.T @ grad_2d).view(seq_len, bsz, channels).mul_(keep.to(grad.dtype))
        if ctx.needs_input_grad[1]:
            grad_weight = grad_2d @ _zeroed(x, keep).view(seq_len, -1).T
        return grad_x, grad_weight, None


def project_per_sentence(x: Tensor, weight: Tensor, padding_mask: Tensor) -> Tensor:
    keep = right_padded_keep(padding_mask)  # S x B x 1 under right padding (one host read per mask), else None
    if keep is None:
        return library_path(x, weight, padding_mask)
    return in_matmul_dtype(ZeroedPadsProjection.apply, x, weight, keep)


def main(argv=None):
    # pads are read (times zero), as by the library's path: the check fills them with finite values
    return main_of(__doc__, "zeroed_pads", project_per_sentence, argv, cpu_dtypes=(torch.float64, torch.float32),
                   nan_pads=False)


if __name__ == "__main__":
    sys.exit(main())
