"""Raw text -> sentencepiece -> a masked-LM data-bin, the files ``fairseq-preprocess --only-source``
would write from the sentencepiece pieces (binarize.py makes them without it).

destdir gets ``dict.txt``, ``{train,valid,test}.{bin,idx}``, the sentencepiece model as
``sentencepiece.bpe.model`` (the name fairseq's hub loader looks for) and ``data-prep.json``, the
stamp: the inputs' sha256, the options that shape the output, the versions of sentencepiece and
fairseq, counts and per-stage times. A run whose stamp would equal the one in destdir builds
nothing. The data-bin is built in a temporary sibling directory and renamed into place only when
whole. Nothing depends on the number of workers (threads) but the time it takes.
"""

import hashlib
import json
import os
import re
import shutil
import time
from typing import Callable, Dict, Optional

from ..io import atomic_directory, atomic_write_text
from .binarize import PieceTable, binarize, build_dictionary, encode_split
from .common import (PROGRESS_MIN_BYTES, SPM_MODEL_NAME, DataPrepError, check_inputs_outside, check_pieces_match,
                     check_text_file, load_dictionary, load_spm, stderr_log)
from .sentencepiece_text import SPM_SAMPLE_LINES, SPM_SEED, SPM_THREADS, count_lines, train_sentencepiece, training_lines

SPLITS = ("train", "valid", "test")
DICT_CHECK_LINES = 1000
STAMP_NAME = "data-prep.json"
STAMP_FORMAT = 1  # raise when the same inputs and options would give different bytes


def _train_spm(train: str, total: int, sample: int, model: str, vocab_size: int, model_type: str, seed: int) -> str:
    try:
        return train_sentencepiece(training_lines(train, total, sample, seed), model, vocab_size=vocab_size,
                                   model_type=model_type, seed=seed)
    except RuntimeError as e:  # sentencepiece reports option problems as RuntimeError("INTERNAL: ...")
        text = "the text in " + train + (" (the --spm-sample-lines sample of it)" if 0 < sample < total else "")
        too_high = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", str(e))
        if too_high:
            raise DataPrepError(
                f"--vocab-size {vocab_size} is too large for {text}: sentencepiece can make at "
                f"most {too_high[1]} pieces from it; lower --vocab-size (to {too_high[1]} or less) "
                "or give more training text") from None
        too_low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(e))
        if too_low:
            raise DataPrepError(
                f"--vocab-size {vocab_size} is too small for {text}: its distinct characters "
                f"alone need {too_low[1]} pieces; raise --vocab-size to at least {too_low[1]}") from None
        raise


