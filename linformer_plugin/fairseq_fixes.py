"""The four fixes this plugin applies to fairseq 0.12 when it is imported, and nothing else.

- ``explain_unreadable_checkpoints``: ``checkpoint_utils.load_checkpoint_to_cpu`` names a truncated
  or corrupt checkpoint and the way out, instead of torch's "PytorchStreamReader failed reading zip
  archive" (fairseq copies checkpoint_last.pt non-atomically, so a job killed while saving can
  leave a truncated one behind).
- ``trust_checkpoints_broadcast_by_rank0``: when a data-parallel run resumes, rank 0 loads the
  checkpoint and ``distributed_utils._broadcast_object_slow`` sends it to the other ranks as
  ``torch.save`` bytes, which they read with ``torch.load``'s default: since torch 2.6
  ``weights_only=True``, which refuses the state (its ``cfg`` is an omegaconf DictConfig by then),
  so every rank but 0 stopped with "Weights only load failed". The bytes come from rank 0 of the
  same job, serialized from what it loaded through the allow-list (checkpoint.py): the receiving
  ranks read them with ``weights_only=False``.
- ``keep_bf16_off_tpu``: fairseq 0.12's ``parse_args_and_arch`` turns ``--bf16`` into ``--bf16
  --tpu`` (fairseq issue #4696), so ``fairseq-train --bf16`` asks torch_xla for a TPU and stops
  ('NoneType' object has no attribute 'xla_device'). ``fairseq-hydra-train common.bf16=true`` is
  not affected. When torch_xla is not installed a TPU run cannot be what the user meant: the
  run's config gets ``tpu=False`` back before ``distributed_utils.call_main`` starts it, and it
  trains in bfloat16 on its own device.
- ``explain_training_refusals``: two ways a training run stopped on fairseq's words, not ours.
  (1) ``fairseq-train --fp16`` (and ``fairseq-hydra-train common.fp16=true``, as in the repo's
  base.yaml and sst_2.yaml) on a machine where torch has no CUDA, with or without ``--cpu``,
  stopped inside fairseq's FP16Optimizer with torch's "AssertionError: Torch not compiled with
  CUDA enabled" (its flat fp32 master copy asks for ``torch.cuda.current_device()``). The run is
  refused first with one message that names the way out (drop --fp16 and pass --cpu, or use a GPU
  machine): for fairseq-train in ``call_main``, before fairseq creates the save dir; for
  fairseq-hydra-train, which imports the plugin only once the run has started, in
  ``checkpoint_utils.load_checkpoint``, where fairseq first builds the optimizer (hydra has written
  its .hydra/ files by then; no checkpoint is written). ``--bf16``, ``--memory-efficient-fp16``,
  ``--amp``, ``--fp16-no-flatten-grads`` and ``fairseq-validate --fp16`` do run on a CPU (slowly)
  and are left alone. (2) ``--restore-file`` with a checkpoint that does not fit the command (k,
  size, dictionary): the plugin's message says both sides and the flags, but fairseq's
  ``Trainer.load_checkpoint`` raises "Cannot load model parameters from checkpoint ...; please
  ensure that the architectures match." over it, so that was the last line; ``load_checkpoint``
  re-raises the plugin's ``LinformerConfigError`` alone instead.

Each fix wraps the fairseq function (never copies it), checks first that the function is there
with the signature it expects, and otherwise is skipped with one ``FairseqFixSkipped`` warning: the
import never fails. Each is idempotent. ``APPLIED`` and ``SKIPPED`` record what ``apply_all`` did;
tests/test_fairseq_fixes.py also checks that fairseq still has each problem, so a fix that upstream
made unnecessary is noticed and dropped.
"""

import contextlib
import functools
import importlib.util
import inspect
import logging
import os
import threading
import warnings

import torch

logger = logging.getLogger(__name__)

APPLIED = {}  # fix name -> the fairseq function it wraps
SKIPPED = {}  # fix name -> why it was not applied


class FairseqFixSkipped(UserWarning):
    """A fix of this plugin did not fit the installed fairseq and was not applied."""


