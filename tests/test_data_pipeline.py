"""scripts/prepare_{pretraining,classification}_data.py: raw text / GLUE tsv -> data-bins fairseq reads.

fairseq-preprocess costs ~8 s of imports per run here, so the data-bins are built once per module
and the error cases are ones caught before it runs. The pretraining data-bin is written without it;
test_binarized_bytes_match_fairseq_preprocess is the reference computation that keeps it honest.
"""

import filecmp
import hashlib
import json
import os
import shutil
import sys

import pytest
import sentencepiece as spm
from conftest import REPO
from fairseq.data import Dictionary, data_utils

from linformer_plugin.cli import main_prepare_classification_data, main_prepare_pretraining_data
from linformer_plugin.data import binarize, common, pretraining
from linformer_plugin.data.classification import prepare_classification_data
from linformer_plugin.data.common import DataPrepError, PreprocessError
from linformer_plugin.data.pretraining import prepare_pretraining_data
from linformer_plugin.data.sentencepiece_text import encode_file

SST2 = os.path.join(REPO, "tests", "data", "sst2_tiny")


def leftovers(directory):
    """Temporary build / old directories that a finished or failed run should not leave."""
    return [name for name in os.listdir(directory) if name.startswith(".")]


def write_tsv(path, header, rows):
    path.write_text("".join("\t".join(map(str, fields)) + "\n" for fields in [header, *rows]), encoding="utf-8")
    return str(path)


def read_rows(path):
    lines = open(path, encoding="utf-8").read().splitlines()
    return [line.split("\t") for line in lines[1:]]


@pytest.fixture(scope="module")
def pretrain_bin(raw_text, tmp_path_factory):
    dest = tmp_path_factory.mktemp("pretrain") / "data-bin"
    main_prepare_pretraining_data([
        "--train", raw_text["train"], "--valid", raw_text["valid"], "--destdir", str(dest),
        "--vocab-size", "1000", "--workers", "1"])
    return str(dest)


@pytest.fixture(scope="module")
def sst2_bin(pretrain_bin, tmp_path_factory):
    dest = tmp_path_factory.mktemp("sst2") / "SST-2-bin"
    main_prepare_classification_data([
        "--train", f"{SST2}/train.tsv", "--dev", f"{SST2}/dev.tsv", "--test", f"{SST2}/test.tsv",
        "--pretraining-data", pretrain_bin, "--destdir", str(dest), "--workers", "1"])
    return str(dest)


def sentence_prediction_task(data, num_classes):
    from omegaconf import OmegaConf
    from fairseq.tasks.sentence_prediction import SentencePredictionConfig, SentencePredictionTask

    cfg = SentencePredictionConfig(data=data, num_classes=num_classes, regression_target=False, init_token=0,
                                   separator_token=2, max_positions=512, no_shuffle=True, seed=1)
    return SentencePredictionTask.setup_task(OmegaConf.structured(cfg))


# ---------------------------------------------------------------------------------------- pretraining


def test_pretraining_data_bin(pretrain_bin, raw_text):
    names = set(os.listdir(pretrain_bin))
    assert {"dict.txt", "train.bin", "train.idx", "valid.bin", "valid.idx", "sentencepiece.bpe.model"} <= names
    assert not any(name.startswith("test.") or name.startswith("_") for name in names)
    assert leftovers(os.path.dirname(pretrain_bin)) == []
    # the first training line, binarized, is the sentencepiece encoding of the raw line
    dictionary = Dictionary.load(os.path.join(pretrain_bin, "dict.txt"))
    train = data_utils.load_indexed_dataset(os.path.join(pretrain_bin, "train"), dictionary)
    first = open(raw_text["train"], encoding="utf-8").readline().strip()
    processor = spm.SentencePieceProcessor(model_file=os.path.join(pretrain_bin, "sentencepiece.bpe.model"))
    assert dictionary.string(train[0]) == " ".join(processor.encode(first, out_type=str))


