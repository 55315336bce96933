"""The fixes of linformer_plugin/fairseq_fixes.py: applied on the installed fairseq, still needed
(each "still" test fails the day fairseq fixes the problem upstream: then drop the fix), skipped
with one warning when what they wrap is gone or changed, and doing what they promise.

End to end, through fairseq-train: test_end_to_end.py (truncated checkpoint, --bf16) and
test_distributed.py (rank 0's checkpoint over 2 gloo processes).
"""

import io
import logging
import os
import pickle
import subprocess
import sys
import threading
import warnings

import pytest
import torch
from fairseq import checkpoint_utils, options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.distributed import utils as distributed_utils
from omegaconf import OmegaConf

from conftest import REPO
from linformer_plugin import fairseq_fixes

# fix name -> (module, attribute, marker on the wrapper)
TARGETS = {
    "explain_unreadable_checkpoints": (checkpoint_utils, "load_checkpoint_to_cpu", "explains_unreadable"),
    "trust_checkpoints_broadcast_by_rank0": (distributed_utils, "_broadcast_object_slow", "trusts_rank0"),
    "keep_bf16_off_tpu": (distributed_utils, "call_main", "keeps_bf16_off_tpu"),
    "explain_training_refusals": (checkpoint_utils, "load_checkpoint", "explains_training_refusals"),  # tests/test_fp16_without_cuda.py
}


def wrapped(name):
    module, attribute, _ = TARGETS[name]
    return getattr(module, attribute)


# -- applied ------------------------------------------------------------------------------------

def test_every_fix_is_applied_on_the_installed_fairseq():
    assert set(TARGETS) == set(fairseq_fixes.FIXES)
    assert fairseq_fixes.SKIPPED == {}
    assert set(fairseq_fixes.APPLIED) == set(TARGETS)
    for name, (module, attribute, marker) in TARGETS.items():
        function = getattr(module, attribute)
        assert getattr(function, marker, False), name
        # a wrapper around fairseq's own function, not a copy of it
        assert function.__wrapped__.__module__ == module.__name__, name
        assert fairseq_fixes.APPLIED[name] == f"{module.__name__}.{attribute}"


