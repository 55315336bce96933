"""The same-document task (examples.studies.long_context.same_document): how its examples are built,
and the CPU smoke run of its study (fine-tuning three pretrained models, predictions, the table)."""

import collections
import json
import lzma
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import QUICKSTART_DATA, REPO, run
from examples.common.fairseq_commands import FAIRSEQ_TRAIN, PLUGIN_DIR, size_flags, tiny_size
from examples.studies.long_context.long_documents import encode_documents, load_manifest
from examples.studies.long_context.same_document import (FIRST, LABELS, SECOND, corpus_collections, other_partners,
                                                         pair_spans, prepare_same_document, read_pairs)
from examples.studies.long_context.same_document_report import bootstrap_interval, cluster_draws, summarize
from examples.studies.long_context.same_document_study import check_resumable, run_record
from linformer_plugin.data.common import DataPrepError

WINDOW, TRUNCATE, GAP, STRIDE, PER_DOCUMENT = 128, 32, 16, 32, 6
OPTIONS = dict(window_tokens=WINDOW, truncate_tokens=TRUNCATE, gap_tokens=GAP, stride=STRIDE,
               max_pairs_per_document=PER_DOCUMENT, seed=3)
STUDY = [sys.executable, "-m", "examples.studies.long_context.same_document_study"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two collections of the shipped Python-docs documents, alternately, split by document; the
    second collection xz-compressed, as docs-corpus ships."""
    root = tmp_path_factory.mktemp("corpus")
    text = open(os.path.join(QUICKSTART_DATA, "train.txt"), encoding="utf-8").read()
    docs = [d.strip("\n") for d in text.split("\n\n") if d.strip()]
    ranges = {"train": docs[:40], "valid": docs[40:56], "test": docs[56:]}
    for split, split_docs in ranges.items():
        for i, name in enumerate(("a", "b")):
            os.makedirs(root / name, exist_ok=True)
            body = "\n\n".join(split_docs[i::2]) + "\n"
            if name == "b":
                with lzma.open(root / name / f"{split}.txt.xz", "wt", encoding="utf-8") as f:
                    f.write(body)
            else:
                (root / name / f"{split}.txt").write_text(body, encoding="utf-8")
    return str(root)


def _vocab(data_bin):
    return dict(spm_model=os.path.join(data_bin, "sentencepiece.bpe.model"),
                dictionary=os.path.join(data_bin, "dict.txt"))


@pytest.fixture(scope="module")
def task(corpus, data_bin, tmp_path_factory):
    destdir = str(tmp_path_factory.mktemp("task") / "same")
    manifest = prepare_same_document(destdir, corpus_collections(corpus), log=None, **_vocab(data_bin), **OPTIONS)
    return destdir, manifest


def test_pairs_are_cut_at_word_starts_with_the_gap_between():
    starts = np.array([i % 3 != 2 for i in range(100)])  # every third piece continues a word
    spans = pair_spans(starts, part=10, gap=5, stride=7)
    assert [s[0] for s in spans] == [0, 7, 15, 21, 28, 36, 42, 49, 57, 63, 70]  # first word start from each stride
    for a0, a1, b0, b1 in spans:
        assert all(starts[i] for i in (a0, a1, b0)) and (b1 == 100 or starts[b1])
        assert 9 <= a1 - a0 <= 10 and 9 <= b1 - b0 <= 10 and 5 <= b0 - a1 <= 6 and b1 <= 100
    # a word longer than a part is cut where it must be
    one_long_word = np.array([True] + [False] * 14 + [True] + [False] * 34)
    assert pair_spans(one_long_word, part=10, gap=5, stride=100) == [(0, 10, 15, 25)]
    assert pair_spans(np.array([True] + [False] * 49), part=10, gap=5, stride=100) == []  # B must start a word
    assert pair_spans(starts[:24], part=10, gap=5, stride=7) == []  # A, gap and B do not fit
    assert pair_spans(one_long_word, part=10, gap=5, stride=100, min_part=8) == [(0, 10, 15, 25)]
    url_at_the_end = np.array([True, True, True] + [False] * 12 + [True] * 35)  # a word of 13 pieces from 2
    assert pair_spans(url_at_the_end, part=10, gap=5, stride=100) == [(0, 2, 15, 25)]  # A: 2 pieces
    assert pair_spans(url_at_the_end, part=10, gap=5, stride=100, min_part=8) == []


def test_other_partners_never_pair_a_document_with_itself():
    docs = [0] * 6 + [1] * 3 + [2] * 2  # document 0 holds more than half
    kept, partner = other_partners(docs, __import__("random").Random(1))
    assert len(kept) == 10 and sum(docs[i] == 0 for i in kept) == 5  # one of document 0 dropped
    assert sorted(partner) == sorted(kept)  # a permutation: every B used once as "other"
    assert all(docs[i] != docs[j] for i, j in zip(kept, partner))
    assert other_partners([4, 4, 4], __import__("random").Random(1)) == ([], [])


def test_rows_come_in_pairs_that_differ_only_in_order(task):
    destdir, manifest = task
    assert manifest["task"] == "same-document" and manifest["labels"] == LABELS == [FIRST, SECOND]
    for split in ("train", "valid", "test"):
        rows = read_pairs(destdir, split)
        per_class = manifest["examples"][split]["per_class"]
        assert per_class[FIRST] == per_class[SECOND] > 0 and len(rows) == 2 * per_class[FIRST]
        for first, second in zip(rows[::2], rows[1::2]):  # A, own, other / A, other, own
            assert (first["label"], second["label"]) == (FIRST, SECOND)
            assert first["a"] == second["a"] and first["doc"] == second["doc"]
            own, other = first[FIRST], first[SECOND]
            assert (second[FIRST], second[SECOND]) == (other, own)
            assert own[0] == first["doc"] and own[1] - first["a"][1] >= GAP  # the gap between A and its own B
            assert other[0] != first["doc"]  # another document of the collection
        docs = {(r["collection"], d) for r in rows for d in (r["doc"], r[FIRST][0], r[SECOND][0])}
        assert manifest["documents"][split]["documents"] == len(docs)
    # by construction a bag-of-pieces naive Bayes answers both rows of a pair alike
    for name in ("naive_bayes", "naive_bayes_truncated"):
        assert manifest["baselines"][name]["valid"] == manifest["baselines"][name]["test"] == 50.0
    assert 0 <= manifest["baselines"]["overlap"]["valid"] <= 100


def _rows(destdir, variant, split):
    from fairseq.data import Dictionary, data_utils

    path = os.path.join(destdir, "bin", variant)
    words = Dictionary.load(os.path.join(path, "input0", "dict.txt"))
    labels = Dictionary.load(os.path.join(path, "label", "dict.txt"))
    x = data_utils.load_indexed_dataset(os.path.join(path, "input0", split), words)
    y = data_utils.load_indexed_dataset(os.path.join(path, "label", split), labels)
    return ([[words[i] for i in x[k].tolist()] for k in range(len(x))],
            [labels[int(y[k][0])] for k in range(len(y))], words)


def _clean(text):
    return " ".join(text.split())


def _tsv_texts(destdir, variant, split):
    with open(os.path.join(destdir, "tsv", variant, f"{split}.tsv"), encoding="utf-8") as f:
        return [line.split("\t")[0] for line in f.read().splitlines()[1:]]


def test_rows_are_their_split_documents_text(task, corpus, data_bin):
    """Each row's text is exactly A, B1 and B2 of the split's own documents (so valid and test hold
    only held-out text) and its tokens are that text's pieces; the truncated variant is the row cut
    to its first T tokens, within A."""
    import sentencepiece as spm

    destdir, manifest = task
    processor = spm.SentencePieceProcessor(model_file=os.path.join(data_bin, "sentencepiece.bpe.model"))
    sources = corpus_collections(corpus)
    train_text = [_clean(processor.decode(p)) for _, path in sources["train"]
                  for p in encode_documents(processor, path, "", None, out_type=int)]
    same_pieces = rows_seen = 0
    for split in ("train", "valid", "test"):
        # ids, as the task reads them: a character the model does not know is <unk> (decoded " ⁇ ")
        documents = {name: list(encode_documents(processor, path, "", None, out_type=int))
                     for name, path in sources[split]}
        long_rows, long_labels, words = _rows(destdir, f"window-{WINDOW}", split)
        short_rows, short_labels, _ = _rows(destdir, f"truncated-{TRUNCATE}", split)
        assert long_labels == short_labels == [r["label"] for r in read_pairs(destdir, split)]
        texts = zip(_tsv_texts(destdir, f"window-{WINDOW}", split), _tsv_texts(destdir, f"truncated-{TRUNCATE}", split))
        for tokens, short, (text, short_text), r in zip(long_rows, short_rows, texts, read_pairs(destdir, split)):
            doc = documents[r["collection"]]
            a = doc[r["doc"]][r["a"][0]:r["a"][1]]
            b = doc[r[FIRST][0]][r[FIRST][1]:r[FIRST][2]] + doc[r[SECOND][0]][r[SECOND][1]:r[SECOND][2]]
            source_a = _clean(processor.decode(a))
            assert text == _clean(processor.decode(a + b))  # (the tsv's text has single spaces)

            def binarized(t):  # (pieces the tiny test dictionary lacks are <unk> in both)
                return [words[words.index(p)] for p in processor.encode(t, out_type=str)] + ["</s>"]

            assert tokens == binarized(text) and len(tokens) + 1 <= WINDOW  # + <s>
            # the pieces are the source's, but for the rare tie of two segmentations of a long word
            same_pieces += tokens[:-1] == [words[words.index(p)] for p in processor.id_to_piece(a + b)]
            rows_seen += 1
            assert short == binarized(short_text) and len(short) + 1 <= TRUNCATE
            assert text.startswith(short_text) and source_a.startswith(short_text)
            if split != "train":
                assert not any(source_a in doc for doc in train_text)
        # the two rows of a pair: the same pieces, the same first T tokens: no bag-of-pieces or
        # truncated classifier can tell their labels apart (pairs whose text encodes otherwise are dropped)
        for i in range(0, len(long_rows), 2):
            assert collections.Counter(long_rows[i]) == collections.Counter(long_rows[i + 1])
            assert short_rows[i] == short_rows[i + 1] and long_rows[i] != long_rows[i + 1]
    assert same_pieces >= 0.9 * rows_seen
    assert load_manifest(destdir)["variants"]["window"]["class_labels"] == LABELS


def test_bad_corpus_and_lengths(corpus, data_bin, tmp_path):
    with pytest.raises(DataPrepError, match="has no valid.txt"):
        os.makedirs(tmp_path / "c" / "x")
        (tmp_path / "c" / "x" / "train.txt").write_text("text\n")
        corpus_collections(str(tmp_path / "c"), ["x"])
    with pytest.raises(DataPrepError, match="needs at least two"):
        corpus_collections(str(tmp_path / "c"))
    for options, message in ((dict(window_tokens=40, truncate_tokens=32), "fewer than --truncate-tokens"),
                             (dict(stride=0), "--stride must be positive"),
                             (dict(gap_tokens=-1), "--gap-tokens must be >= 0")):
        with pytest.raises(DataPrepError, match=message):
            prepare_same_document(str(tmp_path / "out"), corpus_collections(corpus), log=None, **_vocab(data_bin),
                                  **{**OPTIONS, **options})
    assert not (tmp_path / "out").exists()
    proc = subprocess.run([sys.executable, "-m", "examples.studies.long_context.prepare_same_document",
                           "--corpus", str(tmp_path / "nothing"), "--pretraining-data", data_bin,
                           "--destdir", str(tmp_path / "x")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1 and "is not a directory" in proc.stderr and "Traceback" not in proc.stderr


def test_run_record_takes_the_last_best_valid_validation():
    def line(tag, **stats):
        return f"2026-12-01 | INFO | {tag} | " + json.dumps({k: str(v) for k, v in stats.items()})
    text = "\n".join([
        line("train_inner", num_updates=10, wps=100, ups=1.0, wpb=100, bsz=4),
        line("valid", valid_accuracy=60, valid_num_updates=10), line("test", test_accuracy=55),
        line("train_inner", num_updates=20, wps=300, ups=2.0, wpb=150, bsz=4),
        line("valid", valid_accuracy=70, valid_num_updates=20), line("test", test_accuracy=61),
        line("valid", valid_accuracy=70, valid_num_updates=30), line("test", test_accuracy=66),
        line("valid", valid_accuracy=65, valid_num_updates=40), line("test", test_accuracy=90),
        "PEAK_GPU_MEMORY_MIB=1234.5"])
    from examples.common.fairseq_logs import json_records

    r = run_record(text, json_records(text))
    assert (r["best_update"], r["valid_accuracy"], r["test_accuracy"]) == (30, 70, 66)  # never test's 90
    assert r["wps"] == 300 and r["sentences_per_s"] == 8.0 and r["peak_gpu_mem_mib"] == 1234.5
    assert len(r["curve"]) == 4


def test_a_resumed_study_must_keep_its_fine_tuning_setup(tmp_path):
    import argparse

    args = argparse.Namespace(updates=495, batch_size=16, lr=1e-4, out_dir=str(tmp_path))
    record = {"model": "roberta-4096", "seed": 1, "max_update": 495, "batch_size": 16, "lr": 1e-4}
    check_resumable([record], args)  # the same setup: resumes
    args.updates = 1485
    with pytest.raises(SystemExit, match=r"roberta-4096 seed 1 fine-tuned with --updates 495 \(now 1485\): "
                                         "give another --out-dir"):
        check_resumable([record], args)


def test_bootstrap_resamples_documents():
    clusters = ["d0"] * 10 + ["d1"] * 10
    weights = cluster_draws(clusters, replicates=500, seed=1)
    assert weights.shape == (500, 20) and set(weights[:, 0]) <= {0.0, 1.0, 2.0}
    assert (weights[:, :10] == weights[:, :1]).all()  # a document's rows are drawn together
    right_on_d0 = np.array([[1.0] * 10 + [0.0] * 10])
    assert bootstrap_interval(right_on_d0, weights) == (0.0, 100.0)  # two documents: anything goes
    assert bootstrap_interval(np.ones((2, 20)), weights) == (100.0, 100.0)


def test_summary_reads_predictions_and_pairs_models(tmp_path):
    os.makedirs(tmp_path / "predictions")
    clusters = {"valid": [f"d{i // 2}" for i in range(8)], "test": [f"d{i // 2}" for i in range(8)]}
    records = []
    for model, right in (("linformer-4096", 6), ("roberta-512", 4)):
        for seed in (1, 2):
            preds = {s: {"predicted": [1] * right + [0] * (8 - right), "target": [1] * 8} for s in ("valid", "test")}
            path = f"predictions/{model}-{seed}.json"
            (tmp_path / path).write_text(json.dumps({"subsets": preds}))
            records.append({"step": "finetune", "model": model, "seed": seed, "variant": "v", "n": 1,
                            "valid_accuracy": 100 * right / 8, "test_accuracy": 100 * right / 8,
                            "predictions": path, "alone": seed == 1, "wps": 10.0 * right})
    s = summarize(str(tmp_path), records, clusters, ["linformer-4096", "roberta-512", "roberta-4096"])
    assert s["models"]["linformer-4096"]["valid"]["mean"] == 75.0 and s["models"]["linformer-4096"]["cost"]["wps"] == 60
    assert s["models"]["roberta-512"]["test"]["std"] == 0.0 and "roberta-4096" not in s["models"]
    assert s["differences"]["linformer-4096 - roberta-512 (test)"]["mean"] == 25.0


def _pretrain_tiny(data_bin, work):
    """Three tiny 'pretrained' checkpoints, as the study's inputs: linformer and roberta at the
    window's length, roberta at the truncated length (2 masked-LM updates each, one process)."""
    runs, paths = [], {}
    for name, arch, n, extra in (("linformer-4096", "linformer_roberta", WINDOW, ["--compressed-dim", "16"]),
                                 ("roberta-512", "roberta", TRUNCATE, []), ("roberta-4096", "roberta", WINDOW, [])):
        save = os.path.join(work, name)
        runs += [data_bin, "--user-dir", PLUGIN_DIR, "--task", "masked_lm", "--criterion", "masked_lm", "--arch", arch,
                 "--tokens-per-sample", str(n), "--max-positions", str(n), "--sample-break-mode", "none",
                 "--batch-size", "4", "--optimizer", "adam", "--lr", "1e-3", "--max-update", "2", "--save-dir", save,
                 "--no-epoch-checkpoints", "--disable-validation", "--num-workers", "0", "--cpu", "--seed", "1",
                 ] + size_flags(tiny_size()) + extra + [":::"]
        paths[name] = os.path.join(save, "checkpoint_last.pt")
    run([sys.executable, "-m", FAIRSEQ_TRAIN] + runs[:-1], cwd=REPO)
    return paths


@pytest.mark.slow
def test_same_document_study_cpu_smoke(task, corpus, data_bin, tmp_path):
    """The driver end to end on CPU: it builds the task data from the corpus (the same rows as
    prepare_same_document with the same options), fine-tunes the three models for 2 seeds, predicts
    every valid and test row, and writes results.jsonl and table.md; a second call resumes (nothing
    left to run)."""
    checkpoints = _pretrain_tiny(data_bin, str(tmp_path / "pretrained"))
    out, task_dir = tmp_path / "out", tmp_path / "task"
    cmd = STUDY + ["--tiny", "--cpu", "--task-data", str(task_dir), "--corpus", corpus, "--pretraining-data", data_bin,
                   "--window-tokens", str(WINDOW), "--truncate-tokens", str(TRUNCATE), "--gap-tokens", str(GAP),
                   "--stride", str(STRIDE), "--max-pairs-per-document", str(PER_DOCUMENT), "--seed", "3",
                   "--out-dir", str(out), "--seeds", "1", "2"]
    cmd += [a for name, path in checkpoints.items() for a in (f"--{name}", path)]
    log = run(cmd, cwd=REPO)
    assert read_pairs(str(task_dir), "test") == read_pairs(task[0], "test")
    records = [json.loads(line) for line in open(out / "results.jsonl")]
    assert sorted((r["model"], r["seed"]) for r in records) == sorted(
        (m, s) for m in checkpoints for s in (1, 2)), log[-3000:]
    manifest = task[1]
    for r in records:
        assert not r.get("error") and r["alone"] == (r["seed"] == 1), r
        assert r["n"] == (TRUNCATE if r["model"] == "roberta-512" else WINDOW)
        assert 0 <= r["valid_accuracy"] <= 100 and r["best_update"] in {c["num_updates"] for c in r["curve"]}
        predictions = json.load(open(out / r["predictions"]))["subsets"]
        for split in ("valid", "test"):
            assert len(predictions[split]["predicted"]) == manifest["examples"][split]["total"]
    table = (out / "table.md").read_text()
    assert "| linformer-4096 | window-128 | 1, 2 |" in table and "| roberta-512 | truncated-32 |" in table
    assert "linformer-4096 - roberta-512 (test)" in table and "naive_bayes" in table
    try:
        import matplotlib  # noqa: F401  (the plot's only need)
        assert (out / "accuracy_by_update.png").stat().st_size > 0
    except ImportError:
        assert not (out / "accuracy_by_update.png").exists()
    again = run(cmd, cwd=REPO)
    assert "0 runs" in again and [json.loads(line) for line in open(out / "results.jsonl")] == records
    # a checkpoint given for the wrong model is refused before anything runs, naming the problem
    base = STUDY + ["--tiny", "--cpu", "--task-data", str(task_dir), "--out-dir", str(tmp_path / "bad")]
    for flag, path, message in (("--linformer-4096", checkpoints["roberta-4096"], "is a full-attention checkpoint"),
                                ("--roberta-4096", checkpoints["roberta-512"], f"has {TRUNCATE} positions but its "
                                 f"input, bin/window-{WINDOW}, needs {WINDOW}")):
        proc = subprocess.run(base + [flag, path], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("flags, message", [
    (["--models", "roberta-1024"], "--models takes linformer-4096, roberta-512 and roberta-4096, not 'roberta-1024'"),
    (["--models", "--updates", "9"], "--models needs at least one of"),
    (["--linformer-k", "512"], "--linformer-k takes 128 or 256"),
])
def test_run_same_document_refuses_unknown_models_and_k_before_any_work(tmp_path, flags, message):
    out = subprocess.run(["bash", os.path.join(REPO, "examples", "studies", "long_context", "run_same_document.sh"),
                          str(tmp_path), str(tmp_path), str(tmp_path / "out"), *flags],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert os.listdir(tmp_path / "out") == []  # nothing pretrained, nothing written
