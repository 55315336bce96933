"""A run stopped mid-way and restarted with the same command continues from checkpoint_last.pt on
the very loss trajectory of a run that was never stopped (CPU training is deterministic)."""

import os
import re
import signal
import subprocess

import pytest

from conftest import mlm_train_command, run
from examples.common.fairseq_logs import json_records

pytestmark = pytest.mark.slow  # runs fairseq's command-line tools: not in the quick loop (-m "not slow")

UPDATES, STOP_AT = 20, 10
# every update logged, a checkpoint every STOP_AT updates; the LR schedule (inverse_sqrt) and the
# data order depend only on the update count and the seed, which the checkpoint restores
EXTRA = ("--save-interval-updates", str(STOP_AT), "--disable-validation", "--log-format", "json",
         "--log-interval", "1")
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")  # two runs at once on few cores


def per_update(lines):
    """{num_updates: the train_inner record}, values as floats of what fairseq printed (equal
    printed values give equal floats)."""
    return {int(r["num_updates"]): r for r in json_records("\n".join(lines)).get("train_inner", [])}


def trajectory(records, updates):
    return [(u, records[u]["loss"], records[u]["lr"], records[u]["gnorm"]) for u in updates]


def test_restarted_run_follows_the_uninterrupted_trajectory(data_bin, tmp_path):
    whole_cmd = mlm_train_command(data_bin, tmp_path / "whole", UPDATES, *EXTRA)
    cmd = mlm_train_command(data_bin, tmp_path / "stopped", UPDATES, *EXTRA)
    # the uninterrupted run goes alongside the one that is stopped (its output to a file: a pipe
    # nobody reads could fill up and stall it)
    with open(tmp_path / "whole.log", "w") as whole_log:
        whole = subprocess.Popen(whole_cmd, stdout=whole_log, stderr=subprocess.STDOUT, text=True, env=ONE_THREAD)
        stopped = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ONE_THREAD)
        before = []
        for line in stopped.stdout:
            before.append(line)
            if "Saved checkpoint" in line and f"@ {STOP_AT} updates" in line:
                stopped.send_signal(signal.SIGKILL)  # abruptly, as a preempted job
                break
        stopped.wait()
        assert whole.wait() == 0, (tmp_path / "whole.log").read_text()[-3000:]
    assert any(f"@ {STOP_AT} updates" in line for line in before), "".join(before)[-3000:]
    assert max(per_update(before)) < UPDATES, "the run was not stopped before its end"

    after = run(cmd, env=ONE_THREAD)  # the same command again
    assert re.search(rf"Loaded checkpoint \S*checkpoint_last\.pt \(epoch \d+ @ {STOP_AT} updates\)", after), after[-3000:]

    reference = per_update((tmp_path / "whole.log").read_text().splitlines())
    first, second = per_update(before), per_update(after.splitlines())
    assert sorted(reference) == list(range(1, UPDATES + 1))
    assert sorted(second) == list(range(STOP_AT + 1, UPDATES + 1)), "the restart did not continue at its checkpoint"
    assert trajectory(first, range(1, STOP_AT + 1)) == trajectory(reference, range(1, STOP_AT + 1))
    # loss, learning rate and gradient norm of every update after the restart, as printed (3 decimals)
    assert trajectory(second, range(STOP_AT + 1, UPDATES + 1)) == trajectory(reference, range(STOP_AT + 1, UPDATES + 1))