def _sha256(path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def stamp_key(inputs: Dict[str, Optional[str]], options: Dict[str, object]) -> Dict[str, object]:
    """What the output is a function of: the stamp's part that must match for a data-bin to be reused."""
    import fairseq
    import sentencepiece

    return {"format": STAMP_FORMAT, "inputs": {split: _sha256(path) for split, path in inputs.items()},
            "options": options, "versions": {"sentencepiece": sentencepiece.__version__, "fairseq": fairseq.__version__}}


def up_to_date(destdir: str, key: Dict[str, object]) -> bool:
    try:
        with open(os.path.join(destdir, STAMP_NAME), encoding="utf-8") as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return False
    if any(stamp.get(name) != value for name, value in key.items()):
        return False
    return all(os.path.exists(os.path.join(destdir, name)) for name in stamp.get("files", []))


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _count(n: float) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e4 else f"{n:,.0f}"


def _rate(nbytes: int, lines: int, seconds: float) -> str:
    s = max(seconds, 1e-6)
    return f"{_mb(nbytes)} in {seconds:.1f} s ({nbytes / 1e6 / s:.1f} MB/s, {_count(lines / s)} lines/s)"


def prepare_pretraining_data(destdir: str, train: str, valid: Optional[str] = None, test: Optional[str] = None, *,
                             vocab_size: int = 8000, model_type: str = "unigram", spm_model: Optional[str] = None,
                             srcdict: Optional[str] = None, spm_sample_lines: int = SPM_SAMPLE_LINES,
                             seed: int = SPM_SEED, workers: int = 1, force: bool = False,
                             progress_min_bytes: Optional[int] = PROGRESS_MIN_BYTES,
                             log: Optional[Callable[[str], None]] = stderr_log) -> str:
    """Build the data-bin; returns ``destdir``. ``spm_model`` reuses a sentencepiece model instead of
    training one on ``spm_sample_lines`` lines of ``train`` (0: all of them) chosen with ``seed``;
    ``srcdict`` reuses a dictionary instead of building it from ``train``. ``workers`` threads encode."""
    log = log or (lambda message: None)
    started = time.perf_counter()
    inputs = {"train": train, "valid": valid, "test": test}
    for split, path in inputs.items():
        if path is not None:
            check_text_file(path, f"{split} file")
    if model_type not in ("unigram", "bpe"):
        raise DataPrepError(f"--model-type must be unigram or bpe, not {model_type!r}")
    if spm_model is None and vocab_size < 1:
        raise DataPrepError(f"--vocab-size must be positive, not {vocab_size}")
    if spm_sample_lines < 0:
        raise DataPrepError(f"--spm-sample-lines must be 0 (all lines) or positive, not {spm_sample_lines}")
    if spm_model is not None:
        load_spm(spm_model)
    dictionary = load_dictionary(srcdict) if srcdict is not None else None
    if force:
        check_inputs_outside(destdir, [*inputs.values(), spm_model, srcdict])

    trained = {"vocab_size": vocab_size, "model_type": model_type, "spm_sample_lines": spm_sample_lines,
               "seed": seed, "spm_threads": SPM_THREADS}
    options = {**(trained if spm_model is None else {}), "spm_model": _sha256(spm_model), "srcdict": _sha256(srcdict)}
    key = stamp_key(inputs, options)
    if not force and up_to_date(destdir, key):
        log(f"{destdir} is up to date: its {STAMP_NAME} matches these inputs and options; nothing rebuilt")
        return destdir

    seconds, counts = {}, {}
    with atomic_directory(destdir, force=force) as build:
        work = os.path.join(build, "_work")
        os.makedirs(work)
        model = os.path.join(build, SPM_MODEL_NAME)
        if spm_model is not None:
            shutil.copyfile(spm_model, model)
        else:
            start = time.perf_counter()
            total = count_lines(train)
            used = spm_sample_lines if 0 < spm_sample_lines < total else total
            _train_spm(train, total, spm_sample_lines, model, vocab_size, model_type, seed)
            seconds["sentencepiece"] = time.perf_counter() - start
            log(f"sentencepiece: {vocab_size:,} {model_type} pieces from {used:,} of {total:,} lines of {train} "
                f"({_mb(os.path.getsize(train))}) in {seconds['sentencepiece']:.1f} s ({SPM_THREADS} threads, seed {seed})")
        table = PieceTable(load_spm(model))
        if dictionary is not None:
            with open(train, encoding="utf-8", errors="replace") as f:
                head = [line.strip() for _, line in zip(range(DICT_CHECK_LINES), f)]
            check_pieces_match((table.tokens_of(line) for line in head), dictionary, srcdict,
                               f"the first {DICT_CHECK_LINES} lines of {train}")

        encoded = {}
        for split, path in inputs.items():
            if path is not None:
                encoded[split] = encode_split(table, path, os.path.join(work, f"{split}.ids"), workers,
                                              count=split == "train" and dictionary is None,
                                              progress_min_bytes=progress_min_bytes)
                e = encoded[split]
                seconds[f"encode {split}"] = e.seconds
                log(f"encode {split}: {e.lines:,} lines, {_rate(e.bytes, e.lines, e.seconds)}; "
                    f"{_count(e.tokens)} pieces")

        start = time.perf_counter()
        if dictionary is None:
            dictionary = build_dictionary(table, encoded["train"])
        dictionary.save(os.path.join(build, "dict.txt"))
        seconds["dictionary"] = time.perf_counter() - start
        log(f"dictionary: {len(dictionary):,} symbols "
            f"({'--srcdict' if srcdict else 'counted from ' + _count(encoded['train'].tokens) + ' train pieces'}) "
            f"in {seconds['dictionary']:.1f} s")

        for split, e in encoded.items():
            start = time.perf_counter()
            unk = binarize(table, e, dictionary, os.path.join(build, split))
            seconds[f"binarize {split}"] = took = time.perf_counter() - start
            tokens = e.tokens + e.lines
            counts[split] = {"lines": e.lines, "tokens": tokens, "unk": unk, "bytes": e.bytes}
            log(f"binarize {split}: {_count(tokens)} tokens in {took:.1f} s ({_count(tokens / max(took, 1e-6))} "
                f"tokens/s), {unk:,} made <unk> ({unk / tokens:.4%})")
        shutil.rmtree(work)

        seconds["total"] = time.perf_counter() - started
        files = ["dict.txt", SPM_MODEL_NAME] + [f"{split}.{ext}" for split in encoded for ext in ("bin", "idx")]
        stamp = {**key, "paths": inputs, "files": files, "counts": counts, "workers": workers,
                 "seconds": {name: round(s, 2) for name, s in seconds.items()}}
        atomic_write_text(os.path.join(build, STAMP_NAME), json.dumps(stamp, indent=1) + "\n")
    log(f"wrote {destdir} in {seconds['total']:.1f} s")
    return destdir
