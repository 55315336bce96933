"""Checkpoint loading: the torch.load allow-list, and the upgrade of reference checkpoints.

fairseq 0.12 calls ``torch.load`` without ``weights_only``; since torch 2.6 that means
``weights_only=True``, which refuses every fairseq checkpoint (its ``cfg`` holds an
``argparse.Namespace``). Rather than switch the check off, we allow exactly the types fairseq
writes into a checkpoint.
"""

import argparse
import re

import torch

from .options import LinformerOptions


def _fairseq_checkpoint_types():
    import numpy as np

    try:  # where numpy >= 2 pickles its scalars from
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    return [
        argparse.Namespace,  # cfg.model (and "args" in older checkpoints)
        # numpy scalars: fairseq's meters round numpy values into numpy values, which can reach
        # the saved metrics and best-checkpoint score
        scalar,
        np.dtype,
        *(type(np.dtype(name)) for name in ("float64", "float32", "float16", "int64", "int32", "bool")),
    ]


def allow_fairseq_checkpoints():
    """Let ``torch.load(weights_only=True)`` read fairseq checkpoints (idempotent)."""
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch < 2.4 loads everything anyway
        add_safe_globals(_fairseq_checkpoint_types())


_REFERENCE_LAYER_KEY = re.compile(r"layers\.(\d+)\.self_attn\.compress_([kv])\.(weight|bias)$")


def upgrade_reference_state_dict(state_dict, prefix: str, options: LinformerOptions):
    """Map a state dict of fairseq's ``examples/linformer`` onto this plugin's layout, in place.

    ``prefix`` names the TransformerEncoder (``encoder.sentence_encoder.``). The reference keeps
    ``compress_k`` / ``compress_v`` (nn.Linear, k x n) per layer, or one ``compress_layer`` on
    the encoder for layerwise sharing (its bias is never used in the reference's forward).
    """
    per_layer = {}
    for key in [key for key in state_dict if key.startswith(prefix)]:
        match = _REFERENCE_LAYER_KEY.match(key[len(prefix):])
        if match:
            tensor = state_dict.pop(key)
            if match.group(3) == "weight":  # a bias exists only on the shared layer, unused
                per_layer.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
        elif re.fullmatch(r"layers\.\d+\.version", key[len(prefix):]):
            del state_dict[key]
    shared_key = prefix + "compress_layer.weight"
    if options.sharing == "layerwise":
        if shared_key not in state_dict:
            raise ValueError(
                "this checkpoint has no layerwise-shared projection (compress_layer), but the "
                "model is built with --shared-layer-kv-compressed 1"
            )
        state_dict[prefix + "shared_projection.weight"] = state_dict.pop(shared_key)
        state_dict.pop(prefix + "compress_layer.bias", None)
        return
    for layer, maps in per_layer.items():
        if options.sharing == "headwise":
            if "v" not in maps:
                raise ValueError(
                    f"layer {layer} of this checkpoint has no compress_v: it was trained with "
                    "--shared-kv-compressed 1; load it with that flag"
                )
            weight = torch.cat([maps["k"], maps["v"]], dim=0)
        else:
            weight = maps["k"]
        state_dict[f"{prefix}layers.{layer}.self_attn.projection.weight"] = weight


def explain_unreadable_checkpoints():
    """Make fairseq's checkpoint loader name a truncated or corrupt file and the way out, instead of
    torch's "PytorchStreamReader failed reading zip archive" (idempotent).

    fairseq copies checkpoint_last.pt non-atomically, so a job killed while saving can leave a
    truncated one behind."""
    from fairseq import checkpoint_utils

    load = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(load, "explains_unreadable", False):
        return

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
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu
