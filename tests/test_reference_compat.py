"""Checkpoints trained by fairseq's own examples/linformer load into the plugin and give the same
encoder outputs, in every sharing mode."""

import os
import sys

import pytest
import torch

from conftest import REPO, fairseq_cli, run
from fairseq import checkpoint_utils
from examples.common.reference import reference_user_dir

REFERENCE_USER_DIR = reference_user_dir()

pytestmark = [pytest.mark.slow,  # trains reference models with fairseq-train: not in the quick loop
              pytest.mark.skipif(REFERENCE_USER_DIR is None, reason="this fairseq install does not ship examples/linformer")]

SHARING_FLAGS = {
    "headwise": [],
    "kv": ["--shared-kv-compressed", "1"],
    "layerwise": ["--shared-layer-kv-compressed", "1"],
}


def train_reference(data_bin, save_dir, flags):
    run(fairseq_cli("train") + [
        data_bin, "--user-dir", REFERENCE_USER_DIR, "--arch", "linformer_roberta_base",
        "--encoder-layers", "2", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "4", "--task", "masked_lm", "--criterion", "masked_lm",
        "--tokens-per-sample", "64", "--sample-break-mode", "none", "--batch-size", "4",
        "--optimizer", "adam", "--lr", "1e-3", "--max-update", "3", "--save-dir", str(save_dir),
        "--no-epoch-checkpoints", "--disable-validation", "--num-workers", "0", "--cpu", "--seed", "7",
        *flags,
    ])
    return os.path.join(save_dir, "checkpoint_last.pt")


@pytest.mark.parametrize("sharing", list(SHARING_FLAGS))
def test_reference_checkpoint_loads_with_same_outputs(sharing, data_bin, tmp_path):
    checkpoint = train_reference(data_bin, tmp_path / "ckpt", SHARING_FLAGS[sharing])
    tokens = torch.randint(4, 1000, (3, 64), generator=torch.Generator().manual_seed(0))
    torch.save(tokens, tmp_path / "tokens.pt")
    run([sys.executable, os.path.join(REPO, "tests", "helpers", "reference_features.py"), REFERENCE_USER_DIR,
         checkpoint, data_bin, str(tmp_path / "tokens.pt"), str(tmp_path / "reference.pt")])
    expected = torch.load(tmp_path / "reference.pt")

    # the reference's checkpoint names its user dir; ours is already imported and registered
    models, cfg, _ = checkpoint_utils.load_model_ensemble_and_task(
        [checkpoint], arg_overrides={"data": data_bin, "user_dir": os.path.join(REPO, "linformer_plugin")}
    )
    model = models[0].eval()
    assert type(model).__module__.startswith("linformer_plugin")
    with torch.no_grad():
        ours = model(tokens, features_only=True)[0]
    diff = (ours - expected).abs().max().item()
    print(f"{sharing}: max abs diff against the reference {diff:.3g}")
    assert diff <= 1e-4
