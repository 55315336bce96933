"""``linformer-user-dir``: print the path to pass to ``fairseq-train --user-dir``.

A top-level module of its own so that the command answers at once: it finds the installed
``linformer_plugin`` package with ``importlib.util.find_spec`` and never imports it (importing it
imports fairseq and torch, seconds on a small machine).
"""

import importlib.util
import os
import sys


def user_dir() -> str:
    spec = importlib.util.find_spec("linformer_plugin")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("linformer-user-dir: the linformer_plugin package is not installed in this Python "
                         f"({sys.executable}); run `pip install -e .` in the repository, or activate its .venv")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def main():
    print(user_dir())


if __name__ == "__main__":
    main()
