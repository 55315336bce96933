"""Does it learn like RoBERTa? Masked-LM pretraining of roberta and linformer_roberta of one size on
the same data with the same budget, then SST-2 fine-tuning of the n=512 models.

Every run gets the same number of updates and of tokens per update (batch = --tokens // n), the
same optimiser, schedule, dropout and seed; only the attention differs. Runs (``--runs``):

  same-n (a group)        at n = 512, 1024, 2048, 4096: roberta_nN (full attention) and
                          linformer_nN_k{128,256} with the plugin's default options (issue #15)
the 2026-11-28 study (the default; its grid starts E, F xavier, as the plugin did then):
  roberta                 full attention, n=512
  linformer_k{64,128,256} headwise sharing (one E, F per layer), n=512
  linformer_k128_kv       one map per layer for keys and values (E = F)
  linformer_k128_layerwise one map for the whole model
  linformer_n1024_k256    n=1024, k=256
  linformer_n2048_k256    n=2048, k=256
  linformer_k128_normalinit  E, F starting N(0, 0.02) (--compressed-init normal)
  linformer_*_meaninit    each of the grid's runs with E, F starting as mean pooling (--compressed-init mean)

``--add-run NAME='FLAGS'`` adds a linformer run with extra fairseq-train flags (e.g. a projection
variant; ``--compressed-dim K`` and ``--tokens-per-sample N`` set its k and n, default 128 and 512),
fine-tuned like the others when n=512.

Jobs share the GPUs in CUDA_VISIBLE_DEVICES: a pretraining run has a GPU to itself (its words/s and
peak memory are its own), fine-tunings and validations run ``--jobs-per-gpu`` to a GPU; the runs
listed first go first. Each pretraining run's fine-tuning starts when it ends, once per
``--finetune-seeds`` seed (SST-2's test set has 872 sentences: one is 0.11 points, and seeds move
accuracy by more than that). Results: OUT/results.jsonl, rewritten after every step (one line per
run: validation curve, final validation loss/perplexity, words/s, peak GPU memory, wall time, SST-2
dev/test accuracy: the mean over seeds, each seed's in ``sst2_runs``), logs in OUT/logs/.
A study longer than one sitting runs in chunks: ``--deadline S`` starts only what ends in time,
and the same command with ``--resume`` runs what is left.
``python -m examples.studies.quality.report`` turns results.jsonl into tables and plots.

GPU (the study in docs/results.md):
    python -m examples.studies.quality.study --data DATA_BIN --sst2 SST2_BIN --out OUT
CPU smoke (tests):
    python -m examples.studies.quality.study --data DATA_BIN --sst2 SST2_BIN --out OUT --tiny --cpu \
        --runs roberta linformer_k128 --max-update 4 --finetune-updates 4
"""

import argparse
import json
import os
import re
import shlex
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional

from examples.common.fairseq_commands import (DROPOUT, PLUGIN_DIR, TRAIN_WITH_PEAK_MEMORY, adam_polynomial,
                                              child_env, masked_lm, restore,
                                              sentence_prediction, size_flags, study_size, tiny_size)
from examples.common.environment import visible_gpus
from examples.common.fairseq_logs import error_line, json_records, parse_train_log, run_logged
from examples.common.gpu_slots import GpuSlots
from examples.common.stats import mean_std
from linformer_plugin.io import write_jsonl


@dataclass
class Run:
    name: str
    n: int = 512
    k: Optional[int] = None  # None: roberta (full attention)
    flags: List[str] = field(default_factory=list)
    finetune: bool = True  # fine-tuned on SST-2 (the n=512 models)

    @property
    def linformer(self):
        return self.k is not None


