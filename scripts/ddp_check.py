#!/usr/bin/env python
"""Multi-GPU training, mixed precision, resume: linformer_roberta through fairseq-train on 2 GPUs (or 2 CPU processes).

    python scripts/ddp_check.py DATA_BIN OUT_DIR [--sections ddp loss scaling precision resume] ...
    python scripts/ddp_check.py DATA_BIN OUT_DIR --cpu --tiny        # CPU smoke: 2 gloo processes

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
           Our runs share one launch: 2 rank processes of scripts/fairseq_train.py run them one
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
           --user-dir, keeps the bf16 run on its GPU (linformer_plugin/precision.py).

Independent single-GPU runs (precision, the 1-GPU loss run) share the GPUs with the 2-GPU
correctness runs; only the scaling runs have the GPUs to themselves. --budget-s bounds the whole
run: what has not started by then is recorded as skipped, what runs is stopped.

GPU machine:  python scripts/ddp_check.py DATA_BIN OUT_DIR        (about 5 minutes on 2 H100s)
CPU smoke:    python scripts/ddp_check.py DATA_BIN OUT_DIR --cpu --tiny --sections ddp loss resume
Plan only:    python scripts/ddp_check.py DATA_BIN OUT_DIR --dry-run
"""

import argparse
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from argparse import Namespace
from concurrent.futures import ThreadPoolExecutor

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SCRIPTS)
for path in (REPO_ROOT, SCRIPTS):
    if path not in sys.path:
        sys.path.insert(0, path)
from _fairseq_commands import adam_polynomial, masked_lm  # noqa: E402
from _fairseq_logs import error_line, json_records  # noqa: E402
from benchmark_train import environment, train_command  # noqa: E402
from linformer_plugin.io import atomic_write_text, write_jsonl  # noqa: E402
from linformer_plugin.reference import reference_user_dir  # noqa: E402

PLUGIN_DIR = os.path.join(REPO_ROOT, "linformer_plugin")
FAIRSEQ_TRAIN = os.path.join(SCRIPTS, "fairseq_train.py")  # fairseq-train with fixes, several runs a process
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
REFERENCE_TINY = ["--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "256",
                  "--encoder-attention-heads", "2"]
DDP_UNUSED_ERROR = "Expected to have finished reduction in the prior iteration"

_PARAMS = re.compile(r"num\. shared model params: ([\d,]+) \(num\. trained: ([\d,]+)\)")
_UNUSED_NAMES = re.compile(r"Parameters? which did not receive grad for rank \d+: (.+)$")
_UNUSED_INDICES = re.compile(r"Parameter indices which did not receive grad for rank \d+: (.+)$")
_RUN_MARK = re.compile(r"^@@RUN (\d+) (BEGIN|END)(?: rc=(-?\d+))?\s*$")
_OVERFLOW = "gradient overflow detected"
_MIN_SCALE = "Minimum loss scale reached"


# ----------------------------------------------------------------------------- parsing


def train_inner_entries(text):
    """The train_inner records of a fairseq log, values as numbers where they are."""
    return json_records(text).get("train_inner", [])

def split_harness_output(text):
    """{run index: (its lines' text, rc or None)} from scripts/fairseq_train.py's @@RUN markers."""
    lines, rcs, current = {}, {}, None
    for line in text.splitlines():
        m = _RUN_MARK.match(line.strip())
        if m and m.group(2) == "BEGIN":
            current = int(m.group(1))
            lines[current], rcs[current] = [], None
        elif m and m.group(2) == "END":
            rcs[int(m.group(1))] = int(m.group(3))
            current = None
        elif current is not None:
            lines[current].append(line)
    return {i: ("\n".join(lines[i]), rcs[i]) for i in lines}


def error_of(text):
    """The line naming a failure; the DDP unused-parameter error when it is there."""
    for line in text.splitlines():
        if DDP_UNUSED_ERROR in line:
            return line.strip()[:500]
    return error_line([line for line in text.splitlines() if not line.startswith("@@RUN")])


def first_error(texts, default):
    """The failure line of the first text that names one (error_of once per text), else default."""
    return next(filter(None, map(error_of, texts)), default)