def test_existing_destdir_is_refused_without_force(pretrain_bin, raw_text, capsys):
    before = os.stat(os.path.join(pretrain_bin, "dict.txt")).st_mtime_ns
    with pytest.raises(SystemExit) as exit_info:
        main_prepare_pretraining_data(["--train", raw_text["train"], "--destdir", pretrain_bin])
    assert exit_info.value.code == 1
    assert "already exists and is not empty; pass --force" in capsys.readouterr().err
    assert os.stat(os.path.join(pretrain_bin, "dict.txt")).st_mtime_ns == before


def test_force_replaces_destdir(pretrain_bin, raw_text, tmp_path):
    """Reusing the model and dictionary rebuilds the same data; the stale directory is gone whole."""
    model, vocab = shutil.copy(f"{pretrain_bin}/sentencepiece.bpe.model", tmp_path), shutil.copy(
        f"{pretrain_bin}/dict.txt", tmp_path)
    dest = tmp_path / "data-bin"
    dest.mkdir()
    (dest / "stale.txt").write_text("from an earlier run")
    prepare_pretraining_data(str(dest), raw_text["train"], raw_text["valid"], spm_model=model, srcdict=vocab,
                             force=True, log=None)
    assert not (dest / "stale.txt").exists()
    for name in ("dict.txt", "train.bin", "train.idx", "valid.bin", "sentencepiece.bpe.model"):
        assert filecmp.cmp(dest / name, os.path.join(pretrain_bin, name), shallow=False), name
    assert leftovers(tmp_path) == []


def test_force_refuses_inputs_inside_destdir(pretrain_bin, raw_text):
    with pytest.raises(DataPrepError, match="lies inside .* which --force would delete"):
        prepare_pretraining_data(pretrain_bin, raw_text["train"], srcdict=f"{pretrain_bin}/dict.txt",
                                 spm_model=f"{pretrain_bin}/sentencepiece.bpe.model", force=True, log=None)
    assert os.path.exists(f"{pretrain_bin}/dict.txt")


@pytest.mark.parametrize("case", ["missing", "empty", "vocab-too-large", "vocab-too-small", "wrong-dict"])
def test_pretraining_input_errors(case, raw_text, pretrain_bin, tmp_path):
    train, valid, options = raw_text["train"], raw_text["valid"], {"vocab_size": 1000}
    if case == "missing":
        train, expected = str(tmp_path / "nope.txt"), "train file not found: .*nope.txt"
    elif case == "empty":
        (tmp_path / "valid.txt").write_text("")
        valid, expected = str(tmp_path / "valid.txt"), "valid file is empty: .*valid.txt"
    elif case == "vocab-too-large":
        options, expected = {"vocab_size": 50_000}, "--vocab-size 50000 is too large .* lower --vocab-size"
    elif case == "vocab-too-small":
        options, expected = {"vocab_size": 20}, "--vocab-size 20 is too small .* raise --vocab-size to at least"
    else:  # a dictionary from another tokenizer: GPT-2 BPE ids, as in fairseq's RoBERTa dict.txt
        (tmp_path / "dict.txt").write_text("".join(f"{i} {1000 - i}\n" for i in range(13, 900)))
        options = {"spm_model": f"{pretrain_bin}/sentencepiece.bpe.model", "srcdict": str(tmp_path / "dict.txt")}
        expected = "the sentencepiece model does not match the dictionary"
    dest = tmp_path / "data-bin"
    with pytest.raises(DataPrepError, match=expected):
        prepare_pretraining_data(str(dest), train, valid, log=None, **options)
    assert not dest.exists() and leftovers(tmp_path) == []


