"""Warm starts for long inputs: RoBERTa -> linformer_roberta, and longer max_positions."""

import hashlib
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, fairseq_cli, run
from fairseq import checkpoint_utils
from linformer_plugin.convert import (
    ConversionError, extend_linformer_positions, load_checkpoint, roberta_to_linformer, save_checkpoint,
)
from linformer_plugin.models import LinformerModel
from linformer_plugin.modules import SequenceProjection

pytestmark = pytest.mark.slow  # runs fairseq's command-line tools: not in the quick loop (-m "not slow")

SCRIPT = [sys.executable, os.path.join(REPO, "scripts", "convert_checkpoint.py")]


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def roberta_checkpoint(data_bin, tmp_path_factory):
    """A tiny fairseq RoBERTa (n = 32) trained here with fairseq-train."""
    save_dir = tmp_path_factory.mktemp("roberta")
    run(fairseq_cli("train") + [
        data_bin, "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta_base",
        "--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
        "--encoder-attention-heads", "2", "--tokens-per-sample", "32", "--sample-break-mode", "none",
        "--batch-size", "8", "--optimizer", "adam", "--lr", "1e-3", "--max-update", "3", "--disable-validation",
        "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--num-workers", "0", "--cpu",
    ])
    return str(save_dir / "checkpoint_last.pt")


def test_roberta_to_linformer_with_longer_positions(roberta_checkpoint, data_bin, tmp_path):
    before = digest(roberta_checkpoint)
    out = str(tmp_path / "linformer.pt")
    run(SCRIPT + ["roberta-to-linformer", roberta_checkpoint, out, "--compressed-dim", "8", "--max-positions", "64"])
    assert digest(roberta_checkpoint) == before  # the source is never modified

    source = load_checkpoint(roberta_checkpoint)["model"]
    models, cfg, _ = checkpoint_utils.load_model_ensemble_and_task([out], arg_overrides={"data": data_bin})
    model = models[0].eval()
    assert type(model) is LinformerModel and cfg.model.max_positions == 64
    state = model.state_dict()
    for key, value in source.items():  # every shared weight copied
        if key != "encoder.sentence_encoder.embed_positions.weight":
            torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    positions = state["encoder.sentence_encoder.embed_positions.weight"]
    old = source["encoder.sentence_encoder.embed_positions.weight"]
    torch.testing.assert_close(positions[2:34], old[2:34])
    torch.testing.assert_close(positions[34:66], old[2:34])  # the Longformer block copy
    assert model(torch.randint(4, 100, (2, 64)), features_only=True)[0].shape == (2, 64, 64)

    # it trains from there (--restore-file) at the new length, validates, and loads in the hub
    run(fairseq_cli("train") + [
        data_bin, "--user-dir", os.path.join(REPO, "linformer_plugin"), "--task", "masked_lm",
        "--criterion", "masked_lm", "--arch", "linformer_roberta", "--encoder-layers", "2",
        "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2",
        "--compressed-dim", "8", "--tokens-per-sample", "64", "--sample-break-mode", "none", "--batch-size", "4",
        "--optimizer", "adam", "--lr", "1e-4", "--max-update", "2", "--restore-file", out, "--reset-optimizer",
        "--reset-lr-scheduler", "--reset-meters", "--reset-dataloader", "--save-dir", str(tmp_path / "cont"),
        "--no-epoch-checkpoints", "--num-workers", "0", "--cpu",
    ])
    run(fairseq_cli("validate") + [
        data_bin, "--user-dir", os.path.join(REPO, "linformer_plugin"), "--task", "masked_lm", "--path", out,
        "--batch-size", "4", "--num-workers", "0", "--cpu",
    ])
    hub = LinformerModel.from_pretrained(str(tmp_path), "linformer.pt", data_bin)
    assert hub.extract_features(hub.encode("Return a new list.")).shape[-1] == 64


def test_extend_linformer_positions(trained_mlm, data_bin, tmp_path):
    save_dir, _ = trained_mlm
    source = str(save_dir / "checkpoint_last.pt")
    state = load_checkpoint(source)
    new = extend_linformer_positions(state, 128)
    out = str(tmp_path / "long.pt")
    save_checkpoint(new, out)
    models, cfg, _ = checkpoint_utils.load_model_ensemble_and_task([out], arg_overrides={"data": data_bin})
    assert cfg.model.max_positions == 128 and cfg.model.compressed_dim == 16
    old_weight = state["model"]["encoder.sentence_encoder.layers.0.self_attn.projection.weight"]
    new_weight = models[0].state_dict()["encoder.sentence_encoder.layers.0.self_attn.projection.weight"]
    # on an input of two copies of a block, the projection is that of the block under the old model
    old_projection, new_projection = SequenceProjection(64, 16), SequenceProjection(128, 16)
    old_projection.weight.data, new_projection.weight.data = old_weight, new_weight
    x = torch.randn(64, 2, 8)
    torch.testing.assert_close(new_projection(torch.cat([x, x])), old_projection(x))
    assert models[0].eval()(torch.randint(4, 100, (1, 128)), features_only=True)[0].shape == (1, 128, 64)


def test_roberta_to_linformer_initialises_new_projections_as_asked(roberta_checkpoint):
    state = load_checkpoint(roberta_checkpoint)
    mean = roberta_to_linformer(state, 8, max_positions=64, init="mean")
    weight = mean["model"]["encoder.sentence_encoder.layers.0.self_attn.projection.weight"]
    assert weight.shape == (16, 64) and torch.equal(weight[:, :8].sum(1) > 0, torch.tensor(([True] + [False] * 7) * 2))
    torch.testing.assert_close(weight.sum(1), torch.ones(16))
    default = roberta_to_linformer(state, 8, max_positions=64)
    assert default["model"]["encoder.sentence_encoder.layers.0.self_attn.projection.weight"].min() < 0  # xavier
    with pytest.raises(ValueError, match="unknown projection initialisation 'eye'"):
        roberta_to_linformer(state, 8, init="eye")


def test_bad_requests_are_clear_errors(roberta_checkpoint, trained_mlm, tmp_path):
    state = load_checkpoint(roberta_checkpoint)
    with pytest.raises(ConversionError, match="smaller than the checkpoint's max_positions=32"):
        roberta_to_linformer(state, 8, max_positions=16)
    with pytest.raises(ConversionError, match="not a multiple of the checkpoint's max_positions=32.*use 32 or 64"):
        roberta_to_linformer(state, 8, max_positions=40)
    with pytest.raises(ValueError, match="k=40 exceeds max_positions=32"):
        roberta_to_linformer(state, 40)
    with pytest.raises(ConversionError, match="already a Linformer"):
        roberta_to_linformer(load_checkpoint(str(trained_mlm[0] / "checkpoint_last.pt")), 8)
    with pytest.raises(ConversionError, match="no Linformer projections"):
        extend_linformer_positions(state, 64)
    not_roberta = {"model": {"decoder.embed_tokens.weight": torch.zeros(3, 3)}, "args": None}
    torch.save(not_roberta, tmp_path / "other.pt")
    with pytest.raises(ConversionError, match="not RoBERTa-shaped"):
        roberta_to_linformer(load_checkpoint(str(tmp_path / "other.pt")), 8)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="cannot read .*garbage.pt"):
        load_checkpoint(str(tmp_path / "garbage.pt"))
    out = subprocess.run(
        SCRIPT + ["extend", roberta_checkpoint, roberta_checkpoint, "--max-positions", "64"],
        capture_output=True, text=True)
    assert out.returncode != 0 and "never modified" in out.stderr
