"""linformer-user-dir answers without importing fairseq, torch or the plugin itself."""

import os
import subprocess
import sys

import pytest

import linformer_plugin
from conftest import REPO


def test_user_dir_without_importing_the_plugin():
    probe = ("import sys, linformer_user_dir; linformer_user_dir.main(); "
             "print([m for m in ('fairseq', 'torch', 'linformer_plugin') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True, stdout=subprocess.PIPE, text=True).stdout
    assert out.splitlines() == [linformer_plugin.USER_DIR, "[]"]


def test_installed_command_prints_the_user_dir():
    command = os.path.join(os.path.dirname(sys.executable), "linformer-user-dir")
    if not os.path.exists(command) or "linformer_user_dir" not in open(command, encoding="utf-8").read():
        pytest.skip("the installed linformer-user-dir predates linformer_user_dir.py: run pip install -e .")
    out = subprocess.run([command], cwd="/", check=True, stdout=subprocess.PIPE, text=True).stdout
    assert out.strip() == linformer_plugin.USER_DIR
