"""Labelled text collections -> windows of N sentencepiece tokens -> two sentence_prediction data-bins.

A long-document classification task made from raw text: every collection (one paragraph per line,
a blank line between documents, the pretraining layout) is a class, e.g. ``python=python/train.txt``
and ``linux=linux/train.txt``, and an example is a window of one document. The output::

    destdir/long_documents.json             options, windows per split and class, the variants below
    destdir/bin/window-N/                   input0/ label/ sentencepiece.bpe.model  (fairseq data-bin)
    destdir/bin/truncated-T/                the same examples cut to their first T tokens
    destdir/tsv/{window-N,truncated-T}/{train,valid,test}.tsv   what was binarized (sentence, label);
                                            removed at the end with keep_tsv=False (--no-tsv)

Lengths count model input tokens, ``<s>`` and ``</s>`` included, so a window of N = 4096 holds 4094
pieces and fits ``--max-positions 4096``. Each document is cut into consecutive non-overlapping
windows of at most N tokens, every cut moved back to the start of a word (a piece that begins with
"▁"), so that the window's text encodes back to the same pieces. Windows shorter than ``min_tokens``
(short documents, and the tail of a long one) are dropped: the point is long input. Then each split
is balanced by sampling the larger classes down to the smallest (seeded, so the same inputs give the
same examples), and optionally capped at ``max_windows_per_class``. The truncated variant holds the
same rows, each cut to its first T tokens (at a word start), so the two data-bins differ only in
what the model can see.

Splits are the corpus's own (by document): a file may serve one split and one class only.
``.xz``, ``.gz`` and ``.bz2`` inputs are read compressed.

``task="continuation"`` (``--task continuation``) makes a task that the first T tokens cannot
decide: from the same balanced windows, each example is a window's first half followed either by
its own second half (label ``same``) or by the second half of a window of *another document of the
same collection* (label ``other``), half of each, seeded. The halves meet at a word start past
token T, so the truncated variant sees only the first half: the same kind of text under both
labels, chance by construction. Telling the labels apart means comparing the two halves (does the
text go on with the same subject?), which only a model that sees past token T can do.

The command line is ``python -m examples.studies.long_context.prepare_data``. (One module of ~470
lines: reading, windowing, balancing and both tasks feed one manifest and read best in order.)
"""

import bz2
import gzip
import json
import lzma
import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from linformer_plugin.data.classification import prepare_classification_data
from linformer_plugin.data.common import (DataPrepError, Progress, check_inputs_outside, check_pieces_match,
                                          check_text_file, load_dictionary, load_spm, stderr_log)
from linformer_plugin.io import atomic_directory, atomic_write_text

SPLITS = ("train", "valid", "test")
SPECIAL_TOKENS = 2  # <s> (--init-token) and </s> (fairseq-preprocess's end of line)
WORD_START = "\u2581"  # sentencepiece's "▁"
MANIFEST = "long_documents.json"
TASKS = ("collection", "continuation")
SAME, OTHER = "same", "other"  # the continuation task's labels
# inputs (file bytes, compressed if so) at least this large print percentage lines while encoded
PROGRESS_MIN_BYTES = 4 << 20
ENCODE_BATCH = 2000
DICT_CHECK_PIECES = 200_000
_OPENERS = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}


def variant_names(window_tokens: int, truncate_tokens: int) -> Dict[str, str]:
    return {"window": f"window-{window_tokens}", "truncated": f"truncated-{truncate_tokens}"}


