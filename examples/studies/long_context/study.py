"""Long inputs end to end: cost at n = 4096, warm start from a RoBERTa trained at 512, and a
long-document classification task fine-tuned at 4096 tokens and at its first 512.

    python -m examples.studies.long_context.study --data-bin study-data/data-bin \\
        --long-docs study-data/long-docs --roberta-checkpoint roberta-512/checkpoint_last.pt \\
        --out-dir long-context-results

Inputs: a masked-LM data-bin (scripts/prepare_pretraining_data.py), the output of
``python -m examples.studies.long_context.prepare_data`` (bin/window-N and bin/truncated-T
binarized with that data-bin's dictionary) and a fairseq RoBERTa checkpoint trained on that
data-bin at T tokens (without --roberta-checkpoint, one is pretrained here
for --roberta-updates updates). Every model has that checkpoint's size. Steps, each a fairseq-train
(or fairseq-validate) subprocess, logged under OUT/logs/ (the steps are in ``steps.py``, the
summary's tables in ``summary.py``):

1. benchmark: masked-LM training at tokens_per_sample N, --sample-break-mode complete_doc, the same
   batches (--max-tokens), linformer_roberta (k = --compressed-dim) and roberta, one after the other:
   words/s over the second half of the updates and peak GPU memory
   (examples.common.train_with_peak_memory);
2. convert: scripts/convert_checkpoint.py roberta-to-linformer --max-positions N; masked-LM valid
   loss (fairseq-validate) of the RoBERTa at T and of the converted model at N, then --mlm-updates
   updates of masked-LM training at N (complete_doc) and its loss again;
3. finetune: sentence_prediction from that checkpoint on bin/window-N and on bin/truncated-T (the
   same examples, cut to T tokens), the same updates and batches, per --seeds; and the RoBERTa
   checkpoint itself on bin/truncated-T (what one had before). Accuracy on valid and test at the
   last update (no checkpoint selection: the sets are small). Beside them, on the CPU, a
   bag-of-pieces naive Bayes on both variants: how much the tokens alone decide at each length.

OUT gets results.jsonl (one record per run, rewritten after each), summary.md and env.json;
checkpoints go to --work-dir (default: a temporary folder, removed at the end). --deadline keeps
the whole within a time limit. --tiny --cpu is the test's smoke mode: tiny models, a few updates,
whatever lengths the data has.
"""

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from examples.common.environment import environment, module_command
from examples.common.fairseq_commands import study_size, tiny_size
from examples.studies.long_context.steps import (benchmark, check_roberta, continue_mlm, convert, finetune, log,
                                                 memory_profile, naive_bayes_records, pretrain_roberta, read_roberta,
                                                 validate_mlm)
