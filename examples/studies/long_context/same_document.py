"""The same-document task: which of two later parts comes from the opening's document?

A long-document classification task that the first 512 tokens cannot decide, made from a corpus of
collections (``CORPUS/<collection>/{train,valid,test}.txt[.xz]``, the pretraining layout: one
paragraph per line, a blank line between documents). Each example is three parts of at most
(N - 2) / 3 sentencepiece pieces each (1,364 for N = 4,096; at least 3/4 of that, and A longer than
the truncated variant), so that ``<s> A B1 B2 </s>`` fits N tokens:

- A, a part of a document;
- its own B: the part of A's document that begins ``gap`` pieces after A ends (default 512: no
  sentence runs on from A into it, and no 512-token span of the document holds both);
- another B: the B of a pair from another document of the same collection;

the label says which of B1 and B2 is A's own: ``first`` or ``second``. Every cut is at a word start
(a piece that begins with "▁"), so the text of an example encodes back to the same pieces. A
document gives a pair (A, its B) every ``stride`` pieces as long as A, the gap and B fit
(``train_stride`` for train, by default the pair's span: pairs do not overlap; valid and test,
whose documents are few, overlap them to reach hundreds of examples). Each pair's other B comes
from a permutation within the collection that never maps a pair to one of its own document (pairs
are grouped by document in a seeded order and each takes the B of the pair ``m`` places further, m
the largest document's count; a document with more than part of its collection's pairs has the
excess dropped, since no such permutation exists). Each pair gives two examples, ``A, own, other``
(first) and ``A, other, own`` (second), so by construction:

- the two examples of a pair hold the same pieces: any function of the bag of pieces (naive Bayes,
  logistic regression, a count of distinct pieces) gives both the same answer: 50%;
- the truncated variant (the first T tokens: the start of A) is the same under both labels: 50%;
- deciding means comparing A with B1 and B2 (which one shares the document's names and subject?),
  which only a model that reads past token T can do.

Splits are the corpus's own: valid and test examples come only from valid and test documents.
Alongside the data-bins (the layout of ``long_documents``: ``bin/window-N``, ``bin/truncated-T``,
``tsv/``, ``long_documents.json``, which ``long_documents.load_manifest`` reads), ``pairs/SPLIT.jsonl``
says where each row comes from (collection, documents, spans), and the manifest holds the counts,
the distinct documents, and CPU baselines (``cpu_baselines``). The command line is
``python -m examples.studies.long_context.prepare_same_document``.
"""

import json
import os
import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from examples.studies.long_context.long_documents import (SPECIAL_TOKENS, SPLITS, WORD_START, _OPENERS,
                                                          check_destdir, encode_documents, variant_names, window_text,
                                                          write_variants)
from linformer_plugin.data.common import (DataPrepError, check_pieces_match, check_text_file, load_dictionary,
                                          load_spm, stderr_log)
from linformer_plugin.io import atomic_write_text

TASK = "same-document"
PAIRS_DIR = "pairs"
FIRST, SECOND = "first", "second"  # which of the two later parts is from A's document
LABELS = [FIRST, SECOND]  # sorted: class i is the i-th
DICT_CHECK_PIECES = 200_000


def corpus_collections(corpus: str, names: Optional[Sequence[str]] = None) -> Dict[str, List[Tuple[str, str]]]:
    """``{split: [(collection, path)]}`` of CORPUS/<collection>/<split>.txt (or .txt.xz/.gz/.bz2);
    ``names``: those collections, in that order (default: every subdirectory with a train file, sorted)."""
    if not os.path.isdir(corpus):
        raise DataPrepError(f"--corpus {corpus} is not a directory")

    def find(name, split):
        for suffix in [""] + list(_OPENERS):
            path = os.path.join(corpus, name, f"{split}.txt{suffix}")
            if os.path.isfile(path):
                return path
        return None

    if names is None:
        names = sorted(d for d in os.listdir(corpus) if find(d, "train"))
        if len(names) < 2:
            raise DataPrepError(f"--corpus {corpus} has {len(names)} collection(s) with a train.txt[.xz]; "
                                "the task pairs documents within collections and needs at least two")
    out = {split: [] for split in SPLITS}
    for name in names:
        for split in SPLITS:
            path = find(name, split)
            if path is None:
                raise DataPrepError(f"--corpus {corpus}: collection {name!r} has no {split}.txt (or .txt.xz, "
                                    f".gz, .bz2) in {os.path.join(corpus, name)}")
            check_text_file(path, f"{split} file of {name!r}")
            out[split].append((name, path))
    return out