class _Unfit(Exception):
    """What a fix wraps is missing or not what the fix was written for."""


def _fairseq_version():
    try:
        import fairseq

        return getattr(fairseq, "__version__", "unknown")
    except ImportError:
        return "not installed"


def _target(module_name, attribute, parameters):
    """``module_name.attribute``, checked: callable, its leading parameters named ``parameters``."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _Unfit(f"{module_name} cannot be imported ({exc})") from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise _Unfit(f"{module_name}.{attribute} is missing")
    try:
        names = list(inspect.signature(function).parameters)
    except (TypeError, ValueError) as exc:
        raise _Unfit(f"{module_name}.{attribute} has no readable signature ({exc})") from exc
    if names[: len(parameters)] != list(parameters):
        raise _Unfit(f"{module_name}.{attribute} takes ({', '.join(names)}), "
                     f"the fix expects ({', '.join(parameters)}, ...)")
    return module, function


# -- the unreadable-checkpoint message ----------------------------------------------------------

def explain_unreadable_checkpoints():
    """Wrap ``fairseq.checkpoint_utils.load_checkpoint_to_cpu``."""
    module, load = _target("fairseq.checkpoint_utils", "load_checkpoint_to_cpu", ["path"])
    if getattr(load, "explains_unreadable", False):
        return

    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        try:
            return load(path, *args, **kwargs)
        except (RuntimeError, EOFError) as exc:
            message = str(exc)
            if isinstance(exc, EOFError) or "PytorchStreamReader" in message or "zip archive" in message:
                raise RuntimeError(
                    f"checkpoint {path} is truncated or corrupt ({message.splitlines()[0] if message else type(exc).__name__}). "
                    "It was probably cut off while being written: delete it (training then resumes from "
                    "nothing) or pass --restore-file with an intact one, e.g. checkpoint_best.pt or "
                    "checkpoint_<epoch>_<updates>.pt from the same --save-dir."
                ) from exc
            raise

    load_checkpoint_to_cpu.explains_unreadable = True
    module.load_checkpoint_to_cpu = load_checkpoint_to_cpu


# -- the rank-0 broadcast -----------------------------------------------------------------------
# fairseq's _broadcast_object_slow calls torch.load(buffer, map_location="cpu") through its module's
# `torch`. To change only that call's default we put a torch.load in place that adds
# weights_only=False for the thread inside the broadcast, and put torch's back when the last such
# thread leaves. The alternatives act on the whole process: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is an
# environment variable (and warns on every load); torch.serialization.safe_globals would need every
# omegaconf and fairseq type a DictConfig pickles, and is process-wide too.

_trusting = threading.local()  # .depth: broadcasts this thread is inside
_swap_lock = threading.Lock()
_swap = {"threads": 0, "torch_load": None}


def _torch_load_trusting_this_thread(*args, **kwargs):
    if getattr(_trusting, "depth", 0) and "weights_only" not in kwargs:
        kwargs["weights_only"] = False
    return _swap["torch_load"](*args, **kwargs)


@contextlib.contextmanager
def _torch_load_trusts_this_thread():
    with _swap_lock:
        if _swap["threads"] == 0:
            _swap["torch_load"], torch.load = torch.load, _torch_load_trusting_this_thread
        _swap["threads"] += 1
    _trusting.depth = getattr(_trusting, "depth", 0) + 1
    try:
        yield
    finally:
        _trusting.depth -= 1
        with _swap_lock:
            _swap["threads"] -= 1
            if _swap["threads"] == 0 and torch.load is _torch_load_trusting_this_thread:
                torch.load = _swap["torch_load"]


def trust_checkpoints_broadcast_by_rank0():
    """Wrap ``fairseq.distributed.utils._broadcast_object_slow``."""
    module, broadcast = _target("fairseq.distributed.utils", "_broadcast_object_slow",
                                ["obj", "src_rank", "group", "dist_device"])
    if getattr(broadcast, "trusts_rank0", False):
        return
    code = getattr(broadcast, "__code__", None)
    if getattr(broadcast, "__globals__", {}).get("torch") is not torch or "load" not in getattr(code, "co_names", ()):
        raise _Unfit("fairseq.distributed.utils._broadcast_object_slow no longer reads with torch.load")

    @functools.wraps(broadcast)
    def _broadcast_object_slow(obj, src_rank, group, dist_device):
        with _torch_load_trusts_this_thread():
            return broadcast(obj, src_rank, group, dist_device)

    _broadcast_object_slow.trusts_rank0 = True
    module._broadcast_object_slow = _broadcast_object_slow


# -- --bf16 off the TPU -------------------------------------------------------------------------

def _clear_tpu(cfg):
    for key in list(cfg.keys()):
        group = cfg[key]
        if hasattr(group, "keys") and "tpu" in group:
            group["tpu"] = False
        elif getattr(group, "tpu", False):  # the model's argparse Namespace
            group.tpu = False


def keep_bf16_off_tpu():
    """Wrap ``fairseq.distributed.utils.call_main``."""
    module, call_main = _target("fairseq.distributed.utils", "call_main", ["cfg", "main"])
    if getattr(call_main, "keeps_bf16_off_tpu", False):
        return

    @functools.wraps(call_main)
    def call_main_without_unasked_tpu(cfg, main, **kwargs):
        common = getattr(cfg, "common", None)
        if (common is not None and common.bf16 and common.tpu
                and importlib.util.find_spec("torch_xla") is None):
            logger.info("--bf16: training in bfloat16 on this run's device (fairseq 0.12 turns --bf16 "
                        "into --tpu, fairseq issue #4696, and torch_xla is not installed)")
            _clear_tpu(cfg)
        return call_main(cfg, main, **kwargs)

    call_main_without_unasked_tpu.keeps_bf16_off_tpu = True
    module.call_main = call_main_without_unasked_tpu


# -- --fp16 without CUDA ------------------------------------------------------------------------

class Fp16NeedsCuda(RuntimeError):
    """A training run asked for fairseq's fp16 optimizer where torch has no CUDA."""


