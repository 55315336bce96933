"""A candidate for issue #16: the padded linear projection E X as Triton kernels that read each
sentence's columns of E in place and stop at its last real token, against the library's path
(``linformer_plugin.modules.padding.project_per_sentence``: E's columns gathered per sentence, then a
batched GEMM) and the unpadded GEMM. A prototype kept out of the library until the GPU says it pays.

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

It first checks the kernels against float64 (forward, grad x, grad E; right, left, interior and no
padding; x S-major and B-major; NaN at the pads, which must not be read) and times nothing if one
disagrees. Then, fp16, 65,536 tokens a batch, right-padded (lengths spread evenly over (n/2, n], as
examples.benchmarks.attention --padded) and unpadded: median forward and forward + backward time of
the projection alone (``gemm``: the unpadded path, weight @ x; ``columns``: the library's padded
path; ``triton``) and of the whole attention module (examples.benchmarks.attention's ``ours``, k = 128,
768 channels, 12 heads: unpadded, padded, and padded with these kernels patched in), the numbers of
the issue's goal (padded <= 1.1x unpadded).
"""

from contextlib import contextmanager, nullcontext

import argparse
import json
import os
import sys

import torch

if "--cpu" in sys.argv:  # Triton's interpreter runs the kernels on the CPU: set before its import
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from examples.benchmarks.attention import _median_ms, padding_mask  # noqa: E402

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


def project_per_sentence(x, weight, padding_mask, plan=None):
    """The library's contract (rows x B x C), through the kernels; weight sliced and cast here. The
    plan is kept on the mask, as the library keeps its own (every layer gets the same mask)."""
    from linformer_plugin.modules.padding import _kept_on_mask

    plan = plan or _kept_on_mask(padding_mask, "_triton_projection_plan", (), lambda: Plan(padding_mask))
    return ProjectPerSentence.apply(x, weight[:, :x.size(0)].to(x.dtype), plan)


# ----------------------------------------------------------------------------- checks and timings


def reference(x, weight, padding_mask):
    """Sentence by sentence in float64: real token number p meets column p."""
    out = []
    for b in range(x.size(1)):
        tokens = x[:, b][~padding_mask[b]].double()
        out.append(weight[:, :tokens.size(0)].double() @ tokens)
    return torch.stack(out, dim=1)


def padding_mask_for(kind, seq_len, bsz, device, generator=None):
    """B x S, True at pads, with examples.benchmarks.attention's lengths (sentence b has n - b n / (2B)
    tokens) on the right or the left; "interior": each sentence's pads at a random place; "none"."""
    if kind in ("right", "left"):
        return padding_mask(seq_len, bsz, device, kind)
    mask = torch.zeros(bsz, seq_len, dtype=torch.bool)
    if kind == "interior":
        for b, length in enumerate((~padding_mask(seq_len, bsz, "cpu")).sum(dim=1).tolist()):
            start = int(torch.randint(0, length + 1, (1,), generator=generator))
            mask[b, start:start + seq_len - length] = True
    return mask.to(device)


def check(device, seq_len, bsz, channels, rows, kind, dtype, b_major=False, seed=0):
    """Largest relative errors of forward, grad x and grad E against float64."""
    g = torch.Generator().manual_seed(seed)
    mask = padding_mask_for(kind, seq_len, bsz, device, g)
    shape = (bsz, seq_len, channels) if b_major else (seq_len, bsz, channels)
    x = torch.randn(*shape, generator=g).to(device=device, dtype=dtype)
    x = x.transpose(0, 1) if b_major else x
    x[mask.T] = float("nan")  # pads must not be read
    x.requires_grad_(True)
    weight = (torch.randn(rows, seq_len + 7, generator=g) / seq_len ** 0.5).to(device=device, dtype=dtype)
    weight.requires_grad_(True)
    out = project_per_sentence(x, weight, mask)
    grad = torch.randn(out.shape, generator=g).to(device=device, dtype=dtype)
    out.backward(grad)
    xr = torch.nan_to_num(x.detach().double()).requires_grad_(True)
    wr = weight.detach().double().requires_grad_(True)
    ref = reference(xr, wr, mask)
    ref.backward(grad.double())

    def rel(a, b):
        a = torch.nan_to_num(a.double(), nan=1e30)
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))

    gx_ref = xr.grad.clone()
    return {"forward": rel(out.detach(), ref.detach()), "grad_x": rel(x.grad, gx_ref), "grad_w": rel(weight.grad, wr.grad),
            "grad_x_pads_zero": bool((x.grad.transpose(0, 1)[mask] == 0).all()) if b_major
            else bool((x.grad[mask.T] == 0).all())}


