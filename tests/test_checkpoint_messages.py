"""Checkpoint/model mismatches say both sides in the user's terms (layers, width, n, k) and the flags."""

import pytest

from conftest import build_tiny_model
from linformer_plugin.options import LinformerConfigError


def load_error(saved, loaded):
    model, _ = build_tiny_model(**saved)
    other, _ = build_tiny_model(**loaded)
    with pytest.raises(LinformerConfigError) as info:
        other.load_state_dict(model.state_dict(), strict=True)
    return str(info.value)


def test_another_k_names_both_ks_and_the_flag():
    message = load_error({"compressed_dim": 8}, {"compressed_dim": 16})
    assert ("the checkpoint has 2 layers of width 64, n = 32, k = 8; this command builds 2 layers of width 64, "
            "n = 32, k = 16 (--compressed-projection") in message, message
    assert "; pass --compressed-dim 8." in message, message


def test_another_size_names_the_checkpoints_arch():
    message = load_error({}, {"arch": "linformer_roberta_small"})
    assert message.startswith("the checkpoint does not fit the model: the checkpoint has 2 layers of width 64, "
                              "n = 32"), message
    assert "this command builds 4 layers of width 256, n = 32" in message, message
    assert "pass --arch linformer_roberta_tiny" in message, message


def test_another_n_names_max_positions():
    message = load_error({"max_positions": 32, "compressed_dim": 8}, {"max_positions": 64, "compressed_dim": 8})
    assert "the checkpoint has 2 layers of width 64, n = 32, k = 8" in message, message
    assert "pass --max-positions 32" in message, message


def test_another_dictionary_names_both_sizes_and_the_way_out():
    import torch

    model, dictionary = build_tiny_model()
    state = model.state_dict()
    key = "encoder.sentence_encoder.embed_tokens.weight"
    state[key] = torch.cat([state[key], state[key][:7]])
    with pytest.raises(ValueError) as info:
        model.upgrade_state_dict_named(state, "")
    message = str(info.value)
    assert (f"the checkpoint's vocabulary has {len(dictionary) + 7} entries but the data's dictionary "
            f"has {len(dictionary)} (its dict.txt)") in message, message
    assert "from_pretrained's data_name_or_path" in message, message
    assert "linformer-prepare-classification-data --pretraining-data" in message, message


@pytest.mark.slow
def test_fairseq_train_restoring_another_k_ends_on_the_plugins_message(trained_mlm, data_bin, tmp_path):
    """fairseq's Trainer raises "please ensure that the architectures match" over the plugin's message;
    fairseq_fixes.explain_training_refusals puts the plugin's back as the only one."""
    import subprocess

    from conftest import mlm_train_command

    save_dir, _ = trained_mlm  # k = 16
    command = [arg if arg != "16" else "8" for arg in mlm_train_command(data_bin, tmp_path / "ckpt", 1)]
    command += ["--restore-file", str(save_dir / "checkpoint_last.pt"), "--reset-optimizer"]
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode != 0
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("linformer_plugin.options.LinformerConfigError: the checkpoint does not fit the model: "
                           "the checkpoint has 2 layers of width 64, n = 64, k = 16;"), proc.stdout[-3000:]
    assert "pass --compressed-dim 16." in last, last
    assert "please ensure that the architectures match" not in proc.stdout, proc.stdout[-3000:]
