"""torch.profiler summary of one attention implementation: where the forward and the training
step spend their GPU time (kernels, sorted by CUDA time), and whether the GPU or the CPU sets the
pace: per step, the time to issue the work (CPU, before any wait), the wall time, and the GPU
kernels' time. Issue time near the wall time: the step waits on the CPU launching kernels (or the
launch queue was full), so extra Python or small ops cost time even where kernels are fast.

    python -m examples.benchmarks.profile_attention --impl ours --n 512 --k 128 --dtype fp16 \
        [--padding none right] [--sdpa library flash ...] [--sort cpu] [--memory-snapshot DIR]

``--sdpa``: the SDPA kernels ours runs, each choice in turn (``examples.benchmarks.sdpa_backends``).
``--sort cpu``: the table by host time (self CPU) instead of GPU time: which ops the CPU spends its
time issuing. ``--memory-snapshot DIR`` (CUDA): one more step of each case with the allocator's
history recorded, dumped to DIR (``torch.cuda.memory._dump_snapshot``) and summarized at its peak
(``examples.common.memory_at_peak``): what holds the memory when the step peaks.
"""

import argparse
import os
import time

import torch

from examples.benchmarks.attention import DTYPES, PADDINGS, build_impl, padding_mask
from examples.benchmarks.sdpa_backends import CHOICES, sdpa_backends
from examples.common.memory_at_peak import load_snapshot, summarize


def gpu_work(prof):
    """(milliseconds, count) of the device's work a torch.profiler run recorded: kernels, copies and
    memsets, not the ranges named with record_function (fairseq's "forward", ...), which the
    profiler also lists with device time."""
    on_gpu = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
              and not getattr(e, "is_user_annotation", False)]
    return sum(e.time_range.elapsed_us() for e in on_gpu) / 1e3, len(on_gpu)


def snapshot_step(step, path):
    """One step with the CUDA allocator's history recorded (C++ and Python stacks), dumped to path."""
    torch.cuda.synchronize()
    torch.cuda.memory._record_memory_history(max_entries=100000, stacks="all")
    try:
        step()
        torch.cuda.synchronize()
        torch.cuda.memory._dump_snapshot(path)
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    return load_snapshot(path)


def profile(impl, n, k, dtype, tokens=65536, embed_dim=768, heads=12, steps=20, row_limit=18, padding="none",
            sdpa="library", sort="cuda", snapshot_dir=None):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = build_impl(impl, n, k, embed_dim, heads, device, DTYPES[dtype])
    bsz = max(1, tokens // n)
    x = torch.randn(n, bsz, embed_dim, device=device, dtype=DTYPES[dtype], requires_grad=True)
    mask = None if padding == "none" else padding_mask(n, bsz, device, padding)  # as the attention benchmark's
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    sort = "self_cpu_time_total" if sort == "cpu" or not cuda else "cuda_time_total"
    for phase in ("fwd", "train"):
        module.train(phase == "train")

        def step():
            with torch.set_grad_enabled(phase == "train"):
                out, _ = module(x, x, x, key_padding_mask=mask, need_weights=False)
                if phase == "train":
                    out.backward(torch.ones_like(out))

        with sdpa_backends(sdpa):
            for _ in range(3):
                step()
            sync()
            if cuda:
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            issued = time.perf_counter()
            sync()
            wall = (time.perf_counter() - start) / steps * 1e3
            peak = ""
            if cuda:
                peak = f", peak {(torch.cuda.max_memory_allocated() - before) / 2**20:.0f} MiB above the inputs"
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(steps):
                    step()
                sync()
            snapshot = None
            if snapshot_dir and cuda:
                os.makedirs(snapshot_dir, exist_ok=True)
                snapshot = snapshot_step(step, os.path.join(snapshot_dir, f"{impl}-n{n}-{padding}-{sdpa}-{phase}.pickle"))
        events = prof.key_averages()
        kernels = gpu_work(prof)[0] / steps
        kernels_used = "" if sdpa == "library" else f" sdpa {sdpa}"
        print(f"\n=== {impl} n={n} k={k} {dtype} padding {padding}{kernels_used} {phase} ({steps} steps): "
              f"issue {(issued - start) / steps * 1e3:.3f} ms, wall {wall:.3f} ms, GPU kernels {kernels:.3f} ms a step"
              f"{peak} ===")
        print(events.table(sort_by=sort, row_limit=row_limit, max_name_column_width=60))
        if snapshot is not None:
            print(f"\nallocations of one step, at its peak:\n{summarize(snapshot, top=12)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", nargs="+", default=["ours"])
    parser.add_argument("--n", type=int, nargs="+", default=[512])
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--dtype", default="fp16", choices=list(DTYPES))
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--padding", nargs="+", choices=PADDINGS, default=["none"])
    parser.add_argument("--sdpa", nargs="+", choices=CHOICES, default=["library"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", type=int, default=18, help="rows of the kernel table")
    parser.add_argument("--sort", choices=["cuda", "cpu"], default="cuda", help="order the table by GPU or host time")
    parser.add_argument("--memory-snapshot", metavar="DIR", help="CUDA: record one step's allocations into DIR")
    args = parser.parse_args(argv)
    for impl in args.impl:
        for n in args.n:
            for padding in args.padding:
                for sdpa in args.sdpa:
                    profile(impl, n, args.k, args.dtype, tokens=args.tokens, padding=padding, steps=args.steps,
                            row_limit=args.rows, sdpa=sdpa, sort=args.sort, snapshot_dir=args.memory_snapshot)


if __name__ == "__main__":
    main()
