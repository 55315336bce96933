"""The README's ```bash and ```python blocks, run in order at tiny scale on CPU.

Each block runs as written except for the substitutions in OVERRIDES (sizes, update counts, and
`--cpu` in place of `--fp16`, the CPU variant the README gives). Every substituted fragment must
still be in the README, so removing or renaming a documented flag fails here; so does a command that
no longer runs. Blocks that cannot run in a test are listed in SKIPPED with the reason.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, run

pytestmark = pytest.mark.slow  # runs fairseq's command-line tools: not in the quick loop (-m "not slow")

README = os.path.join(REPO, "README.md")

# The first line of each block not run here, and why.
SKIPPED = {
    "python3 -m venv .venv": "installs packages from the network; scripts/setup_env.sh does the same",
    "bash scripts/quickstart.sh": "minutes of training (the quickstart itself), and the test suite itself",
}

# (fragment in the README, what the test runs instead), applied in order to the blocks that run.
OVERRIDES = [
    ("--vocab-size 32000", "--vocab-size 1000"),
    ("--arch linformer_roberta_base", "--arch linformer_roberta_tiny"),
    ("--compressed-dim 128", "--compressed-dim 16"),  # pretraining, fine-tuning and extend: one k
    ("--compressed-dim 256 --max-positions 4096", "--compressed-dim 8 --max-positions 128"),
    ("--warmup-updates 10000", "--warmup-updates 1"),
    ("--total-num-update 125000 --max-update 125000", "--total-num-update 3 --max-update 3"),
    ("--batch-size 16 --update-freq 16", "--batch-size 4 --update-freq 1"),
    ("--batch-size 32 --optimizer adam", "--batch-size 8 --optimizer adam"),
    ("--warmup-updates 1256 --total-num-update 20935", "--warmup-updates 1 --total-num-update 3"),
    ("--max-update 20935", "--max-update 3"),
    ("--max-update 10000", "--max-update 1"),
    ("--fp16", "--cpu"),
]


def readme_blocks():
    """[(language, text)] of the README's ```bash and ```python blocks, in order."""
    text = open(README, encoding="utf-8").read()
    return re.findall(r"^```(bash|python)\n(.*?)^```", text, flags=re.S | re.M)


def test_overrides_and_skips_match_the_readme():
    blocks = [text for _, text in readme_blocks()]
    for first_line in SKIPPED:
        assert sum(b.startswith(first_line) for b in blocks) == 1, f"no README block starts with {first_line!r}"
    runnable = "".join(b for b in blocks if not b.startswith(tuple(SKIPPED)))
    for fragment, _ in OVERRIDES:
        assert fragment in runnable, (f"the README no longer has {fragment!r}; if that is intended, update "
                                      "OVERRIDES in tests/test_readme.py")


@pytest.fixture
def workdir(raw_text, tmp_path):
    """A folder laid out as the README assumes: its text files, SST-2/, linformer_plugin, a RoBERTa."""
    shutil.copy(raw_text["train"], tmp_path / "train.txt")
    shutil.copy(raw_text["valid"], tmp_path / "valid.txt")
    shutil.copytree(os.path.join(REPO, "tests", "data", "sst2_tiny"), tmp_path / "SST-2")
    os.symlink(os.path.join(REPO, "linformer_plugin"), tmp_path / "linformer_plugin")
    return tmp_path


def tiny_roberta(workdir, env):
    """roberta.base/model.pt: a fairseq RoBERTa (n = 32, 2 layers) trained for 2 updates."""
    run([sys.executable, "-m", "fairseq_cli.train", "data-bin", "--task", "masked_lm", "--criterion", "masked_lm",
         "--arch", "roberta_base", "--encoder-layers", "2", "--encoder-embed-dim", "64",
         "--encoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2", "--tokens-per-sample", "32",
         "--sample-break-mode", "none", "--batch-size", "8", "--optimizer", "adam", "--lr", "1e-3",
         "--max-update", "2", "--disable-validation", "--save-dir", "roberta.base", "--no-epoch-checkpoints",
         "--num-workers", "0", "--cpu"], cwd=workdir, env=env)
    os.rename(workdir / "roberta.base" / "checkpoint_last.pt", workdir / "roberta.base" / "model.pt")


def test_readme_blocks_run_as_written(workdir):
    # As after `source .venv/bin/activate`: the environment's commands come first on PATH.
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    for language, text in readme_blocks():
        if text.startswith(tuple(SKIPPED)):
            continue
        for fragment, replacement in OVERRIDES:
            text = text.replace(fragment, replacement)
        if "roberta.base/model.pt" in text and not (workdir / "roberta.base").exists():
            tiny_roberta(workdir, env)
        if language == "bash":
            cmd = ["bash", "-euo", "pipefail", "-c", text]
        else:
            # The quickstart's paths, pointed at what the blocks above made.
            os.makedirs(workdir / "quickstart-out", exist_ok=True)
            for name, target in (("checkpoints", "checkpoints"), ("data-bin", "data-bin")):
                if not (workdir / "quickstart-out" / name).exists():
                    os.symlink(workdir / target, workdir / "quickstart-out" / name)
            cmd = [sys.executable, "-c", text]
        proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.returncode == 0, f"README block failed:\n{text}\n--- output ---\n{proc.stdout[-6000:]}"
