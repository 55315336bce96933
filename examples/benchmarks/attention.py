"""Benchmark the attention module alone: our Linformer against fairseq's reference and full attention.

Implementations (``--impls``):
  ours           linformer_plugin.modules.LinformerSelfAttention(C, H, max_positions=n, compressed_dim=k)
  ours_compiled  the same under torch.compile (only with --compile, or when listed explicitly)
  ours_none      ours with a projection per head (--compressed-sharing none)
  ours_conv      ours with a learned conv projection, kernel = stride = n/k (--compressed-projection conv)
  ours_conv_none the conv projection, one kernel per head
  ours_mean      mean pooling over windows of n/k tokens (--compressed-projection mean)
  ours_max       max pooling over windows of n/k tokens (--compressed-projection max)
                 (the ours_* variants only with --variants, or when listed explicitly)
  fq_linf        fairseq's examples/linformer MultiheadLinearAttention (compressed = n // k)
  fq_mha         fairseq.modules.MultiheadAttention (full attention)
  sdpa_full      full attention: nn.Linear q/k/v/out + F.scaled_dot_product_attention

Each case (impl, n, k, dtype, padding) runs on x of shape (n, B, C) with B = tokens // n and reports
the median inference-forward time, the median forward+backward time and the peak memory of each.
--paddings none right left: unpadded batches, and batches where sentence b has n - b n / (2B) tokens
(lengths spread evenly over (n/2, n]) padded on the right (fairseq's, the hub's) or on the left; every
impl gets the key_padding_mask (B = 1 is refused: one sentence has no pads, so give --tokens 2n or more
for padded batches at the longest n). --padded is --paddings right. --max-positions P builds the Linformers
for inputs up to P tokens and feeds them n: short inputs (n < k) of a model made for longer ones.
--sdpa CHOICE: the SDPA kernels ours runs (examples.benchmarks.sdpa_backends; default: the library's rule).
GPU run (defaults):   python -m examples.benchmarks.attention [--compile]
Padded vs unpadded:   python -m examples.benchmarks.attention --impls ours sdpa_full --dtypes fp16 --ks 128 \
                          --paddings none right
Short inputs:         python -m examples.benchmarks.attention --impls ours sdpa_full --dtypes fp16 --ks 128 256 \
                          --lengths 32 64 128 256 --max-positions 512 --paddings none right
Projection variants:  python -m examples.benchmarks.attention --impls ours ours_none ours_conv ours_conv_none \
                          ours_mean ours_max --dtypes fp16 [--padded] --out-dir benchmarks/variants
CPU smoke:            python -m examples.benchmarks.attention --device cpu --dtypes fp32 --lengths 64 128 \
                          --tokens 256 --ks 16 --embed-dim 64 --heads 4 --repeat 2 --warmup 1
"""

import argparse
import gc
import importlib.util
import json
import logging
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from examples.benchmarks.sdpa_backends import CHOICES, sdpa_backends
from examples.common.environment import environment, module_command
from examples.common.reference import reference_user_dir
from linformer_plugin.io import atomic_write_text, write_jsonl

# the projection variants of ours: impl -> (--compressed-projection, --compressed-sharing)
VARIANT_IMPLS = {
    "ours_none": ("linear", "none"),
    "ours_conv": ("conv", "headwise"),
    "ours_conv_none": ("conv", "none"),
    "ours_mean": ("mean", "headwise"),
    "ours_max": ("max", "headwise"),
}
IMPLS = ("ours", "ours_compiled", "fq_linf", "fq_mha", "sdpa_full", *VARIANT_IMPLS)
LINFORMER_IMPLS = ("ours", "ours_compiled", "fq_linf", *VARIANT_IMPLS)  # measured per k; the others once per n
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


# ----------------------------------------------------------------------------- implementations


class SDPAFullAttention(nn.Module):
    """Full multi-head self-attention in a few lines: the clean baseline. T x B x C in and out."""

    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(embed_dim, embed_dim) for _ in range(4))

    def forward(self, query, key, value, key_padding_mask=None, need_weights=False, **unused):
        tgt_len, bsz, embed_dim = query.shape

        def heads(t):  # T x B x C -> B x H x T x d (a view; SDPA takes the strides)
            return t.view(t.size(0), bsz, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

        mask = None if key_padding_mask is None else ~key_padding_mask.bool()[:, None, None, :]
        attn = F.scaled_dot_product_attention(
            heads(self.q_proj(query)), heads(self.k_proj(key)), heads(self.v_proj(value)), attn_mask=mask
        )
        return self.out_proj(attn.permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim)), None




