"""Raw text -> sentencepiece ids -> fairseq's ``dict.txt`` and ``.bin``/``.idx``, byte for byte what
``spm_encode`` + ``fairseq-preprocess --only-source`` write, without their text round trip and
per-token Python loops (``Dictionary.encode_line``, the dictionary's ``Counter.update``).

Each split is read once and encoded in batches to ids on ``threads`` threads; the ids go to a
temporary file (memory stays bounded), the train ids are counted with ``np.bincount`` for the
dictionary, and ``binarize`` maps ids to dictionary indices with a lookup array. A line whose pieces
do not map one to one onto fairseq tokens takes fairseq's own path — its pieces joined by spaces,
split by ``tokenize_line`` and looked up one by one: sentencepiece returns an unknown piece as its
surface text (consecutive unknown characters merged), which fairseq's dictionary counts like any
token, and a piece holding a character ``str.split`` treats as space (U+0085, say) splits apart.
tests/test_data_pipeline.py compares the outputs with fairseq-preprocess's.
"""

import bisect
import itertools
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .common import Progress
from .sentencepiece_text import read_batches

ENCODE_BATCH_LINES = 10_000
BINARIZE_CHUNK_LINES = 200_000


@dataclass
class EncodedSplit:
    """A split encoded to sentencepiece ids: ``ids_path`` holds them flat; a line fairseq tokenizes
    otherwise holds ``len(tokens)`` placeholder ids and its tokens are in ``text_lines``."""
    src: str
    ids_path: str
    ids_dtype: type
    lengths: np.ndarray  # tokens per line, without the eos
    text_lines: Dict[int, List[str]] = field(default_factory=dict)
    counts: Optional[np.ndarray] = None  # occurrences of each id (train only)
    bytes: int = 0
    seconds: float = 0.0

    @property
    def lines(self) -> int:
        return len(self.lengths)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())


class PieceTable:
    """What fairseq makes of each sentencepiece id: ``single[i]`` when piece ``i`` is one fairseq
    token, the piece itself; the placeholder id is the vocabulary size."""

    def __init__(self, processor):
        from fairseq.tokenizer import tokenize_line

        self.processor = processor
        self.size = processor.get_piece_size()
        self.pieces = [processor.id_to_piece(i) for i in range(self.size)]
        self.single = np.array([tokenize_line(p) == [p] and not processor.is_unknown(i)
                                for i, p in enumerate(self.pieces)] + [False])
        self.placeholder = self.size
        self.ids_dtype = np.uint16 if self.size < np.iinfo(np.uint16).max else np.int32

    def tokens_of(self, line: str) -> List[str]:
        from fairseq.tokenizer import tokenize_line

        return tokenize_line(" ".join(self.processor.encode(line, out_type=str)))


def encode_split(table: PieceTable, src: str, ids_path: str, threads: int, count: bool = False,
                 progress_min_bytes: Optional[int] = None) -> EncodedSplit:
    """Encode ``src`` to ids in ``ids_path``; ``count`` also counts each id (for the dictionary)."""
    start = time.perf_counter()
    size = os.path.getsize(src)
    progress = Progress(f"encoding {src}", size, progress_min_bytes is not None and size >= progress_min_bytes)
    split = EncodedSplit(src, ids_path, table.ids_dtype, np.zeros(0, np.int64), bytes=size)
    counts = np.zeros(table.size + 1, np.int64) if count else None
    lengths = []
    first = 0
    with open(ids_path, "wb") as out:
        for batch in read_batches(src, ENCODE_BATCH_LINES, progress):
            ids = table.processor.encode(batch, out_type=int, num_threads=threads)
            lens = np.fromiter(map(len, ids), np.int64, len(ids))
            flat = np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(lens.sum()))
            odd = ~table.single[flat]
            if odd.any():  # rare: fairseq's path for these lines, placeholders in the id stream
                for j in np.unique(np.repeat(np.arange(len(ids)), lens)[odd]).tolist():
                    split.text_lines[first + j] = table.tokens_of(batch[j])
                    ids[j] = [table.placeholder] * len(split.text_lines[first + j])
                lens = np.fromiter(map(len, ids), np.int64, len(ids))
                flat = np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(lens.sum()))
            flat.astype(table.ids_dtype).tofile(out)
            if counts is not None:
                counts += np.bincount(flat, minlength=table.size + 1)
            lengths.append(lens)
            first += len(batch)
    split.lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    split.counts = counts
    split.seconds = time.perf_counter() - start
    return split


def build_dictionary(table: PieceTable, train: EncodedSplit):
    """fairseq-preprocess's dictionary of the train split (``--only-source``, default thresholds)."""
    from fairseq.data import Dictionary

    counter = Counter()
    for i in np.flatnonzero(train.counts[:table.size]).tolist():
        counter[table.pieces[i]] += int(train.counts[i])
    for tokens in train.text_lines.values():
        counter.update(tokens)
    dictionary = Dictionary()
    counter[dictionary.eos_word] += train.lines  # fairseq counts one eos per line
    for word, n in sorted(counter.items()):  # Dictionary.add_file_to_dictionary's merge_result
        dictionary.add_symbol(word, n)
    dictionary.finalize(threshold=0, nwords=-1, padding_factor=8)
    return dictionary


def binarize(table: PieceTable, split: EncodedSplit, dictionary, prefix: str) -> int:
    """Write ``prefix.bin``/``.idx`` as fairseq-preprocess does (one eos per line, the dtype
    fairseq picks for the dictionary size); returns the number of tokens made ``<unk>``."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset, best_fitting_int_dtype

    dtype = best_fitting_int_dtype(len(dictionary))
    lookup = np.array([dictionary.index(p) if single else dictionary.unk_index
                       for p, single in zip(table.pieces, table.single.tolist())] + [dictionary.unk_index], np.int64)
    unk = 0
    text_lines = sorted(split.text_lines)
    with open(split.ids_path, "rb") as ids_file, open(prefix + ".bin", "wb") as out:
        for first in range(0, split.lines, BINARIZE_CHUNK_LINES):
            lens = split.lengths[first:first + BINARIZE_CHUNK_LINES]
            mapped = lookup[np.fromfile(ids_file, split.ids_dtype, int(lens.sum()))]
            ends = np.cumsum(lens + 1)
            chunk = np.empty(int(ends[-1]), np.int64)
            is_token = np.ones(len(chunk), bool)
            is_token[ends - 1] = False
            chunk[is_token] = mapped
            chunk[ends - 1] = dictionary.eos_index
            unk += int((mapped == dictionary.unk_index).sum())
            for line in text_lines[bisect.bisect_left(text_lines, first):bisect.bisect_left(text_lines, first + len(lens))]:
                tokens = split.text_lines[line]
                at = int(ends[line - first] - 1 - len(tokens))
                chunk[at:at + len(tokens)] = [dictionary.index(t) for t in tokens]
                unk -= len(tokens)  # counted above as placeholders; fairseq counts non-<unk> words made <unk>
                unk += sum(dictionary.index(t) == dictionary.unk_index and t != dictionary.unk_word for t in tokens)
            out.write(chunk.astype(dtype).tobytes())
    with MMapIndexedDataset.Index.writer(prefix + ".idx", dtype) as index:
        index.write((split.lengths + 1).tolist())
    return unk
