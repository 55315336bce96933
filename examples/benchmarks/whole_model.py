"""Whole-model speed on real data: ours beside fairseq's RoBERTa of the same size, one job at a time.

First the data, then the parts (``--parts``, in this order; each record goes to
--out-dir/results.jsonl as it is measured, and table.md is rewritten after each):

  (data)     data-bins under --work-dir, built once (a rerun finds them): masked-LM pretraining data
             from --corpus (the docs-corpus layout: COLLECTION/{train,valid,test}.txt.xz, or train.txt
             and valid.txt), SST-2 from --sst2 ({train,dev}.tsv) with its dictionary, and a long-text
             classification set (the collections told apart from windows of --long-length tokens, and
             the same windows cut to 512) when --collections names two or more (SST-2 and the long set
             only for finetune or inference). --pretraining-data, --sst2-data, --long-data give ready
             data-bins instead.
  finetune   fairseq-train sentence_prediction from random weights on SST-2 (max positions 512) and on
             the long set: words/s (real tokens) and sentences/s (bsz x ups), means over the second
             half of the train_inner intervals (the first hold start-up; min and max beside them),
             fairseq's whole-run average (warm-up included), peak GPU memory. The SST-2 runs save
             the checkpoints the inference part reads.
  inference  fairseq-validate sentences/s on SST-2's and the long set's (cut to 512) valid split (the
             train split, named in the job, where valid holds fewer than the warm-up + --validate-steps
             batches: the long set's valid split is a few dozen windows), and the hub's encode_batch +
             predict on 512-token inputs (full, and lengths spread over 256..512: right-padded
             batches), at each batch size. Checkpoints missing: made with a few SST-2 updates first.
  pretrain   fairseq-train masked_lm with --sample-break-mode complete and complete_doc at each
             --pretrain-lengths n, --pretrain-tokens tokens a batch (padding included): words/s, peak memory.

Models are randomly initialised (speed only), base size (12 x 768), fp16, k = 128 for ours; RoBERTa
runs fairseq's own roberta_base (with --user-dir linformer_plugin only where a checkpoint is loaded:
the plugin's torch.load allow-list reads fairseq checkpoints under torch >= 2.6).

One H200, all parts: about 10 minutes (an estimate from the code, not yet measured: ~15 s of start-up
per child; finetune + inference 14 children, about 6 minutes with the data; pretrain 8, about 4); in
two device calls (the data is prepared again in a fresh machine, about a minute). A call with a time
limit wants --timeout (per child, default 900 s) well under it, e.g. 180:
    python -m examples.benchmarks.whole_model --corpus .corpus/docs-corpus --sst2 .corpus/sst-2 \\
        --parts finetune inference --out-dir OUT
    python -m examples.benchmarks.whole_model --corpus .corpus/docs-corpus --sst2 .corpus/sst-2 \\
        --parts pretrain --out-dir OUT
CPU smoke (tiny model, quickstart data, a few updates):
    python -m examples.benchmarks.whole_model --cpu --tiny --corpus examples/quickstart/data \\
        --sst2 examples/quickstart/classification --out-dir OUT
"""

import argparse
import json
import lzma
import os
import shlex
import shutil
import struct
import sys
import tempfile
import time

from examples.benchmarks.train import run_training
from examples.benchmarks.validate_with_speed import parse_speed
from examples.common.environment import environment, module_command
from examples.common.fairseq_commands import (DROPOUT, PLUGIN_DIR, TRAIN_WITH_PEAK_MEMORY, adam_polynomial,
                                              child_env, masked_lm, sentence_prediction, size_flags, tiny_size)
from examples.common.fairseq_logs import json_records, parse_train_log, run_logged
from linformer_plugin.io import atomic_write_text, write_jsonl

PARTS = ("finetune", "inference", "pretrain")
MODELS = ("ours", "roberta")
SPLITS = ("train", "valid", "test")
HUB_PREFIX = "HUB_SPEED="


# ----------------------------------------------------------------------------- data


