"""Raw text <-> sentencepiece: training on a deterministic sample of lines, and reading text in
batches (blank lines kept: they separate documents for ``--sample-break-mode complete_doc``).

The model is a function of the text and the options alone, the same on every machine and byte for
byte: the sample is chosen here with a seeded ``random.Random`` and kept in file order, sentencepiece
reads it from an iterator (no path is recorded in the model) and neither samples nor shuffles
(``input_sentence_size=0``), its seed is fixed, and it trains with a fixed number of threads — the unigram trainer's result depends on ``num_threads`` (its E-step sums per-thread
partial counts), not on the number of cores. 16 is sentencepiece's own default, so a corpus no
larger than the sample gets the model the earlier pipeline trained.
"""

import io
import itertools
import os
import random
from typing import Iterable, Iterator, List, Optional

from ..io import atomic_output
from .common import DataPrepError, Progress

SPM_THREADS = 16
SPM_SEED = 1
SPM_SAMPLE_LINES = 400_000


def _check_text_file(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input text file not found: {path}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"input text file is empty: {path}")


def count_lines(path: str) -> int:
    """Lines as training_lines reads them (split on \\n; a last line without one counts)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def training_lines(path: str, total: int, sample: int = 0, seed: int = SPM_SEED) -> Iterator[str]:
    """The lines of ``path`` (``total`` of them) sentencepiece trains on: all, or when ``0 < sample <
    total`` that many chosen with ``random.Random(seed)``, in file order."""
    chosen = sorted(random.Random(seed).sample(range(total), sample)) if 0 < sample < total else range(total)
    keep = iter(chosen)
    wanted = next(keep, None)
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            if i != wanted:
                continue
            line = line[:-1] if line.endswith(b"\n") else line
            try:  # as sentencepiece's own file reader: split on \n, a \r before it dropped
                yield (line[:-1] if line.endswith(b"\r") else line).decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataPrepError(f"{path}, line {i + 1}: not UTF-8 text ({e.reason})") from None
            wanted = next(keep, None)
            if wanted is None:
                break


def train_sentencepiece(sentences: Iterable[str], model: str, vocab_size: int = 8000, model_type: str = "unigram",
                        threads: int = SPM_THREADS, seed: int = SPM_SEED) -> str:
    """Train a sentencepiece model on ``sentences`` (every one: they are the sample) and write it to
    ``model``, atomically; returns ``model``. Given as an iterator, no file path enters the model."""
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        input_sentence_size=0,  # every sentence given
        shuffle_input_sentence=False,
        num_threads=threads,
        # fairseq's Dictionary adds <s>, <pad>, </s>, <unk> itself
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        minloglevel=2,
    )
    with atomic_output(model, "wb") as f:
        f.write(buffer.getvalue())
    return model


def read_batches(src: str, batch_lines: int, progress: Optional[Progress] = None) -> Iterator[List[str]]:
    """Stripped lines of ``src`` in batches, read as Python text files read them (universal
    newlines), which is how fairseq-preprocess and the pieces files have always split them."""
    lines = 0
    with open(src, encoding="utf-8") as fin:
        while True:
            try:
                batch = [line.strip() for line in itertools.islice(fin, batch_lines)]
            except UnicodeDecodeError as e:
                raise DataPrepError(f"{src} is not UTF-8 text ({e.reason}, somewhere after line {lines})") from None
            if not batch:
                break
            yield batch
            lines += len(batch)
            if progress is not None:
                progress.update(fin.buffer.tell(), lines)  # the byte position read so far
    if progress is not None:
        progress.finish(lines)


def encode_file(model: str, src: str, dst: str, progress_min_bytes: Optional[int] = None,
                batch_lines: int = 2000) -> int:
    """Encode ``src`` into space-separated pieces in ``dst`` (what ``spm_encode`` writes); returns the
    number of lines. With ``progress_min_bytes`` set, inputs at least that large print a percentage."""
    import sentencepiece as spm

    _check_text_file(src)
    processor = spm.SentencePieceProcessor(model_file=model)
    size = os.path.getsize(src)
    progress = Progress(f"encoding {src}", size, progress_min_bytes is not None and size >= progress_min_bytes)
    lines = 0
    with atomic_output(dst, encoding="utf-8") as fout:
        for batch in read_batches(src, batch_lines, progress):
            # a batch is encoded on all cores; empty lines give no pieces, hence an empty line
            for pieces in processor.encode(batch, out_type=str):
                fout.write(" ".join(pieces))
                fout.write("\n")
            lines += len(batch)
    return lines
