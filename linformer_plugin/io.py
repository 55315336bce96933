"""Writing files and directories whole or not at all: a crash never leaves a half-written one looking whole."""

import json
import os
import shutil
import tempfile
from contextlib import contextmanager


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_mode():
    return 0o666 & ~_umask()


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


def _is_nonempty(path: str) -> bool:
    if not os.path.lexists(path):
        return False
    if os.path.isdir(path) and not os.path.islink(path):
        return bool(os.listdir(path))
    return True


def _check_destination(path: str, force: bool):
    if os.path.lexists(path) and not (os.path.isdir(path) and not os.path.islink(path)):
        raise FileExistsError(f"{path} exists and is not a directory; remove it or choose another destination")
    if not force and _is_nonempty(path):
        raise FileExistsError(f"{path} already exists and is not empty; pass --force to replace it")


@contextmanager
def atomic_directory(path: str, force: bool = False):
    """Build a directory under a temporary sibling name (yielded); rename it to ``path`` only on success.

    A failure or interrupt removes the temporary directory and leaves ``path`` as it was. An existing
    non-empty ``path`` is refused (checked before and after the build) unless ``force``: then the old
    one is renamed away, the new one renamed in and only then the old one deleted, so ``path`` holds
    either the whole old or the whole new directory except between two renames.
    """
    path = os.path.abspath(path)
    _check_destination(path, force)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        _move_into_place(tmp, path, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(new: str, path: str, force: bool):
    _check_destination(path, force)  # something may have appeared while we were building
    if not os.path.lexists(path):
        os.rename(new, path)
        return
    if not _is_nonempty(path):
        os.rmdir(path)
        os.rename(new, path)
        return
    # a fresh holder directory makes the old one's new name unique without racing on a guessed name
    holder = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".old", dir=os.path.dirname(path))
    old = os.path.join(holder, "old")
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        os.rmdir(holder)
        raise
    shutil.rmtree(holder, ignore_errors=True)
