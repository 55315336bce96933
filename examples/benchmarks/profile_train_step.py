"""Time per update of fairseq's Trainer on real batches, ours beside RoBERTa, and where it goes.

fairseq-train's log intervals mix data loading, logging and start-up into the speed; here the
same Trainer (fairseq's, built from the same flags as ``examples.benchmarks.whole_model``'s
fine-tuning) runs ``train_step`` on batches fetched beforehand from fairseq's own iterator
(``--live``: taken from it update by update, its data-loading workers at work, as fairseq-train does):
after --warmup updates, --steps timed updates (ms per update, sentences/s, words/s), then
--profile-steps under torch.profiler: GPU kernels' time and kernel launches per update, and the
ops that take the CPU's time. Kernel time well under the time per update: the CPU sets the pace.

``--pad-multiples 1 M`` also runs each batch right-padded to a multiple of M tokens (cuBLAS's fp16 GEMMs want
their inner size a multiple of 8; E X in a Linformer layer has the batch's length as that size).
``--sdpa library efficient ...`` runs ours once per choice of SDPA kernels (``examples.benchmarks.sdpa_backends``).

    python -m examples.benchmarks.profile_train_step --corpus .corpus/docs-corpus --sst2 .corpus/sst-2 \\
        --jobs sst2 long --pad-multiples 1 8 --out-dir OUT
CPU smoke:
    python -m examples.benchmarks.profile_train_step --cpu --tiny --corpus examples/quickstart/data \\
        --sst2 examples/quickstart/classification --jobs sst2 --steps 3 --out-dir OUT
"""

import argparse
import gc
import itertools
import os
import sys
import time

import torch
import torch.nn.functional as F

from examples.benchmarks import whole_model
from examples.benchmarks.profile_attention import gpu_work
from examples.benchmarks.sdpa_backends import CHOICES, sdpa_backends
from linformer_plugin.io import write_jsonl


def build_trainer(train_args):
    """fairseq-train's set-up (fairseq_cli.train.main up to the first epoch) for these flags."""
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    args = options.parse_args_and_arch(options.get_training_parser(), input_args=train_args)
    cfg = convert_namespace_to_omegaconf(args)
    utils.import_user_module(cfg.common)
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    epoch_itr = trainer.get_train_iterator(epoch=1, load_dataset=True)
    trainer.lr_step(epoch_itr.epoch)
    return trainer, task, epoch_itr


def padded_to_multiple(sample, multiple, pad):
    """The batch right-padded to a multiple of ``multiple`` tokens (a target of the input's shape too:
    masked LM's; a class label stays as it is)."""
    if multiple <= 1:
        return sample
    net_input = sample["net_input"]
    tokens = net_input["src_tokens"]
    extra = -tokens.size(1) % multiple
    if extra:
        net_input["src_tokens"] = F.pad(tokens, (0, extra), value=pad)
        target = sample.get("target")
        if target is not None and target.shape == tokens.shape:
            sample["target"] = F.pad(target, (0, extra), value=pad)
    return sample


def batch_stream(epoch_itr, pad_multiple, pad):
    """fairseq's batches (shuffled, as fairseq-train; epoch after epoch), padded to ``pad_multiple``."""
    while True:
        for sample in epoch_itr.next_epoch_itr(shuffle=True):
            yield padded_to_multiple(sample, pad_multiple, pad)


