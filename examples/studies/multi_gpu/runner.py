"""Running the multi-GPU check's jobs (examples.studies.multi_gpu.check): fairseq-train processes
on 2 GPUs or 2 CPU ranks, alone, several runs to one launch of examples.common.fairseq_train, or
stopped and restarted; phases of tracks that run together."""

import os
import re
import shlex
import socket
import tempfile
import threading
import time

from examples.common.fairseq_commands import FAIRSEQ_TRAIN, child_env
from examples.common.fairseq_logs import run_processes
from examples.studies.multi_gpu.records import (Records, error_of, first_error, first_failure, run_facts,
                                                split_harness_output)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    Runs of world size 2 in one launch of 2 examples.common.fairseq_train rank processes."""

    def __init__(self, name, runs, harness=False):
        self.name, self.runs, self.harness = name, runs, harness


class Checker(Records):
    """Runs the jobs of a plan, phase after phase, and records them."""

    def __init__(self, args):
        super().__init__(args)
        self.deadline = self.started + args.budget_s if args.budget_s > 0 else None
        self.logs = os.path.join(args.out_dir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.workdir = tempfile.mkdtemp(prefix="ddp_check_")

    def child_env(self, extra):
        # CPU: 2 processes on few cores, threads would only contend; GPU: up to 8 processes share the host's cores
        threads = "1" if self.args.cpu else os.environ.get("OMP_NUM_THREADS", "4")
        return child_env(dict({"PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1"),
                               "OMP_NUM_THREADS": threads}, **extra))

    def entry_cmd(self, entry):
        if entry == "torchrun":  # torchrun's own ranks; on CPU through examples.common.fairseq_train
            launch = [self.args.python, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                      "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
            return launch + ["-m", FAIRSEQ_TRAIN if self.args.cpu else "fairseq_cli.train"]
        return [self.args.python, "-m", "fairseq_cli.train"]

    def remaining(self):
        return None if self.deadline is None else self.deadline - time.time()

    def _spawn_and_wait(self, procs, timeout, log_paths, workdir=None, stop_when=None):
        """run_processes in a working folder of their own (fairseq may write checkpoints/ there)."""
        workdir = workdir or tempfile.mkdtemp(dir=self.workdir)
        return run_processes(procs, log_paths, timeout, cwd=workdir, stop_when=stop_when)

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
            base = [self.args.python, "-m", FAIRSEQ_TRAIN] + run.argv
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
            cmd = [self.args.python, "-m", FAIRSEQ_TRAIN]
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
