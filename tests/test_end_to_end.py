"""Real text through fairseq's own tools: preprocess -> train -> validate, resume, and loading."""

import os
import pickle
import re
import signal
import subprocess

import pytest
import torch

from conftest import REPO, fairseq_cli, run
from fairseq import checkpoint_utils


def train_command(data_bin, save_dir, max_update, *extra):
    return fairseq_cli("train") + [
        data_bin, "--user-dir", os.path.join(REPO, "linformer_plugin"),
        "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "linformer_roberta_tiny",
        "--tokens-per-sample", "64", "--compressed-dim", "16", "--sample-break-mode", "none",
        "--batch-size", "8", "--optimizer", "adam", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "5", "--max-update", str(max_update), "--save-dir", str(save_dir),
        "--no-epoch-checkpoints", "--num-workers", "0", "--cpu", "--seed", "3", "--log-format", "simple",
        "--log-interval", "5", *extra,
    ]


def valid_losses(log):
    return [float(x) for x in re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", log)]


@pytest.fixture(scope="module")
def trained(data_bin, tmp_path_factory):
    """A tiny linformer_roberta trained for 60 updates, validated every 20."""
    save_dir = tmp_path_factory.mktemp("e2e")
    log = run(train_command(data_bin, save_dir, 60, "--validate-interval-updates", "20",
                            "--save-interval-updates", "20", "--keep-interval-updates", "1"))
    return save_dir, log


def test_training_lowers_validation_loss(trained):
    _, log = trained
    losses = valid_losses(log)
    assert len(losses) >= 3, log[-3000:]
    falling = all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert falling and losses[-1] < losses[0] - 0.2, f"validation loss did not fall: {losses}"


def test_fairseq_validate_reads_the_checkpoint(trained, data_bin):
    save_dir, log = trained
    out = run(fairseq_cli("validate") + [
        data_bin, "--user-dir", os.path.join(REPO, "linformer_plugin"), "--task", "masked_lm",
        "--path", str(save_dir / "checkpoint_last.pt"), "--batch-size", "8", "--num-workers", "0", "--cpu",
    ])
    loss = valid_losses(out)
    assert loss and abs(loss[0] - valid_losses(log)[-1]) < 0.05


def test_load_model_ensemble_and_task_with_safe_torch_load(trained, data_bin):
    save_dir, _ = trained
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(save_dir / "checkpoint_last.pt")], arg_overrides={"data": data_bin}
    )
    assert type(models[0]).__name__ == "LinformerModel" and cfg.model.compressed_dim == 16
    tokens = torch.randint(4, 100, (2, 10))
    assert models[0].eval()(tokens, features_only=True)[0].shape == (2, 10, 64)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_the_safety_check_stays_on(tmp_path):
    """Allowing fairseq's checkpoint types does not let arbitrary pickled code through."""
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": Payload()}, f)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only load failed"):
        checkpoint_utils.load_checkpoint_to_cpu(str(path))


def test_interrupted_training_resumes_from_checkpoint_last(data_bin, tmp_path):
    """Stop a run after its first checkpoint, rerun the same command: it continues from there."""
    cmd = train_command(data_bin, tmp_path, 30, "--save-interval-updates", "10", "--disable-validation")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = []
    for line in proc.stdout:
        first.append(line)
        if "Saved checkpoint" in line and "@ 10 updates" in line:
            proc.send_signal(signal.SIGKILL)  # an abrupt stop, as a preempted job
            break
    proc.wait()
    assert any("@ 10 updates" in line for line in first), "".join(first)[-3000:]
    assert not any("num_updates=30" in line for line in first)

    log = run(cmd)
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 10 updates\)", log), log[-3000:]
    assert "num_updates 30" in log or "num_updates=30" in log, log[-3000:]


def test_checkpoint_with_numpy_scalars_loads(trained, tmp_path):
    """fairseq's meters can store numpy floats (e.g. the best validation loss)."""
    import numpy as np

    save_dir, _ = trained
    state = torch.load(save_dir / "checkpoint_last.pt", weights_only=False)
    state["extra_state"]["best"] = np.float64(8.25)
    state["extra_state"]["val_loss"] = np.float32(8.5)
    torch.save(state, tmp_path / "numpy.pt")
    loaded = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "numpy.pt"))
    assert loaded["extra_state"]["best"] == 8.25
