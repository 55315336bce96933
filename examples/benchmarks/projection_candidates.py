"""Checks and timings shared by the candidates for the padded linear projection (issue #16):
examples.benchmarks.triton_projection and examples.benchmarks.shared_prefix_projection.

A candidate is a function with ``linformer_plugin.modules.padding.project_per_sentence``'s contract:
x (S x B x C, any strides), E (rows x n, n >= S), the padding mask (B x S, True at pads) -> rows x B x C,
where real token number p of each sentence meets column p of E and pads meet nothing. ``run`` checks it
against float64 (forward, grad x, grad E; right, left, interior and no padding; x S-major and B-major;
NaN at the pads for a candidate that must not read them) and patched into LinformerSelfAttention against the library's
own path, and times nothing if one disagrees. Then, fp16, right-padded (lengths spread evenly over
(n/2, n], as examples.benchmarks.attention --padded) and unpadded: the median forward and forward +
backward time of the projection alone (``gemm``: the unpadded path, weight @ x; ``columns``: the
library's padded path; the candidate) and of the whole attention module (examples.benchmarks.attention's
``ours``, k = 128, 768 channels, 12 heads: unpadded, padded, and padded with the candidate patched in,
``--rounds`` times in turn), the numbers of the issue's goal (padded <= 1.1x unpadded).
"""

from contextlib import contextmanager, nullcontext

import argparse
import json
import os
import sys

import torch

from examples.benchmarks.attention import _median_ms, padding_mask


def in_matmul_dtype(apply, x, weight, *rest):
    """``apply(x, weight[:, :S], *rest)`` in the dtype a matmul would take (autocast's where it is on),
    as the library's project_per_sentence does: the wrapper every candidate shares."""
    from linformer_plugin.modules.padding import autocast_dtype

    weight = weight[:, :x.size(0)]
    dtype = autocast_dtype(x.device.type)
    if dtype is None:
        return apply(x, weight.to(x.dtype), *rest)
    with torch.autocast(x.device.type, enabled=False):
        return apply(x.to(dtype), weight.to(dtype), *rest)


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


def check(candidate, device, seq_len, bsz, channels, rows, kind, dtype, b_major=False, seed=0, nan_pads=True):
    """Largest relative errors of the candidate's forward, grad x and grad E against float64. With
    ``nan_pads`` the pads hold NaN, which a candidate that never reads them passes; the library's path
    multiplies them by zero columns, so it needs finite pads (fairseq's are)."""
    g = torch.Generator().manual_seed(seed)
    mask = padding_mask_for(kind, seq_len, bsz, device, g)
    shape = (bsz, seq_len, channels) if b_major else (seq_len, bsz, channels)
    x = torch.randn(*shape, generator=g).to(device=device, dtype=dtype)
    x = x.transpose(0, 1) if b_major else x
    if nan_pads:
        x[mask.T] = float("nan")  # pads must not be read
    x.requires_grad_(True)
    weight = (torch.randn(rows, seq_len + 7, generator=g) / seq_len ** 0.5).to(device=device, dtype=dtype)
    weight.requires_grad_(True)
    out = candidate(x, weight, mask)
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


