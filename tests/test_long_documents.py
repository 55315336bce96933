"""Long-document classification data (windows of N tokens from labelled collections, full and
truncated data-bins) and the CPU smoke run of the long-context study (examples.studies.long_context)."""

import json
import lzma
import os
import sys

import pytest

from conftest import QUICKSTART_DATA, REPO, run
from examples.studies.long_context.long_documents import (OTHER, SAME, WORD_START, build_examples,
                                                          continuation_examples, cut_windows, encode_documents,
                                                          load_manifest, parse_collections, prefix_end,
                                                          prepare_long_document_data)
from examples.studies.long_context.steps import steady_wps
from examples.studies.long_context.summary import summary
from linformer_plugin.data.common import DataPrepError

STUDY = [sys.executable, "-m", "examples.studies.long_context.study"]  # run from the repository root

WINDOW, TRUNCATE, MIN = 128, 32, 64
CAP = 40  # windows per class and split: small evaluation sets keep the study's smoke run short


def _documents():
    text = open(os.path.join(QUICKSTART_DATA, "train.txt"), encoding="utf-8").read()
    return [d.strip("\n") for d in text.split("\n\n") if d.strip()]


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    """Two fake classes made of the shipped Python-docs documents, alternately; splits by document.
    The linux-like class ("b") is written xz-compressed, as docs-corpus ships."""
    work = tmp_path_factory.mktemp("collections")
    docs = _documents()
    ranges = {"train": docs[:30], "valid": docs[30:40], "test": docs[40:50]}
    specs = {}
    for split, split_docs in ranges.items():
        specs[split] = []
        for i, label in enumerate(("a", "b")):
            path = str(work / (f"{label}.{split}.txt" + (".xz" if label == "b" else "")))
            text = "\n\n".join(split_docs[i::2]) + "\n"
            with (lzma.open if label == "b" else open)(path, "wt", encoding="utf-8") as f:
                f.write(text)
            specs[split].append(f"{label}={path}")
    return specs


@pytest.fixture(scope="module")
def long_docs(collections, data_bin, tmp_path_factory):
    destdir = str(tmp_path_factory.mktemp("long") / "docs")
    messages = []
    manifest = prepare_long_document_data(
        destdir, collections, spm_model=os.path.join(data_bin, "sentencepiece.bpe.model"),
        dictionary=os.path.join(data_bin, "dict.txt"), window_tokens=WINDOW, truncate_tokens=TRUNCATE,
        min_tokens=MIN, seed=3, max_windows_per_class=CAP, log=messages.append, progress_min_bytes=0)
    return destdir, manifest, messages


