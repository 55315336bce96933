"""Fine-tune pretrained models on the same-document task and compare them: Linformer at 4,096
tokens, RoBERTa at 512 on the truncated input, RoBERTa at 4,096.

    python -m examples.studies.long_context.same_document_study --task-data same-document \\
        [--corpus docs-corpus --pretraining-data data-bin]  # builds --task-data first when it is missing
        --linformer-4096 LIN.pt --roberta-512 ROB512.pt --roberta-4096 ROB4096.pt \\
        --out-dir OUT --deadline 420

Each checkpoint is optional (a model without one is skipped); each is fine-tuned with fairseq's
sentence_prediction once per --seed, the same data order, updates, batch and learning rate for all
(the 512 model on bin/truncated-512: the same rows cut to their first 512 tokens). The model's
architecture, size, positions and Linformer options are read from its checkpoint. Every run
validates on valid and test every --updates / --validations updates; it reports the validation with
the best valid accuracy (test never chooses), and its checkpoint_best.pt (chosen by valid accuracy)
predicts every valid and test row in the same process (train_and_predict), for a bootstrap interval
over documents. The first seed of every model runs alone on a GPU: its words/s (over the second
half of the updates) and peak memory (examples.common.train_with_peak_memory) are the reported
cost; the other seeds share GPUs, --jobs-per-gpu at a time.

OUT gets results.jsonl (one record per run, rewritten as each ends), table.md
(same_document_report), predictions/, logs/, study.json and env.json. A second call with the same
OUT resumes: runs with a record and no error are kept. --deadline stops what would run past it
and skips what cannot finish. --tiny --cpu is the test's smoke mode.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from examples.common.fairseq_commands import (DROPOUT, PLUGIN_DIR, SIZE_KEYS, adam_polynomial, child_env, restore,
                                              sentence_prediction, size_flags)
from examples.common.environment import visible_gpus
from examples.common.fairseq_logs import json_records, parse_train_log, run_logged, steady_rate
from examples.common.gpu_slots import GpuSlots
from examples.studies.long_context.prepare_same_document import add_task_args, task_options
from examples.studies.long_context.same_document_report import (PREDICTIONS, RESULTS, read_records, write_plot,
                                                                write_table)
from examples.studies.long_context.steps import steady_wps

TRAIN_AND_PREDICT = "examples.studies.long_context.train_and_predict"
# name: (the variant it reads, full attention?); its positions must be the variant's length
MODELS = {"linformer-4096": ("window", False), "roberta-512": ("truncated", True), "roberta-4096": ("window", True)}
_print_lock = threading.Lock()


def log(message):
    with _print_lock:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def read_checkpoint(path: str) -> dict:
    """What fine-tuning needs to rebuild a pretrained checkpoint's model: arch, size, positions,
    Linformer options, vocabulary rows."""
    from linformer_plugin.convert import load_checkpoint, model_args

    state = load_checkpoint(path)
    margs = model_args(state)
    model = state["model"]
    positions = model.get("encoder.sentence_encoder.embed_positions.weight")
    if positions is None:
        raise SystemExit(f"{path}: no learned positions (encoder.sentence_encoder.embed_positions); "
                         "not a RoBERTa-style checkpoint")
    from linformer_plugin.checkpoint import linformer_layout

    linformer = linformer_layout(model) is not None  # projections: the plugin's or the reference's
    arch = getattr(margs, "arch", None) or ("linformer_roberta" if linformer else "roberta")
    info = {"path": path, "arch": arch, "linformer": linformer, "max_positions": positions.size(0) - 2,
            "size": {key: int(getattr(margs, key)) for key in SIZE_KEYS},
            "vocab": model["encoder.sentence_encoder.embed_tokens.weight"].size(0),
            "linformer_flags": []}
    if linformer:
        from linformer_plugin.options import LinformerOptions

        info["linformer_flags"] = LinformerOptions.from_args(margs).to_flags().split()
    return info


def check_checkpoint(name: str, info: dict, manifest: dict, dict_path: str):
    variant, full_attention = MODELS[name]
    want = manifest["variants"][variant]["max_tokens"]
    flag = f"--{name}"
    if info["linformer"] == full_attention:
        raise SystemExit(f"{flag} {info['path']} is a {'linformer' if info['linformer'] else 'full-attention'} "
                         f"checkpoint (arch {info['arch']}); {name} needs "
                         f"{'fairseq roberta' if full_attention else 'linformer_roberta'}")
    if info["max_positions"] != want:
        raise SystemExit(f"{flag} {info['path']} has {info['max_positions']} positions but its input, "
                         f"bin/{manifest['variants'][variant]['name']}, needs {want}: give the checkpoint "
                         f"pretrained at n = {want}")
    with open(dict_path, encoding="utf-8") as f:
        rows = sum(1 for line in f if line.strip()) + 5  # <s> <pad> </s> <unk>, the words, <mask>
    if info["vocab"] != rows:
        raise SystemExit(f"{flag} {info['path']} has {info['vocab']} token embeddings but the task's dictionary "
                         f"({dict_path}) makes {rows}: it was pretrained with another dictionary; prepare the task "
                         "with --pretraining-data of that checkpoint's data-bin")


def model_flags(info: dict):
    flags = ["--user-dir", PLUGIN_DIR, "--arch", info["arch"], "--max-positions", str(info["max_positions"])]
    flags += size_flags(info["size"])
    return flags + info["linformer_flags"]


def finetune_command(args, job, save_dir, predictions):
    """Fine-tuning, then the predictions of its checkpoint_best.pt (train_and_predict)."""
    info = job["checkpoint"]
    cmd = [args.python, "-m", TRAIN_AND_PREDICT, os.path.join(save_dir, "checkpoint_best.pt"), job["data"],
           predictions] + (["--cpu"] if args.cpu else []) + ["--", job["data"]]
    cmd += sentence_prediction(2) + restore(info["path"])
    cmd += ["--batch-size", str(args.batch_size), "--batch-size-valid", str(args.batch_size),
            "--required-batch-size-multiple", "1", "--valid-subset", "valid,test"]
    cmd += adam_polynomial(args.lr, args.updates, max(1, args.updates * 6 // 100), 0.1, 0.0) + DROPOUT
    cmd += model_flags(info)
    cmd += ["--validate-interval-updates", str(args.validate_interval), "--save-interval-updates",
            str(args.validate_interval), "--keep-interval-updates", "1", "--no-epoch-checkpoints",
            "--no-last-checkpoints", "--no-save-optimizer-state", "--save-dir", save_dir,
            "--log-format", "json", "--log-interval", str(args.log_interval), "--num-workers", str(args.num_workers),
            "--seed", str(job["seed"]), "--distributed-world-size", "1"]
    return cmd + (["--cpu"] if args.cpu else ["--fp16"])


def _rounded(value, digits):
    return None if value is None else round(value, digits)


def run_record(text, records):
    """Accuracy curve, the validation chosen by valid accuracy, words/s, sentences/s, peak memory."""
    parsed = parse_train_log(text, records)
    valid, test = records.get("valid", []), records.get("test", [])
    curve = [{"num_updates": v.get("valid_num_updates"), "valid_accuracy": v.get("valid_accuracy"),
              "test_accuracy": t.get("test_accuracy")} for v, t in zip(valid, test + [{}] * (len(valid) - len(test)))]
    # the last of equal bests, as fairseq's checkpoint_best.pt (it replaces the best on ties)
    best = max(reversed(curve), key=lambda c: c["valid_accuracy"] if c["valid_accuracy"] is not None else -1,
               default=None)
    inner = records.get("train_inner", [])
    return {"curve": curve, "best_update": best and best["num_updates"],
            "valid_accuracy": best and best["valid_accuracy"], "test_accuracy": best and best["test_accuracy"],
            "num_updates": parsed["num_updates"], "wps": steady_wps(inner) if inner else parsed["wps"],
            "sentences_per_s": _rounded(steady_rate(inner, "bsz"), 2), "peak_gpu_mem_mib": parsed["peak_gpu_mem_mib"],
            "error_line": parsed["error_line"]}


SETUP = {"max_update": ("--updates", "updates"), "batch_size": ("--batch-size", "batch_size"), "lr": ("--lr", "lr")}


def check_resumable(records, args):
    """A call that resumes into OUT must fine-tune as the runs already there did: their records are
    kept and would else be reported beside runs of another setup."""
    for r in records:
        differ = [f"{flag} {r.get(key)} (now {getattr(args, attr)})" for key, (flag, attr) in SETUP.items()
                  if r.get(key) != getattr(args, attr)]
        if differ:
            raise SystemExit(f"{os.path.join(args.out_dir, RESULTS)} holds {r['model']} seed {r['seed']} fine-tuned "
                             f"with {', '.join(differ)}: give another --out-dir for this setup (or remove that "
                             f"file to start over)")


class Study:
    def __init__(self, args, manifest, checkpoints):
        self.args, self.manifest, self.checkpoints = args, manifest, checkpoints
        self.lock = threading.Lock()
        self.records = [r for r in read_records(args.out_dir) if not r.get("error")]
        # an alone job takes all of a GPU's slots; spread: shared jobs go to the least-loaded GPU
        self.slots = GpuSlots(args.devices, args.jobs_per_gpu, placement="spread")

    def done(self, model, seed):
        return any(r["model"] == model and r["seed"] == seed for r in self.records)

    def left(self):
        return None if not self.args.deadline else self.args.deadline - (time.time() - self.args.started)

    def add(self, record):
        with self.lock:
            self.records = [r for r in self.records if (r["model"], r["seed"]) != (record["model"], record["seed"])]
            self.records.append(record)
            order = {m: i for i, m in enumerate(MODELS)}
            self.records.sort(key=lambda r: (order.get(r["model"], 9), r["seed"]))
            from linformer_plugin.io import write_jsonl

            write_jsonl(os.path.join(self.args.out_dir, RESULTS), self.records)
            write_table(self.args.out_dir, self.args.task_data, list(MODELS))

    def run(self, job, device, units):
        """One fine-tuning on ``device``, whose ``units`` slots it was given and gives back."""
        a = self.args
        try:
            name = f"{job['model']}-seed{job['seed']}"
            record = {"step": "finetune", "model": job["model"], "seed": job["seed"], "variant": job["variant"],
                      "n": job["n"], "checkpoint": job["checkpoint"]["path"], "alone": job["alone"],
                      "device": device, "max_update": a.updates, "batch_size": a.batch_size, "lr": a.lr,
                      "validate_interval": a.validate_interval}
            left = self.left()
            if left is not None and left < a.min_job_s:
                record["error"] = (f"skipped: {left:.0f} s left before --deadline {a.deadline} "
                                   f"(< --min-job-s {a.min_job_s})")
                log(f"skip  {name}: past the deadline")
                return self.add(record)
            env = child_env({} if device is None else {"CUDA_VISIBLE_DEVICES": str(device)})
            save_dir = os.path.join(a.work_dir, name)
            shutil.rmtree(save_dir, ignore_errors=True)
            out = os.path.join(PREDICTIONS, f"{name}.json")
            if os.path.exists(os.path.join(a.out_dir, out)):  # an earlier, unfinished call's
                os.remove(os.path.join(a.out_dir, out))
            cmd = finetune_command(a, job, save_dir, os.path.join(a.out_dir, out))
            log(f"start {name} on {'cpu' if device is None else 'GPU ' + str(device)}"
                + (" (alone)" if job["alone"] else ""))
            started = time.time()
            rc, text, timed_out = run_logged(cmd, os.path.join(a.out_dir, "logs", f"{name}.log"),
                                             None if left is None else max(1, int(left)), env=env, cwd=a.work_dir,
                                             header=True)
            record.update(run_record(text, json_records(text)), rc=rc, wall_s=round(time.time() - started, 1))
            error_line = record.pop("error_line")
            if timed_out:
                record["error"] = f"stopped at --deadline {a.deadline} after {record['num_updates']} updates"
            elif rc != 0:
                record["error"] = error_line or f"exit status {rc}"
            if os.path.isfile(os.path.join(a.out_dir, out)):
                record["predictions"] = out
            elif not record.get("error"):
                record["error"] = "trained, but wrote no predictions (no checkpoint_best.pt?)"
            shutil.rmtree(save_dir, ignore_errors=True)
            log(f"done  {name} in {record['wall_s']} s: valid {record['valid_accuracy']} test {record['test_accuracy']}"
                + (f"  [{record['error']}]" if record.get("error") else ""))
            self.add(record)
        finally:
            self.slots.release(device, units)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task-data", required=True, help="prepare_same_document's output (built here if missing, "
                   "from --corpus and --pretraining-data)")
    p.add_argument("--corpus", help="docs-corpus layout: one folder per collection with train/valid/test")
    p.add_argument("--pretraining-data", help="the pretraining data-bin (dict.txt, sentencepiece.bpe.model)")
    add_task_args(p)  # how --task-data is built, when it is
    p.add_argument("--prep-workers", type=int, default=min(16, os.cpu_count() or 1))
    for name in MODELS:
        p.add_argument(f"--{name}", metavar="CKPT", help=f"pretrained checkpoint of {name} (absent: skipped)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--work-dir", help="fine-tuning checkpoints (default: a temporary folder, removed at the end)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--updates", type=int, help="fine-tuning updates (default: one pass over the train rows)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--validations", type=int, default=4, help="validations per run, evenly spaced (default 4)")
    p.add_argument("--gpus", nargs="+", help="GPU indices (default: all visible)")
    p.add_argument("--jobs-per-gpu", type=int, default=2, help="runs sharing a GPU after the first seeds (default 2)")
    p.add_argument("--deadline", type=int, default=0,
                   help="seconds from the start: runs still going are stopped, runs that would start with less "
                   "than --min-job-s left are skipped (0: none)")
    p.add_argument("--min-job-s", type=int, default=90)
    p.add_argument("--log-interval", type=int, default=10)
    p.add_argument("--num-workers", type=int, default=2, help="data loader processes per run")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--cpu", action="store_true", help="fine-tune on the CPU (fp32), one run at a time")
    p.add_argument("--tiny", action="store_true", help="smoke mode: a few updates (the test runs --tiny --cpu)")
    args = p.parse_args(argv)
    for key in ("task_data", "corpus", "pretraining_data", "out_dir", "work_dir") + tuple(
            n.replace("-", "_") for n in MODELS):
        if getattr(args, key):
            setattr(args, key, os.path.abspath(getattr(args, key)))
    if not any(getattr(args, n.replace("-", "_")) for n in MODELS):
        p.error("give at least one of " + ", ".join(f"--{n}" for n in MODELS))
    if args.cpu:
        args.devices = [None]
        args.jobs_per_gpu = 1
    else:
        if args.gpus is None:
            args.gpus = visible_gpus()
        if not args.gpus:
            p.error("no GPU visible: pass --cpu for a CPU run")
        args.devices = args.gpus
    if args.tiny:
        args.num_workers, args.log_interval, args.min_job_s, args.validations = 0, 1, 0, 2
    return args


def ensure_task_data(args):
    from examples.studies.long_context.long_documents import MANIFEST, load_manifest

    if not os.path.isfile(os.path.join(args.task_data, MANIFEST)):
        if not (args.corpus and args.pretraining_data):
            raise SystemExit(f"--task-data {args.task_data} has no {MANIFEST}: prepare it "
                             "(examples.studies.long_context.prepare_same_document) or give --corpus and "
                             "--pretraining-data to build it here")
        from examples.studies.long_context.same_document import corpus_collections, prepare_same_document
        from linformer_plugin.data.common import SPM_MODEL_NAME, DataPrepError

        log(f"building {args.task_data} from {args.corpus}")
        try:
            prepare_same_document(args.task_data, corpus_collections(args.corpus, args.collections),
                                  spm_model=os.path.join(args.pretraining_data, SPM_MODEL_NAME),
                                  dictionary=os.path.join(args.pretraining_data, "dict.txt"),
                                  workers=args.prep_workers, keep_tsv=False, force=True, **task_options(args))
        except DataPrepError as e:
            raise SystemExit(f"preparing {args.task_data}: {e}")
    manifest = load_manifest(args.task_data)
    if manifest.get("task") != "same-document":
        raise SystemExit(f"--task-data {args.task_data} holds the {manifest.get('task')!r} task, not same-document")
    return manifest


def main(argv=None):
    args = parse_args(argv)
    args.started = time.time()
    os.makedirs(os.path.join(args.out_dir, "logs"), exist_ok=True)
    os.makedirs(os.path.join(args.out_dir, PREDICTIONS), exist_ok=True)
    manifest = ensure_task_data(args)
    dict_path = os.path.join(manifest["variants"]["window"]["path"], "input0", "dict.txt")
    train_rows = manifest["examples"]["train"]["total"]
    if args.updates is None:
        args.updates = 4 if args.tiny else max(1, train_rows // args.batch_size)
    args.validate_interval = max(1, math.ceil(args.updates / args.validations))

    checkpoints = {}
    for name in MODELS:
        path = getattr(args, name.replace("-", "_"))
        if path:
            if not os.path.isfile(path):
                raise SystemExit(f"--{name} {path}: no such file")
            checkpoints[name] = read_checkpoint(path)
            check_checkpoint(name, checkpoints[name], manifest, dict_path)
            log(f"{name}: {checkpoints[name]['arch']} {checkpoints[name]['size']}, "
                f"{checkpoints[name]['max_positions']} positions {' '.join(checkpoints[name]['linformer_flags'])}")

    from examples.common.environment import environment, module_command
    from linformer_plugin.io import atomic_write_text

    study_record = {"task_data": args.task_data, "models": list(MODELS),
                    "checkpoints": {n: c["path"] for n, c in checkpoints.items()}, "updates": args.updates,
                    "batch_size": args.batch_size, "lr": args.lr, "seeds": args.seeds}
    atomic_write_text(os.path.join(args.out_dir, "study.json"), json.dumps(study_record, indent=2) + "\n")
    own_work = args.work_dir is None
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="same_document_study_")
    os.makedirs(args.work_dir, exist_ok=True)
    study = Study(args, manifest, checkpoints)
    check_resumable(study.records, args)
    command = module_command(__spec__.name, argv if argv is not None else sys.argv[1:])
    env = ThreadPoolExecutor(1).submit(environment, command, "cpu" if args.cpu else "cuda", args.python)
    # first seeds alone (cost), longest first; then the other seeds, longest first
    order = ["roberta-4096", "linformer-4096", "roberta-512"]
    jobs = []
    for k, seed in enumerate(args.seeds):
        for name in order:
            if name in checkpoints and not study.done(name, seed):
                variant = manifest["variants"][MODELS[name][0]]
                jobs.append({"model": name, "seed": seed, "alone": k == 0, "checkpoint": checkpoints[name],
                             "variant": variant["name"], "data": variant["path"], "n": variant["max_tokens"]})
    jobs.sort(key=lambda j: not j["alone"])
    log(f"{len(jobs)} runs ({args.updates} updates of {args.batch_size}, validated every {args.validate_interval}) "
        f"on {'the CPU' if args.cpu else 'GPUs ' + ', '.join(args.devices)}"
        + (f"; {sum(1 for r in study.records)} done before" if study.records else ""))
    try:
        slots = 1 if args.cpu else len(args.devices) * args.jobs_per_gpu
        with ThreadPoolExecutor(max(1, slots)) as pool:
            futures = []
            for position, job in enumerate(jobs):
                # Taken here, one job at a time in queue order (the jobs' threads could reach acquire
                # out of order). Among waiters, position alone keeps that order too: an alone job
                # waiting for an idle GPU is not overtaken, as shared jobs all come after the alone
                # ones and a GPU running an alone job has no free slot.
                device, units = study.slots.acquire(args.jobs_per_gpu if job["alone"] else 1, position)
                futures.append(pool.submit(study.run, job, device, units))
            for future in futures:
                future.result()
        atomic_write_text(os.path.join(args.out_dir, "env.json"), json.dumps(env.result(), indent=2) + "\n")
        text = write_table(args.out_dir, args.task_data, list(MODELS))
        write_plot(args.out_dir, list(MODELS))
        print(text)
    finally:
        if own_work:
            shutil.rmtree(args.work_dir, ignore_errors=True)
    failed = [r for r in study.records if r.get("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