_REFERENCE_CLASS = None


def load_reference_linear_attention():
    """fairseq's MultiheadLinearAttention, loaded from its file under a private module name.

    Importing ``fairseq.examples.linformer.linformer_src`` as a package would run its __init__,
    which registers a model named ``linformer_roberta`` and clashes with ours.
    """
    global _REFERENCE_CLASS
    if _REFERENCE_CLASS is None:
        src = reference_user_dir()
        path = src and os.path.join(src, "modules", "multihead_linear_attention.py")
        if not path or not os.path.isfile(path):
            raise FileNotFoundError("fairseq's examples/linformer/.../multihead_linear_attention.py not found")
        spec = importlib.util.spec_from_file_location("_fairseq_reference_multihead_linear_attention", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _REFERENCE_CLASS = module.MultiheadLinearAttention
    return _REFERENCE_CLASS


def build_impl(impl, n, k, embed_dim, num_heads, device, dtype, compile_mode="default", max_positions=None):
    """The module for ``impl``, on ``device`` in ``dtype``; k is ignored by full-attention impls. The
    Linformers are built for inputs of up to ``max_positions`` tokens (default n)."""
    n = max(n, max_positions or n)
    if impl in ("ours", "ours_compiled"):
        from linformer_plugin.modules import LinformerSelfAttention

        module = LinformerSelfAttention(embed_dim, num_heads, max_positions=n, compressed_dim=k)
    elif impl in VARIANT_IMPLS:
        from linformer_plugin.modules import LinformerSelfAttention

        projection, sharing = VARIANT_IMPLS[impl]
        module = LinformerSelfAttention(embed_dim, num_heads, max_positions=n, compressed_dim=k,
                                        projection_method=projection, per_head=sharing == "none")
    elif impl == "fq_linf":
        reference = load_reference_linear_attention()
        module = reference(embed_dim, num_heads, dropout=0.0, self_attention=True,
                           compressed=n // k, max_seq_len=n)  # it takes a ratio: k = n // (n // k)
    elif impl == "fq_mha":
        from fairseq.modules import MultiheadAttention

        module = MultiheadAttention(embed_dim, num_heads, dropout=0.0, self_attention=True)
    elif impl == "sdpa_full":
        module = SDPAFullAttention(embed_dim, num_heads)
    else:
        raise ValueError(f"unknown impl {impl!r}; choose from {IMPLS}")
    module = module.to(device=device, dtype=dtype)
    if impl == "ours_compiled":
        # a fresh dynamo cache per case: the cache is keyed on forward's code object, so compiling
        # many shapes would otherwise hit the recompile limit and silently fall back to eager
        torch._dynamo.reset()
        module = torch.compile(module, mode=None if compile_mode == "default" else compile_mode)
    return module


# ----------------------------------------------------------------------------- timing


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(step, device, warmup, repeat, before=None):
    """Median wall time of ``step()`` in ms; ``before()`` (not timed) runs before each call."""
    for _ in range(warmup):
        if before:
            before()
        step()
    _sync(device)
    times = []
    if device.type == "cuda":
        events = []
        for _ in range(repeat):
            if before:
                before()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            events.append((start, end))
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) for s, e in events]
    else:
        for _ in range(repeat):
            if before:
                before()
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _peak_mb(step, device, before=None):
    """Peak memory of one ``step()`` above what was allocated before it, in MiB (0 off CUDA)."""
    if device.type != "cuda":
        return 0.0
    if before:
        before()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _is_oom(exc):
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _error_text(exc):
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:500]


def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


PADDINGS = ("none", "right", "left")


