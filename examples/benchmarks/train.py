"""Whole-model training throughput through fairseq-train on --task dummy_masked_lm.

Models (``--models``; linformer ones once per ``--ks`` value, named e.g. ours_k128):
  ours       --user-dir <repo>/linformer_plugin --arch linformer_roberta_base --compressed-dim k
  reference  --user-dir <fairseq>/examples/linformer/linformer_src --arch linformer_roberta_base
             --compressed (n // k)
  roberta    --arch roberta_base (full attention)

For each model and tokens_per_sample n in ``--lengths`` it runs one fairseq-train subprocess
(through examples.common.train_with_peak_memory) with batch size tokens // n and reports the
words/s of the last train_inner log line (the first interval, with its warm-up, is left out) and
the peak GPU memory. ``--find-max-length`` instead searches, per model, the longest n that trains at batch
size 1, doubling n from --max-length-start up to --max-length-limit.

GPU run (defaults):  python -m examples.benchmarks.train
CPU smoke:           python -m examples.benchmarks.train --device cpu --small --lengths 64 --tokens 256 \
                         --max-update 3 --ks 16
"""

import argparse
import json
import os
import shlex
import sys
import tempfile
import time

from examples.common.environment import environment, module_command
from examples.common.fairseq_commands import (PLUGIN_DIR, TRAIN_WITH_PEAK_MEMORY, child_env, size_flags,
                                              tiny_size)
from examples.common.fairseq_logs import parse_train_log, run_logged
from examples.common.reference import reference_user_dir
from linformer_plugin.io import atomic_write_text, write_jsonl

MODELS = ("ours", "reference", "roberta")
DEFAULT_DICT_SIZE = 49996  # dummy_masked_lm's default
LOG_TAIL_LINES = 200


def model_specs(models, ks, arch_overrides=None):
    """[(name, base model, k or None, flags)]; linformer models once per k."""
    arch_overrides = arch_overrides or {}
    specs = []
    for model in models:
        if model == "ours":
            arch = arch_overrides.get(model, "linformer_roberta_base")
            specs += [(f"ours_k{k}", model, k, ["--user-dir", PLUGIN_DIR, "--arch", arch]) for k in ks]
        elif model == "reference":
            src = reference_user_dir()
            if src is None:
                raise SystemExit("fairseq's examples/linformer/linformer_src is missing from this install; "
                                 "drop 'reference' from --models")
            arch = arch_overrides.get(model, "linformer_roberta_base")
            specs += [(f"reference_k{k}", model, k, ["--user-dir", src, "--arch", arch]) for k in ks]
        elif model == "roberta":
            specs.append(("roberta", model, None, ["--arch", arch_overrides.get(model, "roberta_base")]))
        else:
            raise SystemExit(f"unknown model {model!r}; choose from {MODELS}")
    return specs