def _tsv(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "sentence\tlabel"
    return [line.split("\t") for line in lines[1:]]


def test_windows_are_cut_at_word_starts():
    pieces = [WORD_START + "a", "b", "c", WORD_START + "d", WORD_START + "e", "f", "g", WORD_START + "h", "i"]
    spans = cut_windows(pieces, 4)
    assert spans == [(0, 4), (4, 7), (7, 9)]  # 8 would split "hi": the second window ends at 7
    assert all(pieces[start].startswith(WORD_START) for start, _ in spans)
    # a word longer than the window is split where it must be
    assert cut_windows([WORD_START + "a", "b", "c", "d", "e"], 2) == [(0, 2), (2, 4), (4, 5)]
    assert prefix_end(pieces, 5) == 4 and prefix_end(pieces, 20) == len(pieces)
    assert parse_collections(["py=a=b.txt", "c=d"], "train") == [("py", "a=b.txt"), ("c", "d")]


def test_long_document_data(long_docs, data_bin):
    destdir, manifest, messages = long_docs
    assert load_manifest(destdir)["variants"]["window"]["path"] == os.path.join(destdir, "bin", f"window-{WINDOW}")
    examples = manifest["examples"]
    for split in ("train", "valid", "test"):
        per_class = examples[split]["per_class"]
        assert set(per_class) == {"a", "b"} and per_class["a"] == per_class["b"] > 0, per_class  # balanced
        window_rows = _tsv(os.path.join(destdir, "tsv", f"window-{WINDOW}", f"{split}.tsv"))
        truncated_rows = _tsv(os.path.join(destdir, "tsv", f"truncated-{TRUNCATE}", f"{split}.tsv"))
        assert len(window_rows) == len(truncated_rows) == examples[split]["total"]
        for (text, label), (prefix, prefix_label) in zip(window_rows, truncated_rows):
            assert label == prefix_label and text.startswith(prefix) and len(prefix) < len(text)
        lengths = examples[split]["tokens"]
        assert MIN <= lengths["window"]["min_tokens"] and lengths["window"]["max_tokens"] <= WINDOW
        assert lengths["truncated"]["max_tokens"] <= TRUNCATE
    # short windows were dropped, and said so
    assert sum(c["dropped_short"] for s in manifest["collections"].values() for c in s.values()) > 0
    assert any("shorter ones dropped" in m for m in messages)

    # the binarized examples: <s> + pieces + </s> within the lengths, labels sorted
    from fairseq.data import Dictionary, data_utils

    for key, limit in (("window", WINDOW), ("truncated", TRUNCATE)):
        data = os.path.join(destdir, manifest["variants"][key]["data"])
        assert os.path.isfile(os.path.join(data, "sentencepiece.bpe.model"))
        dictionary = Dictionary.load(os.path.join(data, "input0", "dict.txt"))
        assert len(dictionary) == len(Dictionary.load(os.path.join(data_bin, "dict.txt")))
        for split in ("train", "valid", "test"):
            dataset = data_utils.load_indexed_dataset(os.path.join(data, "input0", split), dictionary)
            assert len(dataset) == examples[split]["total"]
            assert max(dataset.sizes) + 1 <= limit  # + <s>; the sizes include </s>
            if key == "window":
                assert min(dataset.sizes) + 1 >= MIN
        assert manifest["variants"][key]["class_labels"] == ["a", "b"]


def test_progress_lines_for_large_inputs(collections, data_bin, capsys):
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=os.path.join(data_bin, "sentencepiece.bpe.model"))
    path = collections["train"][1].split("=", 1)[1]
    documents = list(encode_documents(processor, path, "encoding b", progress_min_bytes=0))
    assert len(documents) == 15 and all(d[0].startswith(WORD_START) for d in documents)
    assert "encoding b: 100% (933 lines)" in capsys.readouterr().err
    list(encode_documents(processor, path, "encoding b", progress_min_bytes=1 << 30))
    assert capsys.readouterr().err == ""


def test_same_inputs_same_examples(collections, data_bin, long_docs):
    destdir, manifest, _ = long_docs
    options = dict(spm_model=os.path.join(data_bin, "sentencepiece.bpe.model"),
                   dictionary=os.path.join(data_bin, "dict.txt"), window_tokens=WINDOW, truncate_tokens=TRUNCATE,
                   min_tokens=MIN, log=None)
    capped, capped_rows = build_examples({"train": collections["train"]}, seed=3, max_windows_per_class=CAP,
                                         **options)
    assert capped["examples"]["train"] == manifest["examples"]["train"]
    tsv = _tsv(os.path.join(destdir, "tsv", f"window-{WINDOW}", "train.tsv"))
    assert capped_rows["window"]["train"] == [tuple(row) for row in tsv]
    # without a cap: the larger class sampled down to the smaller's count; the smaller one kept whole
    full, rows = build_examples({"train": collections["train"]}, seed=3, **options)
    stats = full["collections"]["train"]
    smaller = min(stats, key=lambda label: stats[label]["windows"])
    per_class = full["examples"]["train"]["per_class"]
    assert per_class["a"] == per_class["b"] == stats[smaller]["windows"] > CAP
    assert stats["a"]["windows"] != stats["b"]["windows"]  # so one class was sampled down
    assert {r for r in capped_rows["window"]["train"] if r[1] == smaller} <= set(rows["window"]["train"])
    other, other_rows = build_examples({"train": collections["train"]}, seed=4, max_windows_per_class=CAP, **options)
    assert other_rows["window"]["train"] != capped_rows["window"]["train"]  # the seed picks them