def test_applying_again_changes_nothing():
    before = {name: wrapped(name) for name in TARGETS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fairseq_fixes.apply_all()
    assert {name: wrapped(name) for name in TARGETS} == before
    assert set(fairseq_fixes.APPLIED) == set(TARGETS) and not fairseq_fixes.SKIPPED


# -- still needed: each fails when fairseq (or torch) no longer has the problem ------------------

def test_fairseq_still_turns_bf16_into_tpu():
    """fairseq #4696: parse_args_and_arch sets tpu=True for --bf16."""
    args = options.parse_args_and_arch(options.get_training_parser(),
                                       ["data", "--arch", "linformer_roberta_tiny", "--task", "masked_lm", "--bf16"])
    assert args.bf16 and args.tpu, "fairseq no longer adds --tpu to --bf16: drop keep_bf16_off_tpu"


def truncated_checkpoint(path):
    buffer = io.BytesIO()
    # large enough that torch reaches its zip reader (a few-byte stub fails earlier, with OSError)
    torch.save({"model": {"w": torch.randn(100_000)}}, buffer)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def test_fairseq_loader_still_gives_torchs_message_on_a_truncated_file(tmp_path):
    path = truncated_checkpoint(tmp_path / "checkpoint_last.pt")
    with pytest.raises(RuntimeError, match="PytorchStreamReader|zip archive") as error:
        wrapped("explain_unreadable_checkpoints").__wrapped__(path)
    message = str(error.value)
    assert path not in message and "--restore-file" not in message, (
        "fairseq now names the truncated file and the way out: drop explain_unreadable_checkpoints")


class FakeBroadcast:
    """Rank 1's side of fairseq's _broadcast_object_slow in one process: the length, then the bytes
    that rank 0's torch.save wrote."""

    def __init__(self, obj, during=None):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        self.payload = buffer.getvalue()
        self.during = during  # run while the receiving side waits for the bytes

    def __call__(self, tensor, src, group=None):
        if tensor.dtype == torch.int64:
            tensor.fill_(len(self.payload))
        else:
            tensor.copy_(torch.frombuffer(bytearray(self.payload), dtype=torch.uint8))
            if self.during is not None:
                self.during()


def rank0_state():
    return {"cfg": OmegaConf.create({"common": {"seed": 3}}), "model": {"w": torch.arange(3)}}


@pytest.fixture
def as_rank1(monkeypatch):
    monkeypatch.setattr(distributed_utils, "get_rank", lambda group: 1)

    def receive(obj, during=None):
        monkeypatch.setattr(distributed_utils, "broadcast", FakeBroadcast(obj, during))
        return wrapped("trust_checkpoints_broadcast_by_rank0")

    return receive


def test_fairseq_broadcast_still_refuses_rank0s_checkpoint(as_rank1):
    """The receiving ranks read rank 0's bytes with torch.load's default, which refuses a DictConfig."""
    original = as_rank1(rank0_state()).__wrapped__
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only load failed"):
        original(None, 0, None, torch.device("cpu"))


# -- skipped with one warning when what a fix wraps is gone or changed ---------------------------

def unrelated(x, y=None):
    return x


def no_load(obj, src_rank, group, dist_device):
    return obj


CHANGES = [(name, "missing") for name in TARGETS] + [(name, "other signature") for name in TARGETS] + [
    ("trust_checkpoints_broadcast_by_rank0", "no torch.load")]


@pytest.mark.parametrize("name,change", CHANGES)
def test_a_fix_that_no_longer_fits_is_skipped_with_one_warning(name, change, monkeypatch):
    module, attribute, marker = TARGETS[name]
    if change == "missing":
        monkeypatch.delattr(module, attribute)
    else:
        monkeypatch.setattr(module, attribute, unrelated if change == "other signature" else no_load)
    monkeypatch.setattr(fairseq_fixes, "APPLIED", {})
    monkeypatch.setattr(fairseq_fixes, "SKIPPED", {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        applied, skipped = fairseq_fixes.apply_all()
    assert [type(w.message) for w in caught] == [fairseq_fixes.FairseqFixSkipped], [str(w.message) for w in caught]
    message = str(caught[0].message)
    import fairseq

    assert name in message and f"fairseq {fairseq.__version__}" in message and "Without it," in message
    assert list(skipped) == [name] and set(applied) == set(TARGETS) - {name}
    assert not getattr(getattr(module, attribute, None), marker, False)


def test_a_fix_that_fails_is_skipped_with_one_warning(monkeypatch):
    def broken():
        raise KeyError("tpu")

    fix, target, without = fairseq_fixes.FIXES["keep_bf16_off_tpu"]
    monkeypatch.setitem(fairseq_fixes.FIXES, "keep_bf16_off_tpu", (broken, target, without))
    monkeypatch.setattr(fairseq_fixes, "APPLIED", {})
    monkeypatch.setattr(fairseq_fixes, "SKIPPED", {})
    with pytest.warns(fairseq_fixes.FairseqFixSkipped, match="keep_bf16_off_tpu not applied .*KeyError"):
        applied, skipped = fairseq_fixes.apply_all()
    assert list(skipped) == ["keep_bf16_off_tpu"] and len(applied) == len(TARGETS) - 1


def test_import_works_when_fairseq_lacks_what_the_fixes_wrap():
    script = (
        "import warnings\n"
        "from fairseq import checkpoint_utils\n"
        "from fairseq.distributed import utils\n"
        "del checkpoint_utils.load_checkpoint_to_cpu, checkpoint_utils.load_checkpoint, utils._broadcast_object_slow, utils.call_main\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import linformer_plugin\n"
        "from linformer_plugin import fairseq_fixes\n"
        "from fairseq.models import MODEL_REGISTRY\n"
        "print('SKIPPED', sorted(fairseq_fixes.SKIPPED), 'APPLIED', sorted(fairseq_fixes.APPLIED),\n"
        "      'WARNINGS', sum(w.category is fairseq_fixes.FairseqFixSkipped for w in caught),\n"
        "      'REGISTERED', 'linformer_roberta' in MODEL_REGISTRY)\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    expected = f"SKIPPED {sorted(TARGETS)} APPLIED [] WARNINGS {len(TARGETS)} REGISTERED True"
    assert proc.returncode == 0 and expected in proc.stdout, proc.stdout + proc.stderr[-3000:]


# -- what they do -------------------------------------------------------------------------------

def test_a_truncated_checkpoint_is_named_with_the_way_out(tmp_path):
    path = truncated_checkpoint(tmp_path / "checkpoint_last.pt")
    with pytest.raises(RuntimeError, match="checkpoint_last.pt is truncated or corrupt.*--restore-file"):
        checkpoint_utils.load_checkpoint_to_cpu(path)


def test_other_load_errors_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "absent.pt"))


def test_other_ranks_receive_rank0s_checkpoint(as_rank1):
    torch_load = torch.load
    state = as_rank1(rank0_state())(None, 0, None, torch.device("cpu"))
    assert type(state["cfg"]).__name__ == "DictConfig" and state["cfg"].common.seed == 3
    assert state["model"]["w"].tolist() == [0, 1, 2]
    assert torch.load is torch_load  # put back after the broadcast


def test_the_broadcast_trusts_only_its_own_thread(as_rank1):
    """While a rank waits for rank 0's bytes, torch.load in any other thread keeps torch's default."""
    payload = FakeBroadcast(rank0_state()).payload
    other = {}

    def load_elsewhere():
        try:
            torch.load(io.BytesIO(payload))
            other["result"] = "loaded"
        except pickle.UnpicklingError as exc:
            other["result"] = str(exc)

    def during():
        thread = threading.Thread(target=load_elsewhere)
        thread.start()
        thread.join()

    state = as_rank1(rank0_state(), during)(None, 0, None, torch.device("cpu"))
    assert state["cfg"].common.seed == 3
    assert "eights only load failed" in other["result"], other


def bf16_cfg():
    args = options.parse_args_and_arch(options.get_training_parser(), [
        "data", "--arch", "linformer_roberta_tiny", "--task", "masked_lm", "--bf16", "--cpu"])
    return convert_namespace_to_omegaconf(args)


def test_bf16_runs_on_the_runs_device_without_torch_xla(caplog):
    seen = {}

    def main(cfg):
        seen.update(bf16=cfg.common.bf16, tpu=cfg.common.tpu, model_tpu=getattr(cfg.model, "tpu", False))

    with caplog.at_level(logging.INFO, logger=fairseq_fixes.__name__):
        distributed_utils.call_main(bf16_cfg(), main)
    assert seen == {"bf16": True, "tpu": False, "model_tpu": False}
    assert "training in bfloat16 on this run's device" in caplog.text


def test_bf16_keeps_the_tpu_when_torch_xla_is_installed(monkeypatch):
    find_spec = fairseq_fixes.importlib.util.find_spec
    monkeypatch.setattr(fairseq_fixes.importlib.util, "find_spec",
                        lambda name, *args: object() if name == "torch_xla" else find_spec(name, *args))
    seen = {}
    distributed_utils.call_main(bf16_cfg(), lambda cfg: seen.update(tpu=cfg.common.tpu))
    assert seen == {"tpu": True}
