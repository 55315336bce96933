"""Shared fixtures: tiny models built in memory, and one small data-bin made from the shipped text."""

import argparse
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import linformer_plugin
from fairseq.data import Dictionary
from fairseq.models import ARCH_MODEL_REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART_DATA = os.path.join(REPO, "examples", "quickstart", "data")
USER_DIR = linformer_plugin.USER_DIR


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped on CPU)")
    config.addinivalue_line("markers", "slow: runs fairseq's command-line tools or a study harness; "
                                       "the quick loop is pytest -m 'not slow'")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def tiny_dictionary(size=50):
    d = Dictionary()
    for i in range(size):
        d.add_symbol(f"w{i}")
    d.add_symbol("<mask>")
    return d


def build_tiny_model(max_positions=32, arch="linformer_roberta_tiny", **overrides):
    """A linformer_roberta built as fairseq-train would, without a data directory."""
    args = argparse.Namespace(arch=arch, max_positions=max_positions, dropout=0.0, attention_dropout=0.0)
    for key, value in overrides.items():
        setattr(args, key, value)
    dictionary = tiny_dictionary()
    task = SimpleNamespace(source_dictionary=dictionary, max_positions=lambda: max_positions)
    from fairseq.models import ARCH_CONFIG_REGISTRY

    ARCH_CONFIG_REGISTRY[arch](args)
    model = ARCH_MODEL_REGISTRY[arch].build_model(args, task)
    return model.eval(), dictionary


def run(cmd, **kwargs):
    """Run a command; on failure show its output in the assertion."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-6000:]}"
    return proc.stdout


def fairseq_cli(name):
    return [sys.executable, "-m", f"fairseq_cli.{name}"]


@pytest.fixture(scope="session")
def raw_text(tmp_path_factory):
    """Whole lines from the start of the shipped Python-docs slice: {"train": path, "valid": path}."""
    work = tmp_path_factory.mktemp("raw")
    paths = {}
    for split, limit in (("train", 120_000), ("valid", 20_000)):
        text = open(os.path.join(QUICKSTART_DATA, f"{split}.txt"), encoding="utf-8").read()[:limit]
        paths[split] = str(work / f"{split}.txt")
        with open(paths[split], "w", encoding="utf-8") as f:
            f.write(text[: text.rfind("\n") + 1])
    return paths


@pytest.fixture(scope="session")
def data_bin(raw_text, tmp_path_factory):
    """A masked-LM data-bin (sentencepiece, 1000 pieces) with its sentencepiece.bpe.model."""
    from linformer_plugin.data.pretraining import prepare_pretraining_data

    destdir = str(tmp_path_factory.mktemp("data") / "bin")
    return prepare_pretraining_data(destdir, raw_text["train"], raw_text["valid"], vocab_size=1000, log=None)


def mlm_train_command(data_bin, save_dir, max_update, *extra):
    """fairseq-train of a tiny linformer_roberta masked LM on CPU."""
    return fairseq_cli("train") + [
        data_bin, "--user-dir", os.path.join(REPO, "linformer_plugin"),
        "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "linformer_roberta_tiny",
        "--tokens-per-sample", "64", "--compressed-dim", "16", "--sample-break-mode", "none",
        "--batch-size", "8", "--optimizer", "adam", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "5", "--max-update", str(max_update), "--save-dir", str(save_dir),
        "--no-epoch-checkpoints", "--num-workers", "0", "--cpu", "--seed", "3", "--log-format", "simple",
        "--log-interval", "5", *extra,
    ]


@pytest.fixture(scope="session")
def trained_mlm(data_bin, tmp_path_factory):
    """A tiny linformer_roberta trained for 60 updates, validated every 20: (save_dir, log)."""
    save_dir = tmp_path_factory.mktemp("mlm")
    log = run(mlm_train_command(data_bin, save_dir, 60, "--validate-interval-updates", "20",
                                "--save-interval-updates", "20", "--keep-interval-updates", "1"))
    return save_dir, log