def _synthetic_windows(docs, windows_per_doc, length):
    """Windows whose pieces say where they come from: "▁c{collection}d{doc}w{window}p{piece}"; every
    third piece continues a word (no ▁), so cuts must look for word starts."""
    balanced = {}
    for c in ("a", "b"):
        balanced[c] = [{"label": c, "doc": d, "pieces": " ".join(
            ("" if p % 3 == 2 else WORD_START) + f"{c}d{d}w{w}p{p}" for p in range(length))}
            for d in range(docs) for w in range(windows_per_doc)]
    return balanced


def test_continuation_examples_join_halves_past_the_truncation():
    balanced = _synthetic_windows(docs=5, windows_per_doc=3, length=100)
    out = continuation_examples(balanced, "train", seed=1, min_split_pieces=30, max_pieces=110)
    assert len(out[SAME]) + len(out[OTHER]) == 30 and abs(len(out[SAME]) - len(out[OTHER])) <= 1
    originals = {w["pieces"] for windows in balanced.values() for w in windows}
    for example in out[SAME]:
        assert example["pieces"] in originals  # a whole window, as it was
    for example in out[OTHER]:
        pieces = example["pieces"].split(" ")
        sources = [p.lstrip(WORD_START).split("w")[0] for p in pieces]  # "a" + "d3"
        cut = next(i for i, s in enumerate(sources) if s != sources[0])
        assert set(sources[cut:]) == {sources[cut]} and sources[cut][0] == sources[0][0]  # same collection
        assert sources[cut] != sources[0]  # another document
        assert cut >= 30 and pieces[cut].startswith(WORD_START) and len(pieces) <= 110
        assert " ".join(pieces[:cut]) in {w[:len(" ".join(pieces[:cut]))] for w in originals}
    assert continuation_examples(balanced, "train", 1, 30, 110) == out  # seeded
    assert continuation_examples(balanced, "train", 2, 30, 110) != out
    with pytest.raises(DataPrepError, match="collection 'a': the continuation task needs windows of at least two "
                       "documents"):
        continuation_examples(_synthetic_windows(docs=1, windows_per_doc=4, length=100), "valid", 1, 30, 110)


def test_continuation_task_on_real_text(collections, data_bin):
    """Through build_examples: labels same/other, and the truncated variant holds exactly the prefixes
    the collection task's truncated variant holds: under either label, the first T tokens are the
    beginning of a real window, so they cannot tell the labels apart."""
    options = dict(spm_model=os.path.join(data_bin, "sentencepiece.bpe.model"),
                   dictionary=os.path.join(data_bin, "dict.txt"), window_tokens=WINDOW, truncate_tokens=TRUNCATE,
                   min_tokens=MIN, seed=3, max_windows_per_class=CAP, log=None)
    manifest, rows = build_examples({"train": collections["train"]}, task="continuation", **options)
    assert manifest["labels"] == [OTHER, SAME] and manifest["task"] == "continuation"
    per_class = manifest["examples"]["train"]["per_class"]
    assert abs(per_class[SAME] - per_class[OTHER]) <= 1 and sum(per_class.values()) == 2 * CAP
    _, by_collection = build_examples({"train": collections["train"]}, **options)
    assert sorted(t for t, _ in rows["truncated"]["train"]) == sorted(t for t, _ in by_collection["truncated"]["train"])
    same = {t for t, label in rows["window"]["train"] if label == SAME}
    assert same <= {t for t, _ in by_collection["window"]["train"]}  # whole windows
    assert not {t for t, label in rows["window"]["train"] if label == OTHER} & same
    with pytest.raises(DataPrepError, match=f"windows need at least {2 * 40} tokens: raise --min-tokens \\(now 64\\)"):
        build_examples({"train": collections["train"]}, task="continuation",
                       **{**options, "truncate_tokens": 40, "min_tokens": 64})
    with pytest.raises(DataPrepError, match="unknown task 'topic'"):
        build_examples({"train": collections["train"]}, task="topic", **options)