def padding_mask(n, bsz, device, side="right"):
    """B x n, True at pads: sentence b has n - b n / (2B) tokens (sentence 0 none), its pads on ``side``."""
    lengths = torch.tensor([n - b * n // (2 * bsz) for b in range(bsz)], device=device)
    mask = torch.arange(n, device=device)[None, :] >= lengths[:, None]
    return mask.flip(1) if side == "left" else mask


def time_case(impl, n, k, dtype_name, tokens, embed_dim=768, num_heads=12, device="cuda",
              warmup=5, repeat=20, compile_mode="default", seed=0, padded=False, padding=None, max_positions=None):
    """Measure one case; returns the JSON record. Errors (OOM included) are recorded, not raised.
    ``padding``: none, right or left (``padded``: right)."""
    device = torch.device(device)
    dtype = DTYPES[dtype_name]
    padding = padding or ("right" if padded else "none")
    bsz = max(1, tokens // n)
    record = {"n": n, "B": bsz, "impl": impl, "k": k if impl in LINFORMER_IMPLS else None, "dtype": dtype_name,
              "fwd_ms": None, "fwd_mem_mb": None, "train_ms": None, "train_mem_mb": None}
    if padding != "none":
        record["padded"], record["padding"] = True, padding
    if max_positions and max_positions > n and impl in LINFORMER_IMPLS:
        record["max_positions"] = max_positions
    if impl in VARIANT_IMPLS:
        record["projection"], record["sharing"] = VARIANT_IMPLS[impl]
    built_for = max(n, max_positions or n)
    if impl == "fq_linf" and built_for % k:
        record["note"] = f"reference projects to n // (n // k) = {built_for // (built_for // k)} rows, not k"
    if padding != "none" and bsz == 1:  # fairseq pads to the longest sentence and passes no mask without pads
        record["error"] = (f"padding {padding} with B = 1 (--tokens {tokens}, n = {n}): a batch of one sentence has "
                           f"no pads; give --tokens {2 * n} or more for a padded batch at n = {n}")
        return record
    phase = "build"
    error = None
    try:
        torch.manual_seed(seed)
        module = build_impl(impl, n, k, embed_dim, num_heads, device, dtype, compile_mode, max_positions)
        x = torch.randn(n, bsz, embed_dim, device=device, dtype=dtype)
        grad = torch.randn(n, bsz, embed_dim, device=device, dtype=dtype)
        mask = padding_mask(n, bsz, device, padding) if padding != "none" else None

        phase = "fwd"
        module.eval()

        def forward():
            with torch.no_grad():
                module(x, x, x, key_padding_mask=mask, need_weights=False)

        record["fwd_ms"] = _median_ms(forward, device, warmup, repeat)
        record["fwd_mem_mb"] = _peak_mb(forward, device)

        phase = "train"
        module.train()
        x_train = x.detach().clone().requires_grad_(True)

        def clear_grads():  # set_to_none: grads are freed, the next backward allocates them afresh
            module.zero_grad(set_to_none=True)
            x_train.grad = None

        def train_step():
            out, _ = module(x_train, x_train, x_train, key_padding_mask=mask, need_weights=False)
            out.backward(grad)

        record["train_ms"] = _median_ms(train_step, device, warmup, repeat, before=clear_grads)
        record["train_mem_mb"] = _peak_mb(train_step, device, before=clear_grads)
    except Exception as exc:  # noqa: BLE001  (a failed case must not end the sweep)
        error = "OOM" if _is_oom(exc) else _error_text(exc)
        if impl == "ours_compiled" and error != "OOM":  # compiles lazily: errors show in fwd or train
            error = "compile failed: " + error
    if error is not None:
        record["error"] = error
        record["error_phase"] = phase
    # the exception (and its frames holding tensors) is gone here, so memory can be released
    module = x = grad = x_train = mask = None  # noqa: F841
    _free(device)
    return record


def column_label(impl, k):
    return f"{impl} k={k}" if impl in LINFORMER_IMPLS else impl


def fmt(value, digits=2):
    return "" if value is None else f"{value:.{digits}f}"


# ----------------------------------------------------------------------------- main


def expected_cases(impls, lengths, ks, dtypes, paddings=("none",), max_positions=None):
    """(impl, n, k, dtype, padding) in run order; linformer impls once per k <= max(n, max_positions),
    the others once per n."""
    cases = []
    for dtype in dtypes:
        for n in lengths:
            for padding in paddings:
                for impl in impls:
                    if impl in LINFORMER_IMPLS:
                        cases += [(impl, n, k, dtype, padding) for k in ks if k <= max(n, max_positions or n)]
                    else:
                        cases.append((impl, n, None, dtype, padding))
    return cases


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impls", nargs="+", choices=IMPLS, default=None,
                   help="default: all (ours_compiled only with --compile)")
    p.add_argument("--compile", action="store_true", help="also measure ours under torch.compile")
    p.add_argument("--variants", action="store_true",
                   help=f"also measure the projection variants ({', '.join(VARIANT_IMPLS)})")
    p.add_argument("--paddings", nargs="+", choices=PADDINGS, default=None,
                   help="none: full batches; right / left: sentence b has n - b n / (2B) tokens, padded on that "
                        "side, with a key_padding_mask (default: none)")
    p.add_argument("--padded", action="store_true", help="the same as --paddings right")
    p.add_argument("--max-positions", type=int, default=None,
                   help="build the Linformers for inputs up to this length (default n): n < k measures short inputs")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode, e.g. max-autotune")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp16", "bf16"])
    p.add_argument("--lengths", nargs="+", type=int,
                   default=[512, 1024, 2048, 4096, 8192, 16384, 32768, 65536])
    p.add_argument("--tokens", type=int, default=65536, help="tokens per batch: B = tokens // n")
    p.add_argument("--ks", nargs="+", type=int, default=[128, 256])
    p.add_argument("--embed-dim", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out-dir", default="benchmarks/attention")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--sdpa", choices=CHOICES, default="library",
                   help="which SDPA kernels ours runs (examples.benchmarks.sdpa_backends; default: the library's rule)")
    args = p.parse_args(argv)
    if args.impls is None:
        args.impls = [i for i in IMPLS if (i != "ours_compiled" or args.compile)
                      and (i not in VARIANT_IMPLS or args.variants)]
    if args.paddings is None:
        args.paddings = ["right"] if args.padded else ["none"]
    elif args.padded:
        p.error("--padded is --paddings right: give one of them")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available; pass --device cpu")
    os.makedirs(args.out_dir, exist_ok=True)
    env = environment(module_command(__spec__.name, argv), device, in_child=False)
    import linformer_plugin

    env["linformer_plugin"] = os.path.dirname(os.path.abspath(linformer_plugin.__file__))  # which copy ran
    atomic_write_text(os.path.join(args.out_dir, "env.json"), json.dumps(env, indent=2) + "\n")

    cases = expected_cases(args.impls, args.lengths, args.ks, args.dtypes, args.paddings, args.max_positions)
    skipped = [(n, k) for n in args.lengths for k in args.ks if k > max(n, args.max_positions or n)]
    if skipped:
        print(f"skipping linformer cases with k > n (give --max-positions for short inputs): {skipped}", flush=True)
    records = []
    results_path = os.path.join(args.out_dir, "results.jsonl")
    for i, (impl, n, k, dtype, padding) in enumerate(cases, 1):
        with sdpa_backends(args.sdpa):
            record = time_case(impl, n, k if k is not None else args.ks[0], dtype, args.tokens, args.embed_dim,
                               args.heads, device, args.warmup, args.repeat, args.compile_mode, padding=padding,
                               max_positions=args.max_positions)
        if args.sdpa != "library" and impl in LINFORMER_IMPLS:
            record["sdpa"] = args.sdpa
        records.append(record)
        write_jsonl(results_path, records)  # rewritten after every case: a crash keeps what was measured
        print(f"[{i}/{len(cases)}] {impl:14s} n={n:6d} B={record['B']:4d} k={str(record['k']):4s} {dtype} "
              f"{padding:5s}: "
              f"fwd {fmt(record['fwd_ms'], 3)} ms {fmt(record['fwd_mem_mb'], 1)} MiB, "
              f"train {fmt(record['train_ms'], 3)} ms {fmt(record['train_mem_mb'], 1)} MiB"
              + (f"  [{record['error']}]" if record.get("error") else ""), flush=True)

    from examples.benchmarks.attention_report import markdown_report, write_plots

    report = markdown_report(records, args.ks)
    atomic_write_text(os.path.join(args.out_dir, "results.md"), report)
    if not args.no_plots:
        write_plots(records, args.out_dir)
    print()
    print(report)
    return records


if __name__ == "__main__":
    main()