def _corpus_files(corpus, collection, split):
    base = os.path.join(corpus, collection) if collection else corpus
    for name in (f"{split}.txt.xz", f"{split}.txt"):
        if os.path.isfile(os.path.join(base, name)):
            return os.path.join(base, name)
    return None


def _read(path):
    with (lzma.open if path.endswith(".xz") else open)(path, "rt", encoding="utf-8") as f:
        return f.read()


def raw_text(args):
    """{split: path} of the pretraining text: --collections joined (a blank line between them), or the
    corpus's own train.txt / valid.txt."""
    collections = args.collections if _corpus_files(args.corpus, None, "train") is None else [None]
    out = {}
    for split in SPLITS:
        files = [_corpus_files(args.corpus, c, split) for c in collections]
        if not all(files):
            continue
        path = os.path.join(args.work_dir, "raw", f"{split}.txt")
        if not os.path.isfile(path):
            atomic_write_text(path, "\n\n".join(_read(f).strip("\n") for f in files) + "\n")
        out[split] = path
    if "train" not in out:
        raise SystemExit(f"--corpus {args.corpus}: no train.txt(.xz) under {collections}")
    return out


def prepare(args):
    """Fill args.pretraining_data, args.sst2_data and args.long_data (None: no long set); the last two
    only where --parts needs them (finetune, inference)."""
    from linformer_plugin.data.classification import prepare_classification_data
    from linformer_plugin.data.pretraining import prepare_pretraining_data

    workers = os.cpu_count() or 1
    if args.pretraining_data is None:
        if args.corpus is None:
            raise SystemExit("give --corpus (raw text) or --pretraining-data (a data-bin)")
        raw = raw_text(args)
        args.pretraining_data = os.path.join(args.work_dir, "data-bin")
        # an up-to-date data-bin (its stamp) is left as it is
        prepare_pretraining_data(args.pretraining_data, raw["train"], raw.get("valid"), raw.get("test"),
                                 vocab_size=args.vocab_size, workers=workers)
    spm = os.path.join(args.pretraining_data, "sentencepiece.bpe.model")
    vocab = os.path.join(args.pretraining_data, "dict.txt")
    if not set(args.parts) & {"finetune", "inference"}:  # pretraining alone needs no SST-2 and no long set
        return
    if args.sst2_data is None:
        if args.sst2 is None:
            raise SystemExit("give --sst2 (a folder of train.tsv and dev.tsv) or --sst2-data (a data-bin)")
        args.sst2_data = os.path.join(args.work_dir, "sst2-bin")
        if not os.path.isdir(args.sst2_data):
            prepare_classification_data(args.sst2_data, os.path.join(args.sst2, "train.tsv"),
                                        os.path.join(args.sst2, "dev.tsv"), spm_model=spm, dictionary=vocab,
                                        workers=min(8, workers))
    if args.long_data is None and args.corpus and len(args.collections) >= 2 \
            and _corpus_files(args.corpus, None, "train") is None:
        from examples.studies.long_context.long_documents import prepare_long_document_data

        destdir = os.path.join(args.work_dir, "long")
        if not os.path.isdir(destdir):
            splits = {split: [f"{c}={_corpus_files(args.corpus, c, split)}" for c in args.collections]
                      for split in ("train", "valid")}
            prepare_long_document_data(destdir, splits, spm_model=spm, dictionary=vocab,
                                       window_tokens=args.long_length, truncate_tokens=args.length,
                                       min_tokens=args.long_length // 4, max_windows_per_class=args.long_windows,
                                       workers=min(8, workers), keep_tsv=False)
        args.long_data = destdir


def long_variants(args):
    """(full-length data-bin, its length; the same cut to --length), or Nones without a long set."""
    if args.long_data is None:
        return None, None, None
    from examples.studies.long_context.long_documents import load_manifest

    manifest = load_manifest(args.long_data)
    window, cut = manifest["variants"]["window"], manifest["variants"]["truncated"]
    return window["path"], int(window["name"].rsplit("-", 1)[1]), cut["path"]


