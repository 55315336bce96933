"""The installed commands (setup.py's console entry points) and linformer-options' output.

The commands' behaviour (flags, outputs, errors) is tested where their libraries are:
test_data_pipeline.py, test_convert.py, test_finetune.py, test_end_to_end.py.
"""

import importlib.metadata
import os
import subprocess
import sysconfig

import pytest
from conftest import REPO

import linformer_plugin
from linformer_plugin import cli

COMMANDS = {
    "linformer-user-dir": cli.print_user_dir,
    "linformer-options": cli.main_options,
    "linformer-prepare-pretraining-data": cli.main_prepare_pretraining_data,
    "linformer-prepare-classification-data": cli.main_prepare_classification_data,
    "linformer-convert-checkpoint": cli.main_convert_checkpoint,
}
REINSTALL = "reinstall the package so its console scripts match setup.py: python -m pip install --no-deps -e ."


def command(name):
    path = os.path.join(sysconfig.get_path("scripts"), name)
    assert os.path.isfile(path), f"{name} is not installed in {os.path.dirname(path)}: {REINSTALL}"
    return path


def test_entry_points_are_the_cli_functions():
    installed = {ep.name: ep for ep in importlib.metadata.distribution("linformer_plugin").entry_points
                 if ep.group == "console_scripts"}
    assert sorted(installed) == sorted(COMMANDS), REINSTALL
    for name, function in COMMANDS.items():
        assert installed[name].load() is function, name


@pytest.mark.parametrize("name", ["linformer-prepare-pretraining-data", "linformer-convert-checkpoint"])
def test_console_script_runs(name):
    out = subprocess.run([command(name), "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: {name} ")


def test_user_dir_command(tmp_path):
    out = subprocess.run([command("linformer-user-dir")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == linformer_plugin.USER_DIR


@pytest.mark.parametrize("script", ["prepare_pretraining_data", "prepare_classification_data", "convert_checkpoint"])
def test_scripts_are_thin_wrappers(script):
    """The scripts import the installed package (scripts/setup_env.sh installs it), never by path."""
    text = open(os.path.join(REPO, "scripts", f"{script}.py"), encoding="utf-8").read()
    assert "sys.path" not in text
    assert f"from linformer_plugin.cli import main_{script} as main" in text


def test_options_lists_the_linformer_flags(capsys):
    cli.main_options([])
    out = capsys.readouterr().out
    for flag in ("--compressed-dim", "--compressed-sharing", "--compressed-init", "--compressed-projection",
                 "--compressed-dims", "--shared-kv-compressed", "--freeze-compress"):
        assert f"  {flag} " in out, flag
    assert "--user-dir" in out and "--encoder-layers" not in out and "linformer_roberta_tiny" not in out


def test_options_all_adds_roberta_flags_and_architectures(capsys):
    cli.main_options(["--all"])
    out = capsys.readouterr().out
    for flag in ("--compressed-dim", "--compressed-sharing", "--encoder-layers", "--encoder-embed-dim",
                 "--max-positions", "--pooler-activation-fn"):
        assert f"  {flag} " in out, flag
    rows = {line.split()[0]: line.split()[1:] for line in out.split("architectures (")[1].splitlines()[2:]}
    assert rows["linformer_roberta_base"] == ["12", "768", "12", "3072"]
    assert rows["linformer_roberta_large"] == ["24", "1024", "16", "4096"]
    assert rows["linformer_roberta_small"] == ["4", "256", "4", "1024"]
    assert rows["linformer_roberta_tiny"] == ["2", "64", "2", "256"]
    assert set(rows) == set(cli.architecture_sizes())
