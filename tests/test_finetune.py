"""From a labelled tsv to predictions: data-bin -> sentence_prediction fine-tuning from a pretrained
linformer_roberta (fairseq-train flags and fairseq-hydra-train configs) -> hub predict."""

import os
import re

import pytest
import torch

from conftest import REPO, fairseq_cli, run
from linformer_plugin.data.classification import prepare_classification_data
from linformer_plugin.models import LinformerModel

pytestmark = pytest.mark.slow  # runs fairseq's command-line tools: not in the quick loop (-m "not slow")

SST2 = os.path.join(REPO, "tests", "data", "sst2_tiny")
CONFIGS = os.path.join(REPO, "examples", "linformer_roberta", "config")


@pytest.fixture(scope="module")
def sst2_bin(data_bin, tmp_path_factory):
    destdir = str(tmp_path_factory.mktemp("sst2") / "bin")
    prepare_classification_data(
        destdir, os.path.join(SST2, "train.tsv"), os.path.join(SST2, "dev.tsv"),
        spm_model=os.path.join(data_bin, "sentencepiece.bpe.model"), dictionary=os.path.join(data_bin, "dict.txt"),
        log=None,
    )
    return destdir


@pytest.fixture(scope="module")
def finetuned(sst2_bin, trained_mlm, tmp_path_factory):
    pretrained, _ = trained_mlm
    save_dir = tmp_path_factory.mktemp("finetuned")
    log = run(fairseq_cli("train") + [
        sst2_bin, "--user-dir", os.path.join(REPO, "linformer_plugin"), "--task", "sentence_prediction",
        "--criterion", "sentence_prediction", "--arch", "linformer_roberta_tiny", "--compressed-dim", "16",
        "--max-positions", "64", "--num-classes", "2", "--init-token", "0", "--separator-token", "2",
        "--restore-file", str(pretrained / "checkpoint_last.pt"), "--reset-optimizer", "--reset-dataloader",
        "--reset-meters", "--batch-size", "8", "--optimizer", "adam", "--lr", "1e-3", "--max-update", "10",
        "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric", "--no-epoch-checkpoints",
        "--save-dir", str(save_dir), "--num-workers", "0", "--cpu", "--seed", "1", "--log-format", "simple",
        "--skip-invalid-size-inputs-valid-test",  # the pretrained model's 64 positions
    ])
    return save_dir, log


def test_finetuning_starts_from_the_pretrained_checkpoint(finetuned):
    _, log = finetuned
    assert "Loaded checkpoint" in log and "valid on 'valid' subset" in log and "accuracy" in log


def test_finetuned_model_predicts_through_the_hub(finetuned, sst2_bin):
    save_dir, _ = finetuned
    hub = LinformerModel.from_pretrained(str(save_dir), "checkpoint_best.pt", sst2_bin).eval()
    sentences = ["a gorgeous , witty , seductive movie .", "it 's a bad sign .", "the plot is nothing but boilerplate clichés from start to finish"]
    batched = hub.predict("sentence_classification_head", hub.encode_batch(sentences))
    assert batched.shape == (3, 2)
    for i, sentence in enumerate(sentences):
        alone = hub.predict("sentence_classification_head", hub.encode(sentence))[0]
        torch.testing.assert_close(alone, batched[i], atol=1e-5, rtol=0)
    labels = hub.task.label_dictionary
    assert {labels.string([i + labels.nspecial]) for i in range(2)} == {"0", "1"}


def test_finetuning_under_fairseq_hydra_train(sst2_bin, trained_mlm, tmp_path):
    """fairseq's reference Linformer fails here (its TransformerConfig lacks the Linformer fields)."""
    pretrained, _ = trained_mlm
    log = run(fairseq_cli("hydra_train") + [
        "--config-dir", os.path.join(CONFIGS, "finetuning"), "--config-name", "sst_2",
        f"task.data={sst2_bin}", f"checkpoint.restore_file={pretrained / 'checkpoint_last.pt'}",
        f"common.user_dir={os.path.join(REPO, 'linformer_plugin')}", "common.fp16=false", "common.cpu=true",
        "common.tensorboard_logdir=null", "common.log_format=simple", "common.log_interval=1",
        "model._name=linformer_roberta_tiny", "model.compressed_dim=16", "model.max_positions=64",
        "task.max_positions=64", "optimization.max_update=2", "optimization.max_epoch=1",
        "dataset.num_workers=0", "dataset.skip_invalid_size_inputs_valid_test=true", f"checkpoint.save_dir={tmp_path / 'ckpt'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ], cwd=str(tmp_path))
    assert "Loaded checkpoint" in log, log[-3000:]
    assert re.search(r"valid on 'valid' subset .*accuracy [\d.]+ .*num_updates 2", log), log[-3000:]
