"""A candidate for issue #16: the padded linear projection E X as Triton kernels that read each
sentence's columns of E in place and stop at its last real token, against the library's path
(``linformer_plugin.modules.padding.project_per_sentence``: E's columns gathered per sentence, then a
batched GEMM) and the unpadded GEMM. Kept out of the library: on an H200 it did not pay (docs/benchmarks.md).

Same contract as ``project_per_sentence``: x (S x B x C, any strides), E (rows x n, n >= S), the
padding mask (B x S, True at pads); rows x B x C, where real token number p of each sentence meets
column p of E and pads meet nothing. Three kernels, no host sync, nothing B x S x rows materialised:
  forward   out[:, b] = sum over the tokens of sentence b of E[:, column] x[p, b]; the loop over p
            ends at the sentence's last real token (right padding: its length, so pads cost nothing)
  grad x    grad_x[p, b] = E[:, column]^T grad[:, b] (0 at pads)
  grad E    grad_E[:, q] = sum over sentences b with a token number q of grad[:, b] x[p(b, q), b]^T;
            the sentences split over programs, partial sums in float32 added after (deterministic)

    python -m examples.benchmarks.triton_projection --out-dir OUT          # GPU: check, then time
    python -m examples.benchmarks.triton_projection --check-only --cpu     # CPU: Triton's interpreter

Checks and timings: examples.benchmarks.projection_candidates (the same for every candidate).
"""

import os
import sys

import torch

