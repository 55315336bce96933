"""Checkpoint conversions for long inputs: a fairseq RoBERTa checkpoint -> ``linformer_roberta``
(warm start), and a ``linformer_roberta`` checkpoint -> a longer ``max_positions``.

Positions are extended by the Longformer recipe: the learned position embeddings are copied in
blocks, so position t starts as position t mod n. E and F are extended the same way, every column
scaled by n / N: on an input made of N / n blocks, each projected key and value is then the mean of
the blocks' projections under the original model, the scale the model was trained on (a plain copy
would sum N / n blocks). Inputs of the original length are scaled down by n / N too, so an extended
checkpoint is meant to be trained further at the new length. The source file is never modified and
the output is written atomically.

Windowed projections (``--compressed-projection conv``, ``mean``, ``max``: kernel = stride = n/k)
have no per-position columns. Keeping k at a new N would stretch every window to N/k tokens, a
different kernel than the one trained; instead the window (stride, and the conv kernel) is kept
and k grows with N: k' = k N / n (per layer with ``--compressed-dims``). An input of up to n
tokens then gives exactly the outputs of the original model (same windows, same kernel), and the
attention cost grows with N as ``N / stride`` keys.
"""

import argparse
import copy
import math
from dataclasses import replace
from typing import Optional

import torch

from .checkpoint import (CHECKPOINT_VERSION, ENCODER, POSITIONS_KEY, SHARED_PROJECTION, VERSION_KEY, layer_key,
                         linformer_layout, positions_length, positions_offset, projection_key)
from .io import atomic_output
from .modules.sequence_projection import SequenceProjection
from .options import WINDOW_METHODS, LinformerOptions


class ConversionError(ValueError):
    """A checkpoint or a request that the conversion cannot honour."""


def load_checkpoint(path: str) -> dict:
    try:  # weights_only, with the package's allow-list of fairseq's checkpoint types
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"cannot read {path} as a fairseq checkpoint: {exc}") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise ConversionError(f"{path} is not a fairseq checkpoint (no 'model' state dict)")
    # the model zoo's RoBERTa calls its encoder "decoder"
    state["model"] = {("encoder" + k[len("decoder"):] if k.startswith("decoder.") else k): v
                      for k, v in state["model"].items()}
    return state


def model_args(state: dict):
    """The model's options, as a Namespace (from ``cfg.model`` or the older ``args``)."""
    cfg = state.get("cfg")
    if cfg is not None and cfg.get("model") is not None:
        model = cfg["model"]
        return model if isinstance(model, argparse.Namespace) else argparse.Namespace(**dict(model))
    if state.get("args") is not None:
        return state["args"]
    raise ConversionError("the checkpoint has neither cfg.model nor args")


def _set_model_args(state: dict, args: argparse.Namespace):
    if state.get("cfg") is not None and state["cfg"].get("model") is not None:
        state["cfg"]["model"] = args
    else:
        state["args"] = args


def _set_task_length(state: dict, max_positions: int):
    cfg = state.get("cfg")
    if cfg is not None and cfg.get("task") is not None:
        task = cfg["task"]
        if isinstance(task, argparse.Namespace):
            task.tokens_per_sample = max_positions
        elif "tokens_per_sample" in task:
            task["tokens_per_sample"] = max_positions


def _positions_table_length(model_state: dict) -> int:
    if POSITIONS_KEY not in model_state:
        raise ConversionError(
            f"the checkpoint is not RoBERTa-shaped: it has no {POSITIONS_KEY} (learned positions)"
        )
    return positions_length(model_state[POSITIONS_KEY])


def extend_positions(weight: torch.Tensor, old_max: int, new_max: int, padding_idx: int = 1) -> torch.Tensor:
    """Learned positions (``padding_idx + 1`` offset rows, then one row per position) copied in blocks."""
    offset = positions_offset(padding_idx)
    if weight.size(0) != old_max + offset:
        raise ConversionError(
            f"the position table has {weight.size(0)} rows, expected max_positions + {offset} = {old_max + offset}"
        )
    positions = weight[offset:]
    blocks = positions.repeat(math.ceil(new_max / old_max), 1)[:new_max]
    return torch.cat([weight[:offset], blocks], dim=0)


def _check_new_length(old_max: int, new_max: Optional[int]) -> int:
    if new_max is None:
        return old_max
    if new_max < old_max:
        raise ConversionError(
            f"--max-positions {new_max} is smaller than the checkpoint's max_positions={old_max}; "
            "positions can only be extended"
        )
    if new_max % old_max:
        lower, upper = new_max // old_max * old_max, (new_max // old_max + 1) * old_max
        raise ConversionError(
            f"--max-positions {new_max} is not a multiple of the checkpoint's max_positions={old_max}: "
            f"the positions are copied in whole blocks of {old_max}; use {lower} or {upper}"
        )
    return new_max