from examples.studies.long_context.summary import summary


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-bin", required=True, help="masked-LM data-bin (dict.txt, train, valid)")
    p.add_argument("--long-docs", required=True, help="examples.studies.long_context.prepare_data's output directory")
    p.add_argument("--roberta-checkpoint", help="fairseq RoBERTa trained on --data-bin at the truncated length "
                   "(default: pretrain one here for --roberta-updates updates)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--work-dir", help="checkpoints (default: a temporary directory, removed at the end)")
    p.add_argument("--compressed-dim", type=int, default=256, help="k (default 256)")
    p.add_argument("--max-tokens", type=int, default=65536, help="tokens per masked-LM batch (default 65536)")
    p.add_argument("--bench-updates", type=int, default=200,
                   help="updates per benchmark run; words/s over the second half (0 skips the benchmark)")
    p.add_argument("--bench-break-modes", nargs="+", default=["complete_doc"], choices=["complete_doc", "none"],
                   help="--sample-break-mode of the benchmark runs; none: every sample n tokens long "
                        "(default: complete_doc)")
    p.add_argument("--memory-profile", type=int, default=0, metavar="UPDATES",
                   help="after the benchmark, UPDATES more updates of each model (the first break mode) with the "
                        "CUDA allocator's history recorded: what is live at the peak, by allocation site "
                        "(0: none). The same seed gives the benchmark's batches in order, so --bench-updates "
                        "reproduces its peak; a few updates show a typical step")
    p.add_argument("--benchmark-only", action="store_true",
                   help="only the benchmark (and --memory-profile): no RoBERTa pretraining, conversion or "
                        "fine-tuning; the model size is --roberta-checkpoint's, else linformer_roberta_medium's")
    p.add_argument("--roberta-updates", type=int, default=700, help="without --roberta-checkpoint")
    p.add_argument("--roberta-lr", type=float, default=5e-4)
    p.add_argument("--mlm-updates", type=int, default=200, help="masked-LM updates at N after conversion (0: none)")
    p.add_argument("--mlm-lr", type=float, default=2e-4)
    p.add_argument("--ft-updates", type=int, default=400, help="fine-tuning updates (1,380 windows: 86 a pass; "
                   "200 were too few: results/2026-11-28-warm-start-roberta400-lr1e-3)")
    p.add_argument("--ft-lr", type=float, default=1e-4)
    p.add_argument("--ft-batch-size", type=int, default=8)
    p.add_argument("--ft-update-freq", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="fine-tuning seeds")
    p.add_argument("--no-roberta-baseline", action="store_true",
                   help="skip fine-tuning the RoBERTa checkpoint itself on the truncated data")
    p.add_argument("--parallel", type=int, default=5, help="fine-tuning runs at once (one GPU)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-interval", type=int, default=20)
    p.add_argument("--num-workers", type=int, default=4, help="data loader processes per run")
    p.add_argument("--job-timeout", type=int, default=420, help="seconds per subprocess")
    p.add_argument("--deadline", type=int, default=540,
                   help="seconds from the start: later runs are skipped, running ones stopped, so that the "
                        "results so far are written in time (0: none; default 540)")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--cpu", action="store_true", help="train on CPU (fp32); benchmark and pretraining run at once")
    p.add_argument("--tiny", action="store_true",
                   help="smoke mode: tiny models, a few updates, small batches (the test runs --tiny --cpu)")
    args = p.parse_args(argv)
    if args.benchmark_only and args.bench_updates <= 0 and args.memory_profile <= 0:
        p.error("--benchmark-only with --bench-updates 0 and no --memory-profile has nothing to run")
    if args.tiny:
        args.compressed_dim, args.max_tokens, args.log_interval = 16, 1024, 2
        args.bench_updates = min(args.bench_updates, 4)
        args.roberta_updates, args.mlm_updates, args.ft_updates = 4, min(args.mlm_updates, 4), 4
        args.ft_batch_size, args.ft_update_freq, args.seeds, args.num_workers = 4, 1, args.seeds[:1], 0
        args.deadline = 0
        args.roberta_lr, args.mlm_lr, args.ft_lr = 1e-3, 1e-3, 1e-3
    return args


