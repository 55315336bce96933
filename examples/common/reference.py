"""Where fairseq's own Linformer (``examples/linformer/linformer_src``) lives, for comparisons."""

import importlib.util
import os
from typing import Optional


def fairseq_package_dir() -> str:
    """Found without importing fairseq."""
    spec = importlib.util.find_spec("fairseq")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("fairseq is not installed in this Python")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def reference_user_dir() -> Optional[str]:
    """The ``--user-dir`` of fairseq's reference Linformer, or None where fairseq lacks its examples."""
    package_dir = fairseq_package_dir()
    for candidate in (
        os.path.join(package_dir, "examples", "linformer", "linformer_src"),
        os.path.join(os.path.dirname(package_dir), "examples", "linformer", "linformer_src"),
    ):
        if os.path.isdir(candidate):
            return candidate
    return None
