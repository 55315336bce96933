"""The same-document task: are the two parts of an example taken from one document?

A long-document classification task that the first 512 tokens cannot decide, made from a corpus of
collections (``CORPUS/<collection>/{train,valid,test}.txt[.xz]``, the pretraining layout: one
paragraph per line, a blank line between documents). Each example is a part A of a document followed
by a part B, each of at most (N - 2) / 2 sentencepiece pieces (2,047 for N = 4,096; at least 3/4 of
that, and A longer than the truncated variant), so that ``<s> A B </s>`` fits N tokens:

- ``same``: B is the part of A's document that begins ``gap`` pieces after A ends (default 512: no
  sentence runs on from A into B, and no 512-token span of the document holds both);
- ``other``: B is the B of a pair from another document of the same collection.

Every cut is at a word start (a piece that begins with "▁"), so the text of an example encodes back
to the same pieces. A document gives a pair every ``stride`` pieces as long as A, the gap and B fit
(``train_stride`` for train, by default the pair's span: pairs do not overlap; valid and test,
whose documents are few, overlap them to reach hundreds of examples). Each pair gives two examples,
one per label: A + its own B, and A + the B of the pair that a permutation within the collection
assigns to it, never one of the same document (pairs are grouped by document in a seeded order and
each takes the B of the pair ``m`` places further, m the largest document's count; a document with
more than half of its collection's pairs has the excess dropped, since no such permutation exists).
So every A and every B occurs once under each label, and by construction:

- the truncated variant (the first T tokens: the start of A) holds every input once as ``same`` and
  once as ``other``: no classifier of it beats 50%;
- over a split the two labels have the same piece counts, so the class-conditional distributions of
  a bag-of-pieces naive Bayes are identical: it predicts one class for everything (50%);
- deciding means comparing A with B (do they share the document's names and subject?), which only a
  model that reads past token T can do.

Splits are the corpus's own: valid and test examples come only from valid and test documents.
Alongside the data-bins (the layout of ``long_documents``: ``bin/window-N``, ``bin/truncated-T``,
``tsv/``, ``long_documents.json``, which ``long_documents.load_manifest`` reads), ``pairs/SPLIT.jsonl``
says where each row comes from (collection, documents, spans), and the manifest holds the counts,
the distinct documents, and three CPU baselines (``cpu_baselines``). The command line is
``python -m examples.studies.long_context.prepare_same_document``.
"""

import json
import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from examples.studies.long_context.long_documents import (MANIFEST, OTHER, SAME, SPECIAL_TOKENS, SPLITS, WORD_START,
                                                          _OPENERS, _write_tsv, encode_documents, prefix_end,
                                                          variant_names, window_text)
from linformer_plugin.data.classification import prepare_classification_data
from linformer_plugin.data.common import (DataPrepError, check_inputs_outside, check_pieces_match, check_text_file,
                                          load_dictionary, load_spm, stderr_log)
from linformer_plugin.io import atomic_directory, atomic_write_text

TASK = "same-document"
PAIRS_DIR = "pairs"
LABELS = [OTHER, SAME]  # sorted: class 0 = other, class 1 = same
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


