"""Build the quickstart's labelled set: Python-docs paragraphs labelled ``code`` or ``prose``.

    python examples/quickstart/make_classification_data.py [--out examples/quickstart/classification]

From the shipped documentation slice (examples/quickstart/data, PSF License): ``code`` rows are the
signatures of API directives (``.. c:function:: int PySlice_Check(PyObject *ob)`` gives
``int PySlice_Check(PyObject *ob)``: the directive marker is dropped so the label is not in the
text), ``prose`` rows are plain sentences (a capitalised first word, a final full stop, no reST
markup). Both are cut to 40 words, deduplicated and shuffled with a fixed seed; 150 per class, 240
rows to train.tsv and 60 to dev.tsv, in the GLUE layout that linformer-prepare-classification-data
reads. The output is deterministic: re-running it rewrites the same files.
"""

import argparse
import os
import random
import re

HERE = os.path.dirname(os.path.abspath(__file__))
SIGNATURE = re.compile(r"\.\. (?:c:|py:)?(?:function|method|class|macro|var|type|member|data)::\s+(\S.*)")
PROSE = re.compile(r"[A-Z][a-z]+ [^`*:|<>=_]*\.")
PER_CLASS, DEV_PER_CLASS, MAX_WORDS, SEED = 150, 30, 40, 1


def rows(paths):
    """{"code": [...], "prose": [...]}: candidate paragraphs in corpus order, deduplicated."""
    found = {"code": [], "prose": []}
    seen = set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                match = SIGNATURE.fullmatch(line)
                label, text = ("code", match.group(1)) if match else ("prose", line)
                if label == "prose" and not PROSE.fullmatch(line):
                    continue
                text = " ".join(text.split()[:MAX_WORDS]).replace("\t", " ")
                if text not in seen:
                    seen.add(text)
                    found[label].append(text)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "classification"), help="folder for train.tsv, dev.tsv")
    args = parser.parse_args(argv)
    data = os.path.join(HERE, "data")
    found = rows([os.path.join(data, "train.txt"), os.path.join(data, "valid.txt")])
    rng = random.Random(SEED)
    splits = {"train": [], "dev": []}
    for label in sorted(found):
        if len(found[label]) < PER_CLASS:
            raise SystemExit(f"only {len(found[label])} {label} rows in {data}; need {PER_CLASS}")
        chosen = rng.sample(found[label], PER_CLASS)
        splits["dev"] += [(text, label) for text in chosen[:DEV_PER_CLASS]]
        splits["train"] += [(text, label) for text in chosen[DEV_PER_CLASS:]]
    os.makedirs(args.out, exist_ok=True)
    for split, table in splits.items():
        rng.shuffle(table)
        with open(os.path.join(args.out, f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in table))
        print(f"{args.out}/{split}.tsv: {len(table)} rows")


if __name__ == "__main__":
    main()
