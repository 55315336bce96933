"""The whole-model harness (examples.benchmarks.whole_model) at tiny scale on the CPU: every job runs
for ours and RoBERTa and gives a positive speed, on data it prepares from raw text."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO as _REPO
from examples.benchmarks import whole_model

REPO = Path(_REPO)


def _two_collection_corpus(root):
    """The quickstart's Python-docs text dealt into two collections, in the docs-corpus layout."""
    for split in ("train", "valid"):
        docs = [d for d in (REPO / "examples" / "quickstart" / "data" / f"{split}.txt").read_text().split("\n\n")
                if d.strip()]
        for i, name in enumerate(("a", "b")):
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / f"{split}.txt").write_text("\n\n".join(docs[i::2]) + "\n")
    return root


@pytest.mark.slow
def test_whole_model_cpu_smoke(tmp_path):
    corpus = _two_collection_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "examples.benchmarks.whole_model", "--cpu", "--tiny", "--corpus", str(corpus),
           "--collections", "a", "b", "--sst2", str(REPO / "examples" / "quickstart" / "classification"),
           "--hub-batch-sizes", "2", "--pretrain-lengths", "64", "--pretrain-modes", "complete_doc",
           "--work-dir", str(tmp_path / "work"), "--out-dir", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    jobs = [(r["part"], r["job"], r["model"]) for r in records]
    expected = [(part, job, model) for part, job in [
        ("finetune", "sst2 n=64 b=8"), ("finetune", "long n=128 b=4"),
        ("inference", "validate sst2 b=8"), ("inference", "validate long cut to 64 b=8"),
        ("inference", "hub full n=64 b=2"), ("inference", "hub mixed n=64 b=2"),
        ("pretrain", "masked_lm complete_doc n=64")] for model in ("ours_k16", "roberta")]
    assert sorted(jobs) == sorted(expected)
    for r in records:
        assert r["error"] is None, r
        assert r["wps"] > 0 and r["sentences_per_s"] > 0, r
        if r["part"] != "inference":  # fairseq's end-of-epoch average beside the later intervals'
            assert r["wps_run"] > 0, r
    table = (out / "table.md").read_text()
    for part in ("finetune", "inference", "pretrain"):
        assert f"## {part}" in table
    assert "words/s ours_k16/roberta" in table
    assert json.loads((out / "env.json").read_text())["device"] == "cpu"


def test_whole_model_report_and_tiny_defaults():
    records = [
        {"part": "finetune", "job": "sst2", "model": "ours_k128", "wps": 300.0, "sentences_per_s": 10.0},
        {"part": "finetune", "job": "sst2", "model": "roberta", "wps": 200.0, "sentences_per_s": 8.0},
        {"part": "pretrain", "job": "mlm", "model": "ours_k128", "wps": None, "error": "OOM", "log": "x.log"},
    ]
    table = whole_model.markdown_report(records)
    assert "| sst2 | 300 | 200 | 10.0 | 8.0 | 1.50x | 1.25x |" in table
    assert "| mlm | error |" in table and "- pretrain mlm ours_k128: OOM (x.log)" in table
    args = whole_model.parse_args(["--cpu", "--tiny", "--length", "32"])
    assert args.length == 32 and args.k == 16 and args.pretrain_lengths == [64, 128]  # given flags win


def _write_idx(path, count):
    """The header of a fairseq mmap index (MMapIndexedDataset.Index) of ``count`` examples."""
    import struct

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 4) + struct.pack("<Q", count))


def test_validate_subset_falls_back_to_train_when_valid_is_too_small(tmp_path):
    # the long set of the docs corpus: 28 valid windows, 1,380 train; 3 warm-up batches on CUDA
    _write_idx(tmp_path / "long" / "input0" / "valid.idx", 28)
    _write_idx(tmp_path / "long" / "input0" / "train.idx", 1380)
    _write_idx(tmp_path / "sst2" / "input0" / "valid.idx", 6735)
    _write_idx(tmp_path / "sst2" / "input0" / "train.idx", 60614)
    assert whole_model.num_examples(str(tmp_path / "long"), "valid") == 28
    assert whole_model.num_examples(str(tmp_path / "long"), "test") is None
    assert whole_model.validate_subset(str(tmp_path / "long"), 32, 3, 2) == "train"
    assert whole_model.validate_subset(str(tmp_path / "long"), 256, 3, 2) == "train"
    assert whole_model.validate_subset(str(tmp_path / "sst2"), 256, 3, 2) == "valid"
    # 200 timed batches: SST-2's valid split fills them at batch 32 (6,496 sentences), not at 256
    assert whole_model.validate_subset(str(tmp_path / "sst2"), 32, 3, 200) == "valid"
    assert whole_model.validate_subset(str(tmp_path / "sst2"), 256, 3, 200) == "train"
    assert whole_model.validate_subset(str(tmp_path / "missing"), 32, 3, 200) == "valid"


def test_pretrain_alone_prepares_no_classification_data(tmp_path):
    bin_dir = tmp_path / "data-bin"
    bin_dir.mkdir()
    args = whole_model.parse_args(["--cpu", "--tiny", "--parts", "pretrain", "--pretraining-data", str(bin_dir),
                                   "--work-dir", str(tmp_path / "work")])
    whole_model.prepare(args)  # no --sst2 needed, no SST-2 or long data-bin built
    assert args.sst2_data is None and args.long_data is None and not (tmp_path / "work").exists()