def _on(common, name):
    return bool(getattr(common, name, False))


def fp16_without_cuda_message(common):
    """The refusal for a training run configured by ``common`` (cfg.common), or None if it can run.

    fairseq builds FP16Optimizer for fp16 training unless bf16, amp or a memory-efficient variant is
    asked for; with flat grads (the default) it calls torch.cuda.current_device(), which needs CUDA."""
    if (common is None or not _on(common, "fp16") or torch.cuda.is_available()
            or any(_on(common, name) for name in ("bf16", "amp", "memory_efficient_fp16",
                                                     "memory_efficient_bf16", "fp16_no_flatten_grads"))):
        return None
    why = (f"torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None
           else f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but sees no GPU")
    cpu = "drop --fp16 and keep --cpu" if _on(common, "cpu") else "drop --fp16 and pass --cpu"
    return (f"--fp16 needs a CUDA GPU and there is none here ({why}): fairseq's fp16 optimizer keeps its "
            f"fp32 copy of the weights on the GPU. To train on this CPU, {cpu} (fairseq-hydra-train: "
            "common.fp16=false common.cpu=true); or run the same command on a machine with a GPU.")


def _refuse_fp16_without_cuda(cfg):
    message = fp16_without_cuda_message(getattr(cfg, "common", None))
    if message:
        raise Fp16NeedsCuda(message)


def _is_training(main):
    """``main`` is fairseq_cli/train.py's (run as fairseq-train or python -m fairseq_cli.train)."""
    filename = getattr(getattr(main, "__code__", None), "co_filename", "")
    return getattr(main, "__name__", None) == "main" and filename.replace(os.sep, "/").endswith("fairseq_cli/train.py")


def _plugin_refusal(exc):
    """The plugin's own message under fairseq's "Cannot load model parameters" exception, if that is what it is."""
    from .options import LinformerConfigError

    cause = exc.__cause__ or exc.__context__
    if type(exc) is Exception and "Cannot load model parameters" in str(exc) and isinstance(cause, LinformerConfigError):
        return cause
    return None


def explain_training_refusals():
    """Wrap ``fairseq.checkpoint_utils.load_checkpoint`` (every training run) and, where it fits,
    ``fairseq.distributed.utils.call_main`` (fairseq-train, before anything is written)."""
    module, load_checkpoint = _target("fairseq.checkpoint_utils", "load_checkpoint", ["cfg", "trainer"])
    if not getattr(load_checkpoint, "explains_training_refusals", False):
        @functools.wraps(load_checkpoint)
        def load_checkpoint_explaining_refusals(cfg, trainer, **kwargs):
            _refuse_fp16_without_cuda(getattr(trainer, "cfg", None))
            try:
                return load_checkpoint(cfg, trainer, **kwargs)
            except Exception as exc:
                refusal = _plugin_refusal(exc)
                if refusal is None:
                    raise
            raise refusal from None  # alone: fairseq's own exception over it says less

        load_checkpoint_explaining_refusals.explains_training_refusals = True
        module.load_checkpoint = load_checkpoint_explaining_refusals

    # The early fp16 check is an extra: without it the refusal above still comes, after the save dir is made.
    try:
        utils, call_main = _target("fairseq.distributed.utils", "call_main", ["cfg", "main"])
    except _Unfit:
        return
    if getattr(call_main, "refuses_fp16_without_cuda", False):
        return

    @functools.wraps(call_main)
    def call_main_refusing_fp16_without_cuda(cfg, main, **kwargs):
        if _is_training(main):  # fairseq-validate --fp16 runs on a CPU
            _refuse_fp16_without_cuda(cfg)
        return call_main(cfg, main, **kwargs)

    call_main_refusing_fp16_without_cuda.refuses_fp16_without_cuda = True
    utils.call_main = call_main_refusing_fp16_without_cuda


# -- all of them --------------------------------------------------------------------------------

FIXES = {
    "explain_unreadable_checkpoints": (explain_unreadable_checkpoints, "fairseq.checkpoint_utils.load_checkpoint_to_cpu",
                                       "a truncated checkpoint fails with torch's 'PytorchStreamReader failed "
                                       "reading zip archive', without naming the file or the way out"),
    "trust_checkpoints_broadcast_by_rank0": (trust_checkpoints_broadcast_by_rank0,
                                             "fairseq.distributed.utils._broadcast_object_slow",
                                             "resuming a data-parallel run on torch >= 2.6 can stop every rank but 0 "
                                             "with 'Weights only load failed'"),
    "keep_bf16_off_tpu": (keep_bf16_off_tpu, "fairseq.distributed.utils.call_main",
                          "fairseq-train --bf16 asks for a TPU and stops without torch_xla (fairseq #4696); "
                          "train in bfloat16 with fairseq-hydra-train common.bf16=true instead"),
    "explain_training_refusals": (explain_training_refusals, "fairseq.checkpoint_utils.load_checkpoint",
                                  "--fp16 training where torch has no CUDA stops with torch's 'AssertionError: "
                                  "Torch not compiled with CUDA enabled' (on a CPU train with --cpu, not --fp16), and "
                                  "a checkpoint that does not fit ends in fairseq's 'please ensure that the "
                                  "architectures match' (the plugin's message is in the traceback above it)"),
}


def apply_all():
    """Apply every fix that fits the installed fairseq, warn once for each that does not.

    Returns and records ``APPLIED`` ({name: what it wraps}) and ``SKIPPED`` ({name: why})."""
    for name, (fix, target, without) in FIXES.items():
        APPLIED.pop(name, None)
        SKIPPED.pop(name, None)
        try:
            fix()
        except Exception as exc:  # whatever happens, the import goes on without this fix
            SKIPPED[name] = str(exc) if isinstance(exc, _Unfit) else f"{type(exc).__name__}: {exc}"
            warnings.warn(f"linformer_plugin: fix {name} not applied on fairseq {_fairseq_version()}: {SKIPPED[name]}. "
                          f"Without it, {without}.", FairseqFixSkipped, stacklevel=2)
        else:
            APPLIED[name] = target
    return APPLIED, SKIPPED