def parse_collections(specs: Sequence[str], split: str) -> List[Tuple[str, str]]:
    """``["python=a.txt", "linux=b.txt"]`` -> ``[("python", "a.txt"), ("linux", "b.txt")]``."""
    collections, seen = [], {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        label = label.strip()
        if not sep or not label or not path:
            raise DataPrepError(f"--{split} {spec!r}: give LABEL=PATH, e.g. python=docs/python/{split}.txt")
        if len(label.split()) != 1 or label.startswith("<"):
            raise DataPrepError(f"--{split} {spec!r}: the label {label!r} must be one word (no spaces, "
                                "not <...>): it becomes a token of fairseq's label dictionary")
        if label in seen:
            raise DataPrepError(f"--{split}: label {label!r} is given twice ({seen[label]} and {path}); "
                                "give each class one file per split (concatenate files first)")
        seen[label] = path
        collections.append((label, path))
    return collections


def check_collections(splits: Dict[str, List[Tuple[str, str]]]):
    """Every split has the same classes, at least two; no file serves two classes or two splits."""
    if "train" not in splits or not splits["train"]:
        raise DataPrepError("--train needs at least two LABEL=PATH collections")
    train_labels = [label for label, _ in splits["train"]]
    if len(train_labels) < 2:
        raise DataPrepError(f"--train has one class ({train_labels[0]!r}); a classification task needs two or more")
    for split, collections in splits.items():
        labels = sorted(label for label, _ in collections)
        if labels != sorted(train_labels):
            raise DataPrepError(f"--{split} has classes {', '.join(labels)} but --train has "
                                f"{', '.join(sorted(train_labels))}; give every split the same classes")
    used = {}
    for split, collections in splits.items():
        for label, path in collections:
            check_text_file(path, f"{split} file for {label!r}")
            real = os.path.realpath(path)
            if real in used:
                raise DataPrepError(f"{path} is given as {split} {label!r} and as {used[real]}: a file may "
                                    "serve one class of one split only (documents would leak between them)")
            used[real] = f"{split} {label!r}"


def _open_text(path: str):
    """(text stream, raw binary file whose tell() is the bytes read so far)."""
    raw = open(path, "rb")
    opener = _OPENERS.get(os.path.splitext(path)[1].lower())
    stream = opener(raw, "rt", encoding="utf-8") if opener else open(raw.fileno(), "rt", encoding="utf-8",
                                                                     closefd=False)
    return stream, raw


def read_documents(path: str) -> Iterator[Tuple[List[str], int]]:
    """Documents (lists of non-blank paragraphs) and the raw bytes read so far."""
    stream, raw = _open_text(path)
    document, lineno = [], 0
    try:
        with raw, stream:
            try:
                for lineno, line in enumerate(stream, 1):
                    line = line.strip()
                    if line:
                        document.append(line)
                    elif document:
                        yield document, raw.tell()
                        document = []
            except UnicodeDecodeError as e:
                raise DataPrepError(f"{path} is not UTF-8 text ({e.reason}, somewhere after line {lineno})") from None
            except (lzma.LZMAError, OSError, EOFError) as e:
                raise DataPrepError(f"{path}: cannot read it ({e})") from None
            if document:
                yield document, raw.tell()
    finally:
        stream.close()


def encode_documents(processor, path: str, progress_label: str,
                     progress_min_bytes: Optional[int] = PROGRESS_MIN_BYTES, out_type=str) -> Iterator[list]:
    """The pieces of each document of ``path``, its paragraphs concatenated (each begins with ▁);
    ``out_type=int``: their sentencepiece ids (far less memory for a whole corpus)."""
    size = os.path.getsize(path)
    progress = Progress(progress_label, size, progress_min_bytes is not None and size >= progress_min_bytes)
    pending, pending_lines, lines = [], 0, 0

    def flush():
        flat = [paragraph for document in pending for paragraph in document]
        encoded = iter(processor.encode(flat, out_type=out_type))
        for document in pending:
            pieces = []
            for _ in document:
                pieces.extend(next(encoded))
            yield pieces

    position = 0
    for document, position in read_documents(path):
        pending.append(document)
        pending_lines += len(document)
        if pending_lines >= ENCODE_BATCH:
            yield from flush()
            lines += pending_lines
            progress.update(position, lines)
            pending, pending_lines = [], 0
    if pending:
        yield from flush()
        lines += pending_lines
    progress.finish(lines)


def _word_start_at_or_before(pieces: List[str], end: int, start: int) -> int:
    """The largest cut <= end such that pieces[cut] starts a word; ``end`` if none lies after start."""
    cut = end
    while cut > start and not pieces[cut].startswith(WORD_START):
        cut -= 1
    return cut if cut > start else end


def cut_windows(pieces: List[str], max_pieces: int) -> List[Tuple[int, int]]:
    """Consecutive non-overlapping [start, end) spans of at most ``max_pieces``, cut before a word start."""
    spans, start = [], 0
    while start < len(pieces):
        end = min(start + max_pieces, len(pieces))
        if end < len(pieces):
            end = _word_start_at_or_before(pieces, end, start)
        spans.append((start, end))
        start = end
    return spans


def prefix_end(pieces: List[str], max_pieces: int) -> int:
    """How many of ``pieces`` (a window) its truncated variant keeps: at most max_pieces, ending at a word."""
    if len(pieces) <= max_pieces:
        return len(pieces)
    return _word_start_at_or_before(pieces, max_pieces, 0)


def _clean(text: str) -> str:
    # one tsv field: no tabs or line breaks (the sentencepiece normalizer makes them spaces anyway)
    return " ".join(text.split())


def window_text(processor, pieces: List[str], max_pieces: int) -> Tuple[str, int]:
    """The text of ``pieces`` and its length in pieces when encoded again, shortened a word at a time
    until that length is at most ``max_pieces``.

    Cutting at word starts makes the round trip exact for sentencepiece models that split on
    whitespace (the default); the check keeps the bound for any other."""
    end = len(pieces)
    while True:
        text = _clean(processor.decode(pieces[:end]))
        encoded = len(processor.encode(text, out_type=str))
        if encoded <= max_pieces or end <= 1:
            return text, encoded
        end = _word_start_at_or_before(pieces, end - 1, 0)  # always < end: the loop ends


def collect_windows(processor, label: str, split: str, path: str, window_tokens: int, min_tokens: int,
                    progress_min_bytes: Optional[int], log) -> Tuple[List[dict], dict]:
    """Windows of one collection, [{"label", "doc", "pieces"}] (pieces space-joined: a str is far
    smaller than a list of them), and counts for the manifest."""
    max_pieces = window_tokens - SPECIAL_TOKENS
    windows, stats = [], {"documents": 0, "pieces": 0, "windows": 0, "window_pieces": 0, "dropped_short": 0}
    for doc, pieces in enumerate(encode_documents(processor, path, f"encoding {split} {label} ({path})",
                                                  progress_min_bytes)):
        stats["documents"] += 1
        stats["pieces"] += len(pieces)
        for start, end in cut_windows(pieces, max_pieces):
            if end - start + SPECIAL_TOKENS < min_tokens:
                stats["dropped_short"] += 1
                continue
            windows.append({"label": label, "doc": doc, "pieces": " ".join(pieces[start:end])})
            stats["window_pieces"] += end - start
    stats["windows"] = len(windows)
    if stats["documents"] == 0:
        raise DataPrepError(f"{split} collection {label!r} has no documents (only blank lines): {path}")
    if not windows:
        raise DataPrepError(
            f"{split} collection {label!r} ({path}) has no window of at least {min_tokens} tokens: its "
            f"{stats['documents']} documents hold {stats['pieces']} pieces; lower --min-tokens or give longer "
            "documents")
    log(f"{split} {label}: {stats['documents']:,} documents, {stats['pieces']:,} pieces -> {len(windows):,} "
        f"windows of {min_tokens}-{window_tokens} tokens ({stats['dropped_short']:,} shorter ones dropped)")
    return windows, stats


def balance(windows_by_label: Dict[str, List[dict]], split: str, seed: int,
            max_per_class: Optional[int] = None) -> Dict[str, List[dict]]:
    """Every class sampled down to the smallest's count (and to ``max_per_class``), in document order."""
    keep = min(len(windows) for windows in windows_by_label.values())
    if max_per_class is not None:
        keep = min(keep, max_per_class)
    balanced = {}
    for label, windows in windows_by_label.items():
        if len(windows) > keep:
            chosen = sorted(random.Random(f"{seed}:{split}:{label}").sample(range(len(windows)), keep))
            windows = [windows[i] for i in chosen]
        balanced[label] = windows
    return balanced


def _half_way_word_start(pieces: List[str], lowest: int) -> Optional[int]:
    """Where to split ``pieces`` in two: the last word start in [lowest, middle], else the first one
    after the middle (None if ``pieces`` has no word start at or past ``lowest``)."""
    middle = max(len(pieces) // 2, lowest)
    if middle < len(pieces):
        cut = _word_start_at_or_before(pieces, middle, lowest - 1)
        if pieces[cut].startswith(WORD_START):
            return cut
    return next((cut for cut in range(middle + 1, len(pieces)) if pieces[cut].startswith(WORD_START)), None)


def continuation_examples(balanced: Dict[str, List[dict]], split: str, seed: int, min_split_pieces: int,
                          max_pieces: int) -> Dict[str, List[dict]]:
    """Windows -> {"same": [...], "other": [...]}: each window's first half, then its own second half
    or another same-collection document's (see the module docstring). Every window is used once as
    a first half, and the labels alternate over a seeded shuffle of them, so the classes are even
    (one more ``same`` for an odd count) and each collection gives both about equally."""
    rng = random.Random(f"{seed}:{split}:continuation")
    out = {SAME: [], OTHER: []}
    made = 0  # labels alternate over all collections, so the classes differ by one at most
    for collection in sorted(balanced):
        windows = [w["pieces"].split(" ") for w in balanced[collection]]
        docs = [w["doc"] for w in balanced[collection]]
        if len(set(docs)) < 2:
            raise DataPrepError(
                f"{split} collection {collection!r}: the continuation task needs windows of at least two "
                f"documents (a second half from another document), but all {len(windows)} come from one; "
                "give more documents or lower --min-tokens")
        halves = []
        for pieces in windows:
            cut = _half_way_word_start(pieces, min_split_pieces)
            if cut is None:
                raise DataPrepError(
                    f"{split} collection {collection!r}: a window of {len(pieces)} pieces has no word start between "
                    f"piece {min_split_pieces} (past --truncate-tokens) and its end, where its halves could meet; "
                    "raise --min-tokens")
            halves.append(cut)
        order = list(range(len(windows)))
        rng.shuffle(order)
        for i in order:
            first, cut = windows[i], halves[i]
            made += 1
            if made % 2 == 1:
                out[SAME].append({"label": SAME, "doc": docs[i], "pieces": balanced[collection][i]["pieces"]})
                continue
            j = rng.choice([j for j in range(len(windows)) if docs[j] != docs[i]])
            second = windows[j][halves[j]:]
            second = second[:prefix_end(second, max_pieces - cut)]  # as much as fits, ending at a word
            out[OTHER].append({"label": OTHER, "doc": docs[i], "other_doc": docs[j],
                               "pieces": " ".join(first[:cut] + second)})
    return out


def _write_tsv(path: str, rows: List[Tuple[str, str]]):
    atomic_write_text(path, "sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows))


def build_examples(collections: Dict[str, Sequence[str]], *, spm_model: str, dictionary: str,
                   window_tokens: int = 4096, truncate_tokens: int = 512, min_tokens: int = 1024, seed: int = 1,
                   max_windows_per_class: Optional[int] = None, task: str = "collection",
                   progress_min_bytes: Optional[int] = PROGRESS_MIN_BYTES,
                   log: Optional[Callable[[str], None]] = stderr_log) -> Tuple[dict, dict]:
    """The checks, windows and balancing of prepare_long_document_data, without writing anything:
    ``(manifest, rows)`` with ``rows[variant][split]`` a list of (text, label)."""
    log = log or (lambda message: None)
    unknown = sorted(set(collections) - set(SPLITS))
    if unknown:
        raise DataPrepError(f"unknown split(s) {', '.join(unknown)}; use {', '.join(SPLITS)}")
    if truncate_tokens <= SPECIAL_TOKENS:
        raise DataPrepError(f"--truncate-tokens {truncate_tokens} leaves no room for text beside <s> and </s>")
    if window_tokens <= truncate_tokens:
        raise DataPrepError(f"--window-tokens {window_tokens} must be longer than --truncate-tokens "
                            f"{truncate_tokens}: the truncated variant is a prefix of each window")
    if not 0 < min_tokens <= window_tokens:
        raise DataPrepError(f"--min-tokens {min_tokens} must be between 1 and --window-tokens {window_tokens}")
    if task not in TASKS:
        raise DataPrepError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "continuation" and min_tokens < 2 * truncate_tokens:
        raise DataPrepError(f"--task continuation joins two halves past --truncate-tokens {truncate_tokens}, so "
                            f"windows need at least {2 * truncate_tokens} tokens: raise --min-tokens (now {min_tokens})")
    if max_windows_per_class is not None and max_windows_per_class < 1:
        raise DataPrepError(f"--max-windows-per-class must be positive, not {max_windows_per_class}")
    splits = {split: parse_collections(collections[split], split) for split in SPLITS if collections.get(split)}
    check_collections(splits)
    processor = load_spm(spm_model)
    vocab = load_dictionary(dictionary)
    if min_tokens <= truncate_tokens:
        log(f"note: --min-tokens {min_tokens} <= --truncate-tokens {truncate_tokens}: windows of up to "
            f"{truncate_tokens} tokens are the same in both variants")

    names = variant_names(window_tokens, truncate_tokens)
    manifest = {
        "window_tokens": window_tokens, "truncate_tokens": truncate_tokens, "min_tokens": min_tokens,
        "seed": seed, "max_windows_per_class": max_windows_per_class, "task": task,
        "collections_labels": sorted(label for label, _ in splits["train"]),
        "labels": sorted(label for label, _ in splits["train"]) if task == "collection" else [OTHER, SAME],
        "variants": {key: {"name": name, "data": f"bin/{name}", "tsv": f"tsv/{name}",
                           "max_tokens": window_tokens if key == "window" else truncate_tokens}
                     for key, name in names.items()},
        "inputs": {split: {label: path for label, path in c} for split, c in splits.items()},
        "collections": {}, "examples": {},
    }
    rows = {key: {} for key in names}
    for split, split_collections in splits.items():
        by_label = {}
        for label, path in split_collections:
            by_label[label], stats = collect_windows(processor, label, split, path, window_tokens, min_tokens,
                                                     progress_min_bytes, log)
            manifest["collections"].setdefault(split, {})[label] = stats
        if split == "train":
            pieces = (p for windows in by_label.values() for w in windows for p in w["pieces"].split(" "))
            check_pieces_match([[p for _, p in zip(range(DICT_CHECK_PIECES), pieces)]], vocab, dictionary,
                               "the first train windows")
        balanced = balance(by_label, split, seed, max_windows_per_class)
        if task == "continuation":
            balanced = continuation_examples(balanced, split, seed, truncate_tokens - SPECIAL_TOKENS + 1,
                                             window_tokens - SPECIAL_TOKENS)
        counts = {}
        for key, max_tokens in (("window", window_tokens), ("truncated", truncate_tokens)):
            split_rows, lengths = [], []
            for label in sorted(balanced):
                for window in balanced[label]:
                    pieces = window["pieces"].split(" ")
                    if key == "truncated":
                        pieces = pieces[:prefix_end(pieces, max_tokens - SPECIAL_TOKENS)]
                    text, encoded = window_text(processor, pieces, max_tokens - SPECIAL_TOKENS)
                    split_rows.append((text, label))
                    lengths.append(encoded + SPECIAL_TOKENS)
            rows[key][split] = split_rows
            counts[key] = {"mean_tokens": round(sum(lengths) / len(lengths), 1), "max_tokens": max(lengths),
                           "min_tokens": min(lengths)}
        manifest["examples"][split] = {"per_class": {label: len(w) for label, w in sorted(balanced.items())},
                                       "total": sum(len(w) for w in balanced.values()),
                                       "tokens": counts}
        log(f"{split}: {manifest['examples'][split]['total']:,} examples ("
            + ", ".join(f"{label} {n:,}" for label, n in manifest["examples"][split]["per_class"].items())
            + f"), mean {counts['window']['mean_tokens']:.0f} tokens at full window")
    return manifest, rows


def prepare_long_document_data(destdir: str, collections: Dict[str, Sequence[str]], *, spm_model: str,
                               dictionary: str, window_tokens: int = 4096, truncate_tokens: int = 512,
                               min_tokens: int = 1024, seed: int = 1, max_windows_per_class: Optional[int] = None,
                               task: str = "collection", workers: int = 1, force: bool = False, keep_tsv: bool = True,
                               progress_min_bytes: Optional[int] = PROGRESS_MIN_BYTES,
                               log: Optional[Callable[[str], None]] = stderr_log) -> dict:
    """Build destdir (see the module docstring); returns the manifest written to destdir/long_documents.json.

    ``collections`` maps a split (train, valid, test; train required) to ``LABEL=PATH`` strings.
    """
    log = log or (lambda message: None)
    check_destdir(destdir, force, [spec.partition("=")[2] for specs in collections.values() if specs for spec in specs]
                  + [spm_model, dictionary])
    manifest, rows = build_examples(
        collections, spm_model=spm_model, dictionary=dictionary, window_tokens=window_tokens,
        truncate_tokens=truncate_tokens, min_tokens=min_tokens, seed=seed, max_windows_per_class=max_windows_per_class,
        task=task, progress_min_bytes=progress_min_bytes, log=log)
    write_variants(destdir, manifest, rows, spm_model=spm_model, dictionary=dictionary, workers=workers,
                   force=force, keep_tsv=keep_tsv, log=log)
    return manifest


def check_destdir(destdir: str, force: bool, inputs: Sequence[str]):
    """Before the slow part (atomic_directory checks again): destdir is empty unless ``force``, and
    with ``force`` none of the ``inputs`` lies in it."""
    if not force and os.path.isdir(destdir) and os.listdir(destdir):
        raise FileExistsError(f"{destdir} already exists and is not empty; pass --force to replace it")
    if force:
        check_inputs_outside(destdir, list(inputs))


def write_variants(destdir: str, manifest: dict, rows: Dict[str, Dict[str, List[Tuple[str, str]]]], *,
                   spm_model: str, dictionary: str, workers: int = 1, force: bool = False, keep_tsv: bool = True,
                   labels: Optional[List[str]] = None, write_extra: Optional[Callable[[str], None]] = None,
                   log: Callable[[str], None] = stderr_log):
    """Write destdir at once (atomic_directory): each variant's rows (``rows[key][split]``, (text,
    label) pairs) as tsv/NAME/SPLIT.tsv, binarized to bin/NAME (the variants side by side), their
    classes in ``manifest["variants"]``, then the manifest; the tsv files removed unless ``keep_tsv``.
    ``write_extra(build)``: more files, written after the tsv files; ``labels``: the class labels
    every variant must have (class i the same in each)."""
    names = {key: variant["name"] for key, variant in manifest["variants"].items()}
    with atomic_directory(destdir, force=force) as build:
        tsv_paths = {}
        for key, name in names.items():
            tsv_paths[key] = {}
            for split, split_rows in rows[key].items():
                tsv_paths[key][split] = os.path.join(build, "tsv", name, f"{split}.tsv")
                os.makedirs(os.path.dirname(tsv_paths[key][split]), exist_ok=True)
                _write_tsv(tsv_paths[key][split], split_rows)
        if write_extra is not None:
            write_extra(build)

        def binarize(key):
            paths = tsv_paths[key]
            return prepare_classification_data(
                os.path.join(build, "bin", names[key]), paths["train"], paths.get("valid"), paths.get("test"),
                spm_model=spm_model, dictionary=dictionary, workers=workers, progress_min_bytes=None, log=log)

        with ThreadPoolExecutor(len(names)) as pool:  # each waits on its fairseq-preprocess runs
            results = dict(zip(names, pool.map(binarize, names)))
        for key, result in results.items():
            if labels is not None and result["labels"] != labels:
                raise DataPrepError(f"{key} variant has labels {result['labels']}, expected {labels}")
            manifest["variants"][key]["num_classes"] = result["num_classes"]
            manifest["variants"][key]["class_labels"] = result["labels"]
            if not keep_tsv:
                manifest["variants"][key]["tsv"] = None
        if not keep_tsv:
            shutil.rmtree(os.path.join(build, "tsv"))
        atomic_write_text(os.path.join(build, MANIFEST), json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {destdir}: " + ", ".join(f"bin/{name}" for name in names.values()) + f" ({MANIFEST})")


def load_manifest(directory: str) -> dict:
    """The manifest of a prepare_long_document_data output, with the variants' absolute paths."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise DataPrepError(f"{directory} has no {MANIFEST}: not an output of prepare_long_document_data.py")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    for variant in manifest["variants"].values():
        variant["path"] = os.path.join(directory, variant["data"])
        if not os.path.isdir(os.path.join(variant["path"], "input0")):
            raise DataPrepError(f"{variant['path']} is missing (or has no input0/); copy the whole {directory}")
    return manifest

