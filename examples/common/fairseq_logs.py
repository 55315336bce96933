"""Running fairseq's command-line tools in logged child processes, and reading their
``--log-format json`` logs. Imports nothing heavy (no torch, no fairseq)."""

import json
import os
import re
import shlex
import signal
import subprocess
import time

# "... | INFO | <tag> | {json}" (fairseq's format) or "INFO:<tag>:{json}" (logging's default);
# tags: train_inner, train, valid, or a subset's name (fairseq-validate --valid-subset test)
_JSON_RECORD = re.compile(r"[|:]\s*([\w-]+)\s*[|:]\s*(\{.*\})\s*$")
# printed by examples.common.train_with_peak_memory where CUDA is available
_PEAK = re.compile(r"^PEAK_GPU_MEMORY_MIB=([0-9.]+)\s*$")
_PEAK_RESERVED = re.compile(r"^PEAK_GPU_MEMORY_RESERVED_MIB=([0-9.]+)\s*$")
POLL_S = 0.2


def json_records(text):
    """{tag: [stats, ...]} from a fairseq --log-format json log, values as floats where they parse."""
    found = {}
    for line in text.splitlines():
        m = _JSON_RECORD.search(line)
        if not m:
            continue
        try:
            stats = json.loads(m.group(2))
        except ValueError:
            continue
        clean = {}
        for key, value in stats.items():
            try:
                clean[key] = float(value)
            except (TypeError, ValueError):
                clean[key] = value
        found.setdefault(m.group(1), []).append(clean)
    return found


def error_line(lines):
    """The line that names the failure: the last exception line, else the last line."""
    useful = [line.strip() for line in lines if line.strip() and not line.startswith("PEAK_GPU_MEMORY")]
    for line in reversed(useful):
        if re.search(r"(Error|Exception|error:)", line) and not line.startswith("File "):
            return line[:500]
    return useful[-1][:500] if useful else ""


def steady_rate(inner, per_update, settle=0.5):
    """Units per second over the train_inner intervals of the last (1 - settle) of the updates:
    ``per_update`` (a record's per-update count, "wpb" for words or "bsz" for sentences) times the
    interval's updates over its seconds, summed; not a mean of rates. The first updates run slower
    while the allocator and the kernels' choices settle (and with complete_doc every batch has
    another shape). None without intervals."""
    if not inner:
        return None
    last = int(inner[-1]["num_updates"])
    units = seconds = 0.0
    done = 0
    for r in inner:
        start, done = done, int(r["num_updates"])
        updates = done - start
        if start >= settle * last and float(r["ups"]) > 0:
            units += float(r[per_update]) * updates
            seconds += updates / float(r["ups"])
    return units / seconds if seconds else None


def parse_train_log(text, records=None):
    """words/s of the last train_inner line (else the epoch's train line), peak GPU memory, error line
    of a fairseq-train log. ``records``: the log's ``json_records``, if the caller has them already."""
    lines = text.splitlines()
    records = json_records(text) if records is None else records
    inner, train = records.get("train_inner", []), records.get("train", [])
    result = {"wps": None, "wps_source": None, "train_inner_lines": len(inner), "num_updates": None,
              "peak_gpu_mem_mib": None, "peak_gpu_reserved_mib": None}
    for line in lines:
        for regex, key in ((_PEAK, "peak_gpu_mem_mib"), (_PEAK_RESERVED, "peak_gpu_reserved_mib")):
            m = regex.match(line.strip())
            if m:
                result[key] = float(m.group(1))
    try:
        if inner:
            result.update(wps=float(inner[-1]["wps"]), wps_source="train_inner",
                          num_updates=int(inner[-1]["num_updates"]))
        elif train:  # no train_inner line (max_update < log_interval): epoch average
            result.update(wps=float(train[-1]["train_wps"]), wps_source="train",
                          num_updates=int(train[-1]["train_num_updates"]))
    except (ValueError, KeyError, TypeError):
        pass
    result["error_line"] = error_line(lines)
    return result


def run_logged(cmd, log_path, timeout, env=None, cwd=None, header=False):
    """One process of ``run_processes``: returns (rc, the log's text, timed_out)."""
    rcs, texts, timed_out = run_processes([(cmd, env)], [log_path], timeout, cwd=cwd, header=header)
    return rcs[0], texts[0], timed_out


def run_processes(procs, log_paths, timeout, cwd=None, header=True, stop_when=None, grace_s=60):
    """Start (cmd, env) processes together, each with its output in its log (after a "# command"
    line if ``header``), each in a session of its own; wait for all. Returns (rcs, texts, timed_out).

    They are killed (SIGKILL to each whole session, so only their own processes) when ``timeout``
    seconds pass (None: no limit; timed_out is then True), when ``stop_when(text of the first log)``
    turns true (as a preempted job), or ``grace_s`` after one of them failed: a rank that died
    leaves the others waiting in a collective."""
    handles, files = [], []
    try:
        for (cmd, env), log_path in zip(procs, log_paths):
            f = open(log_path, "w")
            files.append(f)
            if header:
                f.write("# " + shlex.join(cmd) + "\n")
                f.flush()
            handles.append(subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL, start_new_session=True))
        end = None if timeout is None else time.time() + timeout
        timed_out, failed_at = False, None
        while any(h.poll() is None for h in handles):
            now = time.time()
            if failed_at is None and any(h.returncode not in (None, 0) for h in handles):
                failed_at = now
            stop = False
            if stop_when is not None:
                with open(log_paths[0], errors="replace") as f:
                    stop = stop_when(f.read())
            timed_out = end is not None and now > end and not stop
            if stop or timed_out or (failed_at is not None and now - failed_at > grace_s):
                break
            time.sleep(POLL_S)
    finally:
        for h in handles:
            if h.poll() is None:
                try:
                    os.killpg(h.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            h.wait()
        for f in files:
            f.close()
    texts = []
    for log_path in log_paths:
        with open(log_path, errors="replace") as f:
            texts.append(f.read())
    return [h.returncode for h in handles], texts, timed_out