def word_start_table(processor) -> np.ndarray:
    """starts[id]: the piece of sentencepiece id ``id`` begins a word."""
    return np.array([processor.id_to_piece(i).startswith(WORD_START) for i in range(processor.get_piece_size())])


def pair_spans(starts: np.ndarray, part: int, gap: int, stride: int,
               min_part: int = 1) -> List[Tuple[int, int, int, int]]:
    """``(a0, a1, b0, b1)`` of each pair of a document whose pieces begin words where ``starts`` is
    true: A = [a0, a1) and B = [b0, b1), each at most ``part`` pieces, B beginning at the first word
    start at least ``gap`` pieces after A ends, a pair every ``stride`` pieces; every boundary a
    word start (or the document's end). A pair with a part shorter than ``min_part`` (a long word,
    such as a URL, at its end) is left out."""
    length = len(starts)
    positions = np.flatnonzero(starts)

    def at_or_after(i):
        k = int(np.searchsorted(positions, i, "left"))
        return int(positions[k]) if k < len(positions) else None

    def end_at(start, limit):  # the last word start in (start, limit], else limit (a word longer than a part)
        if limit >= length:
            return length
        k = int(np.searchsorted(positions, limit, "right")) - 1
        return int(positions[k]) if k >= 0 and positions[k] > start else limit

    spans = []
    for s in range(0, length, stride):
        a0 = at_or_after(s)
        if a0 is None or a0 + 2 * part + gap > length:
            break
        a1 = end_at(a0, a0 + part)
        b0 = at_or_after(a1 + gap)
        if b0 is None or b0 + part > length:
            break
        b1 = end_at(b0, b0 + part)
        if a1 - a0 >= min_part and b1 - b0 >= min_part:
            spans.append((a0, a1, b0, b1))
    return spans


def other_partners(docs: Sequence[int], rng: random.Random) -> Tuple[List[int], List[int]]:
    """For pairs from documents ``docs`` (one collection): ``(kept, partner)``: the pairs kept, and
    for each the index (into ``docs``) of the pair whose B it gets as its other B: a permutation of the
    kept pairs that never maps a pair to one of its own document. The largest document keeps at
    most half of the pairs (else no such permutation exists); the excess is dropped, seeded."""
    by_doc = {}
    for i, doc in enumerate(docs):
        by_doc.setdefault(doc, []).append(i)
    if len(by_doc) < 2:
        return [], []
    groups = list(by_doc.values())
    rng.shuffle(groups)
    for group in groups:
        rng.shuffle(group)
    total = sum(len(g) for g in groups)
    largest = max(groups, key=len)
    excess = len(largest) - (total - len(largest))
    if excess > 0:
        del largest[len(largest) - excess:]
    order = [i for group in groups for i in group]
    shift = max(len(g) for g in groups)  # <= half of the pairs: every pair lands in another document
    return order, [order[(j + shift) % len(order)] for j in range(len(order))]


class SplitPairs:
    """The pairs of one split: documents' ids (only those with pairs) and the pairs' spans."""

    def __init__(self):
        self.documents: Dict[Tuple[str, int], np.ndarray] = {}
        self.pairs: List[dict] = []  # {"collection", "doc", "span": (a0, a1, b0, b1)}
        self.stats: Dict[str, dict] = {}