def measure(train_args, pad_multiple, warmup, steps, profile_steps, rows, cuda, live=False):
    """``live``: each batch is taken from fairseq's iterator as its update starts (data-loading workers
    and threads at work), as in fairseq-train; else all are fetched before the first update."""
    trainer, task, epoch_itr = build_trainer(train_args)
    stream = batch_stream(epoch_itr, pad_multiple, task.source_dictionary.pad())
    if not live:
        stream = iter(list(itertools.islice(stream, warmup + steps + profile_steps)))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for sample in itertools.islice(stream, warmup):
        trainer.train_step([sample])
    timed = []
    sync()
    start = time.perf_counter()
    for sample in itertools.islice(stream, steps):
        trainer.train_step([sample])
        timed.append(sample)
    sync()
    seconds = time.perf_counter() - start
    result = {"ms_per_update": seconds / steps * 1e3, "updates_per_s": steps / seconds,
              "sentences_per_s": sum(s["nsentences"] for s in timed) / seconds,
              "words_per_s": sum(s["ntokens"] for s in timed) / seconds,
              "mean_tokens_per_batch": sum(s["net_input"]["src_tokens"].numel() for s in timed) / steps,
              "mean_length": sum(s["net_input"]["src_tokens"].size(1) for s in timed) / steps}
    if cuda:
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    table = ""
    if profile_steps:
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with torch.profiler.profile(activities=activities) as prof:
            for sample in itertools.islice(stream, profile_steps):
                trainer.train_step([sample])
            sync()
        gpu_ms, gpu_ops = gpu_work(prof)
        result["gpu_kernels_ms_per_update"] = gpu_ms / profile_steps
        result["kernels_per_update"] = gpu_ops / profile_steps
        events = prof.key_averages()
        launches = [e for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")]
        result["launches_per_update"] = sum(e.count for e in launches) / profile_steps
        table = events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)
        if cuda:
            table += "\n" + events.table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=60)
    del trainer, stream, timed
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result, table


def job_flags(args, job, model):
    """whole_model's fine-tuning flags for this job (SST-2 at --length, or the long set), minus its launcher."""
    if job == "sst2":
        cmd = whole_model.finetune_command(args, model, args.sst2_data, args.length, args.sst2_batch_sizes[0], 1000)
    else:
        long_data, long_n, _ = whole_model.long_variants(args)
        if long_data is None:
            raise SystemExit("the long job needs the long set: --corpus with two or more --collections, or --long-data")
        cmd = whole_model.finetune_command(args, model, long_data, long_n, args.long_batch_size, 1000)
    # python -m MODULE off; a crash.pt, if any, under --work-dir
    return cmd[3:] + ["--save-dir", os.path.join(args.work_dir, "profile-checkpoints")]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    p.add_argument("--jobs", nargs="+", choices=("sst2", "long"), default=["sst2", "long"])
    p.add_argument("--pad-multiples", nargs="+", type=int, default=[1], help="1: batches as fairseq makes them")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--profile-steps", type=int, default=10)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--sdpa", nargs="+", choices=CHOICES, default=["library"],
                   help="ours: the SDPA kernels to run, each in turn (examples.benchmarks.sdpa_backends)")
    p.add_argument("--live", action="store_true", help="take each batch from fairseq's iterator as fairseq-train "
                   "does (its data-loading workers at work), not fetched before the first update")
    own, rest = p.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        p.print_help()
        print("\nand whole_model's data and model options:")
    args = whole_model.parse_args(rest + ["--parts", "finetune"])
    os.makedirs(args.out_dir, exist_ok=True)
    os.makedirs(args.work_dir, exist_ok=True)
    whole_model.prepare(args)
    cuda = not args.cpu
    records = []
    for job in own.jobs:
        for multiple in own.pad_multiples:
            for model, sdpa in [(m, c) for m in args.models for c in (own.sdpa if m == "ours" else ["library"])]:
                flags = job_flags(args, job, model)
                with sdpa_backends(sdpa):
                    result, table = measure(flags, multiple, own.warmup, own.steps, own.profile_steps, own.rows,
                                            cuda, live=own.live)
                record = {"job": job, "model": whole_model.model_name(args, model), "pad_multiple": multiple,
                          "batches": "live" if own.live else "fetched beforehand",
                          **({"sdpa": sdpa} if model == "ours" else {}), **result, "flags": flags}
                records.append(record)
                write_jsonl(os.path.join(args.out_dir, "results.jsonl"), records)
                name = f"{job}-{record['model']}-pad{multiple}" + (f"-{sdpa}" if sdpa != "library" else "")
                with open(os.path.join(args.out_dir, f"profile-{name}.txt"), "w", encoding="utf-8") as f:
                    f.write(table)
                print(f"== {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()), flush=True)
    return records


if __name__ == "__main__":
    main()