def test_cli_rejects_training_options_with_spm_model(raw_text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main_prepare_pretraining_data([
            "--train", raw_text["train"], "--destdir", "unused", "--spm-model", "m.model", "--vocab-size", "10"])
    assert exit_info.value.code == 2 and "don't apply with --spm-model" in capsys.readouterr().err


@pytest.mark.parametrize("failure", ["stage-fails", "interrupt"])
@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_run_leaves_no_destdir(failure, existing, raw_text, tmp_path, monkeypatch):
    """A failed or interrupted build leaves neither a destdir nor a temporary one; an old one survives."""
    def broken(table, split, dictionary, prefix):
        open(prefix + ".bin", "w").close()  # a partial output in the build directory
        if failure == "interrupt":
            raise KeyboardInterrupt
        raise RuntimeError("simulated failure")
    monkeypatch.setattr(pretraining, "binarize", broken)
    expected = (KeyboardInterrupt, None) if failure == "interrupt" else (RuntimeError, "simulated failure")
    dest = tmp_path / "data-bin"
    if existing:
        dest.mkdir()
        (dest / "keep.txt").write_text("the previous data")
    with pytest.raises(expected[0], match=expected[1]):
        prepare_pretraining_data(str(dest), raw_text["train"], vocab_size=500, force=existing, log=None)
    if existing:
        assert os.listdir(dest) == ["keep.txt"]
    else:
        assert not dest.exists()
    assert leftovers(tmp_path) == []


def _fairseq_preprocess_reference(model, texts, destdir, work):
    """The pipeline before binarize.py: spm pieces as text, then fairseq-preprocess --only-source."""
    args = ["--only-source", "--destdir", str(destdir), "--workers", "1"]
    for split, path in texts.items():
        encode_file(model, path, str(work / f"{split}.pieces"))
        args += [f"--{split}pref", str(work / f"{split}.pieces")]
    common.run_preprocess({"text": args}, log=None)


def test_binarized_bytes_match_fairseq_preprocess(raw_text, tmp_path):
    """dict.txt and every .bin/.idx byte for byte as spm encoding + fairseq-preprocess write them,
    with the lines that take fairseq's own path: unknown characters (sentencepiece returns their
    text, which fairseq counts), a piece holding U+0085 (fairseq splits on it), blank and
    whitespace-only lines, a lone \\r (a line break to Python), '</s>' and '<unk>' as text."""
    odd = ["", "   ", "x\u0085y tick\u0085tock \u0085", "日本語のテキスト and ☃☃ snow", "a\rb", "literal </s> and <unk>",
           "nul\x00byte", "\u2028sep\u2029 \u3000wide", "\t\ttabs\t"]
    base = open(raw_text["train"], encoding="utf-8").read().splitlines()
    texts = {"train": tmp_path / "train.txt", "valid": tmp_path / "valid.txt", "test": tmp_path / "test.txt"}
    texts["train"].write_text("\n".join(base[:400] + ["x\u0085y z\u0085w \u0085\u0085"] * 30 + odd[:3] + base[400:])
                              + "\n", encoding="utf-8", newline="")
    texts["valid"].write_text("\n".join(odd + base[-20:]) + "\n", encoding="utf-8", newline="")
    texts["test"].write_text("\n".join(base[-5:] + odd[::-1]), encoding="utf-8", newline="")  # no final newline
    texts = {split: str(path) for split, path in texts.items()}
    new = tmp_path / "new"
    prepare_pretraining_data(str(new), texts["train"], texts["valid"], texts["test"], vocab_size=600, log=None)
    model = str(new / "sentencepiece.bpe.model")
    table = binarize.PieceTable(spm.SentencePieceProcessor(model_file=model))
    assert any("\u0085" in piece for piece in table.pieces) and not table.single[1:table.size].all()

    (tmp_path / "work").mkdir()
    _fairseq_preprocess_reference(model, texts, tmp_path / "reference", tmp_path / "work")
    names = ["dict.txt"] + [f"{split}.{ext}" for split in texts for ext in ("bin", "idx")]
    for name in names:
        assert filecmp.cmp(new / name, tmp_path / "reference" / name, shallow=False), name
    # and with the dictionary given (--srcdict), as a fine-tuning or continued-pretraining run does
    again = tmp_path / "again"
    prepare_pretraining_data(str(again), texts["train"], texts["valid"], texts["test"], spm_model=model,
                             srcdict=str(new / "dict.txt"), log=None)
    for name in names:
        assert filecmp.cmp(again / name, tmp_path / "reference" / name, shallow=False), name


def test_output_does_not_depend_on_workers(raw_text, tmp_path, monkeypatch):
    """Same sentencepiece model, dict.txt and .bin/.idx bytes for 1 and 4 workers, for batch and chunk
    sizes that split the text differently; the sentencepiece sample is a function of the seed."""
    runs = {}
    for workers, batch, chunk in ((1, 10_000, 200_000), (4, 97, 131)):
        monkeypatch.setattr(binarize, "ENCODE_BATCH_LINES", batch)
        monkeypatch.setattr(binarize, "BINARIZE_CHUNK_LINES", chunk)
        messages = []
        dest = tmp_path / f"workers{workers}"
        prepare_pretraining_data(str(dest), raw_text["train"], raw_text["valid"], vocab_size=500,
                                 spm_sample_lines=300, workers=workers, log=messages.append)
        runs[workers] = dest
    for name in ("sentencepiece.bpe.model", "dict.txt", "train.bin", "train.idx", "valid.bin", "valid.idx"):
        assert filecmp.cmp(runs[1] / name, runs[4] / name, shallow=False), name
    # one line per stage as it finishes, with rates
    lines = sum(1 for _ in open(raw_text["train"], encoding="utf-8"))
    assert messages[0].startswith(f"sentencepiece: 500 unigram pieces from 300 of {lines:,} lines of ")
    assert [m.split(":")[0] for m in messages[1:-1]] == ["encode train", "encode valid", "dictionary",
                                                         "binarize train", "binarize valid"]
    assert messages[-1].startswith(f"wrote {runs[4]} in ")
    assert all("MB/s" in m and "lines/s" in m for m in messages[1:3])
    assert all("tokens/s" in m for m in messages[4:6])


def test_small_corpus_trains_on_every_line(raw_text, pretrain_bin, tmp_path):
    """A train file no longer than --spm-sample-lines is used whole, in order (as the earlier pipeline
    did: the quickstart's data-bin kept its bytes), the same as --spm-sample-lines 0."""
    dest = tmp_path / "all"
    prepare_pretraining_data(str(dest), raw_text["train"], raw_text["valid"], vocab_size=1000, spm_sample_lines=0,
                             log=None)
    for name in ("sentencepiece.bpe.model", "dict.txt", "train.bin", "valid.idx"):
        assert filecmp.cmp(dest / name, os.path.join(pretrain_bin, name), shallow=False), name


def test_stamp_makes_a_rerun_a_no_op(pretrain_bin, raw_text, capsys):
    stamp = json.load(open(os.path.join(pretrain_bin, "data-prep.json")))
    assert stamp["inputs"]["train"] == hashlib.sha256(open(raw_text["train"], "rb").read()).hexdigest()
    assert stamp["inputs"]["test"] is None and stamp["options"]["vocab_size"] == 1000
    assert stamp["options"]["spm_threads"] == 16 and stamp["versions"]["sentencepiece"] == spm.__version__
    lines = sum(1 for _ in open(raw_text["valid"], encoding="utf-8"))
    assert stamp["counts"]["valid"]["lines"] == lines
    assert stamp["counts"]["valid"]["tokens"] == os.path.getsize(os.path.join(pretrain_bin, "valid.bin")) // 2
    assert {"sentencepiece", "encode train", "dictionary", "binarize valid", "total"} <= set(stamp["seconds"])

    before = {name: os.stat(os.path.join(pretrain_bin, name)).st_mtime_ns for name in os.listdir(pretrain_bin)}
    main_prepare_pretraining_data([  # the fixture's command again, other workers: nothing to do
        "--train", raw_text["train"], "--valid", raw_text["valid"], "--destdir", pretrain_bin,
        "--vocab-size", "1000", "--workers", "2"])
    assert "is up to date" in capsys.readouterr().err
    assert {name: os.stat(os.path.join(pretrain_bin, name)).st_mtime_ns for name in os.listdir(pretrain_bin)} == before


def test_encoding_progress_lines(pretrain_bin, raw_text, tmp_path, capsys):
    model = f"{pretrain_bin}/sentencepiece.bpe.model"
    encode_file(model, raw_text["train"], str(tmp_path / "quiet"))
    assert capsys.readouterr().err == ""
    lines = encode_file(model, raw_text["train"], str(tmp_path / "loud"), progress_min_bytes=0, batch_lines=100)
    err = capsys.readouterr().err.splitlines()
    assert len(err) >= 3 and err[-1].endswith(f": 100% ({lines:,} lines)")
    assert filecmp.cmp(tmp_path / "quiet", tmp_path / "loud", shallow=False)


# ------------------------------------------------------------------------------------- classification


def test_classification_single_sentences(sst2_bin, pretrain_bin):
    assert sorted(os.listdir(sst2_bin)) == ["input0", "label", "sentencepiece.bpe.model"]
    assert filecmp.cmp(f"{sst2_bin}/input0/dict.txt", f"{pretrain_bin}/dict.txt", shallow=False)
    assert {"train.bin", "valid.bin", "test.bin"} <= set(os.listdir(f"{sst2_bin}/input0"))
    # test.tsv has no label column, so label/ has no test split
    assert {"train.bin", "valid.bin"} <= set(os.listdir(f"{sst2_bin}/label"))
    assert "test.bin" not in os.listdir(f"{sst2_bin}/label")
    train_labels = [row[1] for row in read_rows(f"{SST2}/train.tsv")]
    assert open(f"{sst2_bin}/label/dict.txt").read() == (
        f"0 {train_labels.count('0')}\n1 {train_labels.count('1')}\n")
    assert leftovers(os.path.dirname(sst2_bin)) == []

    # what fairseq-train --task sentence_prediction reads: class i is label i
    task = sentence_prediction_task(sst2_bin, num_classes=2)
    valid = task.load_dataset("valid")
    dev_labels = [row[1] for row in read_rows(f"{SST2}/dev.tsv")]
    assert [str(valid[i]["target"].item()) for i in range(len(valid))] == dev_labels
    test = task.load_dataset("test")
    assert len(test) == 12 and "target" not in test[0]


def test_classification_sentence_pairs(pretrain_bin, tmp_path):
    """An RTE-like layout: extra columns, two sentences, labels that are words."""
    sentences = [row[0].strip() for row in read_rows(f"{SST2}/train.tsv")]
    labels = ["entailment", "not_entailment"]
    rows = [(i, sentences[i], sentences[(i * 7 + 3) % len(sentences)], labels[i % 3 == 0]) for i in range(40)]
    header = ["index", "sentence1", "sentence2", "label"]
    train = write_tsv(tmp_path / "train.tsv", header, rows[:30])
    dev = write_tsv(tmp_path / "dev.tsv", header, rows[30:])
    dest = tmp_path / "RTE-bin"
    info = prepare_classification_data(str(dest), train, dev, spm_model=f"{pretrain_bin}/sentencepiece.bpe.model",
                                       dictionary=f"{pretrain_bin}/dict.txt",
                                       sentence_columns=["sentence1", "sentence2"], log=None)
    assert info["labels"] == labels and info["rows"] == {"train": 30, "valid": 10}
    assert sorted(os.listdir(dest)) == ["input0", "input1", "label", "sentencepiece.bpe.model"]
    assert {"dict.txt", "train.bin", "valid.bin"} <= set(os.listdir(dest / "input1"))

    task = sentence_prediction_task(str(dest), num_classes=2)
    valid = task.load_dataset("valid")
    processor = spm.SentencePieceProcessor(model_file=str(dest / "sentencepiece.bpe.model"))
    first = rows[30]
    pieces = [len(processor.encode(text)) for text in first[1:3]]
    # <s> sentence1 </s> </s> sentence2 </s>: init token, separator token, one eos per sentence
    assert len(valid[0]["net_input.src_tokens"]) == pieces[0] + pieces[1] + 4
    assert task.label_dictionary[valid[0]["target"].item() + task.label_dictionary.nspecial] == first[3]


def _bad_input(case, tmp_path):
    """(train, valid, test, options, expected message) for one bad input."""
    train, dev, test, options = f"{SST2}/train.tsv", f"{SST2}/dev.tsv", None, {}
    good = read_rows(f"{SST2}/dev.tsv")
    if case == "missing-sentence-column":
        options = {"sentence_columns": ["sentence1", "sentence2"]}
        expected = r"train.tsv has no column 'sentence1', 'sentence2' \(columns found: 'sentence', 'label'\)"
    elif case == "missing-label-column":
        dev = write_tsv(tmp_path / "dev.tsv", ["sentence", "score"], good)
        expected = r"dev.tsv has no column 'label' \(columns found: 'sentence', 'score'\)"
    elif case == "empty-file":
        (tmp_path / "dev.tsv").write_text("")
        dev, expected = str(tmp_path / "dev.tsv"), "valid file is empty: .*dev.tsv"
    elif case == "header-only":
        dev, expected = write_tsv(tmp_path / "dev.tsv", ["sentence", "label"], []), "has a header but no rows"
    elif case == "unseen-labels":
        dev = write_tsv(tmp_path / "dev.tsv", ["sentence", "label"], good[:3] + [["so so", "2"]])
        test = write_tsv(tmp_path / "test.tsv", ["sentence", "label"], [["meh", "neutral"], ["bad", "0"]])
        expected = r"labels that do not occur in train .*valid \(.*dev.tsv\): '2'; test \(.*test.tsv\): 'neutral'"
    elif case == "wrong-field-count":
        rows = read_rows(f"{SST2}/train.tsv")
        rows[3] = rows[3] + ["extra"]
        train = write_tsv(tmp_path / "train.tsv", ["sentence", "label"], rows)
        expected = r"train.tsv, line 5: expected 2 tab-separated fields \(sentence, label\), found 3"
    else:  # dictionary of GPT-2 BPE ids, as fairseq's RoBERTa checkpoints ship
        (tmp_path / "dict.txt").write_text("".join(f"{i} {1000 - i}\n" for i in range(13, 900)))
        options = {"dictionary": str(tmp_path / "dict.txt")}
        expected = "the sentencepiece model does not match the dictionary: 100% of the pieces"
    return train, dev, test, options, expected


@pytest.mark.parametrize("case", ["missing-sentence-column", "missing-label-column", "empty-file", "header-only",
                                  "unseen-labels", "wrong-field-count", "spm-does-not-match-dict"])
def test_classification_input_errors(case, pretrain_bin, tmp_path):
    train, dev, test, options, expected = _bad_input(case, tmp_path)
    options = {"spm_model": f"{pretrain_bin}/sentencepiece.bpe.model", "dictionary": f"{pretrain_bin}/dict.txt",
               **options}
    dest = tmp_path / "bin"
    with pytest.raises(DataPrepError, match=expected):
        prepare_classification_data(str(dest), train, dev, test, log=None, **options)
    assert not dest.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("existing", [False, True])
def test_classification_preprocess_failure_leaves_no_destdir(existing, pretrain_bin, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "preprocess_command",
                        lambda: [sys.executable, "-c", "import sys; sys.exit('simulated failure')"])
    dest = tmp_path / "bin"
    if existing:
        dest.mkdir()
        (dest / "keep.txt").write_text("the previous data")
    with pytest.raises(PreprocessError, match="(?s)fairseq-preprocess failed for (input0|label) .*simulated failure"):
        prepare_classification_data(str(dest), f"{SST2}/train.tsv", f"{SST2}/dev.tsv", force=existing, log=None,
                                    spm_model=f"{pretrain_bin}/sentencepiece.bpe.model",
                                    dictionary=f"{pretrain_bin}/dict.txt")
    if existing:
        assert os.listdir(dest) == ["keep.txt"]
    else:
        assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_classification_cli_error(pretrain_bin, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main_prepare_classification_data([
            "--train", f"{SST2}/train.tsv", "--label-column", "sentiment", "--pretraining-data", pretrain_bin,
            "--destdir", str(tmp_path / "bin")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "has no column 'sentiment'" in err and "Traceback" not in err