def collect_pairs(processor, starts, split: str, collections: List[Tuple[str, str]], part: int, gap: int,
                  stride: int, min_part: int, max_pairs_per_document: Optional[int], seed: int, progress_min_bytes,
                  log) -> SplitPairs:
    out = SplitPairs()
    for name, path in collections:
        stats = {"documents": 0, "pieces": 0, "documents_with_pairs": 0, "pairs": 0}
        for doc, ids in enumerate(encode_documents(processor, path, f"encoding {split} {name} ({path})",
                                                   progress_min_bytes, out_type=int)):
            stats["documents"] += 1
            stats["pieces"] += len(ids)
            ids = np.asarray(ids, dtype=np.int32)
            spans = pair_spans(starts[ids], part, gap, stride, min_part)
            if max_pairs_per_document and len(spans) > max_pairs_per_document:
                rng = random.Random(f"{seed}:{split}:{name}:{doc}")
                spans = sorted(rng.sample(spans, max_pairs_per_document))
            if spans:
                out.documents[(name, doc)] = ids
                stats["documents_with_pairs"] += 1
                stats["pairs"] += len(spans)
                out.pairs += [{"collection": name, "doc": doc, "span": span} for span in spans]
        if stats["documents"] == 0:
            raise DataPrepError(f"{split} collection {name!r} has no documents (only blank lines): {path}")
        log(f"{split} {name}: {stats['documents']:,} documents, {stats['pieces']:,} pieces; "
            f"{stats['documents_with_pairs']:,} long enough give {stats['pairs']:,} pairs")
        out.stats[name] = stats
    return out


def pair_examples(split_pairs: SplitPairs, split: str, seed: int, max_pairs: Optional[int], log) -> List[dict]:
    """The split's rows, two per kept pair (``first`` then ``second``): {"label", "collection", "doc",
    "a": [a0, a1], "first": [doc, b0, b1], "second": [doc, b0, b1]}, documents by their index in the
    collection's split file."""
    pairs = split_pairs.pairs
    if max_pairs is not None and len(pairs) > max_pairs:
        chosen = sorted(random.Random(f"{seed}:{split}:sample").sample(range(len(pairs)), max_pairs))
        pairs = [pairs[i] for i in chosen]
    rows = []
    for name in split_pairs.stats:
        mine = [p for p in pairs if p["collection"] == name]
        kept, partner = other_partners([p["doc"] for p in mine], random.Random(f"{seed}:{split}:{name}:other"))
        dropped = len(mine) - len(kept)
        split_pairs.stats[name].update(kept_pairs=len(kept), dropped_pairs=dropped)
        if dropped:
            log(f"{split} {name}: {dropped} of {len(mine)} pairs dropped"
                + (" (all from one document: no other document to pair with)" if not kept else
                   " (one document held more than half of them: no other document's B for the excess)"))
        for i, j in zip(kept, partner):
            own = [mine[i]["doc"], mine[i]["span"][2], mine[i]["span"][3]]
            other = [mine[j]["doc"], mine[j]["span"][2], mine[j]["span"][3]]
            row = {"collection": name, "doc": mine[i]["doc"], "a": list(mine[i]["span"][:2])}
            rows.append(dict(row, label=FIRST, first=own, second=other))
            rows.append(dict(row, label=SECOND, first=other, second=own))
    if not rows:
        raise DataPrepError(f"{split}: no pairs (a document must hold A, the gap and B; a collection two such "
                            "documents); lower --window-tokens or --gap-tokens, or give longer documents")
    return rows


def row_parts(split_pairs: SplitPairs, row: dict) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sentencepiece ids of a row's A, B1 and B2."""
    docs = split_pairs.documents
    a0, a1 = row["a"]
    return (docs[(row["collection"], row["doc"])][a0:a1],
            *(docs[(row["collection"], row[key][0])][row[key][1]:row[key][2]] for key in (FIRST, SECOND)))


def _prefix_end(starts: np.ndarray, max_pieces: int) -> int:
    """long_documents.prefix_end on a word-start mask: at most max_pieces, ending before a word start."""
    if len(starts) <= max_pieces:
        return len(starts)
    later = np.flatnonzero(starts[1:max_pieces + 1])
    return int(later[-1]) + 1 if len(later) else max_pieces