def roberta_to_linformer(state: dict, compressed_dim: int, max_positions: Optional[int] = None,
                         sharing: str = "headwise", seed: int = 1, init: str = "xavier") -> dict:
    """A RoBERTa checkpoint state -> a linformer_roberta one (new dict; the input is not changed)."""
    model_state = state["model"]
    if linformer_layout(model_state) is not None:
        raise ConversionError("the checkpoint is already a Linformer; use extend_linformer_positions")
    old_max = _positions_table_length(model_state)
    new_max = _check_new_length(old_max, max_positions)
    layers = sorted({int(k[len(ENCODER + "layers."):].split(".")[0])
                     for k in model_state if k.startswith(ENCODER + "layers.")})
    if not layers or any(ENCODER + layer_key(i, "self_attn.k_proj.weight") not in model_state for i in layers):
        raise ConversionError("the checkpoint is not RoBERTa-shaped: no encoder layers with self_attn.k_proj")
    options = LinformerOptions(max_positions=new_max, compressed_dim=compressed_dim, sharing=sharing, init=init)
    args = copy.deepcopy(model_args(state))

    new_state = {k: v for k, v in model_state.items()}
    new_state[POSITIONS_KEY] = extend_positions(model_state[POSITIONS_KEY], old_max, new_max)
    torch.manual_seed(seed)  # projections initialised as the plugin initialises them
    if sharing == "layerwise":
        new_state[f"{ENCODER}{SHARED_PROJECTION}.weight"] = SequenceProjection(new_max, compressed_dim, 1, init=init).weight.data
    else:
        heads = getattr(args, "encoder_attention_heads", None)
        if sharing == "none" and not heads:
            raise ConversionError("sharing none needs the number of heads, but the checkpoint's args have no "
                                  "encoder_attention_heads")
        for i in layers:
            projection = SequenceProjection(new_max, compressed_dim, options.maps_per_layer(heads), init=init)
            new_state[ENCODER + projection_key(i)] = projection.weight.data
    new_state[VERSION_KEY] = torch.tensor(CHECKPOINT_VERSION)

    args.arch = "linformer_roberta"
    args._name = "linformer_roberta"
    options.to_args(args)
    return _finish(state, new_state, args, new_max)


def extend_linformer_positions(state: dict, max_positions: int) -> dict:
    """A linformer_roberta checkpoint state -> the same model with a longer max_positions.

    Linear projections keep k (columns block-copied and scaled); windowed ones keep their window
    and kernel, so k grows by max_positions / old max_positions (see the module's docstring)."""
    model_state = state["model"]
    if linformer_layout(model_state) != "plugin":
        raise ConversionError(
            "the checkpoint has no Linformer projections of this plugin (convert a RoBERTa checkpoint "
            "with roberta_to_linformer; load a fairseq-reference checkpoint once and save it first)"
        )
    old_max = _positions_table_length(model_state)
    new_max = _check_new_length(old_max, max_positions)
    args = copy.deepcopy(model_args(state))
    options = LinformerOptions.from_args(args)  # k stays k (linear), whatever the ratio said
    new_state = {k: v for k, v in model_state.items()}
    new_state[POSITIONS_KEY] = extend_positions(model_state[POSITIONS_KEY], old_max, new_max)
    for key, weight in model_state.items():
        if key.endswith("projection.weight"):
            if weight.size(1) != old_max:
                raise ConversionError(f"{key} has {weight.size(1)} columns, expected max_positions={old_max}")
            new_state[key] = weight.repeat(1, new_max // old_max) * (old_max / new_max)
    # windowed projections: kernels and layouts (stride) unchanged, k scaled with n
    scale = new_max // old_max if options.projection in WINDOW_METHODS else 1
    dims = tuple(k * scale for k in options.compressed_dims) if options.compressed_dims else None
    replace(options, max_positions=new_max, compressed_dim=options.compressed_dim * scale,
            compressed_dims=dims).to_args(args)
    return _finish(state, new_state, args, new_max)


def _finish(state: dict, model_state: dict, args, max_positions: int) -> dict:
    new = {k: v for k, v in state.items() if k not in ("model", "last_optimizer_state")}
    new["cfg"] = copy.deepcopy(state.get("cfg"))
    new["model"] = model_state  # the optimizer state (old shapes) is left behind
    _set_model_args(new, args)
    _set_task_length(new, max_positions)
    return new


def save_checkpoint(state: dict, path: str):
    with atomic_output(path, "wb") as f:
        torch.save(state, f)