def first_failure(rcs):
    """The first non-zero exit status, 0 when all succeeded."""
    return next((rc for rc in rcs if rc != 0), 0)


def run_facts(text):
    """What a fairseq-train log says: per-update losses, parameters, unused parameters, error line."""
    entries = train_inner_entries(text)
    facts = {"num_updates": int(entries[-1]["num_updates"]) if entries else 0,
             "losses": [e.get("loss") for e in entries],
             "updates": [int(e["num_updates"]) for e in entries if "num_updates" in e]}
    m = _PARAMS.search(text)
    if m:
        facts["params"] = int(m.group(1).replace(",", ""))
        facts["params_trained"] = int(m.group(2).replace(",", ""))
    for regex, key in ((_UNUSED_NAMES, "unused_parameters"), (_UNUSED_INDICES, "unused_parameter_indices")):
        found = [m.group(1).strip() for m in map(regex.search, text.splitlines()) if m]
        if found:
            facts[key] = found[0][:1000]
    return facts, entries


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


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- runs and jobs


class Run:
    """One fairseq-train run: its arguments without the launch flags, and what it is for."""

    def __init__(self, name, section, argv, world=1, gpu=0, entry="fairseq", env=None, meta=None,
                 cmd=None, timeout=300):
        self.name, self.section, self.argv, self.world, self.gpu = name, section, list(argv), world, gpu
        self.entry = entry  # "fairseq": python -m fairseq_cli.train; "torchrun": 2 ranks under torchrun
        self.env = dict(env or {})
        self.meta = dict(meta or {})
        self.cmd = cmd  # a whole prebuilt command (dummy_masked_lm scaling runs)
        self.timeout = timeout
        self.result = None


class Job:
    """Processes started together: one Run (1 process, or 2 for fairseq's own spawn), or several
    Runs of world size 2 in one launch of 2 scripts/fairseq_train.py rank processes."""

    def __init__(self, name, runs, harness=False):
        self.name, self.runs, self.harness = name, runs, harness


