"""The multi-GPU check's plan (examples.studies.multi_gpu.check): its runs' fairseq-train flags
and the jobs, in phases of tracks that run together."""

import os
import shlex
import subprocess

from examples.benchmarks.train import train_command
from examples.common.fairseq_commands import PLUGIN_DIR, adam_polynomial, masked_lm, size_flags, tiny_size
from examples.common.reference import reference_user_dir
from examples.studies.multi_gpu.runner import Job, Run

SECTIONS = ("ddp", "loss", "scaling", "precision", "resume")
BACKENDS = ("pytorch_ddp", "legacy_ddp", "fully_sharded")
PRECISIONS = ("fp16", "memory_efficient_fp16", "bf16", "fp32")
CUDA_ONLY = ("fp16", "memory_efficient_fp16")
PRECISION_FLAGS = {"fp16": ["--fp16"], "memory_efficient_fp16": ["--memory-efficient-fp16"], "bf16": ["--bf16"],
                   "fp32": []}
MODES = {
    "headwise": [],
    "kv": ["--shared-kv-compressed", "1"],
    "layerwise": ["--shared-layer-kv-compressed", "1"],
    "layerwise_frozen": ["--shared-layer-kv-compressed", "1", "--freeze-compress", "1"],
}
REFERENCE_MODE = "layerwise"
CONTROLS = ("reference", "layerdrop")
LAYERDROP_CONTROL = ["--encoder-layerdrop", "0.99"]


def data_bin_tokens(data_bin, split="train"):
    """Tokens in a fairseq mmap data-bin split (fairseq's reader of its .idx), or None."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    path = os.path.join(data_bin, f"{split}.idx")
    if not os.path.isfile(path):
        return None
    try:
        index = MMapIndexedDataset.Index(path)
    except (OSError, AssertionError):  # unreadable, or not an mmap index
        return None
    # summed while the index lives: its sizes are a view of a memory map that its __del__ closes
    return int(index.sizes.sum())


def fairscale_available(python):
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('fairscale') is None)"
    try:
        return subprocess.run([python, "-c", probe], timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def model_flags(args, mode_flags, reference=False):
    n, k = args.tokens_per_sample, args.compressed_dim
    if reference:
        flags = ["--user-dir", reference_user_dir(), "--arch", "linformer_roberta_base", "--max-positions", str(n),
                 "--compressed", str(n // k)]
        if args.tiny:
            flags += size_flags(tiny_size())
    else:
        flags = ["--user-dir", PLUGIN_DIR, "--arch", args.arch, "--compressed-dim", str(k)]
    return flags + list(mode_flags)


def train_flags(args, batch, updates, log_interval, lr, warmup, precision, dropout=None, validate=False,
                break_mode="none", extra=(), save_every=None):
    flags = [args.data_bin] + masked_lm(args.tokens_per_sample, break_mode) + [
        "--batch-size", str(batch), "--required-batch-size-multiple", "1",
    ] + adam_polynomial(lr, updates, warmup, 0.01, 0) + [
        "--log-format", "json", "--log-interval", str(log_interval), "--seed", str(args.seed),
        "--save-dir", "checkpoints",
    ]
    flags += (["--save-interval-updates", str(save_every), "--no-epoch-checkpoints"] if save_every
              else ["--no-save"])
    if validate:  # only once, at the end (--validate-interval/--save-interval in epochs, out of reach)
        flags += ["--validate-interval", "1000000", "--save-interval", "1000000"]
    else:
        flags += ["--disable-validation"]
    if dropout is not None:
        flags += ["--dropout", str(dropout), "--attention-dropout", str(dropout), "--activation-dropout", str(dropout)]
    flags += ["--cpu", "--num-workers", "0"] if args.cpu else ["--num-workers", "1"]
    if not (args.cpu and precision in CUDA_ONLY):
        flags += PRECISION_FLAGS[precision]
    return flags + list(extra) + shlex.split(args.extra_args)


def drop_flag(argv, flag):
    """argv without any ``flag VALUE`` pair."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        else:
            out.append(arg)
    return out


RANKS = "2 rank processes: --distributed-rank R --distributed-no-spawn"


def spawn_launcher(args):
    """How a plain world-size-2 run is launched: fairseq spawns GPU processes, CPU ranks are ours."""
    return RANKS if args.cpu else "fairseq-train --distributed-world-size 2 (fairseq spawns)"


def all_modes(args):
    modes = {name: MODES[name] for name in args.modes}
    for spec in args.mode:
        name, _, flags = spec.partition("=")
        if not name or not _:
            raise SystemExit(f"--mode takes NAME=FLAGS, got {spec!r}")
        modes[name.strip()] = shlex.split(flags)
    return modes


