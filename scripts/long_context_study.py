#!/usr/bin/env python3
"""Long inputs end to end: cost at n = 4096, warm start from a RoBERTa trained at 512, and a
long-document classification task fine-tuned at 4096 tokens and at its first 512.

    python scripts/long_context_study.py --data-bin study-data/data-bin --long-docs study-data/long-docs \\
        --roberta-checkpoint roberta-512/checkpoint_last.pt --out-dir long-context-results

Inputs: a masked-LM data-bin (prepare_pretraining_data.py), a prepare_long_document_data.py output
(bin/window-N and bin/truncated-T binarized with that data-bin's dictionary) and a fairseq RoBERTa
checkpoint trained on that data-bin at T tokens (without --roberta-checkpoint, one is pretrained here
for --roberta-updates updates). Every model has that checkpoint's size. Steps, each a fairseq-train
(or fairseq-validate) subprocess, logged under OUT/logs/:

1. benchmark: masked-LM training at tokens_per_sample N, --sample-break-mode complete_doc, the same
   batches (--max-tokens), linformer_roberta (k = --compressed-dim) and roberta, one after the other:
   words/s of the last log interval and peak GPU memory (scripts/_train_with_peak_memory.py);
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
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO_ROOT, "scripts")
PLUGIN_DIR = os.path.join(REPO_ROOT, "linformer_plugin")
WRAPPER = os.path.join(SCRIPTS, "_train_with_peak_memory.py")
_lock = threading.Lock()

sys.path.insert(0, SCRIPTS)
from _fairseq_commands import (DROPOUT, SIZE_KEYS, STUDY_SIZE, TINY_SIZE, adam_polynomial, masked_lm,  # noqa: E402
                               restore as restore_flags, sentence_prediction, size_flags)
from _fairseq_logs import json_records, run_logged  # noqa: E402  (light: no torch, no fairseq)


def log(message):
    with _lock:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------- running fairseq


def run_job(name, cmd, args, timeout=None, extra_env=None):
    """One subprocess in its own session (killed whole on timeout), with ``extra_env`` added to this
    process's environment; its output in OUT/logs/NAME.log. Returns {"rc", "wall_s", "error", "text",
    "records" (its json_records)}, with benchmark_train's parse (wps, peak memory)."""
    log_path = os.path.join(args.out_dir, "logs", f"{name}.log")
    workdir = os.path.join(args.work_dir, "cwd", name)  # fairseq may write checkpoints/crash.pt here
    os.makedirs(workdir, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra_env or {})
    from benchmark_train import parse_output  # imported late: it imports fairseq (seconds)

    limit = timeout or args.job_timeout
    if args.deadline:
        left = args.deadline - (time.time() - args.started)
        if left < 30:
            log(f"skip  {name}: past --deadline")
            result = parse_output("")  # every field a run reports, empty
            del result["error_line"]
            return dict(result, rc=None, wall_s=0, text="", records={},
                        error=f"skipped: less than 30 s left before --deadline {args.deadline}")
        limit = min(limit, int(left))
    log(f"start {name}")
    started = time.time()
    rc, text, timed_out = run_logged(cmd, log_path, limit, env=env, cwd=workdir, header=True)

    records = json_records(text)
    result = parse_output(text, records)
    result.update(rc=rc, wall_s=round(time.time() - started, 1), text=text, records=records)
    error = None
    if timed_out:
        error = f"timeout after {limit}s"
    elif rc != 0:
        error = result["error_line"] or f"exit status {rc}"
    result["error"] = error
    del result["error_line"]
    log(f"done  {name} in {result['wall_s']} s" + (f"  [{error}]" if error else ""))
    return result


def device_flags(args):
    if args.cpu:
        return ["--cpu"]
    return ["--fp16"]


def common_train_flags(args, save_dir=None, seed=None):
    flags = ["--log-format", "json", "--log-interval", str(args.log_interval), "--num-workers", str(args.num_workers),
             "--distributed-world-size", "1", "--seed", str(args.seed if seed is None else seed)] + device_flags(args)
    if save_dir is None:
        flags += ["--no-save"]
    else:
        flags += ["--save-dir", save_dir, "--no-epoch-checkpoints", "--no-save-optimizer-state"]
    return flags


