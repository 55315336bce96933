"""Raw text -> sentencepiece pieces, one line in, one line out (blank lines kept: they separate
documents for ``--sample-break-mode complete_doc``). Every file is written atomically."""

import itertools
import os
import tempfile
from typing import Iterable, Optional

from ..io import atomic_output
from .common import DataPrepError, Progress


def _check_text_file(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input text file not found: {path}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"input text file is empty: {path}")


def train_sentencepiece(inputs: Iterable[str], model_prefix: str, vocab_size: int = 8000,
                        model_type: str = "unigram", max_sentences: int = 2_000_000) -> str:
    """Train a sentencepiece model on raw text files; returns the path of ``<prefix>.model``."""
    import sentencepiece as spm

    inputs = list(inputs)
    for path in inputs:
        _check_text_file(path)
    directory = os.path.dirname(os.path.abspath(model_prefix))
    os.makedirs(directory, exist_ok=True)
    # train under a temporary prefix, then move both files into place
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        tmp_prefix = os.path.join(tmp, "spm")
        spm.SentencePieceTrainer.train(
            input=",".join(inputs),
            model_prefix=tmp_prefix,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=1.0,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            # fairseq's Dictionary adds <s>, <pad>, </s>, <unk> itself
            bos_id=-1,
            eos_id=-1,
            unk_id=0,
            minloglevel=2,
        )
        for ext in (".vocab", ".model"):  # .model last: its presence means the pair is whole
            os.replace(tmp_prefix + ext, model_prefix + ext)
    return model_prefix + ".model"


def encode_file(model: str, src: str, dst: str, progress_min_bytes: Optional[int] = None,
                batch_lines: int = 2000) -> int:
    """Encode ``src`` into space-separated pieces in ``dst``; returns the number of lines.

    With ``progress_min_bytes`` set, inputs at least that large print a percentage to stderr.
    """
    import sentencepiece as spm

    _check_text_file(src)
    processor = spm.SentencePieceProcessor(model_file=model)
    size = os.path.getsize(src)
    progress = Progress(f"encoding {src}", size, progress_min_bytes is not None and size >= progress_min_bytes)
    lines = 0
    with open(src, encoding="utf-8") as fin, atomic_output(dst, encoding="utf-8") as fout:
        while True:
            try:
                batch = [line.strip() for line in itertools.islice(fin, batch_lines)]
            except UnicodeDecodeError as e:
                raise DataPrepError(f"{src} is not UTF-8 text ({e.reason}, somewhere after line {lines})") from None
            if not batch:
                break
            # a batch is encoded on all cores; empty lines give no pieces, hence an empty line
            for pieces in processor.encode(batch, out_type=str):
                fout.write(" ".join(pieces))
                fout.write("\n")
            lines += len(batch)
            progress.update(fin.buffer.tell(), lines)  # the byte position read so far
    progress.finish(lines)
    return lines
