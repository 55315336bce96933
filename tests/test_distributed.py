"""Data-parallel training without --find-unused-parameters, on CPU (gloo).

torch's DistributedDataParallel (fairseq's pytorch_ddp backend, find_unused_parameters off) stops
at the next step when a parameter that requires grad got none: fairseq's reference Linformer with
--shared-layer-kv-compressed 1 does so at its second step (its shared nn.Linear has a bias that
forward never uses). Ours has no such parameter in any sharing mode, and frozen projections
(--freeze-compress 1) do not require grad.

fairseq 0.12 spawns data-parallel processes only for GPUs; the multi-GPU check
(examples.studies.multi_gpu.check --cpu) launches the 2 ranks itself through
examples.common.fairseq_train (which lets pytorch_ddp wrap a CPU module).
"""

import datetime
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from conftest import REPO, build_tiny_model
from examples.common.reference import reference_user_dir
from examples.studies.multi_gpu import check as multi_gpu_check
from examples.studies.multi_gpu.records import DDP_UNUSED_ERROR

pytestmark = pytest.mark.slow  # runs fairseq's command-line tools: not in the quick loop (-m "not slow")

SHARING = {
    "headwise": {},
    "kv": {"shared_kv_compressed": 1},
    "layerwise": {"shared_layer_kv_compressed": 1},
    "layerwise_frozen": {"shared_layer_kv_compressed": 1, "freeze_compress": 1},
    "headwise_frozen": {"freeze_compress": 1},
    "none": {"compressed_sharing": "none"},
    "conv": {"compressed_projection": "conv"},
    "conv_layerwise_frozen": {"compressed_projection": "conv", "shared_layer_kv_compressed": 1, "freeze_compress": 1},
    "mean": {"compressed_projection": "mean"},
    "max": {"compressed_projection": "max"},
}


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("sharing", list(SHARING))
def test_every_trainable_parameter_gets_a_gradient_under_ddp(sharing, one_process_group):
    """Every sharing mode and projection; DDP checks for parameters without a gradient the same way
    with one process as with many."""
    model, dictionary = build_tiny_model(**SHARING[sharing])
    model.train()
    ddp = DistributedDataParallel(model)  # find_unused_parameters=False, as fairseq's default
    tokens = torch.randint(dictionary.nspecial, len(dictionary) - 1, (2, 32), generator=torch.Generator().manual_seed(0))
    for _ in range(3):  # an unused parameter would stop the second forward
        ddp.zero_grad()
        logits = ddp(tokens)[0]
        logits.float().pow(2).mean().backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    assert all(p.grad is not None for p in trainable.values()), [n for n, p in trainable.items() if p.grad is None]
    assert all(p.grad is None for p in frozen.values())
    if SHARING[sharing].get("freeze_compress"):
        assert frozen and all("projection" in n for n in frozen), sorted(frozen)
    else:
        assert not frozen, sorted(frozen)


def test_rank0_checkpoint_reaches_the_other_ranks(tmp_path):
    """Resuming a data-parallel run, rank 0 loads checkpoint_last.pt and fairseq broadcasts it to the
    other ranks as torch.save bytes; with torch >= 2.6 they refused it (weights_only: its cfg is an
    omegaconf DictConfig by then), so a multi-GPU run could not resume."""
    from fairseq.distributed import utils as distributed_utils
    from omegaconf import OmegaConf

    init = f"file://{tmp_path / 'store'}"
    rank1 = textwrap.dedent("""
        import datetime, sys, torch, torch.distributed as dist
        import linformer_plugin
        from fairseq.distributed import utils
        dist.init_process_group("gloo", init_method=sys.argv[1], rank=1, world_size=2,
                                timeout=datetime.timedelta(seconds=120))
        state = utils.broadcast_object(None, src_rank=0, group=dist.group.WORLD, dist_device=torch.device("cpu"))
        print("RECEIVED", type(state["cfg"]).__name__, state["cfg"].common.seed, state["model"]["w"].tolist())
        dist.destroy_process_group()
    """)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", rank1, init], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env)
    try:
        dist.init_process_group("gloo", init_method=init, rank=0, world_size=2, timeout=datetime.timedelta(seconds=120))
        try:
            state = {"cfg": OmegaConf.create({"common": {"seed": 3}}), "model": {"w": torch.arange(3)}}
            distributed_utils.broadcast_object(state, src_rank=0, group=dist.group.WORLD, dist_device=torch.device("cpu"))
        finally:
            dist.destroy_process_group()
        out = child.communicate(timeout=120)[0]
    finally:
        child.kill()
    assert child.returncode == 0 and "RECEIVED DictConfig 3 [0, 1, 2]" in out, out[-3000:]


def _records(out_dir):
    with open(os.path.join(out_dir, "results.jsonl")) as f:
        return {r["name"]: r for r in map(json.loads, f)}


def test_two_process_ddp_trains_layerwise_and_frozen(data_bin, tmp_path):
    """fairseq-train --distributed-world-size 2 on gloo, pytorch_ddp and legacy_ddp; 1 process x
    batch 8 and 2 processes x batch 4 give the same losses; a control that must fail does."""
    out = tmp_path / "out"
    rc = multi_gpu_check.main([data_bin, str(out), "--cpu", "--tiny", "--sections", "ddp", "loss",
                         "--modes", "layerwise", "layerwise_frozen", "--backends", "pytorch_ddp", "legacy_ddp",
                         "--controls", "layerdrop", "--no-torchrun", "--ddp-updates", "4", "--loss-updates", "6"])
    records = _records(out)
    for mode in ("layerwise", "layerwise_frozen"):
        for backend in ("pytorch_ddp", "legacy_ddp"):
            r = records[f"{mode}_{backend}"]
            assert r["ok"] and r["rc"] == 0 and r["num_updates"] == 4, r
            assert (r["params_trained"] < r["params"]) == (mode == "layerwise_frozen"), r
    # the check can fail: ours with --encoder-layerdrop 0.99 leaves dropped layers without gradients
    control = records["control_layerdrop_pytorch_ddp"]
    assert control["as_expected"] and DDP_UNUSED_ERROR in control["error"], control
    loss = records["loss_layerwise"]
    assert loss["ok"] and loss["updates_compared"] == 6 and loss["max_abs_diff"] <= 0.002, loss
    assert rc == 0


@pytest.mark.skipif(reference_user_dir() is None, reason="this fairseq install does not ship examples/linformer")
def test_reference_layerwise_stops_under_pytorch_ddp(data_bin, tmp_path):
    """The failure this guards against, reproduced with fairseq's own Linformer on the same path."""
    out = tmp_path / "out"
    multi_gpu_check.main([data_bin, str(out), "--cpu", "--tiny", "--sections", "ddp", "--modes", "--backends",
                    "--controls", "reference", "--reference-backends", "pytorch_ddp", "--no-torchrun", "--ddp-updates", "4"])
    r = _records(out)["control_reference_layerwise_pytorch_ddp"]
    assert r["as_expected"] and r["num_updates"] == 1, r
    assert DDP_UNUSED_ERROR in r["error"] and "compress_k.bias" in r["unused_parameters"], r