# the paper's grid: (name, n, k, sharing flags)
GRID = [
    ("k64", 512, 64, []),
    ("k128", 512, 128, []),
    ("k256", 512, 256, []),
    ("k128_kv", 512, 128, ["--shared-kv-compressed", "1"]),
    ("k128_layerwise", 512, 128, ["--shared-layer-kv-compressed", "1"]),
    ("n1024_k256", 1024, 256, []),
    ("n2048_k256", 2048, 256, []),
]
RUNS = (
    [Run("roberta")]
    # the grid as first run (results of 2026-11-28): E and F start xavier, the default until 2026-11-30
    + [Run(f"linformer_{name}", n=n, k=k, flags=flags + ["--compressed-init", "xavier"], finetune=n == 512)
       for name, n, k, flags in GRID]
    # how E and F start (docs/results.md, runs 4-6): the reference's effective N(0, 0.02), and mean pooling
    + [Run("linformer_k128_normalinit", k=128, flags=["--compressed-init", "normal"])]
    + [Run(f"linformer_{name}_meaninit", n=n, k=k, flags=flags + ["--compressed-init", "mean"], finetune=n == 512)
       for name, n, k, flags in GRID]
)

# the same-n study (issue #15, the paper's Fig. 3): at each n, fairseq's roberta and linformer at
# k = 128 and 256 with the plugin's default options; the n = 512 roberta and k = 128 fine-tuned on SST-2
SAME_N = (512, 1024, 2048, 4096)
SAME_N_RUNS = [
    run for n in SAME_N for run in (
        [Run(f"roberta_n{n}", n=n, finetune=n == 512)]
        + [Run(f"linformer_n{n}_k{k}", n=n, k=k, finetune=n == 512 and k == 128) for k in (128, 256)])
]
DEFAULT_RUNS = [r.name for r in RUNS]  # the 2026-11-28 study
RUNS += SAME_N_RUNS
GROUPS = {"same-n": [r.name for r in SAME_N_RUNS]}  # --runs same-n


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def pretrain_summary(text):
    """Validation curve (update, loss in bits, perplexity), train curve, words/s, parameters."""
    parsed = json_records(text)
    curve = [(int(v["valid_num_updates"]), _float(v["valid_loss"]), _float(v.get("valid_ppl")))
             for v in parsed.get("valid", []) if "valid_num_updates" in v]
    train = [(int(t["num_updates"]), _float(t["loss"]), _float(t.get("wps"))) for t in parsed.get("train_inner", [])]
    wps = [t[2] for t in train[1:] if t[2]]  # the first interval includes warm-up
    out = {"valid_curve": curve, "train_curve": [t[:2] for t in train],
           "pretrain_wps": round(sum(wps) / len(wps)) if wps else None,
           "nan_seen": any(v[1] is None or v[1] != v[1] for v in curve)}
    if curve:
        out.update(valid_loss=curve[-1][1], valid_ppl=curve[-1][2], valid_updates=curve[-1][0])
    peak = parse_train_log(text, parsed)["peak_gpu_mem_mib"]
    if peak is not None:
        out["peak_gpu_mem_mib"] = peak
    params = re.search(r"num\. (?:shared )?model params: ([\d,]+)", text)
    if params:
        out["params"] = int(params.group(1).replace(",", ""))
    return out


def dev_curve(text):
    return [(int(v["valid_num_updates"]), _float(v["valid_accuracy"]))
            for v in json_records(text).get("valid", []) if "valid_accuracy" in v]


def accuracy(text, subset):
    accs = [_float(d[f"{subset}_accuracy"]) for d in json_records(text).get(subset, []) if f"{subset}_accuracy" in d]
    return accs[-1] if accs else None


def finetune_from_logs(logs, tag):
    """One fine-tuning's dev curve and accuracies from its logs TAG.log, TAG.valid.log, TAG.test.log."""
    seed = re.search(r"\.seed(\d+)$", tag)
    out = {"seed": int(seed.group(1)) if seed else None, "dev_curve": [], "dev_acc": None, "test_acc": None}
    path = os.path.join(logs, tag + ".log")
    if os.path.exists(path):
        with open(path, errors="replace") as f:
            out["dev_curve"] = dev_curve(f.read())
        if out["dev_curve"]:  # checkpoint_best's dev accuracy, if its validate log is missing
            out["dev_acc"] = max(acc for _, acc in out["dev_curve"])
    for subset, key in (("valid", "dev_acc"), ("test", "test_acc")):
        path = os.path.join(logs, f"{tag}.{subset}.log")
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                acc = accuracy(f.read(), subset)
            if acc is not None:  # a validate cut off keeps the fallback
                out[key] = acc
    return out


