"""GLUE-style tsv -> sentencepiece -> fairseq-preprocess: a data-bin for ``--task sentence_prediction``.

The layout is that of fairseq's examples/roberta/preprocess_GLUE_tasks.sh::

    destdir/input0/{dict.txt,train,valid,test}.{bin,idx}   first sentence, the pretraining dictionary
    destdir/input1/...                                     second sentence of pairs, same dictionary
    destdir/label/{dict.txt,train,valid[,test]}.{bin,idx}  labels, their own dictionary
    destdir/sentencepiece.bpe.model

Labels stay strings. Unlike fairseq-preprocess, which orders a dictionary by frequency, the label
dictionary lists them sorted (numerically when all are numbers), so class i is the i-th label
whatever the class balance of this particular training set: for 0/1 labels, class 0 is "0".
"""

import os
import shutil
from typing import Callable, Dict, List, Optional, Sequence

from ..io import atomic_directory, atomic_write_text
from .common import (PROGRESS_MIN_BYTES, SPM_MODEL_NAME, DataPrepError, Progress, check_inputs_outside,
                     check_pieces_match, check_text_file, load_dictionary, load_spm, run_preprocess, stderr_log)

DICT_CHECK_LINES = 1000
ENCODE_BATCH = 2000


class Table:
    """The columns of one tsv split that the task needs, and where each row came from."""

    def __init__(self, split: str, path: str):
        self.split, self.path = split, path
        self.sentences: List[List[str]] = []  # per sentence column
        self.labels: Optional[List[str]] = None


def read_tsv(split: str, path: str, sentence_columns: Sequence[str], label_column: str,
             label_required: bool) -> Table:
    """Read a GLUE tsv: a header row, then tab-separated fields without quoting (GLUE text contains
    bare quotes, so the csv module's quoting rules would corrupt it)."""
    check_text_file(path, f"{split} file")
    table = Table(split, path)
    header = None
    with open(path, "rb") as f:  # split on \n only: a stray \r is text, not a line break
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataPrepError(f"{path}, line {lineno}: not UTF-8 text ({e.reason})") from None
            if header is None:
                header = [name.strip() for name in line.lstrip("\ufeff").split("\t")]
                wanted = list(sentence_columns) + ([label_column] if label_required else [])
                missing = [name for name in wanted if name not in header]
                if missing:
                    raise DataPrepError(
                        f"{path} has no column {', '.join(map(repr, missing))} (columns found: "
                        f"{', '.join(map(repr, header))}); choose others with --sentence-columns/--label-column")
                text_at = [header.index(name) for name in sentence_columns]
                table.sentences = [[] for _ in text_at]
                label_at = header.index(label_column) if label_column in header else None
                table.labels = [] if label_at is not None else None
                continue
            if not line.strip():  # a blank line (often a trailing one) is not a row
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise DataPrepError(f"{path}, line {lineno}: expected {len(header)} tab-separated fields "
                                    f"({', '.join(header)}), found {len(fields)}")
            for column, at in zip(table.sentences, text_at):
                column.append(fields[at].strip())
            if label_at is not None:
                label = fields[label_at].strip()
                if not label or len(label.split()) != 1:
                    raise DataPrepError(f"{path}, line {lineno}: label {label!r} is empty or has spaces; "
                                        "fairseq's label dictionary needs one token per label")
                table.labels.append(label)
    if not table.sentences or not table.sentences[0]:
        raise DataPrepError(f"{split} file has a header but no rows: {path}")
    return table


def _sorted_labels(labels) -> List[str]:
    try:
        return sorted(labels, key=lambda label: (float(label), label))
    except ValueError:
        return sorted(labels)


def _write_pieces(processor, texts: List[str], dst: str, label: str, progress_min_bytes: Optional[int]):
    size = sum(len(text) for text in texts)  # characters, close enough to decide on progress lines
    progress = Progress(label, len(texts), progress_min_bytes is not None and size >= progress_min_bytes)
    with open(dst, "w", encoding="utf-8") as f:
        for start in range(0, len(texts), ENCODE_BATCH):
            for pieces in processor.encode(texts[start:start + ENCODE_BATCH], out_type=str):
                f.write(" ".join(pieces) + "\n")
            progress.update(start + ENCODE_BATCH, min(start + ENCODE_BATCH, len(texts)))


