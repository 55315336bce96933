"""Raw text -> sentencepiece -> fairseq-preprocess --only-source: a masked-LM data-bin.

destdir gets ``dict.txt``, ``{train,valid,test}.{bin,idx}``, ``preprocess.log`` and the sentencepiece
model as ``sentencepiece.bpe.model`` (the name fairseq's hub loader looks for). It is built in a
temporary sibling directory and renamed into place only when whole.
"""

import os
import re
import shutil
from typing import Callable, Optional

from ..io import atomic_directory
from .common import (PROGRESS_MIN_BYTES, SPM_MODEL_NAME, DataPrepError, check_inputs_outside, check_pieces_match,
                     check_text_file, load_dictionary, load_spm, run_preprocess, stderr_log)
from .sentencepiece_text import encode_file, train_sentencepiece

SPLITS = ("train", "valid", "test")
DICT_CHECK_LINES = 1000


def _train_spm(train: str, prefix: str, vocab_size: int, model_type: str) -> str:
    try:
        return train_sentencepiece([train], prefix, vocab_size=vocab_size, model_type=model_type)
    except RuntimeError as e:  # sentencepiece reports option problems as RuntimeError("INTERNAL: ...")
        too_high = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", str(e))
        if too_high:
            raise DataPrepError(
                f"--vocab-size {vocab_size} is too large for the text in {train}: sentencepiece can make at "
                f"most {too_high[1]} pieces from it; lower --vocab-size (to {too_high[1]} or less) "
                "or give more training text") from None
        too_low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(e))
        if too_low:
            raise DataPrepError(
                f"--vocab-size {vocab_size} is too small for the text in {train}: its distinct characters "
                f"alone need {too_low[1]} pieces; raise --vocab-size to at least {too_low[1]}") from None
        raise


def prepare_pretraining_data(destdir: str, train: str, valid: Optional[str] = None, test: Optional[str] = None, *,
                             vocab_size: int = 8000, model_type: str = "unigram", spm_model: Optional[str] = None,
                             srcdict: Optional[str] = None, workers: int = 1, force: bool = False,
                             progress_min_bytes: Optional[int] = PROGRESS_MIN_BYTES,
                             log: Optional[Callable[[str], None]] = stderr_log) -> str:
    """Build the data-bin; returns ``destdir``. ``spm_model`` reuses a sentencepiece model instead of
    training one on ``train``; ``srcdict`` reuses a dictionary instead of building it from ``train``."""
    log = log or (lambda message: None)
    inputs = {"train": train, "valid": valid, "test": test}
    for split, path in inputs.items():
        if path is not None:
            check_text_file(path, f"{split} file")
    if model_type not in ("unigram", "bpe"):
        raise DataPrepError(f"--model-type must be unigram or bpe, not {model_type!r}")
    if spm_model is None and vocab_size < 1:
        raise DataPrepError(f"--vocab-size must be positive, not {vocab_size}")
    if spm_model is not None:
        load_spm(spm_model)
    dictionary = load_dictionary(srcdict) if srcdict is not None else None
    if force:
        check_inputs_outside(destdir, [*inputs.values(), spm_model, srcdict])

    with atomic_directory(destdir, force=force) as build:
        model = os.path.join(build, SPM_MODEL_NAME)
        if spm_model is not None:
            shutil.copyfile(spm_model, model)
        else:
            log(f"training a {model_type} sentencepiece model ({vocab_size} pieces) on {train}")
            _train_spm(train, model[: -len(".model")], vocab_size, model_type)

        work = os.path.join(build, "_pieces")
        encoded = {}
        for split, path in inputs.items():
            if path is not None:
                encoded[split] = os.path.join(work, split)
                lines = encode_file(model, path, encoded[split], progress_min_bytes=progress_min_bytes)
                log(f"encoded {path}: {lines:,} lines")
        if dictionary is not None:
            with open(encoded["train"], encoding="utf-8") as f:
                head = (line.split() for _, line in zip(range(DICT_CHECK_LINES), f))
                check_pieces_match(head, dictionary, srcdict, f"the first {DICT_CHECK_LINES} lines of {train}")

        args = ["--only-source", "--destdir", build, "--workers", str(workers)]
        for split, path in encoded.items():
            args += [f"--{split}pref", path]
        if srcdict is not None:
            args += ["--srcdict", srcdict]
        run_preprocess({"text": args}, log=log)
        shutil.rmtree(work)
    log(f"wrote {destdir}")
    return destdir