def row_texts(processor, starts, split_pairs: SplitPairs, rows: List[dict], window_tokens: int,
              truncate_tokens: int) -> Tuple[List[bool], list]:
    """``(keep, texts)``: for each row whether its pair is kept, and for each kept row (full text, its
    tokens), (truncated text, its tokens). Texts are decoded and encoded again in batches
    (sentencepiece's threads). A pair is dropped where a row's text encodes to more than N - 2 pieces
    or the two rows to different pieces (an unknown character's " ⁇ ", a word whose segmentation
    changes with the text around it): the two rows of a pair must hold the same pieces. A truncated
    text longer than its limit is shortened a word at a time (long_documents.window_text)."""
    full = [np.concatenate(row_parts(split_pairs, row)) for row in rows]
    texts = [" ".join(t.split()) for t in processor.decode([ids.tolist() for ids in full])]
    encoded = processor.encode(texts)
    keep = []
    for i in range(0, len(rows), 2):  # rows come in pairs: A, own, other / A, other, own
        ok = (max(len(encoded[i]), len(encoded[i + 1])) <= window_tokens - SPECIAL_TOKENS
              and sorted(encoded[i]) == sorted(encoded[i + 1]))
        keep += [ok, ok]
    limit = truncate_tokens - SPECIAL_TOKENS
    kept = [i for i, ok in enumerate(keep) if ok]
    short = [full[i][:_prefix_end(starts[full[i]], limit)] for i in kept]
    short_texts = [" ".join(t.split()) for t in processor.decode([ids.tolist() for ids in short])]
    short_lengths = [len(x) for x in processor.encode(short_texts)]
    out = []
    for k, i in enumerate(kept):
        if short_lengths[k] > limit:
            short_texts[k], short_lengths[k] = window_text(processor, processor.id_to_piece(short[k].tolist()), limit)
        out.append(((texts[i], len(encoded[i]) + SPECIAL_TOKENS), (short_texts[k], short_lengths[k] + SPECIAL_TOKENS)))
    return keep, out


# ----------------------------------------------------------------------------- CPU baselines


def _accuracy(predicted, labels) -> float:
    return round(100.0 * float(np.mean(np.asarray(predicted) == np.asarray(labels))), 1)


def cpu_baselines(parts: Dict[str, Tuple[List[Tuple[np.ndarray, ...]], List[bool]]], vocab_size: int,
                  truncate_pieces: int) -> dict:
    """What simple non-neural models get, fitted on train only (accuracy %):

    - ``naive_bayes`` / ``naive_bayes_truncated``: multinomial naive Bayes, add-one smoothing, on the
      piece counts of the whole example / of its first ``truncate_pieces`` pieces (50% by
      construction: the two rows of a pair hold the same pieces, and begin the same);
    - ``overlap``: the B that shares more of A's vocabulary (B's distinct pieces that occur in A,
      each weighted by its idf over the train parts, as a share of B's) is A's own: a long-input
      heuristic that shows the answer is in the text.

    ``parts[split]`` = ([(A, B1, B2) ids], [B1 is A's own]); train must be present."""
    train_parts, train_labels = parts["train"]
    document_frequency = np.zeros(vocab_size)
    for row in train_parts[::2]:  # each pair's parts once (its second row holds the same)
        for ids in row:
            document_frequency[np.unique(ids)] += 1
    idf = np.log((3 * len(train_parts[::2]) + 1) / (document_frequency + 1))

    def overlap(a, b):
        b_types = np.unique(b)
        return float(idf[b_types[np.isin(b_types, a)]].sum() / idf[b_types].sum())

    result = {}
    for name, prefix in (("naive_bayes", None), ("naive_bayes_truncated", truncate_pieces)):
        counts = np.ones((2, vocab_size))
        for row, first in zip(train_parts, train_labels):
            counts[int(first)] += np.bincount(np.concatenate(row)[:prefix], minlength=vocab_size)
        log_ratio = np.log(counts[1] / counts[1].sum()) - np.log(counts[0] / counts[0].sum())  # balanced labels
        result[name] = {split: _accuracy([log_ratio[np.concatenate(row)[:prefix]].sum() > 0 for row in rows], labels)
                        for split, (rows, labels) in parts.items()}
    result["overlap"] = {split: _accuracy([overlap(a, b1) > overlap(a, b2) for a, b1, b2 in rows], labels)
                         for split, (rows, labels) in parts.items()}
    return result


# ----------------------------------------------------------------------------- the whole