def main(argv=None):
    args = parse_args(argv)
    args.started = time.time()
    for key in ("data_bin", "long_docs", "roberta_checkpoint", "out_dir", "work_dir"):
        if getattr(args, key):  # the runs start in folders of their own
            setattr(args, key, os.path.abspath(getattr(args, key)))
    from examples.studies.long_context.long_documents import load_manifest

    for path, what in ((args.data_bin, "--data-bin"), (args.long_docs, "--long-docs")):
        if not os.path.isdir(path):
            raise SystemExit(f"{what} {path} is not a directory")
    if not os.path.isfile(os.path.join(args.data_bin, "dict.txt")):
        raise SystemExit(f"--data-bin {args.data_bin} has no dict.txt")
    manifest = load_manifest(args.long_docs)
    window, truncated = manifest["variants"]["window"], manifest["variants"]["truncated"]
    n, t = manifest["window_tokens"], manifest["truncate_tokens"]
    if args.max_tokens < n:  # a masked-LM batch holds at least one block of n tokens
        args.max_tokens = n
    for variant in (window, truncated):
        with open(os.path.join(variant["path"], "input0", "dict.txt"), "rb") as a, \
                open(os.path.join(args.data_bin, "dict.txt"), "rb") as b:
            if a.read() != b.read():
                raise SystemExit(f"{variant['path']} was binarized with another dictionary than {args.data_bin}'s; "
                                 "prepare it with --pretraining-data pointing at that data-bin")
    if "valid" not in manifest["examples"]:
        raise SystemExit(f"{args.long_docs} has no valid split: fine-tuning reports valid (and test) accuracy")
    subsets = [split for split in ("valid", "test") if split in manifest["examples"]]
    os.makedirs(os.path.join(args.out_dir, "logs"), exist_ok=True)
    own_work = args.work_dir is None
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="long_context_study_")
    os.makedirs(args.work_dir, exist_ok=True)
    records = []
    results_path = os.path.join(args.out_dir, "results.jsonl")
    started = time.time()

    def add(new):
        from linformer_plugin.io import atomic_write_text, write_jsonl

        records.extend(new if isinstance(new, list) else [new])
        write_jsonl(results_path, records)
        atomic_write_text(os.path.join(args.out_dir, "summary.md"), summary(records, manifest) + "\n")

    background = ThreadPoolExecutor(2)
    # a torch import in a child, beside the first runs
    env = background.submit(environment, module_command(__spec__.name, argv if argv is not None else sys.argv[1:]),
                            "cpu" if args.cpu else "cuda", args.python)
    try:
        roberta = None
        if args.roberta_checkpoint:
            roberta = read_roberta(args.roberta_checkpoint)
            size = roberta["size"]
            log(f"roberta checkpoint: {size}, max_positions {roberta['max_positions']}, arch {roberta['arch']}")
        else:
            size = tiny_size() if args.tiny else study_size()
        if roberta:
            check_roberta(roberta, args, n)

        # 1. pretraining a roberta (if needed), then the benchmark runs: one at a time on a GPU, all at
        # once on a CPU (where the timings mean little)
        steps = [] if args.roberta_checkpoint or args.benchmark_only else [
            functools.partial(pretrain_roberta, args, size, t)]
        if args.bench_updates > 0:
            steps += [functools.partial(benchmark, args, kind, size, n, mode)
                      for mode in args.bench_break_modes for kind in ("linformer", "roberta")]
        if args.memory_profile > 0:
            steps += [functools.partial(memory_profile, args, kind, size, n, args.bench_break_modes[0])
                      for kind in ("linformer", "roberta")]
        with ThreadPoolExecutor(max(1, len(steps)) if args.cpu else 1) as pool:
            futures = [pool.submit(step) for step in steps]  # one worker on a GPU: in order
            try:
                for future in futures:
                    record = future.result()
                    add(record)
                    if record["step"] == "pretrain_roberta":
                        if record["error"]:
                            raise SystemExit(f"pretraining the roberta failed: {record['error']}")
                        args.roberta_checkpoint = record["checkpoint"]
                        roberta = read_roberta(args.roberta_checkpoint)
                        check_roberta(roberta, args, n)
            finally:
                for future in futures:
                    future.cancel()  # those not started yet
        if args.benchmark_only:
            return records
        bayes = background.submit(naive_bayes_records, (window, truncated), subsets)  # CPU, beside the GPU runs

        # 2. warm start: convert, validate it at n, continue masked-LM training at n
        record = convert(args, args.roberta_checkpoint, n)
        add(record)
        if record["error"]:
            raise SystemExit(f"conversion failed: {record['error']}")
        converted = record["checkpoint"]
        with ThreadPoolExecutor(3) as pool:
            source = None
            if not any(r["step"] == "pretrain_roberta" for r in records):  # one pretrained here reports its own
                source = pool.submit(validate_mlm, args, args.roberta_checkpoint, roberta["max_positions"],
                                     "validate_roberta", "complete")
            before = pool.submit(validate_mlm, args, converted, n, "validate_converted")
            mlm = pool.submit(continue_mlm, args, size, converted, n) if args.mlm_updates > 0 else None
            if source is not None:
                add(source.result())
            add(before.result())
            warm, start = converted, "converted"
            if mlm is not None:
                record = mlm.result()
                add(record)
                if record["error"]:  # fine-tune from the converted checkpoint all the same
                    log(f"masked-LM continuation failed ({record['error']}); fine-tuning the converted checkpoint")
                else:
                    warm, start = record["checkpoint"], f"converted + {args.mlm_updates} masked-LM updates at {n}"

        add(bayes.result())

        # 3. fine-tuning: the long runs first, the short ones beside them
        examples = {split: e["total"] for split, e in manifest["examples"].items()}
        examples.setdefault("test", None)
        bases = [{"seed": seed, "examples": examples, "num_classes": window["num_classes"], "subsets": subsets}
                 for seed in args.seeds]
        jobs = [dict(base, model="linformer", kind="linformer", variant=window["name"], data=window["path"],
                     n=n, max_positions=n, checkpoint=warm, start=start, size=size) for base in bases]
        for base in bases:
            jobs.append(dict(base, model="linformer", kind="linformer", variant=truncated["name"],
                             data=truncated["path"], n=t, max_positions=n, checkpoint=warm, start=start, size=size))
            if not args.no_roberta_baseline:
                jobs.append(dict(base, model=f"roberta-{roberta['max_positions']}", kind="roberta",
                                 arch=roberta["arch"], variant=truncated["name"], data=truncated["path"], n=t,
                                 max_positions=roberta["max_positions"], checkpoint=args.roberta_checkpoint,
                                 start="the roberta checkpoint", size=size))
        with ThreadPoolExecutor(max(1, args.parallel)) as pool:
            for record in pool.map(lambda job: finetune(args, job), jobs):
                add(record)
    finally:
        with open(os.path.join(args.out_dir, "env.json"), "w") as f:
            json.dump(env.result(), f, indent=2)
        background.shutdown()
        if own_work:
            shutil.rmtree(args.work_dir, ignore_errors=True)
        log(f"total {time.time() - started:.0f} s; results in {results_path}")
        print(summary(records, manifest))  # also what was measured before an error
    return records


if __name__ == "__main__":
    main()
