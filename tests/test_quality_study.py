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


def test_a_run_is_estimated_from_the_earlier_run_most_like_it(tmp_path):
    # a chunk starts a run only if its estimate ends before the deadline: Linformer at n = 4096 must not
    # be estimated from RoBERTa's slower run at that n when a Linformer of that n and k ran
    args = quality_study.parse_args(["--data", ".", "--out", str(tmp_path), "--cpu", "--pretrain-estimate", "999"])
    record = lambda n, k, wall: {"name": f"{n}-{k}", "n": n, "k": k, "pretrain_rc": 0, "pretrain_wall_s": wall}
    study = quality_study.Study(args, {"a": record(4096, None, 300.0), "b": record(4096, 128, 200.0),
                                       "c": record(512, 128, 100.0), "d": {**record(1024, 128, 50.0), "pretrain_rc": 1}})
    Run = quality_study.Run
    assert study.estimate(Run("x", n=4096, k=128)) == pytest.approx(220.0)  # the same n and k
    assert study.estimate(Run("x", n=4096, k=256)) == pytest.approx(220.0)  # the same n, a Linformer
    assert study.estimate(Run("x", n=4096)) == pytest.approx(330.0)  # the same n, full attention
    del study.previous["a"]
    assert study.estimate(Run("x", n=4096)) == pytest.approx(220.0)  # the same n
    assert study.estimate(Run("x", n=2048, k=256)) == pytest.approx(220.0)  # any n (a failed run does not count)
    assert quality_study.Study(args).estimate(Run("x", n=512)) == 999  # nothing ran: --pretrain-estimate


@pytest.mark.parametrize("keep_checkpoints", [False, True])
def test_a_kept_run_whose_checkpoint_is_gone(tmp_path, keep_checkpoints):
    # --resume keeps an earlier chunk's run that needs nothing more; --keep-checkpoints pretrains it
    # again when its checkpoint is gone (a study that fine-tunes the checkpoints afterwards)
    argv = ["--data", ".", "--out", str(tmp_path), "--cpu", "--resume", "--finetune-updates", "0",
            "--runs", "roberta_n4096"] + (["--keep-checkpoints"] if keep_checkpoints else [])
    args = quality_study.parse_args(argv)
    run, = quality_study.select_runs(args)
    previous = {"name": run.name, "n": run.n, "k": run.k, "flags": run.flags, "max_update": args.max_update,
                "tokens_per_update": max(1, args.tokens // run.n) * run.n, "pretrain_rc": 0, "valid_ppl": 391.7}
    study = quality_study.Study(args, {run.name: previous})
    started = []
    study._run = lambda cmd, log_name, device, estimate_s=0: started.append(log_name)  # "not started": None
    result = study.study((0, run))
    assert started == ([f"{run.name}.pretrain.log"] if keep_checkpoints else [])
    assert result["valid_ppl"] == 391.7  # not started (the deadline): the earlier record stays


@pytest.fixture
def sst2_bin(data_bin, tmp_path):
    sst2 = str(tmp_path / "sst2-bin")
    dev = os.path.join(SST2, "dev.tsv")  # labelled, so it serves as the test split too
    prepare_classification_data(sst2, os.path.join(SST2, "train.tsv"), dev, dev,
                                spm_model=os.path.join(data_bin, "sentencepiece.bpe.model"),
                                dictionary=os.path.join(data_bin, "dict.txt"), log=None)
    return sst2


def test_quality_study_cpu_smoke(data_bin, sst2_bin, tmp_path):
    sst2 = sst2_bin
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


def test_a_study_in_chunks_resumes_where_it_stopped(data_bin, sst2_bin, tmp_path):
    out = tmp_path / "study"
    study = STUDY + ["--data", data_bin, "--sst2", sst2_bin, "--out", str(out), "--tiny", "--cpu",
                     "--runs", "roberta_n512", "linformer_n512_k256", "--max-update", "2", "--valid-interval", "1",
                     "--log-interval", "1", "--finetune-updates", "2", "--finetune-valid-interval", "1",
                     "--resume", "--deadline", "3600"]

    def records():
        return {r["name"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}

    # a chunk with no time for a pretraining run starts none and says what is left
    log = run(study + ["--pretrain-estimate", "7200"], cwd=REPO)
    assert "not started" in log and "left for the next chunk (--resume): ['roberta_n512', 'linformer_n512_k256']" in log
    assert records() == {}
    # the next chunk runs both, and fine-tunes roberta_n512 (k = 256 is not fine-tuned) with seed 1
    log = run(study + ["--finetune-seeds", "1"], cwd=REPO)
    assert "failed: none; left for the next chunk (--resume): none" in log
    first = records()
    assert [f["seed"] for f in first["roberta_n512"]["sst2_runs"]] == [1] and "sst2_runs" not in first["linformer_n512_k256"]
    assert first["linformer_n512_k256"]["n"] == 64 and first["linformer_n512_k256"]["k"] == 32  # tiny: / 8
    # asked for seeds 1 and 2: only seed 2 runs, the pretraining runs are kept as they were
    log = run(study + ["--finetune-seeds", "1", "2"], cwd=REPO)
    assert "pretrain.log" not in log and "roberta_n512.sst2.seed2.log: rc=0" in log and "seed1.log" not in log
    second = records()
    assert second["linformer_n512_k256"] == first["linformer_n512_k256"]
    assert second["roberta_n512"]["valid_curve"] == first["roberta_n512"]["valid_curve"]
    assert [f["seed"] for f in second["roberta_n512"]["sst2_runs"]] == [1, 2]
    assert second["roberta_n512"]["sst2_runs"][0] == first["roberta_n512"]["sst2_runs"][0]
    # a run whose pretraining does not fit the chunk keeps its earlier record
    log = run(study + ["--finetune-seeds", "1", "2", "3", "--pretrain-estimate", "7200", "--finetune-estimate", "7200"],
              cwd=REPO)
    assert "roberta_n512.sst2.seed3.log: not started" in log and records() == second
    (out / "checkpoints" / "roberta_n512" / "pretrain" / "checkpoint_last.pt").unlink()  # a new machine
    log = run(study + ["--finetune-seeds", "1", "2", "3", "--deadline", "1"], cwd=REPO)  # each run took over 1 s
    assert "roberta_n512.pretrain.log: not started" in log and records() == second
    # another number of updates is another run: it trains again
    log = run(study + ["--finetune-seeds", "1", "2", "--max-update", "3", "--runs", "linformer_n512_k256"], cwd=REPO)
    assert "linformer_n512_k256.pretrain.log: rc=0" in log
    third = records()
    assert third["linformer_n512_k256"]["max_update"] == 3 and third["roberta_n512"] == second["roberta_n512"]
    # the report compares each run with RoBERTa at its n
    report = subprocess.run([sys.executable, "-m", "examples.studies.quality.report", str(out / "results.jsonl"),
                             "--out-dir", str(tmp_path / "report"), "--no-plots"],
                            capture_output=True, text=True, check=True, cwd=REPO).stdout
    ratio = third["linformer_n512_k256"]["valid_ppl"] / third["roberta_n512"]["valid_ppl"]
    assert "| 64 | roberta (full) | 2 |" in report and "| 64 | linformer k=32 | 3 | " in report
    assert f"| {ratio:.3f}x |" in report