class Checker:
    def __init__(self, args):
        self.args = args
        self.records = []
        self.lock = threading.Lock()
        self.started = time.time()
        self.deadline = self.started + args.budget_s if args.budget_s > 0 else None
        self.logs = os.path.join(args.out_dir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.workdir = tempfile.mkdtemp(prefix="ddp_check_")
        self.runs = {}
        self.finish_lock = threading.Lock()  # tracks finish runs from their own threads
        self.paired = set()  # pairs (loss, resume, scaling) already recorded

    # ---- output

    def add(self, record):
        with self.lock:
            record.setdefault("time_s", round(time.time() - self.started, 1))
            self.records.append(record)
            write_jsonl(os.path.join(self.args.out_dir, "results.jsonl"), self.records)
        status = record.get("status") or ("ok" if record.get("ok") else "FAILED" if record.get("ok") is False else "")
        what = " ".join(str(record[k]) for k in ("section", "name") if k in record)
        print(f"[{record['time_s']:6.1f}s] {what}: {status}"
              + (f"  [{record['error']}]" if record.get("error") and status != "ok" else ""), flush=True)

    # ---- processes

    def child_env(self, extra):
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.args.cpu:
            env["OMP_NUM_THREADS"] = "1"  # 2 processes on few cores: threads would only contend
        else:
            env.setdefault("OMP_NUM_THREADS", "4")  # up to 8 processes at once share the host's cores
        env.update(extra)
        return env

    def entry_cmd(self, entry):
        if entry == "torchrun":  # torchrun's own ranks; on CPU through fairseq_train.py (see there)
            launch = [self.args.python, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                      "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
            return launch + ([FAIRSEQ_TRAIN] if self.args.cpu else ["-m", "fairseq_cli.train"])
        return [self.args.python, "-m", "fairseq_cli.train"]

    def remaining(self):
        return None if self.deadline is None else self.deadline - time.time()

    def _spawn_and_wait(self, procs, timeout, log_paths, workdir=None, stop_when=None):
        """Start (cmd, env) processes; wait for all, at most timeout s. Returns rcs, texts, timed_out.

        stop_when(text of the first log): once true, every process is killed (SIGKILL), as a preempted job."""
        workdir = workdir or tempfile.mkdtemp(dir=self.workdir)  # fairseq may write checkpoints/ there
        handles, files = [], []
        for (cmd, env), log_path in zip(procs, log_paths):
            f = open(log_path, "w")
            f.write("# " + shlex.join(cmd) + "\n")
            f.flush()
            files.append(f)
            handles.append(subprocess.Popen(cmd, cwd=workdir, stdout=f, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True))
        end = time.time() + timeout
        timed_out = False
        failed_at = None
        while True:
            rcs = [h.poll() for h in handles]
            if all(rc is not None for rc in rcs):
                break
            if failed_at is None and any(rc not in (None, 0) for rc in rcs):
                failed_at = time.time()
            stop = False
            if stop_when is not None:
                with open(log_paths[0], errors="replace") as f:
                    stop = stop_when(f.read())
            # a rank that died leaves the other waiting in a collective: give it a minute
            if stop or time.time() > end or (failed_at is not None and time.time() - failed_at > 60):
                timed_out = not stop and time.time() > end
                for h in handles:
                    if h.poll() is None:
                        try:
                            os.killpg(h.pid, signal.SIGKILL)  # its own session: only this run's processes
                        except ProcessLookupError:
                            pass
                for h in handles:
                    h.wait()
                break
            time.sleep(0.5)
        rcs = [h.returncode for h in handles]
        for f in files:
            f.close()
        texts = []
        for log_path in log_paths:
            with open(log_path, errors="replace") as f:
                texts.append(f.read())
        return rcs, texts, timed_out

    def run_job(self, job):
        remaining = self.remaining()
        if remaining is not None and remaining < 15:
            for run in job.runs:
                run.result = {"status": "skipped", "error": "out of --budget-s before it started"}
                self.finish(run)
            return
        timeout = max(run.timeout for run in job.runs) if not job.harness else sum(r.timeout for r in job.runs)
        if remaining is not None:
            timeout = min(timeout, remaining)
        started = time.time()
        if job.harness:
            self._run_harness(job, timeout)
        else:
            (run,) = job.runs
            self._run_single(run, timeout)
        for run in job.runs:
            run.result.setdefault("wall_s", round(time.time() - started, 1))
            self.finish(run)

    def _launch_flags(self, run, rank, port):
        flags = ["--distributed-world-size", "2", "--distributed-rank", str(rank), "--distributed-no-spawn",
                 "--distributed-init-method", f"tcp://127.0.0.1:{port}"]
        if self.args.cpu:
            flags += ["--distributed-backend", "gloo"]
        else:
            flags += ["--device-id", str(rank)]
        return flags

    def _processes(self, run, log_name=None):
        """[(cmd, env)] and their log paths: 1 process, or 2 CPU ranks (fairseq spawns only for GPUs)."""
        log_name = log_name or run.name
        if run.cmd is not None:
            cmd = list(run.cmd)
        else:
            cmd = self.entry_cmd(run.entry) + run.argv + ["--distributed-world-size", str(run.world)]
        env = self.child_env(run.env)
        if not self.args.cpu and run.world == 1:
            env["CUDA_VISIBLE_DEVICES"] = str(run.gpu)
        if self.args.cpu and run.world == 2 and run.entry == "torchrun":
            cmd += ["--distributed-backend", "gloo"]
        elif self.args.cpu and run.world == 2:
            port = free_port()
            base = [self.args.python, FAIRSEQ_TRAIN] + run.argv
            procs = [(base + self._launch_flags(run, r, port), env) for r in range(2)]
            return procs, [os.path.join(self.logs, f"{log_name}.rank{r}.log") for r in range(2)]
        return [(cmd, env)], [os.path.join(self.logs, f"{log_name}.log")]

    def _run_single(self, run, timeout):
        if run.meta.get("stop_at"):
            return self._run_stopped_and_restarted(run, timeout)
        procs, logs = self._processes(run)
        started = time.time()
        rcs, texts, timed_out = self._spawn_and_wait(procs, timeout, logs)
        facts, entries = run_facts(texts[0])
        rc = first_failure(rcs)
        error = None
        if timed_out:
            error = f"timeout after {timeout:.0f}s"
        elif rc != 0:
            error = first_error(texts, f"exit status {rc}")
        run.result = dict(facts, rc=rc, error=error, entries=entries, text=texts[0],
                          wall_s=round(time.time() - started, 1), command=shlex.join(procs[0][0]),
                          log=os.path.relpath(logs[0], self.args.out_dir))

    def _run_stopped_and_restarted(self, run, timeout):
        """Kill the run once it has saved its checkpoint at update stop_at, then start the same
        command again (same --save-dir): the updates of both parts, as one trajectory."""
        stop_at = run.meta["stop_at"]
        workdir = tempfile.mkdtemp(dir=self.workdir)
        saved = re.compile(rf"Saved checkpoint .*@ {stop_at} updates")
        started = time.time()
        procs, logs = self._processes(run, run.name + "_part1")
        rcs, texts, timed_out = self._spawn_and_wait(procs, timeout, logs, workdir=workdir,
                                                     stop_when=lambda text: bool(saved.search(text)))
        first_facts, first_entries = run_facts(texts[0])
        result = {"part1_stopped": bool(saved.search(texts[0])), "part1_max_update": first_facts["num_updates"],
                  "log": os.path.relpath(logs[0], self.args.out_dir), "command": shlex.join(procs[0][0])}
        if not result["part1_stopped"]:
            run.result = dict(result, rc=rcs[0], entries=first_entries, text=texts[0], losses=[], updates=[],
                              error="timed out" if timed_out else (error_of(texts[0]) or "no checkpoint at "
                                                                   f"update {stop_at} before the run ended"))
            return
        remaining = timeout - (time.time() - started)
        procs, logs = self._processes(run, run.name + "_part2")  # the same command (a new port for CPU ranks)
        rcs, texts, timed_out = self._spawn_and_wait(procs, max(remaining, 1), logs, workdir=workdir)
        facts, entries = run_facts(texts[0])
        loaded = re.search(rf"Loaded checkpoint \S*checkpoint_last\.pt \(epoch \d+ @ {stop_at} updates\)", texts[0])
        kept = [e for e in first_entries if e.get("num_updates", 0) <= stop_at]
        joined = kept + entries
        rc = first_failure(rcs)
        run.result = dict(result, rc=rc, entries=joined, text=texts[0], num_updates=facts["num_updates"],
                          losses=[e.get("loss") for e in joined], updates=[int(e["num_updates"]) for e in joined],
                          part2_first_update=int(entries[0]["num_updates"]) if entries else None,
                          resumed_from_checkpoint_last=bool(loaded), log_part2=os.path.relpath(logs[0], self.args.out_dir),
                          error=("timed out" if timed_out else error_of(texts[0]) or f"exit status {rc}") if rc or timed_out
                          else None if loaded else "the restart did not load checkpoint_last.pt")

    def _run_harness(self, job, timeout):
        port = free_port()
        env = self.child_env({k: v for run in job.runs for k, v in run.env.items()})
        procs = []
        for rank in range(2):
            cmd = [self.args.python, FAIRSEQ_TRAIN]
            for i, run in enumerate(job.runs):
                if i:
                    cmd.append(":::")
                cmd += run.argv + self._launch_flags(run, rank, port)
            procs.append((cmd, env))
        logs = [os.path.join(self.logs, f"{job.name}.rank{r}.log") for r in range(2)]
        started = time.time()
        rcs, texts, timed_out = self._spawn_and_wait(procs, timeout, logs)
        per_rank = [split_harness_output(t) for t in texts]
        for i, run in enumerate(job.runs):
            segments = [runs.get(i, ("", None)) for runs in per_rank]
            facts, entries = run_facts(segments[0][0])
            run_rcs = [rc for _, rc in segments]
            if any(rc is None for rc in run_rcs):
                rc = None
                if not any(i in runs for runs in per_rank):
                    error = "not reached: an earlier run of this launch " + ("timed out" if timed_out else "crashed")
                else:
                    error = ("timed out" if timed_out else "the rank process died") + " during this run: " + (
                        first_error((s for s, _ in segments), "") or f"exit status {rcs}")
            else:
                rc = first_failure(run_rcs)
                error = None if rc == 0 else first_error((s for s, _ in segments), f"rc {rc}")
            if "unused_parameters" not in facts:  # rank 1 logs its error too; its log is WARNING-level
                other, _ = run_facts(segments[1][0])
                for key in ("unused_parameters", "unused_parameter_indices"):
                    if key in other and key not in facts:
                        facts[key] = other[key]
            run.result = dict(facts, rc=rc, error=error, entries=entries, text=segments[0][0],
                              wall_s=round(time.time() - started, 1),
                              command=shlex.join(run.argv), launch=f"run {i} of {job.name}",
                              log=os.path.relpath(logs[0], self.args.out_dir))

    # ---- scheduling

    def run_phases(self, phases):
        """phases: [[track, ...], ...]; a track is a list of jobs run in order; tracks run together."""
        for tracks in phases:
            tracks = [t for t in tracks if t]
            if self.args.cpu or self.args.sequential:
                tracks = [[job for track in tracks for job in track]]
            threads = [threading.Thread(target=lambda t=t: [self.run_job(job) for job in t]) for t in tracks]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    # ---- records

    def finish(self, run):
        with self.finish_lock:
            self.runs[run.name] = run
            getattr(self, f"record_{run.section}")(run)

    def _pair_ready(self, pair, names):
        """True once, when every run of the pair has finished."""
        if pair in self.paired or any(name not in self.runs for name in names):
            return False
        self.paired.add(pair)
        return True

    def _base(self, run):
        r = run.result
        rec = {"section": run.section, "name": run.name}
        rec.update(run.meta)
        for key in ("rc", "error", "num_updates", "params", "params_trained", "unused_parameters",
                    "unused_parameter_indices", "wall_s", "log", "launch", "command", "status"):
            if key in r:
                rec[key] = r[key]
        return rec

    def record_ddp(self, run):
        rec = self._base(run)
        r = run.result
        if r.get("status") == "skipped":
            self.add(rec)
            return
        expected = run.meta.get("expected_updates")
        rec["ok"] = r.get("rc") == 0 and r.get("num_updates") == expected
        losses = [x for x in r.get("losses", []) if isinstance(x, float)]
        if losses:
            rec["first_loss"], rec["last_loss"] = losses[0], losses[-1]
        if rec["ok"] is False and not rec.get("error"):
            rec["error"] = f"{r.get('num_updates')} updates of {expected}"
        self.add(rec)

    def record_control(self, run):
        rec = self._base(run)
        r = run.result
        if r.get("status") == "skipped":
            self.add(rec)
            return
        trained = r.get("rc") == 0 and r.get("num_updates") == run.meta.get("expected_updates")
        rec["trained"] = trained
        if run.meta["expect"] == "ddp_unused_error":
            rec["as_expected"] = not trained and DDP_UNUSED_ERROR in (r.get("error") or "")
            rec["failed_at_update"] = r.get("num_updates", 0) + 1 if not trained else None
        else:
            rec["as_expected"] = trained
        rec["ok"] = rec["as_expected"]
        self.add(rec)

    def record_precision(self, run):
        rec = self._base(run)
        r = run.result
        if r.get("status") == "skipped":
            self.add(rec)
            return
        entries, text = r.get("entries", []), r.get("text", "")
        losses = [e.get("loss") for e in entries]
        numeric = [x for x in losses if isinstance(x, float)]
        rec["first_loss"] = numeric[0] if numeric else None
        rec["final_loss"] = numeric[-1] if numeric else None
        rec["losses"] = [[int(e["num_updates"]), e.get("loss")] for e in entries if "num_updates" in e]
        rec["loss_scale"] = [[int(e["num_updates"]), e["loss_scale"]] for e in entries
                             if "loss_scale" in e and "num_updates" in e]
        valid = json_records(text).get("valid", [])
        rec["final_valid_loss"] = float(valid[-1]["valid_loss"]) if valid and "valid_loss" in valid[-1] else None
        overflow = [line.strip()[-160:] for line in text.splitlines() if _OVERFLOW in line]
        rec["overflow_notes"] = len(overflow)
        rec["overflow_examples"] = overflow[:5]
        rec["min_loss_scale_reached"] = _MIN_SCALE in text
        rec["nan_or_inf_loss"] = any(not isinstance(x, float) or x != x or x in (float("inf"), float("-inf"))
                                     for x in losses)
        wall = [e.get("train_wall") for e in entries]
        rec["ok"] = (r.get("rc") == 0 and r.get("num_updates") == run.meta["expected_updates"]
                     and not rec["min_loss_scale_reached"] and not rec["nan_or_inf_loss"])
        if wall and isinstance(wall[-1], float):
            rec["train_wall_s"] = wall[-1]
        self.add(rec)

    @staticmethod
    def _tag_fields(rec, tag, result, **keys):
        """One run of a pair: its rc, error and log, and each of ``keys`` (name=default), as NAME_TAG."""
        rec[f"rc_{tag}"] = result.get("rc")
        rec[f"error_{tag}"] = result.get("error") or result.get("status")
        rec[f"log_{tag}"] = result.get("log")
        for key, default in keys.items():
            rec[f"{key}_{tag}"] = result.get(key, default)

    def _compare_losses(self, rec, first, second, expected):
        """Two runs' per-update losses, compared at the updates both logged: updates_compared,
        max_abs_diff (and mean), tolerance in ``rec``; returns ({update: loss} of each, whether every
        expected update agrees)."""
        a = dict(zip(first.get("updates", []), first.get("losses", [])))
        b = dict(zip(second.get("updates", []), second.get("losses", [])))
        diffs = [abs(a[u] - b[u]) for u in sorted(set(a) & set(b)) if isinstance(a[u], float) and isinstance(b[u], float)]
        rec["updates_compared"] = len(diffs)
        rec["max_abs_diff"] = max(diffs) if diffs else None
        rec["mean_abs_diff"] = sum(diffs) / len(diffs) if diffs else None
        rec["tolerance"] = self.args.loss_tolerance
        return a, b, bool(diffs) and len(diffs) == expected and rec["max_abs_diff"] <= self.args.loss_tolerance

    def record_loss(self, run):
        pair = run.meta["pair"]
        if not self._pair_ready(pair, (pair + "_1gpu", pair + "_2gpu")):
            return
        one, two = self.runs[pair + "_1gpu"], self.runs[pair + "_2gpu"]
        rec = {"section": "loss", "name": pair, "unit": "process" if self.args.cpu else "GPU"}
        rec.update({k: v for k, v in two.meta.items() if k not in ("pair", "world")})
        rec["batch_1gpu"], rec["batch_per_gpu_2gpu"] = one.meta["batch"], two.meta["batch"]
        rec.pop("batch", None)
        for tag, r in (("1gpu", one.result), ("2gpu", two.result)):
            self._tag_fields(rec, tag, r, losses=[], command=None)
        expected = one.meta["expected_updates"]
        _, _, rec["ok"] = self._compare_losses(rec, one.result, two.result, expected)
        if not rec["ok"]:
            rec["error"] = rec["error_1gpu"] or rec["error_2gpu"] or (
                f"compared {rec['updates_compared']} of {expected} updates" if rec["updates_compared"] != expected
                else "losses differ")
        self.add(rec)

    def record_resume(self, run):
        pair = run.meta["pair"]
        if not self._pair_ready(pair, (pair + "_whole", pair + "_stopped")):
            return
        whole, cut = self.runs[pair + "_whole"], self.runs[pair + "_stopped"]
        rec = {"section": "resume", "name": pair, "unit": "process" if self.args.cpu else "GPU"}
        rec.update({k: v for k, v in cut.meta.items() if k not in ("pair",)})
        for tag, r in (("whole", whole.result), ("stopped", cut.result)):
            self._tag_fields(rec, tag, r, losses=[])
        for key in ("part1_stopped", "part1_max_update", "part2_first_update", "resumed_from_checkpoint_last",
                    "log_part2", "command"):
            rec[key] = cut.result.get(key)
        expected = cut.meta["expected_updates"]
        a, b, agree = self._compare_losses(rec, whole.result, cut.result, expected)
        rec["max_abs_diff_after_restart"] = max(
            (abs(a[u] - b[u]) for u in b if u > cut.meta["stop_at"] and u in a
             and isinstance(a[u], float) and isinstance(b[u], float)), default=None)
        rec["ok"] = (agree and rec["resumed_from_checkpoint_last"]
                     and rec["part2_first_update"] == cut.meta["stop_at"] + 1)
        if not rec["ok"]:
            rec["error"] = rec["error_whole"] or rec["error_stopped"] or (
                f"compared {rec['updates_compared']} of {expected} updates" if rec["updates_compared"] != expected else
                "the restart did not continue at its checkpoint" if rec["part2_first_update"] != cut.meta["stop_at"] + 1
                else "losses differ")
        self.add(rec)

    def record_scaling(self, run):
        if not self._pair_ready("scaling", ("scaling_1gpu", "scaling_2gpu")):
            return
        one, two = self.runs["scaling_1gpu"], self.runs["scaling_2gpu"]
        rec = {"section": "scaling", "name": "scaling"}
        rec.update({k: v for k, v in two.meta.items() if k not in ("world",)})
        skip = self.args.scaling_skip_intervals
        for tag, r in (("1gpu", one.result), ("2gpu", two.result)):
            wps = [e["wps"] for e in r.get("entries", []) if isinstance(e.get("wps"), float)][skip:]
            rec[f"wps_{tag}_intervals"] = wps
            rec[f"wps_{tag}"] = statistics.median(wps) if wps else None
            self._tag_fields(rec, tag, r, command=None, wall_s=None)
        if rec["wps_1gpu"] and rec["wps_2gpu"]:
            rec["efficiency"] = round(rec["wps_2gpu"] / (2 * rec["wps_1gpu"]), 4)
            rec["ok"] = True
        else:
            rec["efficiency"] = None
            rec["ok"] = False
            rec["error"] = rec["error_1gpu"] or rec["error_2gpu"] or "no words/s after the skipped intervals"
        self.add(rec)


# ----------------------------------------------------------------------------- the plan


def model_flags(args, mode_flags, reference=False):
    n, k = args.tokens_per_sample, args.compressed_dim
    if reference:
        flags = ["--user-dir", reference_user_dir(), "--arch", "linformer_roberta_base", "--max-positions", str(n),
                 "--compressed", str(n // k)]
        if args.tiny:
            flags += REFERENCE_TINY
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
                    run.cmd, run.argv = None, drop_flag(cmd[2:], "--distributed-world-size")
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


# ----------------------------------------------------------------------------- summary


def _fmt(x, spec="{:.3f}"):
    return "" if x is None else spec.format(x) if isinstance(x, (int, float)) else str(x)


def summary(records, env):
    lines = ["# DDP / mixed-precision check", "",
             f"{env.get('time_utc', '')}: {env.get('gpu', 'CPU')} x {env.get('gpu_count', 0)}, torch {env.get('torch', '')}, "
             f"fairseq {env.get('fairseq-fixed_version', env.get('fairseq_version', ''))}", ""]
    ddp = [r for r in records if r["section"] in ("ddp", "control")]
    if ddp:
        lines += ["## ddp (world size 2, no --find-unused-parameters)", "",
                  "| run | backend | ok | updates | trained / total params | unused parameters | error |",
                  "|---|---|---|---|---|---|---|"]
        for r in ddp:
            params = f"{r['params_trained']:,} / {r['params']:,}" if "params" in r else ""
            ok = r.get("status") or ("yes" if r.get("ok") else "no")
            if r["section"] == "control" and "as_expected" in r:
                ok = f"{'as expected' if r['as_expected'] else 'NOT as expected'}: {r.get('expect')}"
            lines.append(f"| {r['name']} | {r.get('backend', '')} | {ok} | {r.get('num_updates', '')} | {params} | "
                         f"{(r.get('unused_parameters') or r.get('unused_parameter_indices') or '')[:80]} | "
                         f"{(r.get('error') or '').replace('|', '/')[:160]} |")
        lines.append("")
    for r in (r for r in records if r["section"] == "loss"):
        unit, units = ("process", "processes") if r.get("unit") == "process" else ("GPU", "GPUs")
        lines += [f"## loss: 1 {unit} x batch {r.get('batch_1gpu')} vs 2 {units} x batch {r.get('batch_per_gpu_2gpu')} "
                  f"({r.get('mode')}, {r.get('precision')})", "",
                  f"max |diff| {_fmt(r.get('max_abs_diff'), '{:.4f}')} over {r.get('updates_compared')} updates "
                  f"(mean {_fmt(r.get('mean_abs_diff'), '{:.4f}')}, tolerance {r.get('tolerance')}): "
                  f"{'ok' if r.get('ok') else 'FAILED ' + str(r.get('error'))}", "",
                  f"| update | 1 {unit} | 2 {units} |", "|---|---|---|"]
        for u, (a, b) in enumerate(zip(r.get("losses_1gpu", []), r.get("losses_2gpu", [])), 1):
            lines.append(f"| {u} | {a} | {b} |")
        lines.append("")
    for r in (r for r in records if r["section"] == "resume"):
        lines += [f"## resume: 2 {'processes' if r.get('unit') == 'process' else 'GPUs'}, stopped (SIGKILL) after the "
                  f"checkpoint at update {r.get('stop_at')}, the same command again", "",
                  f"restart loaded checkpoint_last.pt: {r.get('resumed_from_checkpoint_last')}, continued at update "
                  f"{r.get('part2_first_update')}; max |diff| against the uninterrupted run "
                  f"{_fmt(r.get('max_abs_diff'), '{:.4f}')} over {r.get('updates_compared')} updates "
                  f"(after the restart {_fmt(r.get('max_abs_diff_after_restart'), '{:.4f}')}): "
                  f"{'ok' if r.get('ok') else 'FAILED ' + str(r.get('error'))}", ""]
    for r in (r for r in records if r["section"] == "scaling"):
        lines += ["## scaling", "",
                  f"{r.get('arch')} n={r.get('n')} k={r.get('k')} batch {r.get('batch_per_gpu')}/GPU, {r.get('precision')}, "
                  f"task {r.get('task')}: words/s 1 GPU {_fmt(r.get('wps_1gpu'), '{:.0f}')}, 2 GPUs "
                  f"{_fmt(r.get('wps_2gpu'), '{:.0f}')}, efficiency {_fmt(r.get('efficiency'), '{:.3f}')}"
                  + (f" [{r.get('error')}]" if r.get("error") else ""), ""]
    prec = [r for r in records if r["section"] == "precision"]
    if prec:
        lines += ["## precision", "", "| run | ok | updates | first loss | final loss | final valid loss | "
                  "loss scale first -> last (min) | overflow notes | min scale reached | NaN | error |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in prec:
            scales = [s for _, s in r.get("loss_scale", [])]
            scale = f"{scales[0]:g} -> {scales[-1]:g} ({min(scales):g})" if scales else ""
            ok = r.get("status") or ("yes" if r.get("ok") else "no")
            lines.append(f"| {r['name']} | {ok} | {r.get('num_updates', '')} | {_fmt(r.get('first_loss'))} | "
                         f"{_fmt(r.get('final_loss'))} | {_fmt(r.get('final_valid_loss'))} | {scale} | "
                         f"{r.get('overflow_notes', '')} | {r.get('min_loss_scale_reached', '')} | "
                         f"{r.get('nan_or_inf_loss', '')} | {(r.get('error') or '').replace('|', '/')[:160]} |")
        lines.append("")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


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
                print(f"  track {t}: job {job.name}" + (" (2 rank processes of scripts/fairseq_train.py)" if job.harness else ""))
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
        probe = pool.submit(environment, Namespace(device=args.device, python=args.python), argv_seen,
                            script=__file__, probe=not args.cpu)
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