def _distinct_documents(rows: List[dict]) -> dict:
    a_docs = {(r["collection"], r["doc"]) for r in rows}
    all_docs = a_docs | {(r["collection"], r[key][0]) for r in rows for key in (FIRST, SECOND)}
    per_doc = {}
    for r in rows:
        per_doc[(r["collection"], r["doc"])] = per_doc.get((r["collection"], r["doc"]), 0) + 1
    return {"documents": len(all_docs), "a_documents": len(a_docs), "largest_document_rows": max(per_doc.values()),
            "rows_per_a_document": round(len(rows) / len(a_docs), 1)}


def build_same_document(collections: Dict[str, List[Tuple[str, str]]], *, spm_model: str, dictionary: str,
                        window_tokens: int = 4096, truncate_tokens: int = 512, gap_tokens: int = 512,
                        stride: int = 1024, train_stride: Optional[int] = None, max_train_pairs: Optional[int] = None,
                        max_pairs_per_document: Optional[int] = 16, seed: int = 1, baselines: bool = True,
                        progress_min_bytes: Optional[int] = None,
                        log: Optional[Callable[[str], None]] = stderr_log) -> Tuple[dict, dict, dict]:
    """The checks, pairs, rows and baselines, without writing anything: ``(manifest, rows, meta)``
    with ``rows[variant][split]`` a list of (text, label) and ``meta[split]`` the rows' origins."""
    log = log or (lambda message: None)
    part = (window_tokens - SPECIAL_TOKENS) // 3
    if truncate_tokens <= SPECIAL_TOKENS:
        raise DataPrepError(f"--truncate-tokens {truncate_tokens} leaves no room for text beside <s> and </s>")
    if part < truncate_tokens:
        raise DataPrepError(f"--window-tokens {window_tokens} gives parts of {part} pieces, fewer than "
                            f"--truncate-tokens {truncate_tokens}: the truncated variant must see part A only; "
                            f"use at least {3 * truncate_tokens + SPECIAL_TOKENS}")
    for flag, value in (("--gap-tokens", gap_tokens), ("--stride", stride), ("--train-stride", train_stride),
                        ("--max-train-pairs", max_train_pairs), ("--max-pairs-per-document", max_pairs_per_document)):
        if value is not None and (value < 0 if flag == "--gap-tokens" else value < 1):
            raise DataPrepError(f"{flag} must be {'>= 0' if flag == '--gap-tokens' else 'positive'}, not {value}")
    if "train" not in collections or not collections["train"]:
        raise DataPrepError("the task needs a train split")
    train_stride = train_stride or 2 * part + gap_tokens
    # parts of at least 3/4 of their length, and A longer than the truncated variant: it sees A only
    min_part = max(3 * part // 4, truncate_tokens - SPECIAL_TOKENS + 1)
    processor = load_spm(spm_model)
    vocab = load_dictionary(dictionary)
    starts = word_start_table(processor)

    names = variant_names(window_tokens, truncate_tokens)
    options = {"window_tokens": window_tokens, "truncate_tokens": truncate_tokens, "gap_tokens": gap_tokens,
               "part_pieces": part, "min_part_pieces": min_part, "stride": stride, "train_stride": train_stride,
               "max_train_pairs": max_train_pairs, "max_pairs_per_document": max_pairs_per_document, "seed": seed}
    manifest = {
        "task": TASK, **options, "labels": LABELS,
        "collections_labels": [name for name, _ in collections["train"]],
        "variants": {key: {"name": name, "data": f"bin/{name}", "tsv": f"tsv/{name}",
                           "max_tokens": window_tokens if key == "window" else truncate_tokens}
                     for key, name in names.items()},
        "inputs": {split: dict(c) for split, c in collections.items()},
        "collections": {}, "examples": {}, "documents": {},
    }
    rows = {key: {} for key in names}
    meta, parts = {}, {}
    for split in SPLITS:
        if not collections.get(split):
            continue
        split_pairs = collect_pairs(processor, starts, split, collections[split], part, gap_tokens,
                                    train_stride if split == "train" else stride, min_part, max_pairs_per_document,
                                    seed, progress_min_bytes, log)
        if split == "train":
            sample = (p for ids in split_pairs.documents.values() for p in processor.id_to_piece(ids[:10_000].tolist()))
            check_pieces_match([[p for _, p in zip(range(DICT_CHECK_PIECES), sample)]], vocab, dictionary,
                               "the first train documents")
        split_rows = pair_examples(split_pairs, split, seed, max_train_pairs if split == "train" else None, log)
        manifest["collections"][split] = split_pairs.stats
        keep, texts = row_texts(processor, starts, split_pairs, split_rows, window_tokens, truncate_tokens)
        if not all(keep):
            log(f"{split}: {keep.count(False) // 2} pairs dropped: their text encodes to other pieces than they "
                "were cut from, or longer (unknown characters, or a word segmented otherwise in another context)")
        split_rows = [row for row, ok in zip(split_rows, keep) if ok]
        for row, ((_, full_len), _) in zip(split_rows, texts):
            row["tokens"] = full_len
        meta[split] = split_rows
        counts = {}
        for k, key in enumerate(("window", "truncated")):
            rows[key][split] = [(t[k][0], row["label"]) for t, row in zip(texts, split_rows)]
            lengths = [t[k][1] for t in texts]
            counts[key] = {"mean_tokens": round(sum(lengths) / len(lengths), 1), "max_tokens": max(lengths),
                           "min_tokens": min(lengths)}
        per_class = {label: sum(r["label"] == label for r in split_rows) for label in LABELS}
        manifest["examples"][split] = {"per_class": per_class, "total": len(split_rows), "tokens": counts,
                                       "dropped_pairs_reencoded": keep.count(False) // 2,
                                       "per_collection": {name: sum(r["collection"] == name for r in split_rows)
                                                          for name in split_pairs.stats}}
        manifest["documents"][split] = _distinct_documents(split_rows)
        if baselines:
            parts[split] = ([row_parts(split_pairs, r) for r in split_rows], [r["label"] == FIRST for r in split_rows])
        log(f"{split}: {len(split_rows):,} examples ({per_class[FIRST]:,} first, {per_class[SECOND]:,} second), A from "
            f"{manifest['documents'][split]['a_documents']:,} documents, "
            f"mean {counts['window']['mean_tokens']:.0f} tokens")
    if baselines:
        manifest["baselines"] = cpu_baselines(parts, len(starts), truncate_tokens - SPECIAL_TOKENS)
        log("CPU baselines (accuracy %): " + "; ".join(
            f"{name} " + ", ".join(f"{split} {acc}" for split, acc in r.items())
            for name, r in manifest["baselines"].items()))
    return manifest, rows, meta


def prepare_same_document(destdir: str, collections: Dict[str, List[Tuple[str, str]]], *, spm_model: str,
                          dictionary: str, workers: int = 1, force: bool = False, keep_tsv: bool = True,
                          log: Optional[Callable[[str], None]] = stderr_log, **options) -> dict:
    """Build destdir (see the module docstring); returns the manifest written to destdir/long_documents.json.
    ``options``: build_same_document's."""
    log = log or (lambda message: None)
    check_destdir(destdir, force, [p for c in collections.values() for _, p in c] + [spm_model, dictionary])
    manifest, rows, meta = build_same_document(collections, spm_model=spm_model, dictionary=dictionary, log=log,
                                               **options)

    def write_pairs(build):
        for split, split_meta in meta.items():
            atomic_write_text(os.path.join(build, PAIRS_DIR, f"{split}.jsonl"),
                              "".join(json.dumps(r) + "\n" for r in split_meta))

    write_variants(destdir, manifest, rows, spm_model=spm_model, dictionary=dictionary, workers=workers,
                   force=force, keep_tsv=keep_tsv, labels=LABELS, write_extra=write_pairs, log=log)
    return manifest


def read_pairs(directory: str, split: str) -> List[dict]:
    """The rows' origins of a prepare_same_document output, in the data-bin's row order."""
    with open(os.path.join(directory, PAIRS_DIR, f"{split}.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def cluster_of(row: dict) -> str:
    """The unit a bootstrap resamples: A's document (rows of one document are correlated)."""
    return f"{row['collection']}:{row['doc']}"

