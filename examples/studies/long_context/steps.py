"""The long-context study's steps (examples.studies.long_context.study): each one fairseq-train,
fairseq-validate or conversion subprocess, logged under OUT/logs/, and its record; and a naive
Bayes baseline on the CPU."""

import os
import threading
import time

from examples.common.fairseq_commands import (DROPOUT, PLUGIN_DIR, REPO_ROOT, SIZE_KEYS, TRAIN_WITH_PEAK_MEMORY,
                                              adam_polynomial, child_env, masked_lm, restore as restore_flags,
                                              sentence_prediction, size_flags)
# light: no torch, no fairseq
from examples.common.fairseq_logs import json_records, parse_train_log, run_logged, steady_rate

_lock = threading.Lock()


def log(message):
    with _lock:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

# ----------------------------------------------------------------------------- running fairseq


def run_job(name, cmd, args, timeout=None, extra_env=None):
    """One subprocess in its own session (killed whole on timeout), with ``extra_env`` added to this
    process's environment (and the repository on PYTHONPATH); its output in OUT/logs/NAME.log. Returns
    {"rc", "wall_s", "error", "text", "records" (its json_records)} with parse_train_log's fields
    (wps, peak memory)."""
    log_path = os.path.join(args.out_dir, "logs", f"{name}.log")
    workdir = os.path.join(args.work_dir, "cwd", name)  # fairseq may write checkpoints/crash.pt here
    os.makedirs(workdir, exist_ok=True)
    env = child_env(extra_env)
    limit = timeout or args.job_timeout
    if args.deadline:
        left = args.deadline - (time.time() - args.started)
        if left < 30:
            log(f"skip  {name}: past --deadline")
            result = parse_train_log("")  # every field a run reports, empty
            del result["error_line"]
            return dict(result, rc=None, wall_s=0, text="", records={},
                        error=f"skipped: less than 30 s left before --deadline {args.deadline}")
        limit = min(limit, int(left))
    log(f"start {name}")
    started = time.time()
    rc, text, timed_out = run_logged(cmd, log_path, limit, env=env, cwd=workdir, header=True)

    records = json_records(text)
    result = parse_train_log(text, records)
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
    cmd = [args.python, "-m", TRAIN_WITH_PEAK_MEMORY, args.data_bin] + masked_lm(n, break_mode) + [
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
    """Words/s of the settled updates (examples.common.fairseq_logs.steady_rate), rounded."""
    rate = steady_rate(inner, "wpb", settle)
    return None if rate is None else round(rate)


def _run_fields(args, kind, n, break_mode):
    """What a benchmark or memory-profile record says of its run."""
    return {"model": kind, "k": args.compressed_dim if kind == "linformer" else None, "n": n,
            "sample_break_mode": break_mode, "max_tokens": args.max_tokens}


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
    the peak, by the line of code that allocated it (examples.common.memory_at_peak)."""
    from examples.common.memory_at_peak import load_snapshot, peak_sites

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
    cmd = [args.python, os.path.join(REPO_ROOT, "scripts", "convert_checkpoint.py"), "roberta-to-linformer", roberta_checkpoint,
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
    cmd = [args.python, "-m", TRAIN_WITH_PEAK_MEMORY, job["data"]] + sentence_prediction(job["num_classes"]) + restore_flags(
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