def test_finetune_starts_from_no_stale_checkpoint(tmp_path, monkeypatch):
    """A rerun in the same --work-dir: fairseq-train would resume checkpoint_last.pt (already at
    --max-update) instead of training."""
    sst2 = tmp_path / "sst2-bin"
    (sst2 / "label").mkdir(parents=True)
    (sst2 / "label" / "dict.txt").write_text("0 1\n1 1\n")
    args = whole_model.parse_args(["--cpu", "--tiny", "--models", "ours", "--sst2-data", str(sst2),
                                   "--pretraining-data", str(tmp_path), "--work-dir", str(tmp_path / "work")])
    stale = Path(whole_model.sst2_checkpoint(args, "ours"))
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    seen = []
    monkeypatch.setattr(whole_model, "train_job", lambda *a: seen.append((a[3], stale.exists())))
    whole_model.finetune(args, None)
    assert seen == [("sst2 n=64 b=8", False)]


def test_training_speed_is_the_mean_of_the_later_intervals():
    """Short-sentence fine-tuning moves by a third between fairseq's log intervals: the figure is the
    mean of the second half (the first hold start-up), with the spread and the last one beside it."""
    from examples.benchmarks.whole_model import interval_speeds

    inner = [{"wps": w, "bsz": "32", "ups": u} for w, u in
             (("100", "1"), ("900", "9"), ("1200", "12"), ("1000", "10"), ("800", "8"))]
    speeds = interval_speeds(inner)
    assert speeds["wps"] == 1000.0 and (speeds["wps_min"], speeds["wps_max"]) == (800.0, 1200.0)
    assert speeds["sentences_per_s"] == 320.0 and speeds["wps_last"] == 800.0 and speeds["intervals"] == 3
    assert interval_speeds([])["wps"] is None
    assert "wps_run" not in speeds  # no end-of-epoch line given
    assert interval_speeds(inner, [{"train_wps": "750.5"}])["wps_run"] == 750.5


@pytest.mark.slow
def test_profile_train_step_cpu_smoke(tmp_path):
    """Fairseq's Trainer on real batches, ours and RoBERTa: time per update, and the batches padded
    to a multiple of 8 tokens where asked."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "examples.benchmarks.profile_train_step", "--cpu", "--tiny",
           "--corpus", str(REPO / "examples" / "quickstart" / "data"),
           "--sst2", str(REPO / "examples" / "quickstart" / "classification"), "--jobs", "sst2",
           "--pad-multiples", "1", "8", "--warmup", "1", "--steps", "2", "--profile-steps", "1",
           "--work-dir", str(tmp_path / "work"), "--out-dir", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["model"], r["pad_multiple"]) for r in records] == [
        ("ours_k16", 1), ("roberta", 1), ("ours_k16", 8), ("roberta", 8)]
    for r in records:
        assert r["ms_per_update"] > 0 and r["words_per_s"] > 0, r
        assert (out / f"profile-sst2-{r['model']}-pad{r['pad_multiple']}.txt").read_text().strip()
    # the same batches (fairseq's seeded order), each padded up to a multiple of 8 tokens
    for plain, padded in zip(records[:2], records[2:]):
        assert plain["mean_length"] < padded["mean_length"] < plain["mean_length"] + 8
    assert not (tmp_path / "work" / "profile-checkpoints").exists()  # no crash: nothing saved

    # --live: batches taken from fairseq's iterator update by update, its workers at work; --sdpa: ours
    # once per choice of SDPA kernels
    live = subprocess.run(cmd[:cmd.index("--pad-multiples")] + ["--live", "--models", "ours", "--num-workers", "1",
                                                                 "--sdpa", "library", "cudnn-bucketed",
                                                                 "--out-dir", str(tmp_path / "live"),
                                                                 "--work-dir", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert live.returncode == 0, live.stdout[-3000:] + live.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "live" / "results.jsonl").read_text().splitlines()]
    assert [r["sdpa"] for r in records] == ["library", "cudnn-bucketed"]
    for r in records:
        assert r["batches"] == "live" and r["ms_per_update"] > 0
    assert (tmp_path / "live" / "profile-sst2-ours_k16-pad1-cudnn-bucketed.txt").is_file()


def test_batches_padded_to_a_multiple_keep_their_targets():
    import torch

    from examples.benchmarks.profile_train_step import padded_to_multiple

    tokens = torch.arange(26).view(2, 13) + 4
    for target, padded_target in ((torch.tensor([[1], [0]]), False), (tokens.clone(), True)):
        sample = padded_to_multiple({"net_input": {"src_tokens": tokens}, "target": target}, 8, pad=1)
        src = sample["net_input"]["src_tokens"]
        assert src.shape == (2, 16) and torch.equal(src[:, :13], tokens) and (src[:, 13:] == 1).all()
        # a masked-LM target (the input's shape) is padded with it; a class label is left alone
        assert sample["target"].shape == ((2, 16) if padded_target else (2, 1))
    assert padded_to_multiple({"net_input": {"src_tokens": tokens}}, 1, pad=1)["net_input"]["src_tokens"] is tokens