def num_classes(data):
    with open(os.path.join(data, "label", "dict.txt"), encoding="utf-8") as f:
        return sum(1 for line in f if line.strip() and not line.startswith("madeupword"))


def num_examples(data, split):
    """Examples in a sentence_prediction data-bin's split (its input0 mmap index header); None if
    the split is missing or not in fairseq's mmap format."""
    try:
        with open(os.path.join(data, "input0", f"{split}.idx"), "rb") as f:
            if f.read(9) != b"MMIDIDX\x00\x00":
                return None
            f.read(8 + 1)  # version, dtype code
            return struct.unpack("<Q", f.read(8))[0]
    except (OSError, struct.error):
        return None


def validate_subset(data, batch, warmup, steps):
    """The split fairseq-validate times: valid, unless it holds fewer than warmup + steps batches and
    train holds more (SST-2's valid split at batch 256: 26 batches; the long set's: a few dozen
    windows, under one batch). A second or more of timed batches, not a few."""
    needed = (warmup + steps) * batch
    valid, train = num_examples(data, "valid"), num_examples(data, "train")
    if valid is not None and valid < needed and train is not None and train > valid:
        return "train"
    return "valid"


# ----------------------------------------------------------------------------- commands


def model_flags(args, model):
    if model == "ours":
        arch = "linformer_roberta_tiny" if args.tiny else "linformer_roberta_base"
        return ["--user-dir", PLUGIN_DIR, "--arch", arch, "--compressed-dim", str(args.k)]
    return ["--arch", "roberta_base"] + (size_flags(tiny_size()) if args.tiny else [])


def model_name(args, model):
    return f"ours_k{args.k}" if model == "ours" else model


def common_flags(args, log_interval):
    flags = ["--log-format", "json", "--log-interval", str(log_interval), "--disable-validation",
             "--num-workers", str(args.num_workers), "--distributed-world-size", "1", "--seed", "1",
             "--skip-invalid-size-inputs-valid-test"]
    return flags + (["--cpu"] if args.cpu else ["--fp16"])