def _prepare(tmp_path, data_bin, collections, **kwargs):
    options = dict(spm_model=os.path.join(data_bin, "sentencepiece.bpe.model"),
                   dictionary=os.path.join(data_bin, "dict.txt"), window_tokens=WINDOW, truncate_tokens=TRUNCATE,
                   min_tokens=MIN, log=None)
    options.update(kwargs)
    return prepare_long_document_data(str(tmp_path / "out"), collections, **options)


@pytest.mark.parametrize("change, message", [
    (lambda c: {"train": c["train"] + ["a=" + c["valid"][0].split("=", 1)[1]]}, "given twice"),
    (lambda c: {"train": [c["train"][0], "b=/no/such/file.txt"]}, "not found"),
    (lambda c: {"train": [c["train"][0]]}, "needs two"),
    (lambda c: {"train": c["train"], "valid": [c["valid"][0]]}, "same classes"),
    (lambda c: {"train": c["train"], "valid": ["a=" + c["train"][0].split("=", 1)[1], c["valid"][1]]},
     "one class of one split"),
    (lambda c: {"train": [c["train"][0], "b"]}, "LABEL=PATH"),
    (lambda c: {"train": [c["train"][0], "two words=x"]}, "one word"),
])
def test_bad_collections(collections, data_bin, tmp_path, change, message):
    with pytest.raises(DataPrepError, match=message):
        _prepare(tmp_path, data_bin, change(collections))
    assert not (tmp_path / "out").exists()


def test_continuation_data_bins(collections, data_bin, tmp_path):
    manifest = _prepare(tmp_path, data_bin, {"train": collections["train"], "valid": collections["valid"]},
                        task="continuation", max_windows_per_class=8)
    for variant in manifest["variants"].values():
        assert variant["num_classes"] == 2 and sorted(variant["class_labels"]) == [OTHER, SAME]
    assert load_manifest(str(tmp_path / "out"))["task"] == "continuation"


def test_bad_lengths_and_empty_collections(collections, data_bin, tmp_path):
    for kwargs, message in ((dict(window_tokens=48, truncate_tokens=48), "longer than --truncate-tokens"),
                            (dict(min_tokens=WINDOW + 1), "--min-tokens"),
                            (dict(truncate_tokens=2), "no room"),
                            (dict(max_windows_per_class=0), "positive")):
        with pytest.raises(DataPrepError, match=message):
            _prepare(tmp_path, data_bin, collections, **kwargs)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n\n")
    with pytest.raises(DataPrepError, match="only blank lines"):
        _prepare(tmp_path, data_bin, {"train": [collections["train"][0], f"b={empty}"]})
    short = tmp_path / "short.txt"
    short.write_text("A short document.\n\nAnother one.\n")
    with pytest.raises(DataPrepError, match="no window of at least"):
        _prepare(tmp_path, data_bin, {"train": [collections["train"][0], f"b={short}"]})
    assert not (tmp_path / "out").exists()


def test_cli_errors_without_traceback(collections, data_bin, tmp_path):
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "examples.studies.long_context.prepare_data",
                           "--train", collections["train"][0], collections["train"][0],
                           "--pretraining-data", data_bin, "--destdir", str(tmp_path / "x")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1 and "given twice" in proc.stderr and "Traceback" not in proc.stderr


def test_existing_destdir_needs_force(collections, data_bin, long_docs):
    destdir, _, _ = long_docs
    with pytest.raises(FileExistsError, match="--force"):
        prepare_long_document_data(destdir, collections, spm_model=os.path.join(data_bin, "sentencepiece.bpe.model"),
                                   dictionary=os.path.join(data_bin, "dict.txt"), window_tokens=WINDOW,
                                   truncate_tokens=TRUNCATE, min_tokens=MIN, log=None)