if "--cpu" in sys.argv:  # Triton's interpreter runs the kernels on the CPU: set before its import
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from examples.benchmarks.projection_candidates import main_of  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _forward_kernel(x, w, column, last, out, S, R, C, sx_s, sx_b, sx_c, sw_r, sw_n, so_r, so_b, so_c,
                    BR: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr):
    b = tl.program_id(1)
    tiles_c = tl.cdiv(C, BC)
    r = (tl.program_id(0) // tiles_c) * BR + tl.arange(0, BR)
    c = (tl.program_id(0) % tiles_c) * BC + tl.arange(0, BC)
    end = tl.load(last + b)  # one past the sentence's last real token
    acc = tl.zeros((BR, BC), dtype=tl.float32)
    for p0 in range(0, end, BP):
        p = p0 + tl.arange(0, BP)
        q = tl.load(column + b * S + p, mask=p < end, other=S)  # S: a pad, or past the end
        real = q < S
        wt = tl.load(w + r[:, None] * sw_r + q[None, :] * sw_n, mask=(r[:, None] < R) & real[None, :], other=0.0)
        xt = tl.load(x + p[:, None] * sx_s + b * sx_b + c[None, :] * sx_c, mask=real[:, None] & (c[None, :] < C),
                     other=0.0)  # pads are not read: a NaN there stays out
        acc += tl.dot(wt, xt)
    tl.store(out + r[:, None] * so_r + b * so_b + c[None, :] * so_c, acc.to(out.dtype.element_ty),
             mask=(r[:, None] < R) & (c[None, :] < C))


@triton.jit
def _grad_x_kernel(g, w, column, last, gx, S, R, C, sg_r, sg_b, sg_c, sw_r, sw_n, sgx_s, sgx_b, sgx_c,
                   BP: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
    b = tl.program_id(1)
    tiles_c = tl.cdiv(C, BC)
    p0 = (tl.program_id(0) // tiles_c) * BP
    p = p0 + tl.arange(0, BP)
    c = (tl.program_id(0) % tiles_c) * BC + tl.arange(0, BC)
    q = tl.load(column + b * S + p, mask=p < S, other=S)
    real = q < S
    rows = tl.where(p0 < tl.load(last + b), R, 0)  # a tile past the last real token: zeros, no loop
    acc = tl.zeros((BP, BC), dtype=tl.float32)
    for r0 in range(0, rows, BR):
        r = r0 + tl.arange(0, BR)
        wt = tl.load(w + q[:, None] * sw_n + r[None, :] * sw_r, mask=real[:, None] & (r[None, :] < R), other=0.0)
        gt = tl.load(g + r[:, None] * sg_r + b * sg_b + c[None, :] * sg_c, mask=(r[:, None] < R) & (c[None, :] < C),
                     other=0.0)
        acc += tl.dot(wt, gt)
    tl.store(gx + p[:, None] * sgx_s + b * sgx_b + c[None, :] * sgx_c, acc.to(gx.dtype.element_ty),
             mask=(p[:, None] < S) & (c[None, :] < C))


@triton.jit
def _grad_w_kernel(g, x, position, lengths, part, S, R, C, B, per_split, sg_r, sg_b, sg_c, sx_s, sx_b, sx_c,
                   BR: tl.constexpr, BQ: tl.constexpr, BC: tl.constexpr):
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    q0 = tl.program_id(1) * BQ
    q = q0 + tl.arange(0, BQ)
    split = tl.program_id(2)
    acc = tl.zeros((BR, BQ), dtype=tl.float32)
    for b in range(split * per_split, tl.minimum(B, (split + 1) * per_split)):
        length = tl.load(lengths + b)
        cs = tl.where(q0 < length, C, 0)  # no token number in this tile: skip the sentence
        p = tl.load(position + b * S + q, mask=q < length, other=0)  # where token number q sits
        real = q < length
        for c0 in range(0, cs, BC):
            c = c0 + tl.arange(0, BC)
            gt = tl.load(g + r[:, None] * sg_r + b * sg_b + c[None, :] * sg_c,
                         mask=(r[:, None] < R) & (c[None, :] < C), other=0.0)
            xt = tl.load(x + p[None, :] * sx_s + b * sx_b + c[:, None] * sx_c, mask=(c[:, None] < C) & real[None, :],
                         other=0.0)
            acc += tl.dot(gt, xt)
    tl.store(part + split * R * S + r[:, None] * S + q[None, :], acc, mask=(r[:, None] < R) & (q[None, :] < S))


# block sizes: the interpreter wants small tiles; on a GPU the autotuner picks
_SMALL = {"forward": dict(BR=16, BP=16, BC=16), "grad_x": dict(BP=16, BR=16, BC=16), "grad_w": dict(BR=16, BQ=16, BC=16)}


def _configs(names, sizes, warps=(4, 8), stages=(3,)):
    return [triton.Config(dict(zip(names, s)), num_warps=w, num_stages=st) for s in sizes for w in warps for st in stages]


if INTERPRET:
    _kernels = {"forward": _forward_kernel, "grad_x": _grad_x_kernel, "grad_w": _grad_w_kernel}
else:
    _kernels = {
        "forward": triton.autotune(_configs(("BR", "BP", "BC"), [(64, 64, 64), (128, 64, 64), (64, 32, 128),
                                                                 (128, 32, 128), (64, 64, 128)]),
                                   key=["S", "R", "C"])(_forward_kernel),
        "grad_x": triton.autotune(_configs(("BP", "BR", "BC"), [(64, 64, 64), (128, 64, 64), (64, 32, 128),
                                                                (128, 32, 128)]), key=["S", "R", "C"])(_grad_x_kernel),
        "grad_w": triton.autotune(_configs(("BR", "BQ", "BC"), [(64, 64, 64), (128, 64, 64), (64, 128, 64),
                                                                (128, 128, 32)]), key=["R", "S", "C"])(_grad_w_kernel),
    }


def _launch(name, grid, *args):
    kernel = _kernels[name]
    if INTERPRET:
        kernel[grid(_SMALL[name])](*args, **_SMALL[name])
    else:
        kernel[grid](*args)


class Plan:
    """Per padding mask (B x S, True at pads): each token's column (S at pads), one past each
    sentence's last real token, each sentence's length, where its token number q sits."""

    def __init__(self, padding_mask):
        bsz, seq_len = padding_mask.shape
        keep = ~padding_mask
        number = keep.cumsum(dim=1) - 1
        self.column = torch.where(keep, number, seq_len).to(torch.int32).contiguous()
        positions = torch.arange(seq_len, device=padding_mask.device)
        self.last = (torch.where(keep, positions + 1, 0).amax(dim=1)).to(torch.int32)
        self.lengths = keep.sum(dim=1).to(torch.int32)
        position = torch.zeros(bsz, seq_len + 1, dtype=torch.int32, device=padding_mask.device)
        position.scatter_(1, torch.where(keep, number, seq_len).long(), positions.expand(bsz, -1).to(torch.int32))
        self.position = position[:, :seq_len].contiguous()


class ProjectPerSentence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, plan):
        seq_len, bsz, channels = x.shape
        rows = weight.size(0)
        out = x.new_empty(rows, bsz, channels)
        _launch("forward", lambda m: (triton.cdiv(rows, m["BR"]) * triton.cdiv(channels, m["BC"]), bsz),
                x, weight, plan.column, plan.last, out, seq_len, rows, channels, *x.stride(), *weight.stride(),
                *out.stride())
        ctx.save_for_backward(x, weight)
        ctx.plan = plan
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        plan = ctx.plan
        (seq_len, bsz, channels), rows = x.shape, weight.size(0)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x)
            _launch("grad_x", lambda m: (triton.cdiv(seq_len, m["BP"]) * triton.cdiv(channels, m["BC"]), bsz),
                    grad, weight, plan.column, plan.last, grad_x, seq_len, rows, channels, *grad.stride(),
                    *weight.stride(), *grad_x.stride())
        if ctx.needs_input_grad[1]:
            tiles = triton.cdiv(rows, 64) * triton.cdiv(seq_len, 64)
            splits = max(1, min(bsz, (4 * _sm_count(x.device)) // max(1, tiles)))
            per_split = triton.cdiv(bsz, splits)
            splits = triton.cdiv(bsz, per_split)
            part = torch.empty(splits, rows, seq_len, dtype=torch.float32, device=x.device)
            _launch("grad_w", lambda m: (triton.cdiv(rows, m["BR"]), triton.cdiv(seq_len, m["BQ"]), splits),
                    grad, x, plan.position, plan.lengths, part, seq_len, rows, channels, bsz, per_split,
                    *grad.stride(), *x.stride())
            grad_w = part.sum(dim=0).to(weight.dtype)
        return grad_x, grad_w, None


def _sm_count(device):
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def project_per_sentence(x, weight, padding_mask):
    """The library's contract (rows x B x C), through the kernels; weight sliced and cast here. The
    plan is kept on the mask, as the library keeps its own (every layer gets the same mask)."""
    from linformer_plugin.modules.padding import _kept_on_mask

    plan = _kept_on_mask(padding_mask, "_triton_projection_plan", (), lambda: Plan(padding_mask))
    return ProjectPerSentence.apply(x, weight[:, :x.size(0)].to(x.dtype), plan)


def main(argv=None):
    return main_of(__doc__, "triton", project_per_sentence, argv)


if __name__ == "__main__":
    sys.exit(main())