def prepare_classification_data(destdir: str, train: str, valid: Optional[str] = None, test: Optional[str] = None,
                                *, spm_model: str, dictionary: str, sentence_columns: Sequence[str] = ("sentence",),
                                label_column: str = "label", workers: int = 1, force: bool = False,
                                progress_min_bytes: Optional[int] = PROGRESS_MIN_BYTES,
                                log: Optional[Callable[[str], None]] = stderr_log) -> Dict[str, object]:
    """Build the data-bin; returns ``{"destdir", "labels", "num_classes", "rows"}``.

    ``dictionary`` is the pretraining data-bin's dict.txt and ``spm_model`` the sentencepiece model it
    was built with; train and valid need the label column, test may lack it.
    """
    log = log or (lambda message: None)
    sentence_columns = list(sentence_columns)
    if len(sentence_columns) not in (1, 2):
        raise DataPrepError(f"--sentence-columns takes one or two column names, not {len(sentence_columns)}")
    inputs = {"train": train, "valid": valid, "test": test}
    tables = {split: read_tsv(split, path, sentence_columns, label_column, label_required=split != "test")
              for split, path in inputs.items() if path is not None}

    known = set(tables["train"].labels)
    unseen = {split: sorted(set(t.labels) - known) for split, t in tables.items() if t.labels is not None}
    unseen = {split: labels for split, labels in unseen.items() if labels}
    if unseen:
        raise DataPrepError("labels that do not occur in train (fairseq would make them <unk>): " + "; ".join(
            f"{split} ({inputs[split]}): {', '.join(map(repr, labels))}" for split, labels in unseen.items()))

    processor = load_spm(spm_model)
    vocab = load_dictionary(dictionary)
    head = tables["train"].sentences
    check_pieces_match((pieces for column in head for pieces in processor.encode(column[:DICT_CHECK_LINES],
                                                                                 out_type=str)),
                       vocab, dictionary, f"the first {DICT_CHECK_LINES} rows of {train}")
    if force:
        check_inputs_outside(destdir, [*inputs.values(), spm_model, dictionary])

    labels = _sorted_labels(known)
    with atomic_directory(destdir, force=force) as build:
        shutil.copyfile(spm_model, os.path.join(build, SPM_MODEL_NAME))
        work = os.path.join(build, "_pieces")
        os.makedirs(work)
        jobs = {}
        for i in range(len(sentence_columns)):
            args = ["--only-source", "--srcdict", dictionary, "--destdir", os.path.join(build, f"input{i}"),
                    "--workers", str(workers)]
            for split, table in tables.items():
                prefix = os.path.join(work, f"{split}.input{i}")
                _write_pieces(processor, table.sentences[i], prefix, f"encoding {table.path} ({sentence_columns[i]})",
                              progress_min_bytes)
                args += [f"--{split}pref", prefix]
            jobs[f"input{i}"] = args

        counts = {label: 0 for label in labels}
        for label in tables["train"].labels:
            counts[label] += 1
        label_dict = os.path.join(work, "label.dict.txt")
        atomic_write_text(label_dict, "".join(f"{label} {counts[label]}\n" for label in labels))
        args = ["--only-source", "--srcdict", label_dict, "--destdir", os.path.join(build, "label"), "--workers", "1"]
        for split, table in tables.items():
            if table.labels is not None:
                prefix = os.path.join(work, f"{split}.label")
                atomic_write_text(prefix, "".join(label + "\n" for label in table.labels))
                args += [f"--{split}pref", prefix]
        jobs["label"] = args

        run_preprocess(jobs, log=log)
        shutil.rmtree(work)
    log(f"wrote {destdir}: {len(labels)} classes ({', '.join(labels)}; class i is the i-th)")
    return {"destdir": destdir, "labels": labels, "num_classes": len(labels),
            "rows": {split: len(table.sentences[0]) for split, table in tables.items()}}