def finetune_command(args, model, data, n, batch, updates, save_dir=None):
    log_interval = max(1, min(args.log_interval, updates // 2 or 1))
    cmd = [args.python, "-m", TRAIN_WITH_PEAK_MEMORY, data, *model_flags(args, model),
           *sentence_prediction(num_classes(data)), "--max-positions", str(n), "--batch-size", str(batch),
           *adam_polynomial(1e-5, updates, max(1, updates // 10), 0.1, 0.0), *DROPOUT,
           *common_flags(args, log_interval)]
    if save_dir:
        return cmd + ["--save-dir", save_dir, "--no-epoch-checkpoints", "--no-save-optimizer-state"]
    return cmd + ["--no-save"]


def pretrain_command(args, model, n, mode, updates):
    log_interval = max(1, min(args.log_interval, updates // 2 or 1))
    return [args.python, "-m", TRAIN_WITH_PEAK_MEMORY, args.pretraining_data, *model_flags(args, model),
            *masked_lm(n, mode), "--max-positions", str(n), "--max-tokens", str(args.pretrain_tokens),
            *adam_polynomial(1e-4, updates, max(1, updates // 10), 0.01, 0.0), *DROPOUT,
            *common_flags(args, log_interval), "--no-save"]


def validate_warmup(args):
    """Untimed fairseq-validate batches (VALIDATE_WARMUP of examples.benchmarks.validate_with_speed)."""
    return 1 if args.tiny else 3


def validate_command(args, model, checkpoint, data, batch, subset="valid"):
    cmd = [args.python, "-m", "examples.benchmarks.validate_with_speed", data, "--path", checkpoint,
           "--task", "sentence_prediction", "--criterion", "sentence_prediction", "--user-dir", PLUGIN_DIR, "--model-overrides", repr({"data": data}),
           "--valid-subset", subset, "--batch-size", str(batch), "--max-valid-steps", str(args.validate_steps),
           "--num-workers", str(args.num_workers), "--skip-invalid-size-inputs-valid-test", "--log-format", "json"]
    return cmd + (["--cpu"] if args.cpu else ["--fp16"])


def hub_command(args, checkpoint, text):
    cmd = [args.python, "-m", "examples.benchmarks.hub_speed", checkpoint, args.sst2_data, "--text", text,
           "--sentencepiece-model", os.path.join(args.pretraining_data, "sentencepiece.bpe.model"),
           "--batch-sizes", *map(str, args.hub_batch_sizes), "--length", str(args.length),
           "--sentences", str(args.hub_sentences)]
    return cmd + (["--cpu"] if args.cpu else ["--fp16"])


# ----------------------------------------------------------------------------- runs


class Recorder:
    """Records in run order, written out after each (results.jsonl, table.md)."""

    def __init__(self, out_dir):
        self.out_dir, self.records = out_dir, []
        os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)

    def log_path(self, name):
        return os.path.join(self.out_dir, "logs", name.replace(" ", "_").replace("/", "-") + ".log")

    def add(self, record):
        self.records.append(record)
        write_jsonl(os.path.join(self.out_dir, "results.jsonl"), self.records)
        atomic_write_text(os.path.join(self.out_dir, "table.md"), markdown_report(self.records))
        values = ", ".join(f"{key} {record[key]:.1f}" for key in METRICS if record.get(key) is not None)
        print(f"[{len(self.records)}] {record['part']:9s} {record['job']:28s} {record['model']:10s}: "
              f"{values or '-'} ({record.get('wall_s')} s)" + (f"  [{record['error']}]" if record.get("error") else ""),
              flush=True)


def interval_speeds(inner, train=()):
    """words/s and sentences/s (bsz x ups) over the second half of fairseq's train_inner intervals, as
    means with their min and max, and the last interval's words/s. Short-sentence fine-tuning is
    bound by the CPU, and one interval differs from the next by up to a third: the last alone
    misleads. ``train``: fairseq's end-of-epoch lines; the last gives the whole run's words/s
    (``wps_run``: warm-up included, as a user's short run sees it, e.g. attention kernels built for
    each new sentence length)."""
    late = inner[len(inner) // 2:]
    words = [float(r["wps"]) for r in late if "wps" in r]
    sentences = [float(r["bsz"]) * float(r["ups"]) for r in late if "bsz" in r and "ups" in r]
    speeds = {"wps": None, "sentences_per_s": None, "intervals": len(words),
              "wps_last": float(inner[-1]["wps"]) if inner and "wps" in inner[-1] else None}
    if words:
        speeds.update(wps=sum(words) / len(words), wps_min=min(words), wps_max=max(words))
    if sentences:
        speeds["sentences_per_s"] = sum(sentences) / len(sentences)
    if train and "train_wps" in train[-1]:
        speeds["wps_run"] = float(train[-1]["train_wps"])
    return speeds


def train_job(args, rec, part, job, model, cmd):
    """One fairseq-train run (train_with_peak_memory): words/s, sentences/s, peak memory."""
    log_path = rec.log_path(f"{part} {job} {model}")
    result = run_training(cmd, log_path, args.timeout, child_env())
    records = json_records(open(log_path, errors="replace").read())
    rec.add({"part": part, "job": job, "model": model_name(args, model),
             **interval_speeds(records.get("train_inner", []), records.get("train", [])),
             "peak_gpu_mem_mib": result["peak_gpu_mem_mib"],
             "num_updates": result["num_updates"], "error": result["error"], "wall_s": result["wall_s"],
             "log": os.path.relpath(log_path, args.out_dir), "command": shlex.join(cmd)})
    return result


def logged_job(args, rec, part, job, model, cmd):
    """One child process; returns (record so far, the log's text)."""
    log_path = rec.log_path(f"{part} {job} {model}")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="whole_model_") as workdir:
        rc, text, timed_out = run_logged(cmd, log_path, args.timeout, cwd=workdir, header=True,
                                         env=child_env({"VALIDATE_WARMUP": str(validate_warmup(args))}))
    error = f"timeout after {args.timeout}s" if timed_out else (
        None if rc == 0 else parse_train_log(text)["error_line"] or f"exit status {rc}")
    return {"part": part, "job": job, "model": model_name(args, model), "error": error,
            "wall_s": round(time.time() - started, 1),
            "log": os.path.relpath(log_path, args.out_dir), "command": shlex.join(cmd)}, text


def sst2_checkpoint(args, model):
    return os.path.join(args.work_dir, "checkpoints", f"sst2-{model_name(args, model)}", "checkpoint_last.pt")


def finetune(args, rec):
    long_data, long_n, _ = long_variants(args)
    for batch in args.sst2_batch_sizes:
        for model in args.models:
            save = os.path.dirname(sst2_checkpoint(args, model)) if batch == args.sst2_batch_sizes[0] else None
            if save:  # a checkpoint of an earlier run in this --work-dir would be resumed (and go no further)
                shutil.rmtree(save, ignore_errors=True)
            cmd = finetune_command(args, model, args.sst2_data, args.length, batch, args.finetune_updates, save)
            train_job(args, rec, "finetune", f"sst2 n={args.length} b={batch}", model, cmd)
    if long_data is None:
        print("finetune: no long set (give --long-data, or --corpus with two or more --collections)", flush=True)
        return
    for model in args.models:
        cmd = finetune_command(args, model, long_data, long_n, args.long_batch_size, args.long_updates)
        train_job(args, rec, "finetune", f"long n={long_n} b={args.long_batch_size}", model, cmd)


def inference(args, rec):
    _, _, long_cut = long_variants(args)
    for model in args.models:  # the checkpoints: a few SST-2 updates where the finetune part left none
        if not os.path.isfile(sst2_checkpoint(args, model)):
            cmd = finetune_command(args, model, args.sst2_data, args.length, args.sst2_batch_sizes[0], 2,
                                   os.path.dirname(sst2_checkpoint(args, model)))
            train_job(args, rec, "inference", "make checkpoint (2 updates)", model, cmd)
    if long_cut and num_classes(long_cut) != num_classes(args.sst2_data):
        print(f"inference: the long set has {num_classes(long_cut)} classes, the SST-2 checkpoints' head "
              f"{num_classes(args.sst2_data)}: not validated", flush=True)
        long_cut = None
    sets = [("sst2", args.sst2_data)] + ([(f"long cut to {args.length}", long_cut)] if long_cut else [])
    for name, data in sets:
        for batch in args.validate_batch_sizes:
            subset = validate_subset(data, batch, validate_warmup(args), args.validate_steps)
            job = f"validate {name}" + ("" if subset == "valid" else f" ({subset} split)") + f" b={batch}"
            for model in args.models:
                cmd = validate_command(args, model, sst2_checkpoint(args, model), data, batch, subset)
                record, text = logged_job(args, rec, "inference", job, model, cmd)
                record["subset"] = subset
                speed = parse_speed(text) or {}
                record.update(sentences_per_s=speed.get("sentences_per_s"), wps=speed.get("tokens_per_s"),
                              batches=speed.get("batches"), peak_gpu_mem_mib=parse_train_log(text)["peak_gpu_mem_mib"])
                if record["error"] is None and not speed.get("sentences_per_s"):
                    record["error"] = "no timed batches (fewer valid batches than the warm-up?)"
                rec.add(record)
    text = raw_text(args).get("valid") if args.corpus else None
    if text is None:
        print("inference: no raw valid text for the hub's inputs (give --corpus)", flush=True)
        return
    for model in args.models:
        record, log = logged_job(args, rec, "inference", "hub", model, hub_command(args, sst2_checkpoint(args, model),
                                                                                   text))
        speeds = [json.loads(line[len(HUB_PREFIX):]) for line in log.splitlines() if line.startswith(HUB_PREFIX)]
        if not speeds:
            rec.add(dict(record, error=record["error"] or "no HUB_SPEED lines"))
        for speed in speeds:
            rec.add(dict(record, job=f"hub {speed['lengths']} n={speed['length']} b={speed['batch']}",
                         sentences_per_s=speed["sentences_per_s"], wps=speed["tokens_per_s"]))


def pretrain(args, rec):
    for n in args.pretrain_lengths:
        for mode in args.pretrain_modes:
            for model in args.models:
                cmd = pretrain_command(args, model, n, mode, args.pretrain_updates)
                train_job(args, rec, "pretrain", f"masked_lm {mode} n={n}", model, cmd)


# ----------------------------------------------------------------------------- report

METRICS = {"wps": "words/s", "wps_run": "words/s whole run", "sentences_per_s": "sentences/s",
           "peak_gpu_mem_mib": "peak MiB"}


def markdown_report(records):
    """One table per part: each job's metrics for each model, and ours / roberta."""
    models = list(dict.fromkeys(r["model"] for r in records))
    ours = next((m for m in models if m.startswith("ours")), None)
    sections = ["# Whole model: ours beside RoBERTa", "",
                "words/s: real tokens per second (fairseq's wps over the later log intervals; tokens/s for "
                "inference); words/s whole run: fairseq's end-of-epoch average, warm-up included; sentences/s: "
                "training bsz x ups, inference sentences over timed batches; peak MiB: "
                "torch.cuda.max_memory_allocated. ours/roberta above 1x: ours is faster (or larger)."]
    for part in dict.fromkeys(r["part"] for r in records):
        subset = [r for r in records if r["part"] == part]
        by_key = {(r["job"], r["model"]): r for r in subset}
        metrics = [m for m in METRICS if any(r.get(m) is not None for r in subset)] or \
            [m for m in METRICS if any(r.get(m) is not None for r in records)]
        header = ["job"] + [f"{METRICS[m]} {model}" for m in metrics for model in models]
        if ours and "roberta" in models:
            header += [f"{METRICS[m]} {ours}/roberta" for m in metrics]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for job in dict.fromkeys(r["job"] for r in subset):
            row = [job]
            for m in metrics:
                for model in models:
                    r = by_key.get((job, model))
                    value = None if r is None else r.get(m)
                    row.append("error" if r is not None and r.get("error") and value is None
                               else "" if value is None else f"{value:,.1f}" if value < 100 else f"{value:,.0f}")
            if ours and "roberta" in models:
                for m in metrics:
                    a, b = (by_key.get((job, name), {}).get(m) for name in (ours, "roberta"))
                    row.append(f"{a / b:.2f}x" if a and b else "")
            lines.append("| " + " | ".join(row) + " |")
        sections += ["", f"## {part}", "", "\n".join(lines)]
    errors = [r for r in records if r.get("error")]
    if errors:
        sections += ["", "## Errors", ""] + [f"- {r['part']} {r['job']} {r['model']}: {r['error']} ({r['log']})"
                                             for r in errors]
    return "\n".join(sections) + "\n"


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--k", type=int, default=128, help="ours: --compressed-dim")
    p.add_argument("--out-dir", default="benchmarks/whole_model")
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "whole_model"),
                   help="data-bins, raw text and checkpoints (not results)")
    p.add_argument("--corpus", help="raw text: docs-corpus (COLLECTION/SPLIT.txt.xz) or a folder of train.txt, valid.txt")
    p.add_argument("--collections", nargs="+", default=["python", "linux"],
                   help="the corpus collections to pretrain on; two or more also make the long set (classes)")
    p.add_argument("--sst2", help="a folder of SST-2's train.tsv and dev.tsv")
    p.add_argument("--pretraining-data", help="a masked-LM data-bin (with sentencepiece.bpe.model) instead of --corpus")
    p.add_argument("--sst2-data", help="an SST-2 data-bin made with the pretraining dictionary instead of --sst2")
    p.add_argument("--long-data", help="a long-text set (examples.studies.long_context.prepare_data output)")
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--length", type=int, default=512, help="SST-2's max positions and the inference inputs' length")
    p.add_argument("--long-length", type=int, default=4096, help="window of the long set made from --corpus")
    p.add_argument("--long-windows", type=int, default=1000, help="at most this many windows per class and split")
    p.add_argument("--sst2-batch-sizes", nargs="+", type=int, default=[32])
    p.add_argument("--finetune-updates", type=int, default=200)
    p.add_argument("--long-batch-size", type=int, default=8)
    p.add_argument("--long-updates", type=int, default=60)
    p.add_argument("--validate-batch-sizes", nargs="+", type=int, default=[32, 256])
    p.add_argument("--validate-steps", type=int, default=200,
                   help="timed batches per fairseq-validate run, at most (the train split where valid has fewer)")
    p.add_argument("--hub-batch-sizes", nargs="+", type=int, default=[1, 32, 256])
    p.add_argument("--hub-sentences", type=int, default=512, help="timed sentences per batch size (at least 3 calls)")
    p.add_argument("--pretrain-modes", nargs="+", choices=("complete", "complete_doc", "none", "eos"),
                   default=["complete", "complete_doc"])
    p.add_argument("--pretrain-lengths", nargs="+", type=int, default=[512, 4096])
    p.add_argument("--pretrain-tokens", type=int, default=65536, help="--max-tokens of a pretraining batch")
    p.add_argument("--pretrain-updates", type=int, default=40)
    p.add_argument("--log-interval", type=int, default=20)
    p.add_argument("--num-workers", type=int, default=2, help="fairseq's data-loading workers")
    p.add_argument("--tiny", action="store_true", help="linformer_roberta_tiny's size for both, short inputs, "
                   "few updates (smoke runs)")
    p.add_argument("--cpu", action="store_true", help="fp32 on the CPU (smoke runs); default fp16 on CUDA")
    p.add_argument("--timeout", type=int, default=900, help="seconds per child process")
    p.add_argument("--python", default=sys.executable)
    args = p.parse_args(argv)
    if args.tiny:  # unless given: sizes for a CPU smoke run
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
        tiny = {"--length": ("length", 64), "--long-length": ("long_length", 128), "--vocab-size": ("vocab_size", 1000),
                "--finetune-updates": ("finetune_updates", 4), "--long-updates": ("long_updates", 4),
                "--sst2-batch-sizes": ("sst2_batch_sizes", [8]), "--long-batch-size": ("long_batch_size", 4),
                "--validate-batch-sizes": ("validate_batch_sizes", [8]), "--validate-steps": ("validate_steps", 4),
                "--hub-batch-sizes": ("hub_batch_sizes", [1, 4]), "--hub-sentences": ("hub_sentences", 8),
                "--pretrain-lengths": ("pretrain_lengths", [64, 128]), "--pretrain-tokens": ("pretrain_tokens", 512),
                "--pretrain-updates": ("pretrain_updates", 4), "--log-interval": ("log_interval", 2),
                "--num-workers": ("num_workers", 0), "--k": ("k", 16), "--long-windows": ("long_windows", 20)}
        for flag, (dest, value) in tiny.items():
            if flag not in given:
                setattr(args, dest, value)
    if not args.cpu:
        import torch

        if not torch.cuda.is_available():
            p.error("no CUDA device: pass --cpu (with --tiny for a smoke run)")
    for name in ("out_dir", "work_dir", "corpus", "sst2", "pretraining_data", "sst2_data", "long_data"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    rec = Recorder(args.out_dir)
    env = environment(module_command(__spec__.name, argv), "cpu" if args.cpu else "cuda", args.python,
                      in_child=not args.cpu)
    atomic_write_text(os.path.join(args.out_dir, "env.json"), json.dumps(env, indent=2) + "\n")
    prepare(args)  # built data-bins are found, not rebuilt
    for part, run in (("finetune", finetune), ("inference", inference), ("pretrain", pretrain)):
        if part in args.parts:
            run(args, rec)
    print()
    print(markdown_report(rec.records))
    return rec.records


if __name__ == "__main__":
    main()
