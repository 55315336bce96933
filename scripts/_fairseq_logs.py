"""Running fairseq's command-line tools from the study and benchmark scripts, and reading their
``--log-format json`` logs. Imports nothing heavy (no torch, no fairseq)."""

import json
import os
import re
import shlex
import signal
import subprocess

# "... | INFO | <tag> | {json}" (fairseq's format) or "INFO:<tag>:{json}" (logging's default);
# tags: train_inner, train, valid, or a subset's name (fairseq-validate --valid-subset test)
_JSON_RECORD = re.compile(r"[|:]\s*([\w-]+)\s*[|:]\s*(\{.*\})\s*$")


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


def run_logged(cmd, log_path, timeout, env=None, cwd=None, header=False):
    """Run cmd with its output in log_path (after a "# command" line if header); on timeout kill
    its whole process group. Returns (rc, the log's text, timed_out)."""
    with open(log_path, "w") as out:
        if header:
            out.write("# " + shlex.join(cmd) + "\n")
            out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only this run's processes
            rc = proc.wait()
    with open(log_path, errors="replace") as f:
        return rc, f.read(), timed_out