def model_flags(kind, size, args, max_positions, arch=None):
    if kind == "linformer":
        return ["--user-dir", PLUGIN_DIR, "--arch", "linformer_roberta", "--compressed-dim", str(args.compressed_dim),
                "--max-positions", str(max_positions)] + size_flags(size)
    # the plugin also lets torch >= 2.6 load fairseq checkpoints
    return ["--user-dir", PLUGIN_DIR, "--arch", arch or "roberta", "--max-positions", str(max_positions)] + size_flags(size)


def mlm_command(args, kind, size, n, break_mode, max_update, lr, warmup, save_dir=None, restore=None,
                validate=True, arch=None):
    cmd = [args.python, WRAPPER, args.data_bin] + masked_lm(n, break_mode) + [
        "--max-tokens", str(args.max_tokens)] + adam_polynomial(lr, max_update, warmup, 0.01, 1.0) + DROPOUT + [
        # a paragraph longer than n makes a longer block: fairseq drops it from training with a
        # warning, and from validation only when told to
        "--skip-invalid-size-inputs-valid-test"]
    cmd += model_flags(kind, size, args, n, arch) + common_train_flags(args, save_dir)
    if restore:
        cmd += restore_flags(restore)
    cmd += [] if validate else ["--disable-validation"]
    return cmd


def last(stats_by_tag, tag, key):
    values = [s[key] for s in stats_by_tag.get(tag, []) if key in s]
    return values[-1] if values else None


# ----------------------------------------------------------------------------- steps


def read_roberta(path):
    """Size, max_positions, arch and vocabulary rows of a fairseq RoBERTa checkpoint."""
    sys.path.insert(0, REPO_ROOT)
    from linformer_plugin.convert import load_checkpoint, model_args

    state = load_checkpoint(path)
    margs = model_args(state)
    model = state["model"]
    positions = model.get("encoder.sentence_encoder.embed_positions.weight")
    if positions is None or any(".self_attn.projection." in k for k in model):
        raise SystemExit(f"{path} is not a fairseq RoBERTa checkpoint (learned positions, full attention)")
    size = {key: int(getattr(margs, key)) for key in SIZE_KEYS}
    return {"size": size, "max_positions": positions.size(0) - 2, "arch": getattr(margs, "arch", "roberta"),
            "vocab": model["encoder.sentence_encoder.embed_tokens.weight"].size(0)}


def check_roberta(roberta, args, n):
    with open(os.path.join(args.data_bin, "dict.txt"), encoding="utf-8") as f:
        rows = sum(1 for line in f if line.strip()) + 5  # <s> <pad> </s> <unk>, the words, <mask>
    if roberta["vocab"] != rows:
        raise SystemExit(f"the roberta checkpoint has {roberta['vocab']} token embeddings but {args.data_bin}/dict.txt "
                         f"makes {rows}: it was trained with another dictionary")
    if n % roberta["max_positions"]:
        raise SystemExit(f"the window length {n} is not a multiple of the checkpoint's max_positions "
                         f"{roberta['max_positions']}: positions are extended in whole blocks")


