"""--fp16 training where torch has no CUDA: one message with the way out, before anything is written.

fairseq 0.12 stops inside FP16Optimizer with torch's "AssertionError: Torch not compiled with CUDA
enabled" (fairseq_fixes.explain_training_refusals says why); the fix refuses the run first. The
fairseq-level behaviour these tests need (no CUDA) is what CI has; with a GPU the end-to-end tests
are skipped and the unit tests pretend there is none.
"""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils

from conftest import REPO, fairseq_cli, mlm_train_command
from linformer_plugin import fairseq_fixes

CONFIGS = os.path.join(REPO, "examples", "linformer_roberta", "config")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
WAY_OUT = "To train on this CPU, drop --fp16 and pass --cpu (fairseq-hydra-train: common.fp16=false common.cpu=true)"


def common(**flags):
    return SimpleNamespace(**{"fp16": False, "bf16": False, "cpu": False, "amp": False, "memory_efficient_fp16": False,
                              "memory_efficient_bf16": False, "fp16_no_flatten_grads": False, **flags})


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_fp16_without_cuda_names_the_problem_and_the_way_out(no_cuda):
    message = fairseq_fixes.fp16_without_cuda_message(common(fp16=True))
    assert message.startswith("--fp16 needs a CUDA GPU and there is none here (torch "), message
    assert WAY_OUT in message and "or run the same command on a machine with a GPU." in message, message
    with_cpu = fairseq_fixes.fp16_without_cuda_message(common(fp16=True, cpu=True))
    assert "drop --fp16 and keep --cpu" in with_cpu, with_cpu


@pytest.mark.parametrize("flag", ["bf16", "amp", "memory_efficient_fp16", "memory_efficient_bf16",
                                  "fp16_no_flatten_grads"])
def test_precisions_that_run_on_a_cpu_are_left_alone(no_cuda, flag):
    # fairseq does not build the flat fp32 copy on the GPU for these: they train on a CPU (slowly)
    assert fairseq_fixes.fp16_without_cuda_message(common(fp16=True, **{flag: True})) is None


def test_fp16_with_cuda_or_fp32_is_left_alone(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert fairseq_fixes.fp16_without_cuda_message(common(fp16=True)) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fairseq_fixes.fp16_without_cuda_message(common(cpu=True)) is None
    assert fairseq_fixes.fp16_without_cuda_message(None) is None


def test_both_checks_are_in_place():
    assert getattr(checkpoint_utils.load_checkpoint, "explains_training_refusals", False)
    assert getattr(distributed_utils.call_main, "refuses_fp16_without_cuda", False)
    assert getattr(distributed_utils.call_main, "keeps_bf16_off_tpu", False)  # the bf16 fix still inside


@NO_CUDA
def test_fairseq_fp16_optimizer_still_needs_cuda():
    """Fails the day fairseq's FP16Optimizer builds its flat fp32 copy without CUDA: drop the fix then."""
    from fairseq.optim.fp16_optimizer import FP16Optimizer

    params = [torch.nn.Parameter(torch.zeros(4, dtype=torch.half))]
    with pytest.raises((AssertionError, RuntimeError)):
        FP16Optimizer.build_fp32_params(SimpleNamespace(), params, flatten=True)


def assert_refused(proc):
    output = proc.stdout
    assert proc.returncode != 0, output[-3000:]
    assert "Fp16NeedsCuda: --fp16 needs a CUDA GPU" in output and WAY_OUT in output, output[-3000:]
    assert "Torch not compiled with CUDA" not in output and "NVIDIA driver" not in output, output[-3000:]


def run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@NO_CUDA
@pytest.mark.slow
def test_fairseq_train_fp16_is_refused_before_anything_is_written(data_bin, tmp_path):
    save_dir = tmp_path / "checkpoints"
    command = [arg for arg in mlm_train_command(data_bin, save_dir, 2) if arg != "--cpu"] + ["--fp16"]
    assert_refused(run(command, tmp_path))
    assert not save_dir.exists()


@NO_CUDA
@pytest.mark.slow
@pytest.mark.parametrize("config", ["pretraining/base", "finetuning/sst_2"])
def test_fairseq_hydra_train_with_the_repos_gpu_configs_is_refused(config, data_bin, trained_mlm, tmp_path):
    """base.yaml and sst_2.yaml say common.fp16: true; on a CPU, as written, they get the message."""
    group, name = config.split("/")
    save_dir = tmp_path / "run"
    data = data_bin
    extra = []
    if group == "finetuning":
        from linformer_plugin.data.classification import prepare_classification_data

        sst2 = os.path.join(REPO, "tests", "data", "sst2_tiny")
        data = str(tmp_path / "sst2-bin")
        prepare_classification_data(data, os.path.join(sst2, "train.tsv"), os.path.join(sst2, "dev.tsv"),
                                    spm_model=os.path.join(data_bin, "sentencepiece.bpe.model"),
                                    dictionary=os.path.join(data_bin, "dict.txt"), log=None)
        extra = [f"checkpoint.restore_file={trained_mlm[0] / 'checkpoint_last.pt'}"]
    proc = run(fairseq_cli("hydra_train") + [
        "--config-dir", os.path.join(CONFIGS, group), "--config-name", name, f"task.data={data}",
        f"common.user_dir={os.path.join(REPO, 'linformer_plugin')}", f"checkpoint.save_dir={save_dir}",
        "dataset.num_workers=0", *extra], tmp_path)
    assert_refused(proc)
    # hydra writes its own files into its run dir (= the save dir) before the plugin is imported; no checkpoint
    assert sorted(p.name for p in save_dir.iterdir()) == [".hydra", "hydra_train.log"]


@NO_CUDA
@pytest.mark.slow
def test_fairseq_validate_fp16_runs_on_a_cpu(data_bin, trained_mlm):
    """Validation in fp16 does run on a CPU (no fp16 optimizer): it is not refused."""
    save_dir, _ = trained_mlm
    proc = run(fairseq_cli("validate") + [
        data_bin, "--user-dir", os.path.join(REPO, "linformer_plugin"), "--task", "masked_lm",
        "--path", str(save_dir / "checkpoint_last.pt"), "--batch-size", "8", "--num-workers", "0", "--fp16"],
        save_dir)
    assert proc.returncode == 0 and "valid on 'valid' subset" in proc.stdout, proc.stdout[-3000:]