def sst2_summary(finetunes):
    """A run's SST-2 fields: accuracies as the mean over its fine-tuning seeds (and their std)."""
    finetunes = [f for f in finetunes if f["dev_curve"] or f["dev_acc"] is not None]
    if not finetunes:
        return {}
    out = {"sst2_dev_curve": finetunes[0]["dev_curve"]}
    for key in ("dev", "test"):
        mean, std = mean_std([f[f"{key}_acc"] for f in finetunes])
        if mean is not None:
            out[f"sst2_{key}_acc"] = round(mean, 3)
        if std is not None:
            out[f"sst2_{key}_std"] = round(std, 3)
    if len(finetunes) > 1 or finetunes[0]["seed"] is not None:
        out["sst2_runs"] = finetunes
    return out


def rebuild_results(out_dir, runs):
    """results.jsonl from OUT/logs alone (a study cut off before it wrote them)."""
    logs = os.path.join(out_dir, "logs")
    results = []
    for run in runs:
        path = os.path.join(logs, f"{run.name}.pretrain.log")
        if not os.path.exists(path):
            continue
        with open(path, errors="replace") as f:
            text = f.read()
        command = text.splitlines()[0][2:]
        argv = shlex.split(command)

        def flag(name, default):  # n and k as the run was started (--tiny scales them)
            return int(argv[argv.index(name) + 1]) if name in argv else default

        result = {"name": run.name, "n": flag("--tokens-per-sample", run.n),
                  "k": flag("--compressed-dim", run.k), "flags": run.flags, **pretrain_summary(text),
                  "command": command}
        names = sorted(f for f in os.listdir(logs) if re.fullmatch(re.escape(run.name) + r"\.sst2(\.seed\d+)?\.log", f))
        result.update(sst2_summary([finetune_from_logs(logs, name[:-len(".log")]) for name in names]))
        results.append(result)
    write_jsonl(os.path.join(out_dir, "results.jsonl"), results)
    return results


def _finetuned_seeds(record):
    """The seeds of a record's SST-2 fine-tunings that reached their test accuracy."""
    if not record:
        return set()
    if record.get("sst2_runs"):
        return {f.get("seed") for f in record["sst2_runs"] if f.get("test_acc") is not None}
    return {None} if record.get("sst2_test_acc") is not None else set()


_ASK = object()  # a fine-tuning with no slot handed over asks for one (None is the CPU "device")