def pretrain_roberta(args, size, n):
    save_dir = os.path.join(args.work_dir, "roberta")
    cmd = mlm_command(args, "roberta", size, n, "complete", args.roberta_updates, args.roberta_lr,
                      max(1, args.roberta_updates // 10), save_dir=save_dir)
    result = run_job("pretrain_roberta", cmd, args)
    stats = result["records"]
    record = {"step": "pretrain_roberta", "model": "roberta", "n": n, "max_tokens": args.max_tokens,
              "num_updates": result["num_updates"],
              "wps": result["wps"], "valid_loss": last(stats, "valid", "valid_loss"), "wall_s": result["wall_s"],
              "error": result["error"], "checkpoint": os.path.join(save_dir, "checkpoint_last.pt")}
    return record


def steady_wps(inner, settle=0.5):
    """Words/s over the log intervals of the last (1 - settle) of the updates: words over seconds,
    not a mean of rates. With complete_doc every batch has another shape, and the first few dozen
    updates run slower while the allocator and the kernels' choices settle."""
    if not inner:
        return None
    last = int(inner[-1]["num_updates"])
    words = seconds = 0.0
    done = 0
    for r in inner:
        start, done = done, int(r["num_updates"])
        updates = done - start
        if start >= settle * last and float(r["ups"]) > 0:
            words += float(r["wpb"]) * updates
            seconds += updates / float(r["ups"])
    return round(words / seconds) if seconds else None


def _run_fields(args, kind, n, break_mode):
    """What a benchmark or memory-profile record says of its run."""
    return {"model": kind, "k": args.compressed_dim if kind == "linformer" else None, "n": n,
            "sample_break_mode": break_mode, "max_tokens": args.max_tokens}


def _model_name(record):
    return f"linformer k={record['k']}" if record["model"] == "linformer" else record["model"]


def benchmark(args, kind, size, n, break_mode="complete_doc"):
    cmd = mlm_command(args, kind, size, n, break_mode, args.bench_updates, 1e-4, 10, validate=False)
    name = f"benchmark_{kind}" + ("" if break_mode == "complete_doc" else f"_{break_mode}")
    result = run_job(name, cmd, args)
    inner = result["records"].get("train_inner", [])
    mean_len = round(inner[-1]["wpb"] / inner[-1]["bsz"], 1) if inner and inner[-1].get("bsz") else None
    return {"step": "benchmark", **_run_fields(args, kind, n, break_mode),
            "max_update": args.bench_updates, "num_updates": result["num_updates"],
            "wps": steady_wps(inner) if inner else result["wps"], "wps_last_interval": result["wps"],
            "wps_source": "second half of the updates" if inner else result["wps_source"],
            "mean_sample_tokens": mean_len,
            "peak_gpu_mem_mib": result["peak_gpu_mem_mib"], "peak_gpu_reserved_mib": result["peak_gpu_reserved_mib"],
            "wall_s": result["wall_s"], "error": result["error"], "size": size}


def memory_profile(args, kind, size, n, break_mode):
    """A few updates of the benchmark's run with the allocator's history recorded: what is live at
    the peak, by the line of code that allocated it (scripts/memory_at_peak.py)."""
    from memory_at_peak import load_snapshot, peak_sites

    snapshot = os.path.join(args.work_dir, f"memory_{kind}.pickle")
    # about 5,000 allocator events an update at n = 4,096 (8 layers): room for the whole run
    entries = 100_000 + 10_000 * args.memory_profile
    cmd = mlm_command(args, kind, size, n, break_mode, args.memory_profile, 1e-4, 1, validate=False)
    result = run_job(f"memory_{kind}", cmd, args, extra_env={"BENCH_MEMORY_SNAPSHOT": snapshot,
                                                              "BENCH_MEMORY_SNAPSHOT_ENTRIES": str(entries)})
    record = {"step": "memory_profile", **_run_fields(args, kind, n, break_mode),
              "num_updates": result["num_updates"], "peak_gpu_mem_mib": result["peak_gpu_mem_mib"],
              "wall_s": result["wall_s"], "error": result["error"]}
    if os.path.isfile(snapshot):
        devices = peak_sites(load_snapshot(snapshot), top=15)
        os.remove(snapshot)  # tens of MB of stacks; the summary keeps what matters
        if devices:
            record.update(trace_events=devices[0]["events"], whole_run=devices[0]["events"] < entries,
                          trace_peak_mib=devices[0]["peak_mib"], sites=devices[0]["sites"])
    elif not record["error"]:
        record["error"] = "no allocator trace (no CUDA device)"
    return record


def convert(args, roberta_checkpoint, n):
    out = os.path.join(args.work_dir, f"linformer-{n}.pt")
    cmd = [args.python, os.path.join(SCRIPTS, "convert_checkpoint.py"), "roberta-to-linformer", roberta_checkpoint,
           out, "--compressed-dim", str(args.compressed_dim), "--max-positions", str(n)]
    result = run_job("convert", cmd, args)
    return {"step": "convert", "source": roberta_checkpoint, "max_positions": n, "compressed_dim": args.compressed_dim,
            "wall_s": result["wall_s"], "error": result["error"], "checkpoint": out}


def validate_mlm(args, checkpoint, n, name, break_mode="complete_doc"):
    cmd = [args.python, "-m", "fairseq_cli.validate", args.data_bin, "--user-dir", PLUGIN_DIR, "--task", "masked_lm",
           "--path", checkpoint, "--tokens-per-sample", str(n), "--sample-break-mode", break_mode,
           "--max-tokens", str(args.max_tokens), "--valid-subset", "valid", "--num-workers", str(args.num_workers),
           "--skip-invalid-size-inputs-valid-test",
           "--log-format", "json"] + device_flags(args)
    result = run_job(name, cmd, args)
    stats = result["records"]
    return {"step": name, "n": n, "sample_break_mode": break_mode, "valid_loss": last(stats, "valid", "valid_loss"),
            "wall_s": result["wall_s"], "error": result["error"]}


def continue_mlm(args, size, checkpoint, n):
    save_dir = os.path.join(args.work_dir, "mlm")
    cmd = mlm_command(args, "linformer", size, n, "complete_doc", args.mlm_updates, args.mlm_lr,
                      max(1, args.mlm_updates // 10), save_dir=save_dir, restore=checkpoint)
    result = run_job("mlm", cmd, args)
    stats = result["records"]
    return {"step": "mlm", "n": n, "max_tokens": args.max_tokens, "max_update": args.mlm_updates,
            "num_updates": result["num_updates"] or last(stats, "valid", "valid_num_updates"),
            "wps": result["wps"], "valid_loss": last(stats, "valid", "valid_loss"),
            "peak_gpu_mem_mib": result["peak_gpu_mem_mib"], "wall_s": result["wall_s"], "error": result["error"],
            "checkpoint": os.path.join(save_dir, "checkpoint_last.pt")}


def finetune(args, job):
    """job: {"model", "kind", "arch", "size", "variant", "data", "n", "max_positions", "checkpoint", "start", "seed",
    "examples", "num_classes", "subsets"}"""
    cmd = [args.python, WRAPPER, job["data"]] + sentence_prediction(job["num_classes"]) + restore_flags(
        job["checkpoint"]) + [
        "--batch-size", str(args.ft_batch_size), "--update-freq", str(args.ft_update_freq),
        "--batch-size-valid", str(max(16, args.ft_batch_size)),
        "--required-batch-size-multiple", "1", "--valid-subset", ",".join(job["subsets"])]
    cmd += adam_polynomial(args.ft_lr, args.ft_updates, max(1, args.ft_updates * 6 // 100), 0.1, 0.0) + DROPOUT
    cmd += model_flags(job["kind"], job["size"], args, job["max_positions"], job.get("arch"))
    cmd += common_train_flags(args, seed=job["seed"])
    name = f"finetune_{job['model']}_{job['variant']}_seed{job['seed']}"
    result = run_job(name, cmd, args)
    stats = result["records"]
    curve = []
    tests = stats.get("test", []) or [{}] * len(stats.get("valid", []))
    for v, t in zip(stats.get("valid", []), tests):
        curve.append({"num_updates": v.get("valid_num_updates"), "valid_accuracy": v.get("valid_accuracy"),
                      "test_accuracy": t.get("test_accuracy")})
    return {"step": "finetune", "model": job["model"], "variant": job["variant"], "n": job["n"],
            "seed": job["seed"], "start": job["start"], "checkpoint": job["checkpoint"], "max_update": args.ft_updates,
            "batch_size": args.ft_batch_size * args.ft_update_freq, "lr": args.ft_lr,
            "num_updates": curve[-1]["num_updates"] if curve else None,
            "valid_accuracy": last(stats, "valid", "valid_accuracy"), "test_accuracy": last(stats, "test", "test_accuracy"),
            "valid_examples": job["examples"]["valid"], "test_examples": job["examples"]["test"],
            "train_examples": job["examples"]["train"], "curve": curve, "wps": result["wps"],
            "peak_gpu_mem_mib": result["peak_gpu_mem_mib"], "wall_s": result["wall_s"], "error": result["error"]}


def naive_bayes(variant, subsets):
    """A bag-of-pieces multinomial naive Bayes (add-one smoothing) on a classification data-bin: how
    much of the task the tokens alone decide, at this input length, without any pretraining."""
    import numpy as np
    from fairseq.data import Dictionary, data_utils

    started = time.time()
    words = Dictionary.load(os.path.join(variant["path"], "input0", "dict.txt"))
    labels = Dictionary.load(os.path.join(variant["path"], "label", "dict.txt"))

    def load(split):
        x = data_utils.load_indexed_dataset(os.path.join(variant["path"], "input0", split), words)
        y = data_utils.load_indexed_dataset(os.path.join(variant["path"], "label", split), labels)
        counts = np.stack([np.bincount(x[i].numpy(), minlength=len(words)) for i in range(len(x))])
        return counts, np.array([int(y[i][0]) for i in range(len(y))])

    x, y = load("train")
    classes = np.unique(y)
    per_class = np.stack([x[y == c].sum(0) for c in classes]) + 1.0
    log_p = np.log(per_class / per_class.sum(1, keepdims=True))
    log_prior = np.log(np.array([(y == c).mean() for c in classes]))
    record = {"step": "naive_bayes", "model": "naive Bayes", "variant": variant["name"],
              "n": variant["max_tokens"]}
    for split in subsets:
        xs, ys = load(split)
        predicted = classes[np.argmax(xs @ log_p.T + log_prior, axis=1)]
        record[f"{split}_accuracy"] = round(100.0 * float((predicted == ys).mean()), 1)
        record[f"{split}_examples"] = len(ys)
    record["wall_s"] = round(time.time() - started, 1)
    record["error"] = None
    return record


def naive_bayes_records(variants, subsets):
    records = []
    for variant in variants:
        try:
            records.append(naive_bayes(variant, subsets))
        except Exception as exc:  # noqa: BLE001  (a side result: never stops the study)
            records.append({"step": "naive_bayes", "model": "naive Bayes", "variant": variant["name"],
                            "n": variant["max_tokens"], "wall_s": 0, "error": repr(exc)})
    return records


# ----------------------------------------------------------------------------- report


def _fmt(value, fmt="{:.0f}"):
    return "" if value is None else fmt.format(value)


def summary(records, manifest):
    lines = ["# Long-context study", ""]
    for mode in dict.fromkeys(r["sample_break_mode"] for r in records if r["step"] == "benchmark"):
        bench = [r for r in records if r["step"] == "benchmark" and r["sample_break_mode"] == mode]
        r0 = bench[0]
        lines += [f"## Masked-LM training at n = {r0['n']} ({mode}, --max-tokens {r0['max_tokens']}, "
                  f"{r0['max_update']} updates; words/s over the second half)", "",
                  "| model | words/s | peak GPU MiB | mean tokens per sample | error |", "|---|---|---|---|---|"]
        for r in bench:
            lines.append(f"| {_model_name(r)} | {_fmt(r['wps'])} | {_fmt(r['peak_gpu_mem_mib'])} | "
                         f"{_fmt(r['mean_sample_tokens'], '{:.0f}')} | {r['error'] or ''} |")
        by = {r["model"]: r for r in bench}
        if all(by.get(m) and by[m]["wps"] and by[m]["peak_gpu_mem_mib"] for m in ("linformer", "roberta")):
            lines += ["", f"linformer / roberta: {by['linformer']['wps'] / by['roberta']['wps']:.2f}x words/s, "
                      f"{by['linformer']['peak_gpu_mem_mib'] / by['roberta']['peak_gpu_mem_mib']:.2f}x peak memory"]
        lines.append("")
    for r in (r for r in records if r["step"] == "memory_profile" and r.get("sites")):
        scope = "the whole run" if r["whole_run"] else f"its last {r['trace_events']} allocator events"
        lines += [f"## What is live at the peak: {_model_name(r)}, n = {r['n']} ({r['sample_break_mode']}, "
                  f"{r['num_updates']} updates)", "",
                  f"Peak allocated {_fmt(r['peak_gpu_mem_mib'])} MiB; the trace ({scope}) peaks at "
                  f"{r['trace_peak_mib']:.0f} MiB, held by:", "", "| MiB | blocks | allocated at |", "|---|---|---|"]
        lines += [f"| {s['mib']:.0f} | {s['blocks']} | `{s['site']}` |" for s in r["sites"]]
        lines.append("")
    warm = [r for r in records if r["step"] in ("pretrain_roberta", "validate_roberta", "validate_converted", "mlm")]
    if warm:
        lines += ["## Warm start (masked-LM valid loss, base 2)", "", "| step | n | updates | valid loss | wall s |",
                  "|---|---|---|---|---|"]
        for r in warm:
            lines.append(f"| {r['step']} | {r['n']} | {_fmt(r.get('num_updates'))} | "
                         f"{_fmt(r.get('valid_loss'), '{:.3f}')} | {r['wall_s']} |")
        lines.append("")
    fts = [r for r in records if r["step"] == "finetune"]
    bayes = [r for r in records if r["step"] == "naive_bayes"]
    if fts or bayes:
        ex = manifest["examples"]
        setup = (f" at the last update ({fts[0]['max_update']} updates, batch {fts[0]['batch_size']}, "
                 f"lr {fts[0]['lr']}), mean over seeds; per seed in brackets" if fts else "")
        task = "" if manifest.get("task", "collection") == "collection" else "continuation task: "
        lines += ["## Long-document classification (" + task + " vs ".join(manifest["labels"]) + ")", "",
                  "Examples per class: " + "; ".join(f"{split} {next(iter(e['per_class'].values()))}"
                                                     for split, e in ex.items())
                  + f". Accuracy (%){setup}. naive Bayes: bag of pieces, trained on the same train set.", "",
                  "| model | input | valid acc | test acc | train words/s | wall s |", "|---|---|---|---|---|---|"]
        groups = {}
        for r in bayes + fts:
            groups.setdefault((r["model"], r["variant"]), []).append(r)
        for (model, variant), rs in groups.items():
            def mean_of(key):
                values = [r[key] for r in rs if r.get(key) is not None]
                if not values:
                    return "error" if any(r.get("error") for r in rs) else ""
                per_seed = ", ".join(f"{v:.1f}" for v in values)
                return f"{sum(values) / len(values):.1f} [{per_seed}]"
            wps = [r["wps"] for r in rs if r.get("wps")]
            wps = wps or [None]
            lines.append(f"| {model} | {variant} | {mean_of('valid_accuracy')} | {mean_of('test_accuracy')} | "
                         f"{_fmt(None if None in wps else sum(wps) / len(wps))} | {max(r['wall_s'] for r in rs)} |")
        lines.append("")
    errors = [r for r in records if r.get("error")]
    if errors:
        lines += ["## Errors", ""] + [f"- {r['step']} {r.get('model', '')} {r.get('variant', '')}: {r['error']}"
                                      for r in errors] + [""]
    return "\n".join(lines)


def environment(args):
    env = {"time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": shlex.join([sys.executable] + sys.argv), "python": platform.python_version(),
           "platform": platform.platform()}
    probe = ("import json, torch\nenv = {'torch': torch.__version__, 'cuda': torch.version.cuda}\n"
             "if torch.cuda.is_available():\n    p = torch.cuda.get_device_properties(0)\n"
             "    env.update(gpu=p.name, gpu_memory_mib=p.total_memory // 2**20)\nprint(json.dumps(env))\n")
    try:
        out = subprocess.run([args.python, "-c", probe], capture_output=True, text=True, timeout=120)
        env.update(json.loads(out.stdout.strip().splitlines()[-1]))
    except Exception as exc:  # noqa: BLE001  (informative only)
        env["probe_error"] = repr(exc)
    return env


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-bin", required=True, help="masked-LM data-bin (dict.txt, train, valid)")
    p.add_argument("--long-docs", required=True, help="prepare_long_document_data.py's output directory")
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
                   "200 were too few in call A of docs/long_sequences.md)")
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
    sys.path.insert(0, REPO_ROOT)
    from linformer_plugin.data.long_documents import load_manifest

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
    env = background.submit(environment, args)  # a torch import in a child, beside the first runs
    try:
        roberta = None
        if args.roberta_checkpoint:
            roberta = read_roberta(args.roberta_checkpoint)
            size = roberta["size"]
            log(f"roberta checkpoint: {size}, max_positions {roberta['max_positions']}, arch {roberta['arch']}")
        else:
            size = TINY_SIZE if args.tiny else STUDY_SIZE
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
