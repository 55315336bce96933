#!/usr/bin/env python
"""Multi-GPU training, mixed precision, resume: linformer_roberta through fairseq-train on 2 GPUs (or 2 CPU processes).

    python -m examples.studies.multi_gpu.check DATA_BIN OUT_DIR [--sections ddp loss scaling precision resume] ...
    python -m examples.studies.multi_gpu.check DATA_BIN OUT_DIR --cpu --tiny   # CPU smoke: 2 gloo processes

Sections (OUT_DIR gets results.jsonl, one JSON record a line; summary.md; env.json; logs/):

ddp        every sharing mode (headwise, kv, layerwise, layerwise_frozen, and any --mode NAME=FLAGS)
           trained for --ddp-updates updates with --distributed-world-size 2 under --ddp-backend
           pytorch_ddp and legacy_ddp (and fully_sharded, which in fairseq 0.12 needs fairscale:
           recorded as "not available" without it), never with --find-unused-parameters; rc, error,
           unused parameters DDP names (TORCH_DISTRIBUTED_DEBUG=INFO), trained/total parameters.
           Controls, runs that must fail, so that a pass means something (--controls):
           "reference": fairseq's own examples/linformer with layerwise sharing, which pytorch_ddp
           stops at its second step (its shared nn.Linear has a bias it never uses; legacy_ddp,
           which all-reduces every gradient, trains it); "layerdrop": ours with
           --encoder-layerdrop 0.99, whose dropped layers get no gradient.
           Our runs share one launch: 2 rank processes of examples.common.fairseq_train run them one
           after another (fairseq's imports and the process group are set up once). One more run,
           layerwise/pytorch_ddp, is launched by torchrun (--no-torchrun: not).
loss       per-update train loss of 1 GPU x batch 2B against 2 GPUs x batch B: same seed, data
           and order (--curriculum: no batch shuffling), dropout 0, fp32; the max abs difference.
           The 2-GPU run is the plain `fairseq-train --distributed-world-size 2` (fairseq spawns).
scaling    words/s of 2 GPUs / (2 x words/s of 1 GPU) at the same per-GPU batch; base, n=512,
           fp16; real text when one epoch holds the whole 2-GPU run, else dummy_masked_lm
           (--scaling-task). Run first, alone on the GPUs.
resume     2 GPUs, --resume-updates updates with a checkpoint at half of them; the same run is
           killed (SIGKILL) once that checkpoint is written and started again with the same command:
           its per-update losses against those of a run never stopped (fp32).
precision  --fp16, --memory-efficient-fp16, --bf16 (and fp32 as the baseline) pretraining, one
           GPU each, --precision-updates updates: final train/valid loss, the loss-scale trajectory,
           overflow notes, "Minimum loss scale reached", NaN. fairseq 0.12's fairseq-train turns
           --bf16 into --bf16 --tpu (fairseq issue #4696); the plugin, imported through
           --user-dir, keeps the bf16 run on its GPU (linformer_plugin/fairseq_fixes.py).

Independent single-GPU runs (precision, the 1-GPU loss run) share the GPUs with the 2-GPU
correctness runs; only the scaling runs have the GPUs to themselves. --budget-s bounds the whole
run: what has not started by then is recorded as skipped, what runs is stopped.

GPU machine:  python -m examples.studies.multi_gpu.check DATA_BIN OUT_DIR        (about 5 minutes on 2 H100s)
CPU smoke:    python -m examples.studies.multi_gpu.check DATA_BIN OUT_DIR --cpu --tiny --sections ddp loss resume
Plan only:    python -m examples.studies.multi_gpu.check DATA_BIN OUT_DIR --dry-run

The plan is built in plan.py, its jobs run by runner.py, their records and summary.md made by records.py.
"""

import argparse
import json
import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from examples.common.environment import environment, module_command
from examples.studies.multi_gpu.plan import (BACKENDS, CONTROLS, MODES, PRECISIONS, SECTIONS, data_bin_tokens,
                                             plan)