@pytest.mark.slow
def test_long_context_study_cpu_smoke(long_docs, data_bin, tmp_path):
    destdir, manifest, _ = long_docs
    out = tmp_path / "study"
    log = run(STUDY + ["--tiny", "--cpu", "--data-bin", data_bin, "--long-docs", destdir, "--out-dir", str(out)],
              cwd=REPO)
    records = [json.loads(line) for line in open(out / "results.jsonl")]
    steps = {}
    for r in records:
        steps.setdefault(r["step"], []).append(r)
    assert {r["model"] for r in steps["benchmark"]} == {"linformer", "roberta"}, log[-3000:]
    for r in steps["benchmark"]:
        assert r["n"] == WINDOW and r["wps"] > 0 and not r.get("error"), r
    assert steps["pretrain_roberta"][0]["n"] == TRUNCATE
    assert steps["convert"][0]["max_positions"] == WINDOW
    assert steps["mlm"][0]["num_updates"] > 0 and steps["mlm"][0]["valid_loss"] > 0
    assert steps["validate_converted"][0]["valid_loss"] > 0
    assert {r["variant"] for r in steps["naive_bayes"]} == {f"window-{WINDOW}", f"truncated-{TRUNCATE}"}
    finetunes = {(r["model"], r["variant"]) for r in steps["finetune"]}
    assert ("linformer", f"window-{WINDOW}") in finetunes and ("linformer", f"truncated-{TRUNCATE}") in finetunes
    for r in steps["finetune"] + steps["naive_bayes"]:
        assert not r.get("error"), r
        assert 0 <= r["valid_accuracy"] <= 100 and 0 <= r["test_accuracy"] <= 100, r
        assert r["valid_examples"] == manifest["examples"]["valid"]["total"]
    assert "| window-" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_long_context_study_benchmark_only(long_docs, data_bin, tmp_path):
    """--benchmark-only measures the two models and nothing else; --memory-profile adds a traced run
    of each (on a CPU there is no allocator trace, and the record says so)."""
    destdir, _, _ = long_docs
    out = tmp_path / "bench"
    log = run(STUDY + ["--tiny", "--cpu", "--benchmark-only", "--memory-profile", "1", "--data-bin", data_bin,
                       "--long-docs", destdir, "--out-dir", str(out)], cwd=REPO)
    records = [json.loads(line) for line in open(out / "results.jsonl")]
    assert [(r["step"], r["model"]) for r in records] == [
        ("benchmark", "linformer"), ("benchmark", "roberta"),
        ("memory_profile", "linformer"), ("memory_profile", "roberta")], log[-3000:]
    assert all(r["wps"] > 0 and not r["error"] for r in records[:2]), records
    assert all(r["num_updates"] == 1 and "no CUDA" in r["error"] for r in records[2:]), records
    assert "Masked-LM training at n" in (out / "summary.md").read_text()


def test_study_summary_lists_what_is_live_at_the_peak():
    sites = [{"mib": 2048.4, "blocks": 16, "site": "linformer_plugin/modules/x.py:10 forward"},
             {"mib": 512.0, "blocks": 8, "site": "fairseq/modules/y.py:20 forward"}]
    record = {"step": "memory_profile", "model": "linformer", "k": 256, "n": 4096, "sample_break_mode": "complete_doc",
              "num_updates": 3, "peak_gpu_mem_mib": 15529.0, "trace_events": 40000, "whole_run": True,
              "trace_peak_mib": 15500.2, "sites": sites, "error": None}
    text = summary([record], {"examples": {}})
    assert "What is live at the peak: linformer k=256, n = 4096 (complete_doc, 3 updates)" in text
    assert "the whole run" in text and "| 2048 | 16 | `linformer_plugin/modules/x.py:10 forward` |" in text
    partial = summary([dict(record, whole_run=False)], {"examples": {}})
    assert "its last 40000 allocator events" in partial


def test_benchmark_words_per_second_over_the_second_half():
    """The study's words/s: words over seconds of the intervals that start in the second half of
    the updates (the first ones run slower while variable shapes settle)."""
    inner = [{"num_updates": "20", "ups": "1", "wpb": "100"},  # settling: left out
             {"num_updates": "40", "ups": "2", "wpb": "100"},  # starts at 20 < 30: left out
             {"num_updates": "60", "ups": "4", "wpb": "100"},  # 2,000 words in 5 s
             {"num_updates": "80", "ups": "5", "wpb": "200"}]  # 4,000 words in 4 s
    assert steady_wps(inner, settle=0.375) == round(6000 / 9)
    assert steady_wps([]) is None