def plan(args, checker):
    """The jobs, in phases: [[track, ...], ...]."""
    modes = all_modes(args)
    exclusive = []  # phase 1: scaling, alone on the GPUs; phase 2: the rest, together
    two_rank_runs = []  # world-size-2 runs of our plugin that share one launch
    control_runs = []  # the same launch, last (a run after a failed one still works, but why risk it)
    torchrun_runs = []
    ddp_precision = "fp32" if args.cpu else "fp16"

    if "ddp" in args.sections:
        ddp_train = train_flags(args, args.ddp_batch, args.ddp_updates, 1, args.lr, max(1, args.ddp_updates // 5),
                                ddp_precision)
        debug_env = {"TORCH_DISTRIBUTED_DEBUG": "INFO"}  # DDP then names the parameters that got no grad
        backends = list(args.backends)
        if "fully_sharded" in backends and not fairscale_available(args.python):
            backends.remove("fully_sharded")
            for name in modes:
                checker.add({"section": "ddp", "name": f"{name}_fully_sharded", "mode": name,
                             "backend": "fully_sharded", "status": "not available", "ok": None,
                             "error": "fairscale is not installed: fairseq 0.12's --ddp-backend fully_sharded is "
                                      "fairscale's FullyShardedDataParallel (fairseq raises 'Cannot find "
                                      "FullyShardedDataParallel. Please install fairscale')"})
        for backend in backends:
            for name, flags in modes.items():
                two_rank_runs.append(Run(
                    f"{name}_{backend}", "ddp", ddp_train + model_flags(args, flags) + ["--ddp-backend", backend],
                    world=2, env=debug_env, timeout=args.job_timeout,
                    meta={"mode": name, "flags": shlex.join(flags), "backend": backend, "world_size": 2,
                          "precision": ddp_precision, "expected_updates": args.ddp_updates, "launcher": RANKS}))
        ref_job = None
        if "layerdrop" in args.controls:
            control_runs.append(Run(
                "control_layerdrop_pytorch_ddp", "control",
                ddp_train + model_flags(args, MODES["layerwise"] + LAYERDROP_CONTROL) + ["--ddp-backend", "pytorch_ddp"],
                world=2, env=debug_env, timeout=args.job_timeout,
                meta={"mode": "layerwise", "flags": shlex.join(LAYERDROP_CONTROL), "backend": "pytorch_ddp",
                      "world_size": 2, "model": "ours", "expect": "ddp_unused_error",
                      "expected_updates": args.ddp_updates}))
        if "reference" in args.controls and args.reference_backends and reference_user_dir() is None:
            checker.add({"section": "control", "name": "reference", "status": "not available", "ok": None,
                         "error": "this fairseq install lacks examples/linformer"})
        elif "reference" in args.controls and args.reference_backends:
            ref_runs = []
            for backend in args.reference_backends:
                ref_runs.append(Run(
                    f"control_reference_{REFERENCE_MODE}_{backend}", "control",
                    ddp_train + model_flags(args, MODES[REFERENCE_MODE], reference=True) + ["--ddp-backend", backend],
                    world=2, env=debug_env, timeout=args.job_timeout,
                    meta={"mode": REFERENCE_MODE, "backend": backend, "world_size": 2, "model": "fairseq reference",
                          "expect": "ddp_unused_error" if backend in ("pytorch_ddp", "c10d") else "trains",
                          "expected_updates": args.ddp_updates}))
            ref_job = Job("control_reference", ref_runs, harness=True)  # own processes: both register linformer_roberta
        if args.torchrun:
            torchrun_runs.append(Run(
                "layerwise_pytorch_ddp_torchrun", "ddp",
                ddp_train + model_flags(args, MODES["layerwise"]) + ["--ddp-backend", "pytorch_ddp"],
                world=2, entry="torchrun", env=debug_env, timeout=args.job_timeout,
                meta={"mode": "layerwise", "flags": shlex.join(MODES["layerwise"]), "backend": "pytorch_ddp",
                      "world_size": 2, "precision": ddp_precision, "expected_updates": args.ddp_updates,
                      "launcher": "torchrun --nproc-per-node 2"}))
    else:
        ref_job = None

    loss_jobs_1, loss_jobs_2 = [], []
    if "loss" in args.sections:
        for name in args.loss_modes:
            if name not in modes and name not in MODES:
                raise SystemExit(f"--loss-modes: unknown mode {name!r}")
            flags = modes.get(name, MODES.get(name))
            for world, batch in ((1, 2 * args.loss_batch), (2, args.loss_batch)):
                argv = (train_flags(args, batch, args.loss_updates, 1, args.loss_lr, max(1, args.loss_updates // 4),
                                    "fp32", dropout=0, extra=["--curriculum", "1000000"])
                        + model_flags(args, flags))
                run = Run(f"loss_{name}_{world}gpu", "loss", argv, world=world, gpu=0, timeout=args.job_timeout,
                          meta={"pair": f"loss_{name}", "mode": name, "batch": batch, "world": world,
                                "precision": "fp32", "expected_updates": args.loss_updates,
                                "launcher_2gpu": spawn_launcher(args)})
                if world == 1:
                    loss_jobs_1.append(Job(run.name, [run]))
                elif args.cpu:
                    two_rank_runs.append(run)  # fairseq cannot spawn CPU ranks: they join the shared launch
                else:
                    loss_jobs_2.append(Job(run.name, [run]))  # fairseq's own spawn: the plain command

    resume_jobs = []
    if "resume" in args.sections:
        updates, stop_at = args.resume_updates, args.resume_updates // 2
        argv = (train_flags(args, args.loss_batch, updates, 1, args.loss_lr, max(1, updates // 4), "fp32",
                            save_every=stop_at)
                + model_flags(args, MODES[args.resume_mode] if args.resume_mode in MODES else modes[args.resume_mode]))
        meta = {"pair": f"resume_{args.resume_mode}", "mode": args.resume_mode, "world": 2, "precision": "fp32",
                "batch_per_gpu": args.loss_batch, "expected_updates": updates, "launcher": spawn_launcher(args)}
        for tag in ("whole", "stopped"):
            run = Run(f"resume_{args.resume_mode}_{tag}", "resume", argv, world=2, timeout=args.job_timeout,
                      meta=dict(meta, stop_at=stop_at if tag == "stopped" else None))
            if tag == "whole":
                run.meta.pop("stop_at")
            resume_jobs.append(Job(run.name, [run]))

    if "scaling" in args.sections:
        n, bsz, updates = args.tokens_per_sample, args.scaling_batch, args.scaling_updates
        task = args.scaling_task
        tokens = data_bin_tokens(args.data_bin)
        if task == "auto":
            task = "real" if tokens is not None and tokens // n >= 2 * bsz * updates else "dummy"
        meta = {"task": task, "n": n, "batch_per_gpu": bsz, "updates": updates, "log_interval": args.scaling_log_interval,
                "precision": "fp32" if args.cpu else "fp16", "arch": args.arch, "k": args.compressed_dim,
                "train_tokens": tokens, "launcher_2gpu": spawn_launcher(args)}
        for world in (1, 2):
            if task == "real":
                argv = train_flags(args, bsz, updates, args.scaling_log_interval, args.lr, max(1, updates // 5),
                                   "fp16") + model_flags(args, [])
                run = Run(f"scaling_{world}gpu", "scaling", argv, world=world, gpu=0, timeout=args.job_timeout,
                          meta=dict(meta, world=world))
            else:
                cmd = train_command(["--user-dir", PLUGIN_DIR, "--arch", args.arch], "ours", args.compressed_dim,
                                    n, bsz, updates, args.scaling_log_interval, "cpu" if args.cpu else "cuda",
                                    extra_args=f"--distributed-world-size {world} {args.extra_args}",
                                    python=args.python, precision="fp16")
                run = Run(f"scaling_{world}gpu", "scaling", [], world=world, gpu=0, cmd=cmd,
                          timeout=args.job_timeout, meta=dict(meta, world=world))
                if args.cpu and world == 2:  # fairseq cannot spawn CPU ranks: the same run, launched here
                    run.cmd, run.argv = None, drop_flag(cmd[3:], "--distributed-world-size")  # after python -m MODULE
            exclusive.append(Job(run.name, [run]))

    precision_jobs = []
    if "precision" in args.sections:
        validate = os.path.exists(os.path.join(args.data_bin, "valid.idx"))
        for i, precision in enumerate(args.precisions):
            if args.cpu and precision in CUDA_ONLY:
                checker.add({"section": "precision", "name": f"precision_{precision}", "status": "skipped",
                             "ok": None, "error": "needs CUDA"})
                continue
            argv = (train_flags(args, args.precision_batch, args.precision_updates, args.precision_log_interval,
                                args.precision_lr, args.precision_warmup, precision, validate=validate,
                                break_mode="complete", extra=["--skip-invalid-size-inputs-valid-test"])
                    + model_flags(args, modes.get(args.precision_mode, MODES[args.precision_mode])))
            run = Run(f"precision_{precision}", "precision", argv, world=1, gpu=i % 2,
                      timeout=args.job_timeout,
                      meta={"precision": precision, "gpu": i % 2, "batch": args.precision_batch,
                            "updates": args.precision_updates, "lr": args.precision_lr,
                            "expected_updates": args.precision_updates, "mode": args.precision_mode})
            precision_jobs.append(Job(run.name, [run]))

    ddp_track = []
    if two_rank_runs or control_runs:
        ddp_track.append(Job("ddp_matrix", two_rank_runs + control_runs, harness=True))
    if ref_job is not None:
        ddp_track.append(ref_job)
    # 2-GPU jobs one at a time; what the check must have first, the extra launcher and resume last
    ddp_track += loss_jobs_2 + [Job(run.name, [run]) for run in torchrun_runs] + resume_jobs
    tracks = [ddp_track, loss_jobs_1] + [[job] for job in precision_jobs]
    return [[exclusive], tracks]
