"""Real text through fairseq's own tools: preprocess -> train -> validate, resume, and loading."""

import os
import pickle
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, fairseq_cli, mlm_train_command, run
from fairseq import checkpoint_utils

pytestmark = pytest.mark.slow  # runs fairseq's command-line tools: not in the quick loop (-m "not slow")


def valid_losses(log):
    return [float(x) for x in re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", log)]


def test_training_lowers_validation_loss(trained_mlm):
    _, log = trained_mlm
    losses = valid_losses(log)
    assert len(losses) >= 3, log[-3000:]
    falling = all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert falling and losses[-1] < losses[0] - 0.2, f"validation loss did not fall: {losses}"


def test_fairseq_validate_reads_the_checkpoint(trained_mlm, data_bin):
    save_dir, log = trained_mlm
    out = run(fairseq_cli("validate") + [
        data_bin, "--user-dir", os.path.join(REPO, "linformer_plugin"), "--task", "masked_lm",
        "--path", str(save_dir / "checkpoint_last.pt"), "--batch-size", "8", "--num-workers", "0", "--cpu",
    ])
    loss = valid_losses(out)
    assert loss and abs(loss[0] - valid_losses(log)[-1]) < 0.05


def test_load_model_ensemble_and_task_with_safe_torch_load(trained_mlm, data_bin):
    save_dir, _ = trained_mlm
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


def test_checkpoint_with_numpy_scalars_loads(trained_mlm, tmp_path):
    """fairseq's meters can store numpy floats (e.g. the best validation loss)."""
    import numpy as np

    save_dir, _ = trained_mlm
    state = torch.load(save_dir / "checkpoint_last.pt", weights_only=False)
    state["extra_state"]["best"] = np.float64(8.25)
    state["extra_state"]["val_loss"] = np.float32(8.5)
    torch.save(state, tmp_path / "numpy.pt")
    loaded = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "numpy.pt"))
    assert loaded["extra_state"]["best"] == 8.25


def test_truncated_checkpoint_is_a_clear_error(trained_mlm, data_bin, tmp_path):
    """fairseq writes checkpoint_last.pt by a non-atomic copy; a cut-off one is named as such."""
    save_dir, _ = trained_mlm
    data = (save_dir / "checkpoint_last.pt").read_bytes()
    (tmp_path / "checkpoint_last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match="checkpoint_last.pt is truncated or corrupt.*--restore-file"):
        checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "checkpoint_last.pt"))
    proc = subprocess.run(mlm_train_command(data_bin, tmp_path, 12), capture_output=True, text=True)
    assert proc.returncode != 0 and "is truncated or corrupt" in proc.stdout + proc.stderr


BF16_PROBE = """
import sys
import fairseq.trainer
import fairseq_cli.train

init = fairseq.trainer.Trainer.__init__

def report(self, cfg, *args, **kwargs):
    init(self, cfg, *args, **kwargs)
    print("MODEL_DTYPE", next(self.model.parameters()).dtype, "TPU", cfg.common.tpu, flush=True)

fairseq.trainer.Trainer.__init__ = report
sys.argv = ["fairseq-train"] + sys.argv[1:]
fairseq_cli.train.cli_main()
"""


def test_bf16_trains_on_the_runs_device(data_bin, tmp_path):
    """fairseq 0.12's parser turns --bf16 into --bf16 --tpu (fairseq #4696); without torch_xla the
    plugin gives the run its own device back, and the model trains in bfloat16."""
    cmd = mlm_train_command(data_bin, tmp_path / "ckpt", 2, "--bf16", "--disable-validation")
    log = run([sys.executable, "-c", BF16_PROBE] + cmd[len(fairseq_cli("train")):])
    assert "MODEL_DTYPE torch.bfloat16 TPU False" in log, log[-3000:]
    assert "training in bfloat16 on this run's device" in log
    assert (tmp_path / "ckpt" / "checkpoint_last.pt").exists()