def time_case(seq_len, tokens, channels, rows, kind, dtype, b_major, repeat, warmup):
    from linformer_plugin.modules.padding import project_per_sentence as library_path

    device = torch.device("cuda")
    bsz = max(1, tokens // seq_len)
    mask = padding_mask_for(kind, seq_len, bsz, device)
    shape = (bsz, seq_len, channels) if b_major else (seq_len, bsz, channels)
    x = torch.randn(*shape, device=device, dtype=dtype)
    x = (x.transpose(0, 1) if b_major else x).requires_grad_(True)
    weight = (torch.randn(rows, seq_len, device=device) / seq_len ** 0.5).requires_grad_(True)
    plan = Plan(mask)
    impls = {
        "gemm": lambda: (weight[:, :seq_len].to(dtype) @ x.reshape(seq_len, -1)).view(rows, bsz, channels),
        "columns": lambda: library_path(x, weight, mask),
        "triton": lambda: project_per_sentence(x, weight, mask, plan),
    }
    grad = torch.randn(rows, bsz, channels, device=device, dtype=dtype)
    record = {"n": seq_len, "batch": bsz, "channels": channels, "rows": rows, "padding": kind,
              "dtype": str(dtype).replace("torch.", ""), "x_layout": "B-major" if b_major else "S-major",
              "real_tokens": int((~mask).sum())}

    def clear_grads():
        x.grad = weight.grad = None

    for name, fn in impls.items():
        with torch.no_grad():
            record[f"{name}_forward_ms"] = round(_median_ms(fn, device, warmup, repeat), 4)
        record[f"{name}_train_ms"] = round(_median_ms(lambda: fn().backward(grad), device, warmup, repeat,
                                                      before=clear_grads), 4)
    return record


@contextmanager
def kernels_in_the_library():
    """The library's padded linear projection replaced by these kernels (for the module timings)."""
    import linformer_plugin.modules.sequence_projection as sequence_projection

    library = sequence_projection.project_per_sentence
    sequence_projection.project_per_sentence = project_per_sentence
    try:
        yield
    finally:
        sequence_projection.project_per_sentence = library


def check_module(device, dtype, seed=0):
    """The attention module with the kernels patched in against the library's own padded path: the
    largest relative difference of the output and of every gradient (right and left padding)."""
    from linformer_plugin.modules import LinformerSelfAttention

    worst = 0.0
    for kind in ("right", "left"):
        torch.manual_seed(seed)
        module = LinformerSelfAttention(64, 4, max_positions=48, compressed_dim=16).to(device=device, dtype=dtype)
        module.eval()  # no dropout: both runs see the same products
        x = torch.randn(40, 3, 64, device=device, dtype=dtype)
        mask = padding_mask_for(kind, 40, 3, device)
        results = []
        for patched in (False, True):
            module.zero_grad(set_to_none=True)
            xi = x.clone().requires_grad_(True)
            with kernels_in_the_library() if patched else nullcontext():
                out, _ = module(xi, xi, xi, key_padding_mask=mask, need_weights=False)
            out.float().square().sum().backward()
            results.append([out.detach(), xi.grad] + [p.grad for p in module.parameters() if p.grad is not None])
        # k_proj's bias gets a zero gradient (softmax ignores a shift): measure against the largest
        scale = max(float(b.abs().max()) for b in results[0])
        for a, b in zip(*results):
            worst = max(worst, float((a - b).abs().max() / b.abs().max().clamp_min(1e-3 * scale)))
    return worst


def time_module(seq_len, tokens, repeat, warmup):
    """The attention module (examples.benchmarks.attention's ``ours``): unpadded, padded, padded with the kernels."""
    from examples.benchmarks.attention import time_case as attention_case

    records = []
    for name, padding, patched in (("unpadded", "none", False), ("padded", "right", False),
                                   ("padded_triton", "right", True)):
        with kernels_in_the_library() if patched else nullcontext():
            r = attention_case("ours", seq_len, 128, "fp16", tokens, padding=padding, warmup=warmup, repeat=repeat)
        records.append({"module": name, **r})
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="check on the CPU with Triton's interpreter (small sizes)")
    p.add_argument("--check-only", action="store_true")
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192, 65536])
    p.add_argument("--tokens", type=int, default=65536)
    p.add_argument("--channels", type=int, default=768)
    p.add_argument("--rows", type=int, default=256, help="rows of E (2 k: E and F stacked; default k = 128)")
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--out-dir")
    args = p.parse_args(argv)
    device = torch.device("cpu" if args.cpu else "cuda")
    checks = []
    cases = ([(40, 3, 24, 20), (33, 2, 40, 48)] if args.cpu else [(512, 8, 768, 256), (2048, 2, 768, 256)])
    dtypes = [torch.float32] if args.cpu else [torch.float32, torch.float16]
    for seq_len, bsz, channels, rows in cases:
        for kind in ("right", "left", "interior", "none"):
            for dtype in dtypes:
                for b_major in (False, True):
                    errors = check(device, seq_len, bsz, channels, rows, kind, dtype, b_major)
                    limit = 5e-3 if dtype == torch.float32 else 2e-2  # tf32 / fp16 products, fp32 sums
                    ok = (max(errors["forward"], errors["grad_x"], errors["grad_w"]) < limit
                          and errors["grad_x_pads_zero"])
                    checks.append({"n": seq_len, "batch": bsz, "channels": channels, "rows": rows, "padding": kind,
                                   "dtype": str(dtype), "b_major": b_major, **errors, "ok": ok})
                    print(json.dumps(checks[-1]), flush=True)
    for dtype in dtypes:
        difference = check_module(device, dtype)
        limit = 5e-3 if dtype == torch.float32 else 2e-2
        checks.append({"module": "LinformerSelfAttention, kernels patched in vs the library", "dtype": str(dtype),
                       "max_relative_difference": difference, "ok": difference < limit})
        print(json.dumps(checks[-1]), flush=True)
    if not all(c["ok"] for c in checks):
        print("the kernels disagree with the float64 reference: no timings", file=sys.stderr)
        return 1
    if args.check_only:
        return 0
    records = []
    for seq_len in args.lengths:
        for kind in ("none", "right"):
            for b_major in (False, True):
                records.append(time_case(seq_len, args.tokens, args.channels, args.rows, kind, torch.float16,
                                         b_major, args.repeat, args.warmup))
                print(json.dumps(records[-1]), flush=True)
                if args.out_dir:
                    os.makedirs(args.out_dir, exist_ok=True)
                    with open(os.path.join(args.out_dir, "results.jsonl"), "w") as f:
                        f.writelines(json.dumps(r) + "\n" for r in checks + records)
    for seq_len in args.lengths:
        for record in time_module(seq_len, args.tokens, args.repeat, args.warmup):
            records.append(record)
            print(json.dumps(record), flush=True)
        if args.out_dir:
            with open(os.path.join(args.out_dir, "results.jsonl"), "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in checks + records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
