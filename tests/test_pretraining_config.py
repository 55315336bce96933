"""examples/linformer_roberta/config/pretraining/base.yaml runs under fairseq-hydra-train.

At tiny scale on CPU, with the CPU override line the config itself gives (common.fp16=false
common.cpu=true) and size/update overrides, on the data-bin built from the shipped quickstart text.
A key that fairseq no longer knows, or a value it refuses, fails here. The fine-tuning configs are
run by tests/test_finetune.py (sst_2) and tests/test_quickstart*.py (quickstart).
"""

import os
import re

import pytest
import yaml

from conftest import REPO, fairseq_cli, run
from fairseq import checkpoint_utils

pytestmark = pytest.mark.slow  # runs fairseq's command-line tools: not in the quick loop (-m "not slow")

CONFIG = os.path.join(REPO, "examples", "linformer_roberta", "config", "pretraining", "base.yaml")
# The size and length overrides; everything else is base.yaml's.
TINY = ["model._name=linformer_roberta_tiny", "model.compressed_dim=16", "dataset.batch_size=4",
        "optimization.update_freq=[1]", "optimization.max_update=3", "lr_scheduler.warmup_updates=1",
        "common.log_format=simple", "common.log_interval=1", "dataset.num_workers=0"]


def cpu_override_line():
    """The override the config's comment gives for a CPU."""
    text = open(CONFIG, encoding="utf-8").read()
    match = re.search(r"^#.*On a CPU.*?\n#\s+(common\.fp16=false common\.cpu=true)\b", text, flags=re.M | re.S)
    assert match, "base.yaml no longer says how to run it on a CPU (common.fp16=false common.cpu=true)"
    return match.group(1).split()


def test_base_yaml_pretrains_under_fairseq_hydra_train(data_bin, tmp_path):
    save_dir = tmp_path / "checkpoints"
    log = run(fairseq_cli("hydra_train") + [
        "--config-dir", os.path.dirname(CONFIG), "--config-name", "base", f"task.data={data_bin}",
        f"common.user_dir={os.path.join(REPO, 'linformer_plugin')}", f"checkpoint.save_dir={save_dir}",
        *cpu_override_line(), *TINY], cwd=str(tmp_path))
    assert re.search(r"valid on 'valid' subset .*loss [\d.]+ .*num_updates 3", log), log[-3000:]
    # hydra's files and tensorboard logs land under the save dir, not the working directory
    assert {"checkpoint_last.pt", "checkpoint_best.pt", ".hydra", "hydra_train.log", "tensorboard"} <= {
        p.name for p in save_dir.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]

    # what was trained is base.yaml's recipe, apart from the overrides
    cfg = checkpoint_utils.load_checkpoint_to_cpu(str(save_dir / "checkpoint_last.pt"))["cfg"]
    base = yaml.safe_load(open(CONFIG, encoding="utf-8"))
    assert cfg.task._name == base["task"]["_name"] == "masked_lm"
    for key in ("sample_break_mode", "tokens_per_sample"):
        assert cfg.task[key] == base["task"][key], key
    assert cfg.optimizer.adam_betas == base["optimizer"]["adam_betas"]
    for key in ("weight_decay", "adam_eps"):  # yaml.safe_load reads 1e-06 as a string
        assert cfg.optimizer[key] == float(base["optimizer"][key]), key
    assert cfg.lr_scheduler._name == base["lr_scheduler"]["_name"]
    assert list(cfg.optimization.lr) == base["optimization"]["lr"]
    assert cfg.model.compressed_dim == 16 and cfg.model.max_positions == base["model"]["max_positions"]
    assert cfg.common.fp16 is False and cfg.common.cpu is True
