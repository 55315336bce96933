"""The quality study (examples.studies.quality) end to end on CPU with tiny models: pretraining of roberta and
linformer_roberta, SST-2 fine-tuning with dev and test accuracy, results rebuilt from the logs, the
report's table."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, run
from examples.studies.quality import study as quality_study
from linformer_plugin.data.classification import prepare_classification_data

pytestmark = pytest.mark.slow  # runs fairseq's command-line tools: not in the quick loop (-m "not slow")

STUDY = [sys.executable, "-m", "examples.studies.quality.study"]  # run from the repository root
SST2 = os.path.join(REPO, "tests", "data", "sst2_tiny")


def test_added_runs_take_their_k_and_n():
    args = quality_study.parse_args(["--data", ".", "--out", ".", "--cpu", "--runs", "roberta", "--add-run",
                                     "a=--compressed-init mean", "--add-run",
                                     "b=--compressed-dim 256 --tokens-per-sample 2048 --compressed-init mean"])
    runs = {r.name: r for r in quality_study.select_runs(args)}
    assert (runs["a"].n, runs["a"].k, runs["a"].flags, runs["a"].finetune) == (512, 128, ["--compressed-init", "mean"], True)
    assert (runs["b"].n, runs["b"].k, runs["b"].flags, runs["b"].finetune) == (2048, 256, ["--compressed-init", "mean"], False)
    args = quality_study.parse_args(["--data", ".", "--out", ".", "--cpu", "--add-run", "c=--tokens-per-sample"])
    with pytest.raises(SystemExit, match="--tokens-per-sample needs a positive integer"):
        quality_study.select_runs(args)


def test_quality_study_cpu_smoke(data_bin, tmp_path):
    sst2 = str(tmp_path / "sst2-bin")
    dev = os.path.join(SST2, "dev.tsv")  # labelled, so it serves as the test split too
    prepare_classification_data(sst2, os.path.join(SST2, "train.tsv"), dev, dev,
                                spm_model=os.path.join(data_bin, "sentencepiece.bpe.model"),
                                dictionary=os.path.join(data_bin, "dict.txt"), log=None)
    out = tmp_path / "study"
    log = run(STUDY + ["--data", data_bin, "--sst2", sst2,
               "--out", str(out), "--tiny", "--cpu", "--runs", "roberta", "linformer_k128",
               "--add-run", "mean_k128=--compressed-dim 128 --compressed-projection mean",
               "--max-update", "2", "--valid-interval", "1", "--log-interval", "1",
               "--finetune-updates", "2", "--finetune-valid-interval", "1", "--finetune-seeds", "1", "2",
               "--jobs-per-gpu", "3"], cwd=REPO)
    assert "failed: none" in log
    results = {r["name"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert set(results) == {"roberta", "linformer_k128", "mean_k128"}
    for name, r in results.items():
        assert r["pretrain_rc"] == 0 and [c[0] for c in r["valid_curve"]] == [1, 2], name
        assert r["valid_ppl"] > 1 and r["params"] > 0
    assert results["linformer_k128"]["k"] == 16 and results["linformer_k128"]["n"] == 64  # tiny: n, k / 8
    for name, r in results.items():  # every n = 512 run fine-tuned once per seed; accuracies: their mean
        assert [f["seed"] for f in r["sst2_runs"]] == [1, 2], name
        assert r["sst2_test_acc"] == round(sum(f["test_acc"] for f in r["sst2_runs"]) / 2, 3)
        assert 0 <= r["sst2_dev_acc"] <= 100 and 0 <= r["sst2_test_acc"] <= 100 and r["sst2_test_std"] >= 0
        assert r["finetune_rc"] == 0 and "--seed 2" in (out / "logs" / f"{name}.sst2.seed2.log").read_text()

    # a study cut off before writing its results: rebuilt from the logs alone
    kept = (out / "results.jsonl").read_text()
    (out / "results.jsonl").unlink()
    run(STUDY + ["--data", data_bin, "--out", str(out), "--rebuild", "--runs", "roberta", "linformer_k128"], cwd=REPO)
    rebuilt = {r["name"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    original = {r["name"]: r for r in map(json.loads, kept.splitlines())}
    for name in ("roberta", "linformer_k128"):
        for key in ("valid_curve", "valid_ppl", "sst2_dev_acc", "sst2_test_acc", "sst2_runs"):
            assert rebuilt[name][key] == original[name][key], (name, key)

    report = subprocess.run([sys.executable, "-m", "examples.studies.quality.report",
                             str(out / "results.jsonl"), "--out-dir", str(tmp_path / "report"), "--no-plots"],
                            capture_output=True, text=True, check=True, cwd=REPO)
    table = (tmp_path / "report" / "table.md").read_text()
    assert table == report.stdout.rstrip("\n") + "\n" or table in report.stdout
    assert "| roberta | 64 | full |" in table and "| linformer_k128 | 64 | 16 |" in table
    assert "(2 seeds) |" in table