from examples.studies.multi_gpu.records import summary
from examples.studies.multi_gpu.runner import Checker
from linformer_plugin.io import atomic_write_text


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_bin", help="a masked-LM data-bin (scripts/prepare_pretraining_data.py)")
    p.add_argument("out_dir", help="results.jsonl, summary.md, env.json and logs/ go here")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--cpu", action="store_true", help="2 CPU processes on gloo instead of 2 GPUs")
    p.add_argument("--tiny", action="store_true", help="linformer_roberta_tiny, n=64, k=16, small batches (smoke)")
    p.add_argument("--modes", nargs="*", choices=list(MODES), default=list(MODES), help="built-in sharing modes")
    p.add_argument("--mode", action="append", default=[], metavar="NAME=FLAGS",
                   help="another mode for the ddp section, e.g. --mode 'conv=--projection conv' (repeatable)")
    p.add_argument("--backends", nargs="*", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--controls", nargs="*", choices=CONTROLS, default=list(CONTROLS),
                   help="runs that must fail (see above); none: skip them")
    p.add_argument("--reference-backends", nargs="*", choices=BACKENDS[:2], default=list(BACKENDS[:2]),
                   help="backends of the reference control")
    p.add_argument("--torchrun", action=argparse.BooleanOptionalAction, default=True,
                   help="also launch layerwise/pytorch_ddp with torchrun (python -m torch.distributed.run)")
    p.add_argument("--ddp-updates", type=int, default=30)
    p.add_argument("--ddp-batch", type=int, help="per process (default 8; tiny 4)")
    p.add_argument("--loss-modes", nargs="*", default=["layerwise"])
    p.add_argument("--loss-updates", type=int, default=40)
    p.add_argument("--loss-batch", type=int, help="B: 2 GPUs x B against 1 GPU x 2B (default 8; tiny 4)")
    p.add_argument("--loss-lr", type=float, help="default 1e-4 (tiny 3e-3)")
    p.add_argument("--loss-tolerance", type=float, help="largest per-update |diff| that counts as a match "
                   "(default 0.02; losses are logged to 3 decimals)")
    p.add_argument("--resume-updates", type=int, default=20, help="stopped at half of them, then restarted")
    p.add_argument("--resume-mode", default="layerwise")
    p.add_argument("--scaling-task", choices=("auto", "real", "dummy"), default="auto",
                   help="auto: the data-bin if one epoch holds the whole 2-GPU run, else dummy_masked_lm")
    p.add_argument("--scaling-batch", type=int, help="per GPU (default 64; tiny 8)")
    p.add_argument("--scaling-updates", type=int, default=80)
    p.add_argument("--scaling-log-interval", type=int, default=10)
    p.add_argument("--scaling-skip-intervals", type=int, default=2, help="warm-up intervals left out of the median")
    p.add_argument("--precisions", nargs="*", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--precision-updates", type=int, default=500)
    p.add_argument("--precision-batch", type=int, default=16)
    p.add_argument("--precision-lr", type=float, default=3e-4)
    p.add_argument("--precision-warmup", type=int, default=100)
    p.add_argument("--precision-log-interval", type=int, default=10)
    p.add_argument("--precision-mode", choices=list(MODES), default="headwise")
    p.add_argument("--lr", type=float, help="ddp and scaling runs (default 1e-4; tiny 3e-3)")
    p.add_argument("--tokens-per-sample", type=int, help="n (default 512; tiny 64)")
    p.add_argument("--compressed-dim", type=int, help="k (default 128; tiny 16)")
    p.add_argument("--arch", help="default linformer_roberta_base (tiny: linformer_roberta_tiny)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--extra-args", default="", help="added to every fairseq-train run")
    p.add_argument("--budget-s", type=float, help="stop everything after this many seconds (default 450; "
                   "--cpu: no limit); 0: no limit")
    p.add_argument("--job-timeout", type=float, default=300, help="seconds per run")
    p.add_argument("--sequential", action="store_true", help="one job at a time (always so with --cpu)")
    p.add_argument("--python", default=sys.executable, help="the Python that runs fairseq-train")
    p.add_argument("--dry-run", action="store_true", help="print the planned jobs and their commands, run nothing")
    args = p.parse_args(argv)
    tiny = args.tiny
    defaults = dict(ddp_batch=4 if tiny else 8, loss_batch=4 if tiny else 8, loss_lr=3e-3 if tiny else 1e-4,
                    loss_tolerance=0.02, scaling_batch=8 if tiny else 64, lr=3e-3 if tiny else 1e-4,
                    tokens_per_sample=64 if tiny else 512, compressed_dim=16 if tiny else 128,
                    arch="linformer_roberta_tiny" if tiny else "linformer_roberta_base",
                    budget_s=0 if args.cpu else 450)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not os.path.isdir(args.data_bin):
        p.error(f"no data-bin at {args.data_bin}")
    args.data_bin = os.path.abspath(args.data_bin)
    args.out_dir = os.path.abspath(args.out_dir)
    args.device = "cpu" if args.cpu else "cuda"
    return args


def print_plan(checker, phases):
    for p, tracks in enumerate(phases, 1):
        print(f"phase {p}: {len(tracks)} track(s) run together" if len(tracks) > 1 else f"phase {p}:")
        for t, track in enumerate(tracks, 1):
            for job in track:
                harness = " (2 rank processes of examples.common.fairseq_train)" if job.harness else ""
                print(f"  track {t}: job {job.name}{harness}")
                for run in job.runs:
                    cmd = run.cmd if run.cmd is not None else (
                        checker.entry_cmd(run.entry) + run.argv if not job.harness else run.argv)
                    where = "" if run.world == 2 or checker.args.cpu else f"CUDA_VISIBLE_DEVICES={run.gpu} "
                    world = "" if job.harness or run.cmd is not None else f" --distributed-world-size {run.world}"
                    print(f"    {run.name}: {where}{shlex.join(cmd)}{world}")


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    checker = Checker(args)
    phases = plan(args, checker)
    if args.dry_run:
        print_plan(checker, phases)
        return 0
    argv_seen = sys.argv[1:] if argv is None else argv
    with ThreadPoolExecutor(1) as pool:  # the GPU probe (a child process) beside the runs
        probe = pool.submit(environment, module_command(__spec__.name, argv_seen), args.device, args.python,
                            in_child=not args.cpu)
        checker.run_phases(phases)
        env = probe.result()
    env.update(data_bin=args.data_bin, train_tokens=data_bin_tokens(args.data_bin), wall_s=round(time.time() - checker.started, 1),
               args={k: v for k, v in vars(args).items()})
    atomic_write_text(os.path.join(args.out_dir, "env.json"), json.dumps(env, indent=2) + "\n")
    report = summary(checker.records, env)
    atomic_write_text(os.path.join(args.out_dir, "summary.md"), report)
    print(report, flush=True)
    failed = [r for r in checker.records if r.get("ok") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