def pair_spans(starts: np.ndarray, half: int, gap: int, stride: int, min_part: int = 1) -> List[Tuple[int, int, int, int]]:
    """``(a0, a1, b0, b1)`` of each pair of a document whose pieces begin words where ``starts`` is
    true: A = [a0, a1) and B = [b0, b1), each at most ``half`` pieces, B beginning at the first word
    start at least ``gap`` pieces after A ends, a pair every ``stride`` pieces; every boundary a
    word start (or the document's end). A pair with a part shorter than ``min_part`` (a long word,
    such as a URL, at its end) is left out."""
    length = len(starts)
    positions = np.flatnonzero(starts)

    def at_or_after(i):
        k = int(np.searchsorted(positions, i, "left"))
        return int(positions[k]) if k < len(positions) else None

    def end_at(start, limit):  # the last word start in (start, limit], else limit (a word longer than half)
        if limit >= length:
            return length
        k = int(np.searchsorted(positions, limit, "right")) - 1
        return int(positions[k]) if k >= 0 and positions[k] > start else limit

    spans = []
    for s in range(0, length, stride):
        a0 = at_or_after(s)
        if a0 is None or a0 + 2 * half + gap > length:
            break
        a1 = end_at(a0, a0 + half)
        b0 = at_or_after(a1 + gap)
        if b0 is None or b0 + half > length:
            break
        b1 = end_at(b0, b0 + half)
        if a1 - a0 >= min_part and b1 - b0 >= min_part:
            spans.append((a0, a1, b0, b1))
    return spans


def other_partners(docs: Sequence[int], rng: random.Random) -> Tuple[List[int], List[int]]:
    """For pairs from documents ``docs`` (one collection): ``(kept, partner)``: the pairs kept, and
    for each the index (into ``docs``) of the pair whose B it gets as ``other``: a permutation of the
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


def collect_pairs(processor, starts, split: str, collections: List[Tuple[str, str]], half: int, gap: int,
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
            spans = pair_spans(starts[ids], half, gap, stride, min_part)
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
    """The split's rows, two per kept pair (``same`` then ``other``): {"label", "collection", "doc",
    "b_doc", "a": [a0, a1], "b": [b0, b1]}, documents by their index in the collection's split file."""
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
                   " (one document held more than half: the other label needs another document's B)"))
        for i, j in zip(kept, partner):
            a, b, other = mine[i]["span"], mine[i]["span"], mine[j]["span"]
            rows.append({"label": SAME, "collection": name, "doc": mine[i]["doc"], "b_doc": mine[i]["doc"],
                         "a": [a[0], a[1]], "b": [b[2], b[3]]})
            rows.append({"label": OTHER, "collection": name, "doc": mine[i]["doc"], "b_doc": mine[j]["doc"],
                         "a": [a[0], a[1]], "b": [other[2], other[3]]})
    if not rows:
        raise DataPrepError(f"{split}: no pairs (a document must hold A, the gap and B; a collection two such "
                            "documents); lower --window-tokens or --gap-tokens, or give longer documents")
    return rows


def row_parts(split_pairs: SplitPairs, row: dict) -> Tuple[np.ndarray, np.ndarray]:
    """The sentencepiece ids of a row's A and B."""
    a0, a1 = row["a"]
    b0, b1 = row["b"]
    return (split_pairs.documents[(row["collection"], row["doc"])][a0:a1],
            split_pairs.documents[(row["collection"], row["b_doc"])][b0:b1])


def row_texts(processor, split_pairs: SplitPairs, rows: List[dict], window_tokens: int, truncate_tokens: int):
    """(full text, its tokens), (truncated text, its tokens) of each row."""
    out = []
    for row in rows:
        a, b = row_parts(split_pairs, row)
        pieces = processor.id_to_piece(np.concatenate([a, b]).tolist())
        full, full_len = window_text(processor, pieces, window_tokens - SPECIAL_TOKENS)
        prefix = pieces[:prefix_end(pieces, truncate_tokens - SPECIAL_TOKENS)]
        short, short_len = window_text(processor, prefix, truncate_tokens - SPECIAL_TOKENS)
        out.append(((full, full_len + SPECIAL_TOKENS), (short, short_len + SPECIAL_TOKENS)))
    return out


# ----------------------------------------------------------------------------- CPU baselines


def _accuracy(predicted, labels) -> float:
    return round(100.0 * float(np.mean(np.asarray(predicted) == np.asarray(labels))), 1)