class Study:
    def __init__(self, args, previous=None):
        self.args = args
        self.logs = os.path.join(args.out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.lock = threading.Lock()
        self.results = []
        self.previous = previous or {}  # name -> the record of an earlier chunk (--resume)
        self.devices = GpuSlots(args.devices, args.jobs_per_gpu)  # pack: GPUs stay whole
        self.started = time.time()

    def time_left(self):
        return None if not self.args.deadline else self.args.deadline - (time.time() - self.started)

    def _run(self, cmd, log_name, device, estimate_s=0):
        """Run one job on a device it holds; (rc, log text, wall s), or None if the deadline leaves it
        no time (not started) or stops it (left for the next chunk, not a failure)."""
        left = self.time_left()
        if left is not None and left < estimate_s:
            print(f"[{time.strftime('%H:%M:%S')}] {log_name}: not started, {left:.0f}s left of the "
                  f"deadline and it takes about {estimate_s:.0f}s", flush=True)
            return None
        env = child_env({"CUDA_VISIBLE_DEVICES": str(device)} if device is not None else None)
        started = time.time()
        path = os.path.join(self.logs, log_name)
        rc, text, timed_out = run_logged(cmd, path, None if left is None else max(1, left), env=env,
                                         cwd=self.args.out, header=True)
        if timed_out:
            print(f"[{time.strftime('%H:%M:%S')}] {log_name}: stopped at the deadline after "
                  f"{time.time() - started:.0f}s", flush=True)
            return None
        print(f"[{time.strftime('%H:%M:%S')}] {log_name}: rc={rc} in {time.time() - started:.0f}s", flush=True)
        return rc, text, round(time.time() - started, 1)

    def _common(self, seed=None):
        a = self.args
        flags = ["--num-workers", "2", "--seed", str(a.seed if seed is None else seed), "--log-format", "json"]
        flags += ["--cpu"] if a.cpu else [f"--{a.precision}"]
        if not a.cpu:
            flags += ["--distributed-world-size", "1"]
        return flags

    def model_flags(self, run):
        a = self.args
        if run.linformer:
            flags = ["--user-dir", PLUGIN_DIR, "--arch", "linformer_roberta_base", "--compressed-dim", str(run.k)]
        else:  # the plugin's user dir for its safe torch.load of fairseq checkpoints (torch >= 2.6)
            flags = ["--user-dir", PLUGIN_DIR, "--arch", "roberta_base"]
        flags += size_flags(tiny_size() if a.tiny else study_size())  # 8 x 512: ~25M parameters besides embeddings
        return flags + ["--max-positions", str(run.n)] + run.flags

    def pretrain_command(self, run, save_dir):
        a = self.args
        batch = max(1, a.tokens // run.n)
        # fairseq-train that prints its peak GPU memory at exit
        return [sys.executable, "-m", TRAIN_WITH_PEAK_MEMORY, a.data] + self.model_flags(run) + masked_lm(
            run.n, "complete") + ["--batch-size", str(batch), "--batch-size-valid", str(batch)] + adam_polynomial(
            a.lr, a.max_update, max(1, a.max_update // 10), 0.01, 1.0) + DROPOUT + [
            "--validate-interval-updates", str(a.valid_interval), "--validate-interval", "1000",
            "--save-interval", "1000", "--save-interval-updates", "0", "--no-epoch-checkpoints",
            "--save-dir", save_dir, "--log-interval", str(a.log_interval),
            "--skip-invalid-size-inputs-valid-test",
        ] + self._common()

    def finetune_command(self, run, pretrained, save_dir, seed=None):
        a = self.args
        return [sys.executable, "-m", "fairseq_cli.train", a.sst2] + self.model_flags(run) + sentence_prediction(
            2) + restore(pretrained) + ["--batch-size", "32"] + adam_polynomial(
            a.finetune_lr, a.finetune_updates, max(1, a.finetune_updates * 6 // 100), 0.1, 0.0) + DROPOUT + [
            "--validate-interval-updates", str(a.finetune_valid_interval), "--save-interval-updates",
            str(a.finetune_valid_interval), "--keep-interval-updates", "1", "--no-epoch-checkpoints",
            "--save-dir", save_dir, "--log-interval", str(a.log_interval), "--skip-invalid-size-inputs-valid-test",
        ] + self._common(seed)

    def validate_command(self, run, checkpoint, subset):
        a = self.args
        # --criterion: without it fairseq 0.12's validate cannot resolve the sentence_prediction
        # task's ${criterion.classification_head_name}
        cmd = [sys.executable, "-m", "fairseq_cli.validate", a.sst2, "--task", "sentence_prediction",
               "--criterion", "sentence_prediction", "--path", checkpoint, "--valid-subset", subset,
               "--batch-size", "64", "--num-workers", "0", "--log-format", "json", "--user-dir", PLUGIN_DIR]
        if a.tiny:  # the tiny models' 64 positions
            cmd += ["--skip-invalid-size-inputs-valid-test"]
        return cmd + (["--cpu"] if a.cpu else [])

    # ------------------------------------------------------------------ one run
    def _same_setup(self, previous, run):
        a = self.args
        return (previous.get("pretrain_rc") == 0 and previous.get("n") == run.n and previous.get("k") == run.k
                and previous.get("flags") == run.flags and previous.get("max_update") == a.max_update
                and previous.get("tokens_per_update") == max(1, a.tokens // run.n) * run.n)

    def study(self, indexed_run):
        index, run = indexed_run
        a = self.args
        ckpt_dir = os.path.join(a.checkpoints, run.name)
        pretrained = os.path.join(ckpt_dir, "pretrain", "checkpoint_last.pt")
        wants_finetune = bool(a.sst2 and run.finetune and a.finetune_updates > 0)
        seeds = a.finetune_seeds or [None]  # None: --seed, and the logs' names without a seed
        previous = self.previous.get(run.name)
        done_seeds = _finetuned_seeds(previous)
        missing = [seed for seed in seeds if seed not in done_seeds] if wants_finetune else []
        held = []  # slots of the pretraining run's GPU handed to its fine-tunings
        needs_checkpoint = bool(missing) or self.args.keep_checkpoints
        if previous and self._same_setup(previous, run) and (not needs_checkpoint or os.path.exists(pretrained)):
            result = dict(previous)  # an earlier chunk's run: kept, only its missing fine-tunings run
            self._record(result)
        else:
            result = {"name": run.name, "n": run.n, "k": run.k, "flags": run.flags,
                      "tokens_per_update": max(1, a.tokens // run.n) * run.n, "max_update": a.max_update}
            cmd = self.pretrain_command(run, os.path.join(ckpt_dir, "pretrain"))
            device, units = self.devices.acquire(a.jobs_per_gpu, index)  # the GPU to itself
            ran = self._run(cmd, f"{run.name}.pretrain.log", device, estimate_s=self.estimate(run))
            if ran is None:  # no time for it in this chunk: an earlier record of it stays as it was
                self.devices.release(device, units)
                if previous:
                    result = dict(previous)
                    self._record(result)
                return result
            rc, text, wall = ran
            # the fine-tunings take over the GPU's slots at once (another run's jobs would else take them)
            handed = min(units, len(seeds)) if rc == 0 and wants_finetune else 0
            self.devices.release(device, units - handed)
            held = [device] * handed
            result.update(pretrain_rc=rc, pretrain_wall_s=wall, command=shlex.join(cmd), **pretrain_summary(text))
            if rc != 0:
                result["error"] = error_line(text.splitlines()) or f"rc={rc}"
            self._record(result)
            if rc != 0:
                return result
            previous, missing = None, seeds if wants_finetune else []
        if missing:
            slots = held + [_ASK] * (len(missing) - len(held))
            with ThreadPoolExecutor(len(missing)) as pool:  # each takes a slot of its own
                finetunes = list(pool.map(lambda seed_slot: self.finetune(run, pretrained, ckpt_dir, *seed_slot, index),
                                          zip(missing, slots)))
            finetunes = [f for f in finetunes if f is not None]
            if finetunes:
                result["finetune_rc"] = max([f.pop("rc") for f in finetunes] + [result.get("finetune_rc") or 0])
                result["finetune_wall_s"] = max(f.pop("wall_s") for f in finetunes)
                result["finetune_command"] = finetunes[0].pop("command")
                errors = [f.pop("error") for f in finetunes if f.get("error")]
                if errors:
                    result["finetune_error"] = errors[0]
                earlier = [f for f in (previous or {}).get("sst2_runs") or [] if f.get("seed") in done_seeds]
                runs = earlier + [finetune_from_logs(self.logs, f["tag"]) for f in finetunes]
                result.update(sst2_summary(sorted(runs, key=lambda f: (f["seed"] is not None, f["seed"] or 0))))
                self._record(result)
        return result

    def estimate(self, run):
        """Seconds a pretraining run takes: 1.1x the slowest earlier run most like it (the same n and
        k, else the same n and attention, else the same n, else any n: every run has the same tokens),
        else --pretrain-estimate."""
        with self.lock:
            done = [r for r in self.results + list(self.previous.values())
                    if r.get("pretrain_rc") == 0 and r.get("pretrain_wall_s")]
        for alike in (lambda r: r.get("n") == run.n and r.get("k") == run.k,
                      lambda r: r.get("n") == run.n and (r.get("k") is None) == (run.k is None),
                      lambda r: r.get("n") == run.n, lambda r: True):
            walls = [r["pretrain_wall_s"] for r in done if alike(r)]
            if walls:
                return 1.1 * max(walls)
        return self.args.pretrain_estimate

    def _record(self, result):
        # results.jsonl is rewritten whole after every step: a study cut off keeps what finished
        with self.lock:
            if not any(r is result for r in self.results):
                self.results.append(result)
            write_jsonl(os.path.join(self.args.out, "results.jsonl"), self.results)

    def finetune(self, run, pretrained, ckpt_dir, seed, device, priority):
        """One SST-2 fine-tuning, then dev and test accuracy of its best checkpoint (logs TAG.*), on
        ``device`` (a slot handed over by the pretraining run, or _ASK: ask for one); None if the
        deadline left it no time."""
        a = self.args
        if device is _ASK:
            device, _ = self.devices.acquire(1, priority)
        try:
            tag = f"{run.name}.sst2" + ("" if seed is None else f".seed{seed}")
            save_dir = os.path.join(ckpt_dir, "sst2" + ("" if seed is None else f"-seed{seed}"))
            cmd = self.finetune_command(run, pretrained, save_dir, seed)
            ran = self._run(cmd, tag + ".log", device, estimate_s=a.finetune_estimate)
            if ran is None:
                return None
            rc, text, wall = ran
            out = {"tag": tag, "rc": rc, "wall_s": wall, "command": shlex.join(cmd)}
            if rc != 0:
                out["error"] = error_line(text.splitlines()) or f"rc={rc}"
                return out
            best = os.path.join(save_dir, "checkpoint_best.pt")
            for subset in ("valid", "test"):
                self._run(self.validate_command(run, best, subset), f"{tag}.{subset}.log", device)
            return out
        finally:
            self.devices.release(device, 1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="masked-LM data-bin (prepare_pretraining_data.py)")
    p.add_argument("--sst2", help="SST-2 data-bin (prepare_classification_data.py, with a test split)")
    p.add_argument("--out", required=True, help="results.jsonl and logs/ go here")
    p.add_argument("--checkpoints", help="checkpoint folder (default OUT/checkpoints)")
    p.add_argument("--runs", nargs="+", default=DEFAULT_RUNS,
                   help="which runs, or a group: same-n (the issue #15 study); default the 2026-11-28 study's")
    p.add_argument("--add-run", action="append", default=[], metavar="NAME=FLAGS",
                   help="an extra linformer run at n=512: NAME='--compressed-dim 128 --other flags'")
    p.add_argument("--max-update", type=int, default=1500)
    p.add_argument("--tokens", type=int, default=32768, help="tokens per update (batch = tokens // n)")
    p.add_argument("--lr", type=float, default=5e-4, help="pretraining peak lr (1e-3 made n=2048 diverge)")
    p.add_argument("--valid-interval", type=int, default=100, help="validate every this many updates")
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--finetune-updates", type=int, default=3800, help="SST-2 updates (batch 32; 0: skip)")
    p.add_argument("--finetune-lr", type=float, default=1e-4)
    p.add_argument("--finetune-valid-interval", type=int, default=950)
    p.add_argument("--finetune-seeds", type=int, nargs="+",
                   help="fine-tune each n=512 model once per seed (default: once, with --seed); SST-2 accuracies "
                   "are then the mean over seeds")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs OUT/results.jsonl already holds (same n, k, flags, updates and tokens) and "
                   "run only what is missing: a study run in chunks (a pretraining whose checkpoint is gone is "
                   "run again if its fine-tunings are missing)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="with --resume: a pretraining whose checkpoint is gone is run again in every case (for "
                   "studies that fine-tune the checkpoints afterwards, e.g. run_same_document.sh)")
    p.add_argument("--deadline", type=float, default=0,
                   help="seconds: start no job that would not end within this many seconds of the start, and "
                   "stop those still running then (0: none)")
    p.add_argument("--deadline-at", type=float, default=0, metavar="EPOCH_SECONDS",
                   help="the same as --deadline, as a time (date +%%s): for a chunk whose data preparation ran first")
    p.add_argument("--pretrain-estimate", type=float, default=300,
                   help="seconds a pretraining run takes, until one at the same n has run")
    p.add_argument("--finetune-estimate", type=float, default=220,
                   help="seconds an SST-2 fine-tuning and its two validations take")
    p.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default="fp16")
    p.add_argument("--jobs-per-gpu", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="2 x 64 models (smoke tests)")
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--rebuild", action="store_true", help="only rebuild OUT/results.jsonl from OUT/logs")
    args = p.parse_args(argv)
    if args.deadline_at:
        args.deadline = max(1.0, args.deadline_at - time.time())
    args.out = os.path.abspath(args.out)
    args.data = os.path.abspath(args.data)
    args.sst2 = os.path.abspath(args.sst2) if args.sst2 else None
    args.checkpoints = os.path.abspath(args.checkpoints or os.path.join(args.out, "checkpoints"))
    if args.cpu or args.rebuild:
        args.devices = [None]
    else:
        args.devices = visible_gpus()
        if not args.devices:
            p.error("no GPU visible: pass --cpu for a CPU run")
    return args


def _take_int(flags, name, default):
    """The value of ``name`` in an --add-run's flags (default if absent), and the flags without it."""
    if name not in flags:
        return default, flags
    i = flags.index(name)
    if i + 1 == len(flags) or not flags[i + 1].isdigit():
        raise SystemExit(f"--add-run: {name} needs a positive integer")
    return int(flags[i + 1]), flags[:i] + flags[i + 2:]


def select_runs(args):
    runs = {r.name: r for r in RUNS}
    args.runs = [name for group in args.runs for name in GROUPS.get(group, [group])]
    for spec in args.add_run:
        name, _, flags = spec.partition("=")
        flags = shlex.split(flags)
        k, flags = _take_int(flags, "--compressed-dim", 128)
        n, flags = _take_int(flags, "--tokens-per-sample", 512)  # the run's n (batch = --tokens // n)
        runs[name] = Run(name, n=n, k=k, flags=flags, finetune=n == 512)
        if name not in args.runs:
            args.runs.append(name)
    unknown = [name for name in args.runs if name not in runs]
    if unknown:
        raise SystemExit(f"unknown run(s) {unknown}; choose from {sorted(runs)} or define one with --add-run")
    return [runs[name] for name in args.runs]


def main(argv=None):
    args = parse_args(argv)
    runs = select_runs(args)
    if args.rebuild:
        for r in rebuild_results(args.out, runs):
            print(r["name"], r.get("valid_ppl"), r.get("sst2_dev_acc"), r.get("sst2_test_acc"))
        return 0
    if args.tiny:
        for run in runs:  # the tiny data-bin's sequences are short: scale n and k down 8x
            run.n, run.k = run.n // 8, (run.k // 8 if run.k else None)
    os.makedirs(args.out, exist_ok=True)
    previous = {}
    results_path = os.path.join(args.out, "results.jsonl")
    if args.resume and os.path.exists(results_path):
        with open(results_path) as f:
            previous = {r["name"]: r for r in map(json.loads, filter(str.strip, f))}
    study = Study(args, previous)
    # runs not selected now keep their records (a chunk that runs some of the study's runs)
    study.results = [r for name, r in previous.items() if name not in {run.name for run in runs}]
    write_jsonl(results_path, study.results)
    started = time.time()
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        results = list(pool.map(study.study, enumerate(runs)))
    failed = [r["name"] for r in results if r.get("pretrain_rc") or r.get("finetune_rc")]
    wanted_seeds = set(args.finetune_seeds or [None])
    pending = [run.name for run, r in zip(runs, results) if "pretrain_rc" not in r or (
        r["pretrain_rc"] == 0 and args.sst2 and run.finetune and args.finetune_updates > 0
        and not wanted_seeds <= _finetuned_seeds(r))]
    print(f"study done in {time.time() - started:.0f}s; failed: {failed or 'none'}; "
          f"left for the next chunk (--resume): {pending or 'none'}", flush=True)
    for r in results:
        print(json.dumps({k: r.get(k) for k in ("name", "valid_ppl", "pretrain_wps", "pretrain_wall_s",
                                                  "sst2_dev_acc", "sst2_test_acc", "sst2_test_std")}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