def time_projection(name, candidate, seq_len, tokens, channels, rows, kind, dtype, b_major, repeat, warmup):
    """The projection alone: the unpadded GEMM, the library's padded path and the candidate."""
    from linformer_plugin.modules.padding import project_per_sentence as library_path

    device = torch.device("cuda")
    bsz = max(1, tokens // seq_len)
    mask = padding_mask_for(kind, seq_len, bsz, device)
    shape = (bsz, seq_len, channels) if b_major else (seq_len, bsz, channels)
    x = torch.randn(*shape, device=device, dtype=dtype)
    x = (x.transpose(0, 1) if b_major else x).requires_grad_(True)
    weight = (torch.randn(rows, seq_len, device=device) / seq_len ** 0.5).requires_grad_(True)
    impls = {
        "gemm": lambda: (weight[:, :seq_len].to(dtype) @ x.reshape(seq_len, -1)).view(rows, bsz, channels),
        "columns": lambda: library_path(x, weight, mask),
        name: lambda: candidate(x, weight, mask),
    }
    grad = torch.randn(rows, bsz, channels, device=device, dtype=dtype)
    record = {"n": seq_len, "batch": bsz, "channels": channels, "rows": rows, "padding": kind,
              "dtype": str(dtype).replace("torch.", ""), "x_layout": "B-major" if b_major else "S-major",
              "real_tokens": int((~mask).sum())}

    def clear_grads():
        x.grad = weight.grad = None

    for impl, fn in impls.items():
        with torch.no_grad():
            record[f"{impl}_forward_ms"] = round(_median_ms(fn, device, warmup, repeat), 4)
        record[f"{impl}_train_ms"] = round(_median_ms(lambda: fn().backward(grad), device, warmup, repeat,
                                                      before=clear_grads), 4)
    return record


@contextmanager
def patched(candidate):
    """The library's padded linear projection replaced by the candidate (for the module's numbers)."""
    import linformer_plugin.modules.sequence_projection as sequence_projection

    library = sequence_projection.project_per_sentence
    sequence_projection.project_per_sentence = candidate
    try:
        yield
    finally:
        sequence_projection.project_per_sentence = library


def check_module(candidate, device, dtype, seed=0):
    """The attention module with the candidate patched in against the library's own padded path: the
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
        for candidate_in in (False, True):
            module.zero_grad(set_to_none=True)
            xi = x.clone().requires_grad_(True)
            with patched(candidate) if candidate_in else nullcontext():
                out, _ = module(xi, xi, xi, key_padding_mask=mask, need_weights=False)
            out.float().square().sum().backward()
            results.append([out.detach(), xi.grad] + [p.grad for p in module.parameters() if p.grad is not None])
        # k_proj's bias gets a zero gradient (softmax ignores a shift): measure against the largest
        scale = max(float(b.abs().max()) for b in results[0])
        for a, b in zip(*results):
            worst = max(worst, float((a - b).abs().max() / b.abs().max().clamp_min(1e-3 * scale)))
    return worst


def time_module(name, candidate, seq_len, tokens, repeat, warmup, rounds=1):
    """The attention module (examples.benchmarks.attention's ``ours``): unpadded, padded, and padded with
    the candidate, ``rounds`` times in turn."""
    from examples.benchmarks.attention import time_case as attention_case

    records = []
    for round_ in range(1, rounds + 1):
        for module, padding, candidate_in in (("unpadded", "none", False), ("padded", "right", False),
                                              (f"padded_{name}", "right", True)):
            with patched(candidate) if candidate_in else nullcontext():
                r = attention_case("ours", seq_len, 128, "fp16", tokens, padding=padding, warmup=warmup,
                                   repeat=repeat)
            records.append({"module": module, "round": round_, **r})
    return records


def parser(description):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="check on the CPU (small sizes)")
    p.add_argument("--check-only", action="store_true")
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192, 65536])
    p.add_argument("--tokens", type=int, default=65536,
                   help="tokens a batch; n above tokens / 2 gets 2 n (a batch of one sentence has no pads)")
    p.add_argument("--channels", type=int, default=768)
    p.add_argument("--rows", type=int, default=256, help="rows of E (2 k: E and F stacked; default k = 128)")
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2, help="module timings: rounds of unpadded, padded, candidate")
    p.add_argument("--out-dir")
    return p


def run(name, candidate, args, cpu_dtypes=(torch.float32,), nan_pads=True):
    """Checks (``nan_pads``: see ``check``), then (unless --check-only) timings; prints one JSON line per record and rewrites
    OUT_DIR/results.jsonl after each. Returns the exit status (1: a check failed, nothing timed)."""
    device = torch.device("cpu" if args.cpu else "cuda")
    checks, records = [], []

    def save():
        if args.out_dir:
            os.makedirs(args.out_dir, exist_ok=True)
            with open(os.path.join(args.out_dir, "results.jsonl"), "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in checks + records)

    cases = ([(40, 3, 24, 20), (33, 2, 40, 48)] if args.cpu else [(512, 8, 768, 256), (2048, 2, 768, 256)])
    dtypes = list(cpu_dtypes) if args.cpu else [torch.float32, torch.float16]
    limits = {torch.float64: 1e-10, torch.float32: 5e-3, torch.float16: 2e-2}  # tf32 / fp16 products, fp32 sums
    for seq_len, bsz, channels, rows in cases:
        for kind in ("right", "left", "interior", "none"):
            for dtype in dtypes:
                for b_major in (False, True):
                    errors = check(candidate, device, seq_len, bsz, channels, rows, kind, dtype, b_major,
                                   nan_pads=nan_pads)
                    ok = (max(errors["forward"], errors["grad_x"], errors["grad_w"]) < limits[dtype]
                          and errors["grad_x_pads_zero"])
                    checks.append({"n": seq_len, "batch": bsz, "channels": channels, "rows": rows, "padding": kind,
                                   "dtype": str(dtype), "b_major": b_major, **errors, "ok": ok})
                    print(json.dumps(checks[-1]), flush=True)
    for dtype in dtypes:
        difference = check_module(candidate, device, dtype)
        checks.append({"module": f"LinformerSelfAttention, {name} patched in vs the library", "dtype": str(dtype),
                       "max_relative_difference": difference, "ok": difference < limits[dtype]})
        print(json.dumps(checks[-1]), flush=True)
    save()
    if not all(c["ok"] for c in checks):
        print(f"{name} disagrees with the float64 reference: no timings", file=sys.stderr)
        return 1
    if args.check_only:
        return 0
    tokens = {n: max(args.tokens, 2 * n) for n in args.lengths}
    for seq_len in args.lengths:
        for kind in ("none", "right"):
            for b_major in (False, True):
                records.append(time_projection(name, candidate, seq_len, tokens[seq_len], args.channels, args.rows,
                                               kind, torch.float16, b_major, args.repeat, args.warmup))
                print(json.dumps(records[-1]), flush=True)
                save()
    for seq_len in args.lengths:
        for record in time_module(name, candidate, seq_len, tokens[seq_len], args.repeat, args.warmup, args.rounds):
            records.append(record)
            print(json.dumps(record), flush=True)
        save()
    return 0


def main_of(description, name, candidate, argv=None, **options):
    """A candidate module's main: its command line (``parser``), then ``run``."""
    return run(name, candidate, parser(description).parse_args(argv), **options)
