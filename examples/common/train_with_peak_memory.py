"""``fairseq-train`` that reports its peak GPU memory:

    python -m examples.common.train_with_peak_memory <fairseq-train args>

At exit (normal, error or sys.exit) it prints ``PEAK_GPU_MEMORY_MIB=<max_memory_allocated / 2**20>``
and ``PEAK_GPU_MEMORY_RESERVED_MIB=...`` when CUDA is available. Used by examples.benchmarks.train
and the long-context study.

Two changes to fairseq's behaviour, both for benchmarking:
- an out-of-memory error in the forward/backward pass is raised, not skipped: on one GPU,
  fairseq's Trainer logs it, drops the batch and goes on, and since dummy_masked_lm repeats one
  batch, the run would spin through its whole epoch without ever updating;
- with BENCH_WRAP_TOKEN_IDS=1, dummy_masked_lm's token ids are wrapped into its dictionary, so
  that --dict-size need not grow with --tokens-per-sample (see examples.benchmarks.train --fixed-vocab).

With BENCH_MEMORY_SNAPSHOT=PATH (CUDA only) it also records the allocator's history with Python
stacks (the last BENCH_MEMORY_SNAPSHOT_ENTRIES events, default 100,000: a few updates' worth) and
writes it to PATH at exit, for ``examples.common.memory_at_peak`` or PyTorch's memory_viz.
"""

import atexit
import os
import sys

_reported = False
_peak_before_resets = 0  # fairseq's Trainer resets the peak after every step (for its gb_free)


def report_peak_memory():
    global _reported
    if _reported:
        return
    _reported = True
    try:
        import torch

        if torch.cuda.is_available():
            peak = max(_peak_before_resets, torch.cuda.max_memory_allocated())
            print(f"PEAK_GPU_MEMORY_MIB={peak / 2**20:.1f}", flush=True)
            print(f"PEAK_GPU_MEMORY_RESERVED_MIB={torch.cuda.max_memory_reserved() / 2**20:.1f}", flush=True)
    except Exception as exc:  # noqa: BLE001  (reporting must never mask the run's own error)
        print(f"PEAK_GPU_MEMORY_ERROR={exc!r}", flush=True)


def record_memory_history(path):
    import torch

    if not torch.cuda.is_available():
        print("BENCH_MEMORY_SNAPSHOT ignored: no CUDA device", flush=True)
        return
    entries = int(os.environ.get("BENCH_MEMORY_SNAPSHOT_ENTRIES", "100000"))
    torch.cuda.memory._record_memory_history(max_entries=entries, stacks="python")

    def dump():
        torch.cuda.memory._dump_snapshot(path)
        print(f"MEMORY_SNAPSHOT={path}", flush=True)

    atexit.register(dump)


def keep_peak_across_resets():
    import torch

    reset = torch.cuda.reset_peak_memory_stats

    def reset_keeping_peak(*args, **kwargs):
        global _peak_before_resets
        _peak_before_resets = max(_peak_before_resets, torch.cuda.max_memory_allocated())
        reset(*args, **kwargs)

    torch.cuda.reset_peak_memory_stats = reset_keeping_peak


def raise_oom_in_train_step():
    from fairseq.trainer import Trainer

    train_step = Trainer.train_step

    def train_step_raising_oom(self, samples, raise_oom=False):
        return train_step(self, samples, raise_oom=True)

    Trainer.train_step = train_step_raising_oom


def wrap_dummy_token_ids():
    """dummy_masked_lm's tokens are 2..n+1, one id per position; map them into [2, dict_size + 2)."""
    from fairseq.benchmark.dummy_masked_lm import DummyMaskedLMTask

    init = DummyMaskedLMTask.__init__

    def wrapped_init(self, cfg):
        init(self, cfg)
        # ids 2 and 3 are eos/unk (words start at 4) but the task itself uses them as tokens too
        first, span = 2, cfg.dict_size
        for name in ("dummy_src", "dummy_tgt"):
            ids = getattr(self, name)
            words = ids >= first  # leaves the mask id 0 (src) and the pad id 1 (tgt) alone
            ids[words] = (ids[words] - first) % span + first

    DummyMaskedLMTask.__init__ = wrapped_init


def main():
    atexit.register(report_peak_memory)
    # fairseq_cli.train first: it sets up logging before importing fairseq, whose text_to_speech task
    # would otherwise configure the root logger (DEBUG, another format) first
    from fairseq_cli.train import cli_main

    import fairseq.benchmark  # noqa: F401  (registers dummy_masked_lm; fairseq/__init__ does too)

    keep_peak_across_resets()
    raise_oom_in_train_step()
    if os.environ.get("BENCH_MEMORY_SNAPSHOT"):
        record_memory_history(os.environ["BENCH_MEMORY_SNAPSHOT"])
    if os.environ.get("BENCH_WRAP_TOKEN_IDS") == "1":
        wrap_dummy_token_ids()
    sys.argv = ["fairseq-train"] + sys.argv[1:]
    try:
        cli_main()
    finally:
        report_peak_memory()


if __name__ == "__main__":
    main()