def _fit_threshold(scores, labels, same_above: bool) -> float:
    """The threshold on ``scores`` that classifies the training rows best (``same`` above it, or below)."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    order = np.argsort(scores)
    s, y = scores[order], labels[order] if same_above else ~labels[order]
    # predicting "same" for rows past position i: correct = negatives up to i + positives after i
    negatives_before = np.concatenate([[0], np.cumsum(~y)])
    positives_after = y.sum() - np.concatenate([[0], np.cumsum(y)])
    best = int(np.argmax(negatives_before + positives_after))
    cuts = np.concatenate([[s[0] - 1], (s[:-1] + s[1:]) / 2, [s[-1] + 1]])
    return float(cuts[best])


def cpu_baselines(parts: Dict[str, Tuple[List[Tuple[np.ndarray, np.ndarray]], List[bool]]], vocab_size: int,
                  truncate_pieces: int) -> dict:
    """What simple non-neural models get, fitted on train only, on valid and test (accuracy %):

    - ``naive_bayes`` / ``naive_bayes_truncated``: multinomial naive Bayes, add-one smoothing, on the
      piece counts of the whole example / of its first ``truncate_pieces`` pieces;
    - ``distinct_pieces``: the number of distinct pieces in the example (A and B of one document share
      more of them), a threshold fitted on train: a bag-of-pieces statistic, no positions;
    - ``overlap``: how much of B's vocabulary occurs in A, each distinct piece weighted by its idf over
      the train parts (As and Bs), a threshold fitted on train: a long-input heuristic that shows the
      answer is in the text.

    ``parts[split]`` = ([(A ids, B ids)], [is same]); train must be present."""
    train_parts, train_labels = parts["train"]
    document_frequency = np.zeros(vocab_size)
    for a, b in train_parts:
        document_frequency[np.unique(a)] += 1
        document_frequency[np.unique(b)] += 1
    idf = np.log((2 * len(train_parts) + 1) / (document_frequency + 1))

    def overlap(a, b):
        b_types = np.unique(b)
        shared = np.isin(b_types, a, assume_unique=False)
        return float(idf[b_types[shared]].sum() / idf[b_types].sum())

    def distinct(a, b):
        return len(np.unique(np.concatenate([a, b])))

    def counts(rows, prefix):
        out = np.zeros((2, vocab_size))
        for (a, b), same in rows:
            ids = np.concatenate([a, b])[:prefix] if prefix else np.concatenate([a, b])
            out[int(same)] += np.bincount(ids, minlength=vocab_size)
        return out

    result = {}
    for name, prefix in (("naive_bayes", None), ("naive_bayes_truncated", truncate_pieces)):
        c = counts(zip(train_parts, train_labels), prefix) + 1.0
        log_ratio = np.log(c[1] / c[1].sum()) - np.log(c[0] / c[0].sum())  # equal priors: balanced labels
        record = {}
        for split, (rows, labels) in parts.items():
            scores = [log_ratio[np.concatenate([a, b])[:prefix] if prefix else np.concatenate([a, b])].sum()
                      for a, b in rows]
            # a score of exactly 0 (identical class-conditionals) is a tie: "other", class 0
            record[split] = _accuracy([s > 1e-9 for s in scores], labels)
        result[name] = record
    for name, score, same_above in (("distinct_pieces", distinct, False), ("overlap", overlap, True)):
        train_scores = [score(a, b) for a, b in train_parts]
        threshold = _fit_threshold(train_scores, train_labels, same_above)
        record = {"threshold": round(threshold, 4)}
        for split, (rows, labels) in parts.items():
            scores = train_scores if split == "train" else [score(a, b) for a, b in rows]
            record[split] = _accuracy([(s > threshold) == same_above for s in scores], labels)
        result[name] = record
    return result


# ----------------------------------------------------------------------------- the whole


def _distinct_documents(rows: List[dict]) -> dict:
    a_docs = {(r["collection"], r["doc"]) for r in rows}
    all_docs = a_docs | {(r["collection"], r["b_doc"]) for r in rows}
    per_doc = {}
    for r in rows:
        per_doc[(r["collection"], r["doc"])] = per_doc.get((r["collection"], r["doc"]), 0) + 1
    return {"documents": len(all_docs), "largest_document_rows": max(per_doc.values()),
            "rows_per_document": round(len(rows) / len(a_docs), 1)}


def build_same_document(collections: Dict[str, List[Tuple[str, str]]], *, spm_model: str, dictionary: str,
                        window_tokens: int = 4096, truncate_tokens: int = 512, gap_tokens: int = 512,
                        stride: int = 1024, train_stride: Optional[int] = None, max_train_pairs: Optional[int] = None,
                        max_pairs_per_document: Optional[int] = 16, seed: int = 1, baselines: bool = True,
                        progress_min_bytes: Optional[int] = None,
                        log: Optional[Callable[[str], None]] = stderr_log) -> Tuple[dict, dict, dict]:
    """The checks, pairs, rows and baselines, without writing anything: ``(manifest, rows, meta)``
    with ``rows[variant][split]`` a list of (text, label) and ``meta[split]`` the rows' origins."""
    log = log or (lambda message: None)
    half = (window_tokens - SPECIAL_TOKENS) // 2
    if truncate_tokens <= SPECIAL_TOKENS:
        raise DataPrepError(f"--truncate-tokens {truncate_tokens} leaves no room for text beside <s> and </s>")
    if half < truncate_tokens:
        raise DataPrepError(f"--window-tokens {window_tokens} gives parts of {half} pieces, fewer than --truncate-tokens "
                            f"{truncate_tokens}: the truncated variant must see part A only; use at least "
                            f"{2 * truncate_tokens + SPECIAL_TOKENS}")
    for flag, value in (("--gap-tokens", gap_tokens), ("--stride", stride), ("--train-stride", train_stride),
                        ("--max-train-pairs", max_train_pairs), ("--max-pairs-per-document", max_pairs_per_document)):
        if value is not None and (value < 0 if flag == "--gap-tokens" else value < 1):
            raise DataPrepError(f"{flag} must be {'>= 0' if flag == '--gap-tokens' else 'positive'}, not {value}")
    if "train" not in collections or not collections["train"]:
        raise DataPrepError("the task needs a train split")
    train_stride = train_stride or 2 * half + gap_tokens
    # parts of at least 3/4 of their length, and A longer than the truncated variant: it sees A only
    min_part = max(3 * half // 4, truncate_tokens - SPECIAL_TOKENS + 1)
    processor = load_spm(spm_model)
    vocab = load_dictionary(dictionary)
    starts = word_start_table(processor)

    names = variant_names(window_tokens, truncate_tokens)
    options = {"window_tokens": window_tokens, "truncate_tokens": truncate_tokens, "gap_tokens": gap_tokens,
               "part_pieces": half, "min_part_pieces": min_part, "stride": stride, "train_stride": train_stride,
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
        split_pairs = collect_pairs(processor, starts, split, collections[split], half, gap_tokens,
                                    train_stride if split == "train" else stride, min_part, max_pairs_per_document,
                                    seed, progress_min_bytes, log)
        if split == "train":
            sample = (p for ids in split_pairs.documents.values() for p in processor.id_to_piece(ids[:10_000].tolist()))
            check_pieces_match([[p for _, p in zip(range(DICT_CHECK_PIECES), sample)]], vocab, dictionary,
                               "the first train documents")
        split_rows = pair_examples(split_pairs, split, seed, max_train_pairs if split == "train" else None, log)
        manifest["collections"][split] = split_pairs.stats
        texts = row_texts(processor, split_pairs, split_rows, window_tokens, truncate_tokens)
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
                                       "per_collection": {name: sum(r["collection"] == name for r in split_rows)
                                                          for name in split_pairs.stats}}
        manifest["documents"][split] = _distinct_documents(split_rows)
        if baselines:
            parts[split] = ([row_parts(split_pairs, r) for r in split_rows], [r["label"] == SAME for r in split_rows])
        log(f"{split}: {len(split_rows):,} examples ({per_class[SAME]:,} same, {per_class[OTHER]:,} other) from "
            f"{manifest['documents'][split]['documents']:,} documents, mean {counts['window']['mean_tokens']:.0f} tokens")
    if baselines:
        manifest["baselines"] = cpu_baselines(parts, len(starts), truncate_tokens - SPECIAL_TOKENS)
        log("CPU baselines (accuracy %): " + "; ".join(
            f"{name} " + ", ".join(f"{split} {acc}" for split, acc in r.items() if split != "threshold")
            for name, r in manifest["baselines"].items()))
    return manifest, rows, meta


def prepare_same_document(destdir: str, collections: Dict[str, List[Tuple[str, str]]], *, spm_model: str,
                          dictionary: str, workers: int = 1, force: bool = False, keep_tsv: bool = True,
                          log: Optional[Callable[[str], None]] = stderr_log, **options) -> dict:
    """Build destdir (see the module docstring); returns the manifest written to destdir/long_documents.json.
    ``options``: build_same_document's."""
    log = log or (lambda message: None)
    if not force and os.path.isdir(destdir) and os.listdir(destdir):  # before the slow part; checked again
        raise FileExistsError(f"{destdir} already exists and is not empty; pass --force to replace it")
    if force:
        check_inputs_outside(destdir, [p for c in collections.values() for _, p in c] + [spm_model, dictionary])
    manifest, rows, meta = build_same_document(collections, spm_model=spm_model, dictionary=dictionary, log=log,
                                               **options)
    names = {key: variant["name"] for key, variant in manifest["variants"].items()}
    with atomic_directory(destdir, force=force) as build:
        tsv_paths = {}
        for key, name in names.items():
            tsv_paths[key] = {}
            for split, split_rows in rows[key].items():
                tsv_paths[key][split] = os.path.join(build, "tsv", name, f"{split}.tsv")
                os.makedirs(os.path.dirname(tsv_paths[key][split]), exist_ok=True)
                _write_tsv(tsv_paths[key][split], split_rows)
        for split, split_meta in meta.items():
            atomic_write_text(os.path.join(build, PAIRS_DIR, f"{split}.jsonl"),
                              "".join(json.dumps(r) + "\n" for r in split_meta))

        def binarize(key):
            paths = tsv_paths[key]
            return prepare_classification_data(
                os.path.join(build, "bin", names[key]), paths["train"], paths.get("valid"), paths.get("test"),
                spm_model=spm_model, dictionary=dictionary, workers=workers, progress_min_bytes=None, log=log)

        with ThreadPoolExecutor(len(names)) as pool:  # each waits on its fairseq-preprocess runs
            results = dict(zip(names, pool.map(binarize, names)))
        for key, result in results.items():
            if result["labels"] != LABELS:  # class i must mean the same in both variants
                raise DataPrepError(f"{key} variant has labels {result['labels']}, expected {LABELS}")
            manifest["variants"][key]["num_classes"] = result["num_classes"]
            manifest["variants"][key]["class_labels"] = result["labels"]
            if not keep_tsv:
                manifest["variants"][key]["tsv"] = None
        if not keep_tsv:
            shutil.rmtree(os.path.join(build, "tsv"))
        atomic_write_text(os.path.join(build, MANIFEST), json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {destdir}: " + ", ".join(f"bin/{name}" for name in names.values()) + f" ({MANIFEST})")
    return manifest


def read_pairs(directory: str, split: str) -> List[dict]:
    """The rows' origins of a prepare_same_document output, in the data-bin's row order."""
    with open(os.path.join(directory, PAIRS_DIR, f"{split}.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def cluster_of(row: dict) -> str:
    """The unit a bootstrap resamples: A's document (rows of one document are correlated)."""
    return f"{row['collection']}:{row['doc']}"