def train_command(base_flags, base_model, k, n, bsz, max_update, log_interval, device, small=False,
                  fixed_vocab=False, extra_args="", python=sys.executable, precision="fp16"):
    """The subprocess command line for one fairseq-train run."""
    dict_size = DEFAULT_DICT_SIZE if fixed_vocab else max(DEFAULT_DICT_SIZE, n + 8)  # ids go up to n + 1
    cmd = [python, "-m", TRAIN_WITH_PEAK_MEMORY] + list(base_flags) + [
        "--task", "dummy_masked_lm", "--criterion", "masked_lm",
        "--tokens-per-sample", str(n), "--max-positions", str(n), "--batch-size", str(bsz),
        "--dict-size", str(dict_size),
        # one epoch of a few more batches than needed (the default, 100000 samples, takes seconds
        # to batch, at batch size 1 most of a smoke run)
        "--dataset-size", str(bsz * (max_update + 10) * 2),
        "--max-update", str(max_update), "--optimizer", "adam", "--lr", "1e-4", "--lr-scheduler", "fixed",
        "--dropout", "0", "--attention-dropout", "0",
        "--log-format", "json", "--log-interval", str(log_interval),
        "--disable-validation", "--no-save", "--num-workers", "0",
        # one process on one GPU: fairseq would otherwise spawn one worker per visible GPU
        "--distributed-world-size", "1",
    ]
    if base_model == "ours":
        cmd += ["--compressed-dim", str(k)]
    elif base_model == "reference":
        cmd += ["--compressed", str(n // k)]  # the reference takes a ratio: k = n // (n // k)
    if device == "cpu":
        cmd += ["--cpu"]
    elif precision != "fp32":
        cmd += [f"--{precision}"]
    if small:
        cmd += size_flags(tiny_size())
    cmd += shlex.split(extra_args or "")
    return cmd


def run_training(cmd, log_path, timeout, env=None):
    """Run one fairseq-train subprocess; returns parse_train_log's dict plus rc, wall_s and error."""
    started = time.time()
    # in a temporary folder: fairseq writes checkpoints/crash.pt there on some failures
    with tempfile.TemporaryDirectory(prefix="bench_train_") as workdir:
        rc, text, timed_out = run_logged(cmd, os.path.join(workdir, "output.log"), timeout, env=env, cwd=workdir)
    result = parse_train_log(text)
    result.update(rc=rc, wall_s=round(time.time() - started, 1))
    error = None
    if timed_out:
        error = f"timeout after {timeout}s"
    elif rc != 0:
        error = result["error_line"] or f"exit status {rc}"
    elif result["wps"] is None:
        error = "no train_inner or train line in the output"
    if error and ("out of memory" in error.lower() or "OutOfMemoryError" in error):
        result["oom"] = True
    result["error"] = error
    del result["error_line"]
    tail = text.splitlines()[-LOG_TAIL_LINES:]
    atomic_write_text(log_path, "# " + shlex.join(cmd) + "\n" + "\n".join(tail) + "\n")
    return result


# ----------------------------------------------------------------------------- output


def _table(records, metric, fmt, ratio_pairs):
    names = list(dict.fromkeys(r["model"] for r in records))
    by_key = {(r["n"], r["model"]): r for r in records}
    ratios = [(f"{a}/{b}", a, b) for a, b in ratio_pairs if a in names and b in names]
    header = ["n", "B"] + names + [name for name, _, _ in ratios]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for n in sorted({r["n"] for r in records}):
        row = [str(n), str(next(r["B"] for r in records if r["n"] == n))]
        for name in names:
            r = by_key.get((n, name))
            if r is None:
                row.append("")
            elif r.get(metric) is None:
                row.append("OOM" if r.get("oom") else ("error" if r.get("error") else ""))
            else:
                row.append(fmt.format(r[metric]))
        for _, a, b in ratios:
            ra, rb = by_key.get((n, a)), by_key.get((n, b))
            ok = ra and rb and ra.get(metric) and rb.get(metric)
            row.append(f"{ra[metric] / rb[metric]:.2f}x" if ok else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def ratio_pairs(records):
    pairs = []
    for r in records:
        if r["base_model"] == "ours":
            pair_ro = (r["model"], "roberta")
            pair_ref = (r["model"], f"reference_k{r['k']}")
            pairs += [p for p in (pair_ro, pair_ref) if p not in pairs]
    return pairs


def markdown_report(records):
    pairs = ratio_pairs(records)
    sections = [
        "# Training throughput (fairseq-train, dummy_masked_lm)", "",
        "words/s: the last train_inner interval (the first, with its warm-up, is left out); "
        "peak memory: torch.cuda.max_memory_allocated over the whole run. "
        "Ratios are ours / other: above 1x, ours is faster (words/s) or larger (memory).", "",
        "## words/s", "", _table(records, "wps", "{:.0f}", pairs), "",
        "## peak GPU memory (MiB)", "", _table(records, "peak_gpu_mem_mib", "{:.0f}", pairs),
    ]
    errors = [r for r in records if r.get("error")]
    if errors:
        sections += ["", "## Errors", ""] + [f"- {r['model']} n={r['n']}: {r['error']} ({r['log']})" for r in errors]
    return "\n".join(sections) + "\n"


def max_length_report(attempts, summary):
    lines = ["# Longest trainable sequence (batch size 1)", "",
             "| model | longest n trained | peak MiB there | first failing n | its error |", "|---|---|---|---|---|"]
    for s in summary:
        peak = "" if s.get("peak_gpu_mem_mib") is None else f"{s['peak_gpu_mem_mib']:.0f}"
        error = (s["error"] or "").replace("|", "/")[:200]
        lines.append(f"| {s['model']} | {s['max_n'] or '-'} | {peak} | {s['failed_n'] or '-'} | {error} |")
    lines += ["", "## Attempts", "", "| model | n | ok | peak MiB | wall s | error |", "|---|---|---|---|---|---|"]
    for a in attempts:
        peak = "" if a.get("peak_gpu_mem_mib") is None else f"{a['peak_gpu_mem_mib']:.0f}"
        lines.append(f"| {a['model']} | {a['n']} | {'yes' if not a.get('error') else 'no'} | {peak} | "
                     f"{a['wall_s']} | {(a.get('error') or '').replace('|', '/')[:120]} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--lengths", nargs="+", type=int, default=[512, 2048, 8192, 32768])
    p.add_argument("--ks", nargs="+", type=int, default=[128])
    p.add_argument("--tokens", type=int, default=65536, help="tokens per batch: batch size = tokens // n")
    p.add_argument("--max-update", type=int, default=60)
    p.add_argument("--log-interval", type=int, default=10)
    p.add_argument("--extra-args", default="", help="passed to every fairseq-train run")
    p.add_argument("--precision", choices=("fp16", "bf16", "fp32"), default="fp16",
                   help="on CUDA: fairseq's --fp16 (default), --bf16, or neither (CPU runs are fp32)")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda if available")
    p.add_argument("--small", action="store_true", help="linformer_roberta_tiny's size (2 layers, 64 dim) for smoke tests")
    p.add_argument("--arch-override", action="append", default=[], metavar="MODEL=ARCH",
                   help="e.g. ours=linformer_roberta_tiny (repeatable)")
    p.add_argument("--fixed-vocab", action="store_true",
                   help="keep --dict-size at 49996 by wrapping dummy_masked_lm's token ids (otherwise the "
                        "dictionary, and the LM head, grow with n beyond 49996)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per fairseq-train run")
    p.add_argument("--python", default=sys.executable, help="the Python that runs fairseq-train")
    p.add_argument("--out-dir", default="benchmarks/train")
    p.add_argument("--find-max-length", action="store_true")
    p.add_argument("--max-length-start", type=int, default=8192)
    p.add_argument("--max-length-limit", type=int, default=262144)
    p.add_argument("--max-length-updates", type=int, default=3)
    args = p.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        args.arch_overrides = dict(item.split("=", 1) for item in args.arch_override)
    except ValueError:
        p.error("--arch-override takes MODEL=ARCH")
    return args


def _child_env(args):
    return child_env({"BENCH_WRAP_TOKEN_IDS": "1"} if args.fixed_vocab else None)


def _run(args, spec, n, bsz, max_update, log_interval, log_name):
    name, base_model, k, flags = spec
    cmd = train_command(flags, base_model, k, n, bsz, max_update, log_interval, args.device, args.small,
                        args.fixed_vocab, args.extra_args, args.python, args.precision)
    log_path = os.path.join(args.out_dir, "logs", log_name)
    result = run_training(cmd, log_path, args.timeout, _child_env(args))
    record = {"model": name, "base_model": base_model, "k": k, "n": n, "B": bsz, "tokens": n * bsz,
              "max_update": max_update}
    record.update(result)
    record["log"] = os.path.relpath(log_path, args.out_dir)
    record["command"] = shlex.join(cmd)
    if base_model == "reference" and n % k:
        record["note"] = f"the reference projects to n // (n // k) = {n // (n // k)} rows, not k"
    return record


def sweep(args, specs):
    records = []
    cases = [(spec, n) for n in args.lengths for spec in specs if spec[2] is None or spec[2] <= n]
    for i, (spec, n) in enumerate(cases, 1):
        bsz = max(1, args.tokens // n)
        # a train_inner line needs log_interval updates; a smoke run with fewer logs its only interval
        log_interval = max(1, min(args.log_interval, args.max_update))
        record = _run(args, spec, n, bsz, args.max_update, log_interval, f"{spec[0]}_{n}.log")
        records.append(record)
        write_jsonl(os.path.join(args.out_dir, "results.jsonl"), records)
        wps, peak = record["wps"], record["peak_gpu_mem_mib"]
        print(f"[{i}/{len(cases)}] {spec[0]:16s} n={n:6d} B={bsz:4d}: "
              f"{'-' if wps is None else f'{wps:.0f}'} words/s, "
              f"peak {'-' if peak is None else f'{peak:.0f}'} MiB, {record['wall_s']} s"
              + (f"  [{record['error']}]" if record.get("error") else ""), flush=True)
        if record["train_inner_lines"] == 1 and args.max_update > log_interval:
            print("  note: only one train_inner line, so its words/s include the warm-up", flush=True)
    report = markdown_report(records)
    atomic_write_text(os.path.join(args.out_dir, "results.md"), report)
    return records, report


def find_max_length(args, specs):
    attempts, summary = [], []
    jsonl = os.path.join(args.out_dir, "max_length_results.jsonl")
    for spec in specs:
        best = {"model": spec[0], "max_n": None, "peak_gpu_mem_mib": None, "failed_n": None, "error": None}
        n = args.max_length_start
        while n <= args.max_length_limit:
            record = _run(args, spec, n, 1, args.max_length_updates, 1, f"maxlen_{spec[0]}_{n}.log")
            record["mode"] = "find_max_length"
            attempts.append(record)
            write_jsonl(jsonl, attempts)
            print(f"{spec[0]:16s} n={n:7d}: {'ok' if not record.get('error') else record['error']}"
                  f" ({record['wall_s']} s)", flush=True)
            if record.get("error"):
                best.update(failed_n=n, error=record["error"])
                break
            best.update(max_n=n, peak_gpu_mem_mib=record["peak_gpu_mem_mib"])
            n *= 2
        summary.append(best)
    report = max_length_report(attempts, summary)
    atomic_write_text(os.path.join(args.out_dir, "max_length_results.md"), report)
    atomic_write_text(os.path.join(args.out_dir, "max_length_summary.json"), json.dumps(summary, indent=2) + "\n")
    return attempts, summary, report


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    specs = model_specs(args.models, args.ks, args.arch_overrides)
    env_name = "max_length_env.json" if args.find_max_length else "env.json"
    env = environment(module_command(__spec__.name, argv), args.device, args.python, in_child=args.device != "cpu")
    atomic_write_text(os.path.join(args.out_dir, env_name), json.dumps(env, indent=2) + "\n")
    if args.find_max_length:
        _, _, report = find_max_length(args, specs)
    else:
        _, report = sweep(args, specs)
    print()
    print(report)


if __name__ == "__main__":
    main()
