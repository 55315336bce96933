"""``fairseq-validate`` that reports how fast it went:

    python -m examples.benchmarks.validate_with_speed <fairseq-validate args>

At exit it prints ``VALIDATE_SPEED={"batches": .., "sentences": .., "tokens": .., "seconds": ..}``: the
batches after the first ``VALIDATE_WARMUP`` (default 3; cuBLAS/cuDNN plans and the allocator warm up
there), timed from the end of the last warm-up batch to the end of the last batch, the GPU synchronised
at each batch's end (as a caller who reads the predictions would). Data loading and fairseq's own
per-batch work are inside the time: it is fairseq-validate's speed, not the model's alone. Tokens are
the real ones (fairseq's ``ntokens``). Also ``PEAK_GPU_MEMORY_MIB`` where CUDA is available.
Used by examples.benchmarks.whole_model.
"""

import atexit
import json
import os
import sys
import time

from examples.common.train_with_peak_memory import report_peak_memory

SPEED_PREFIX = "VALIDATE_SPEED="
_counts = {"batches": 0, "sentences": 0, "tokens": 0, "seconds": 0.0}
_clock = {"start": None}


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_valid_steps(warmup):
    """Count and time ``FairseqTask.valid_step`` (the tasks fairseq-validate runs inherit it)."""
    from fairseq.tasks.fairseq_task import FairseqTask

    valid_step = FairseqTask.valid_step
    seen = {"batches": 0}

    def timed_valid_step(self, sample, model, criterion):
        out = valid_step(self, sample, model, criterion)
        _sync()
        now = time.perf_counter()
        seen["batches"] += 1
        if seen["batches"] == warmup:
            _clock["start"] = now
        elif seen["batches"] > warmup and _clock["start"] is not None:
            _counts["batches"] += 1
            _counts["sentences"] += int(sample["nsentences"])
            _counts["tokens"] += int(sample["ntokens"])
            _counts["seconds"] = now - _clock["start"]
        return out

    FairseqTask.valid_step = timed_valid_step


def report_speed():
    print(SPEED_PREFIX + json.dumps(_counts), flush=True)


def main():
    atexit.register(report_peak_memory)
    atexit.register(report_speed)
    from fairseq_cli.validate import cli_main

    warmup = int(os.environ.get("VALIDATE_WARMUP", "3"))
    time_valid_steps(max(1, warmup))
    sys.argv = ["fairseq-validate"] + sys.argv[1:]
    cli_main()


def parse_speed(text):
    """The VALIDATE_SPEED record of a log, with sentences_per_s and tokens_per_s; None if absent."""
    for line in reversed(text.splitlines()):
        if line.startswith(SPEED_PREFIX):
            speed = json.loads(line[len(SPEED_PREFIX):])
            seconds = speed["seconds"]
            speed["sentences_per_s"] = speed["sentences"] / seconds if seconds else None
            speed["tokens_per_s"] = speed["tokens"] / seconds if seconds else None
            return speed
    return None


if __name__ == "__main__":
    main()
