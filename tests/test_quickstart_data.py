"""The quickstart's labelled set: the shipped tsv files are what their script builds, and usable."""

import csv
import os
import subprocess
import sys

from conftest import REPO

QUICKSTART = os.path.join(REPO, "examples", "quickstart")
SHIPPED = os.path.join(QUICKSTART, "classification")


def read(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_shipped_set_is_what_the_script_builds(tmp_path):
    subprocess.run([sys.executable, os.path.join(QUICKSTART, "make_classification_data.py"), "--out", str(tmp_path)],
                   check=True, stdout=subprocess.DEVNULL)
    for name in ("train.tsv", "dev.tsv"):
        with open(os.path.join(SHIPPED, name), encoding="utf-8") as shipped, open(tmp_path / name, encoding="utf-8") as built:
            assert shipped.read() == built.read(), f"{name}: rerun examples/quickstart/make_classification_data.py"


def test_shipped_set_is_balanced_disjoint_and_noticed():
    train, dev = read(os.path.join(SHIPPED, "train.tsv")), read(os.path.join(SHIPPED, "dev.tsv"))
    assert (len(train), len(dev)) == (240, 60)
    for rows in (train, dev):
        labels = [row["label"] for row in rows]
        assert labels.count("code") == labels.count("prose") == len(rows) // 2
    assert not {row["sentence"] for row in train} & {row["sentence"] for row in dev}
    assert not any(row["sentence"].startswith("..") or "::" in row["sentence"] for row in train + dev)
    assert "PSF License" in open(os.path.join(SHIPPED, "NOTICE"), encoding="utf-8").read()
