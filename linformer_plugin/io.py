"""Writing files whole or not at all: a crash never leaves a half-written file behind as if whole."""

import json
import os
import tempfile
from contextlib import contextmanager


def _default_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_output(path: str, mode: str = "w", **kwargs):
    """Write to a temporary file beside ``path``; rename it into place only on success."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str):
    with atomic_output(path, encoding="utf-8") as f:
        f.write(text)


def write_jsonl(path: str, records):
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
