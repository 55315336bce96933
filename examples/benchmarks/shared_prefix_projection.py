"""A candidate for issue #16: the padded linear projection E X with one GEMM for the positions every
sentence fills, against the library's path (``linformer_plugin.modules.padding.project_per_sentence``:
E's columns per sentence for every position, then a batched GEMM).

Same contract as ``project_per_sentence``. The positions before any sentence's first pad (``shared``:
under right padding the shortest sentence's length, rounded down to a multiple of 8, as cuBLAS's fast
fp16 GEMMs want K) are real tokens in every sentence, and token p meets column p there: one GEMM, as
an unpadded batch takes. Only the tail, T = S - shared positions, takes per-sentence columns (the
library's, on the tail). Finding ``shared`` reads one number back from the device, once per mask
(kept on it, as the library keeps its plan). The tail's batched GEMM writes the output first, the
shared part's GEMM adds onto its contiguous memory (``addmm_``); the backward's shared part reads the
gradient through strides. fairseq batches sentences of similar lengths, so there the tail is short;
examples.benchmarks.attention's padded batches spread lengths over (n/2, n], half the positions in the
tail. Measured slower than the library's path at n = 512 in each form tried (results under
examples/benchmarks/results/2026-11-30-shared-prefix-projection/ and
2026-12-01-padded-projection-candidates/).

    python -m examples.benchmarks.shared_prefix_projection --out-dir OUT          # GPU: check, then time
    python -m examples.benchmarks.shared_prefix_projection --check-only --cpu     # CPU: float64 and fp32

Checks and timings: examples.benchmarks.projection_candidates (the same for every candidate).
"""

import sys
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from examples.benchmarks.projection_candidates import in_matmul_dtype, main_of
from linformer_plugin.modules.padding import (SentenceColumns, _build_columns, _columns_per_sentence, _kept_on_mask,
                                              _summed_over_sentences)


class Plan(NamedTuple):
    shared: int
    tail: SentenceColumns  # the library's plan for the tail: token (b, shared + p) meets column shared + column[b, p]


def build_plan(padding_mask: Tensor) -> Plan:
    seq_len = padding_mask.size(1)
    first_pad = torch.where(padding_mask.any(dim=1), padding_mask.int().argmax(dim=1), seq_len)
    # the one host sync; a multiple of 8: cuBLAS's fast fp16 GEMMs want K = shared and S - shared so
    shared = int(first_pad.min()) // 8 * 8
    # every token before `shared` is real, so the tail's own token numbers are its columns past `shared`
    tail = _build_columns(padding_mask[:, shared:], find_right_padding=True)
    return Plan(shared, tail)


def _as_matrix(t: Tensor) -> Optional[Tensor]:
    """t (S x B x C) as an S x (B C) matrix without a copy, or None (B-major memory)."""
    return t.view(t.size(0), -1) if t.is_contiguous() else None


class SharedPrefixProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, plan: Plan) -> Tensor:
        seq_len, bsz, channels = x.shape
        shared = plan.shared
        ctx.plan = plan
        ctx.save_for_backward(x, weight)
        out = x.new_empty(weight.size(0), bsz, channels)
        out_b = out.transpose(0, 1)  # B x rows x C
        if shared < seq_len:  # the tail first: the shared part adds onto it
            torch.bmm(_columns_per_sentence(weight[:, shared:], plan.tail, seq_len - shared),
                      x[shared:].transpose(0, 1), out=out_b)
        if shared:
            beta = 1 if shared < seq_len else 0  # (out is empty memory: beta 0 never reads it)
            head = _as_matrix(x[:shared])
            if head is not None:  # one GEMM on out's contiguous memory
                out.view(out.size(0), -1).addmm_(weight[:, :shared], head, beta=beta)
            else:  # B-major x (fairseq's first layer): E broadcast over the sentences, no copy of x
                out_b.baddbmm_(weight[:, :shared].expand(bsz, -1, -1), x[:shared].transpose(0, 1), beta=beta)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        plan = ctx.plan
        shared = plan.shared
        (seq_len, bsz, channels), rows = x.shape, weight.size(0)
        grad_x = grad_weight = None
        grad_b = grad.transpose(0, 1)  # B x rows x C
        grad_2d = grad.view(rows, -1) if grad.is_contiguous() else None
        if ctx.needs_input_grad[0]:  # pads meet zero columns: their gradient is 0
            grad_x = x.new_empty(seq_len, bsz, channels)
            if shared and grad_2d is not None:
                torch.mm(weight[:, :shared].T, grad_2d, out=grad_x[:shared].view(shared, -1))
            elif shared:
                torch.bmm(weight[:, :shared].T.expand(bsz, -1, -1), grad_b, out=grad_x[:shared].transpose(0, 1))
            if shared < seq_len:
                torch.bmm(_columns_per_sentence(weight[:, shared:], plan.tail, seq_len - shared).transpose(1, 2), grad_b,
                          out=grad_x[shared:].transpose(0, 1))
        if ctx.needs_input_grad[1]:
            grad_weight = weight.new_empty(rows, seq_len)
            if shared:
                head = _as_matrix(x[:shared])
                if head is not None and grad_2d is not None:
                    grad_weight[:, :shared] = grad_2d @ head.T
                else:
                    grad_weight[:, :shared] = torch.bmm(grad_b, x[:shared].permute(1, 2, 0)).sum(dim=0)
            if shared < seq_len:  # the library's sum over the sentences, on the tail
                grad_weight[:, shared:] = _summed_over_sentences(x[shared:], grad, plan.tail)
        return grad_x, grad_weight, None


def project_per_sentence(x: Tensor, weight: Tensor, padding_mask: Tensor) -> Tensor:
    """The library's contract (rows x B x C); the plan kept on the mask (every layer gets the same one)."""
    plan = _kept_on_mask(padding_mask, "_shared_prefix_plan", (), lambda: build_plan(padding_mask))
    return in_matmul_dtype(SharedPrefixProjection.apply, x, weight, plan)


def main(argv=None):
    # pads are read (times zero columns), as by the library's path: the check fills them with finite values
    return main_of(__doc__, "shared_prefix", project_per_sentence, argv, cpu_dtypes=(torch.float64, torch.float32),
                   nan_pads=False)


if __name__ == "__main__":
    sys.exit(main())
