"""What the data-preparation pipelines share: user-facing errors, input checks, progress lines, the
check that a sentencepiece model matches a dictionary, and running fairseq-preprocess."""

import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Iterable, List, Optional

# inputs smaller than this are encoded without progress lines
PROGRESS_MIN_BYTES = 32 << 20
# the name fairseq's hub loader (from_pretrained) looks for beside the checkpoint / data
SPM_MODEL_NAME = "sentencepiece.bpe.model"


class DataPrepError(ValueError):
    """A problem with the inputs or options; the CLIs print it without a traceback."""


class PreprocessError(RuntimeError):
    """fairseq-preprocess exited with an error."""


def add_pretraining_vocab_args(parser):
    """--pretraining-data DIR, or --dict and --spm-model: the vocabulary a fine-tuning data-bin reuses."""
    parser.add_argument("--pretraining-data", metavar="DIR",
                        help=f"the pretraining data-bin: takes --dict DIR/dict.txt and --spm-model DIR/{SPM_MODEL_NAME}")
    parser.add_argument("--dict", help="the pretraining dictionary (dict.txt)")
    parser.add_argument("--spm-model", help="the sentencepiece model that dictionary was built with")


def resolve_pretraining_vocab(parser, args):
    """Fill args.dict / args.spm_model from --pretraining-data; a parser error if neither is given."""
    if args.pretraining_data:
        args.dict = args.dict or os.path.join(args.pretraining_data, "dict.txt")
        args.spm_model = args.spm_model or os.path.join(args.pretraining_data, SPM_MODEL_NAME)
    if not args.dict or not args.spm_model:
        parser.error("give --pretraining-data DIR, or both --dict and --spm-model")


def stderr_log(message: str):
    print(message, file=sys.stderr, flush=True)


def check_text_file(path: str, what: str = "input file"):
    """Missing, empty and blank-only files are refused up front, before any slow step."""
    if not os.path.exists(path):
        raise DataPrepError(f"{what} not found: {path}")
    if not os.path.isfile(path):
        raise DataPrepError(f"{what} is not a regular file: {path}")
    if os.path.getsize(path) == 0:
        raise DataPrepError(f"{what} is empty: {path}")
    with open(path, "rb") as f:
        if not any(line.strip() for line in f):
            raise DataPrepError(f"{what} has only blank lines: {path}")


def check_inputs_outside(destdir: str, paths: Iterable[Optional[str]]):
    """With --force the old destdir is deleted at the end: refuse inputs that live inside it."""
    dest = os.path.realpath(destdir)
    for path in paths:
        if path and os.path.realpath(path).startswith(dest + os.sep):
            raise DataPrepError(f"input {path} lies inside {destdir}, which --force would delete; "
                                "copy it elsewhere first")


def load_spm(path: str):
    import sentencepiece as spm

    check_text_file(path, "sentencepiece model")
    try:
        return spm.SentencePieceProcessor(model_file=path)
    except (OSError, RuntimeError) as e:
        raise DataPrepError(f"not a sentencepiece model: {path} ({e})") from None


def load_dictionary(path: str):
    from fairseq.data import Dictionary

    check_text_file(path, "dictionary")
    try:
        return Dictionary.load(path)
    except (ValueError, RuntimeError) as e:
        raise DataPrepError(f"not a fairseq dictionary: {path} ({e})") from None


def check_pieces_match(piece_lines: Iterable[List[str]], dictionary, dict_path: str, where: str,
                       max_unknown: float = 0.05):
    """A dictionary from another tokenizer (e.g. GPT-2 BPE ids) would silently turn text into <unk>."""
    total = unknown = 0
    for pieces in piece_lines:
        total += len(pieces)
        unknown += sum(dictionary.index(p) == dictionary.unk_index for p in pieces)
    if total and unknown / total > max_unknown:
        raise DataPrepError(
            f"the sentencepiece model does not match the dictionary: {unknown / total:.0%} of the pieces of "
            f"{where} are not in {dict_path} and would become <unk>; use the sentencepiece model the "
            f"dictionary was built with ({SPM_MODEL_NAME} beside dict.txt in the pretraining data-bin)")


class Progress:
    """Percentage lines on stderr, every ``step`` percent, only when ``enabled`` (large inputs)."""

    def __init__(self, label: str, total: int, enabled: bool, step: int = 10):
        self.label, self.total, self.enabled, self.step = label, max(total, 1), enabled, step
        self.shown = 0

    def update(self, done: int, lines: int):
        if not self.enabled:
            return
        # below 100 until finish(): the byte position read runs ahead of the lines handled
        percent = min(100 - self.step, 100 * done // self.total // self.step * self.step)
        if percent > self.shown:
            self.shown = percent
            stderr_log(f"{self.label}: {percent}% ({lines:,} lines)")

    def finish(self, lines: int):
        if self.enabled:
            stderr_log(f"{self.label}: 100% ({lines:,} lines)")


def preprocess_command() -> List[str]:
    # a subprocess, not fairseq_cli.preprocess.main(): main() adds a log handler to a module logger
    # on every call, so in one process later runs also write into earlier destdirs' preprocess.log
    return [sys.executable, "-m", "fairseq_cli.preprocess"]


_SUMMARY = re.compile(r"\] (\S+): (\d+ sents, \d+ tokens, .*replaced.*)")


def run_preprocess(jobs: Dict[str, List[str]], log: Optional[Callable[[str], None]] = stderr_log):
    """Run ``fairseq-preprocess ARGS`` for every job at once; each start pays ~8 s of imports, which
    running them side by side mostly hides. The first failure stops the others and raises."""
    procs = {}
    try:
        for name, args in jobs.items():
            out = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
            proc = subprocess.Popen(preprocess_command() + args, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
            procs[name] = (proc, out)
        running = dict(procs)
        while running:
            for name, (proc, out) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                out.seek(0)
                output = out.read()
                if proc.returncode != 0:
                    raise PreprocessError(f"fairseq-preprocess failed for {name} (exit status {proc.returncode}); "
                                          f"its output ends with:\n{output[-3000:]}")
                if log:
                    for match in _SUMMARY.finditer(output):
                        log(f"{name}/{os.path.basename(match[1])}: {match[2]}")
            time.sleep(0.05)
    finally:
        for proc, out in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
            out.close()
