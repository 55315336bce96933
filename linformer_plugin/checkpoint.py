"""The checkpoint layout, in one place: key names, window codes, the positions offset, the version;
the torch.load allow-list; the upgrade of reference checkpoints and the layout check on load.

fairseq 0.12 calls ``torch.load`` without ``weights_only``; since torch 2.6 that means
``weights_only=True``, which refuses every fairseq checkpoint (its ``cfg`` holds an
``argparse.Namespace``). Rather than switch the check off, we allow exactly the types fairseq
writes into a checkpoint.
"""

import argparse
import re
from typing import Optional

import torch

from .options import LinformerConfigError, LinformerOptions, describe

# 3: this plugin's layout (E and F stacked in one projection per layer).
# 2 and 1: fairseq's reference (examples/linformer), upgraded on load.
CHECKPOINT_VERSION = 3

# a linformer_roberta state dict, from the model's root
ENCODER = "encoder.sentence_encoder."  # the TransformerEncoder inside RobertaEncoder
VERSION_KEY = "encoder.version"
POSITIONS_KEY = ENCODER + "embed_positions.weight"
SHARED_PROJECTION = "shared_projection"  # layerwise sharing: one projection, owned by the encoder


def layer_key(layer: int, name: str) -> str:
    """A key of encoder layer ``layer``, relative to ``ENCODER`` (e.g. ``self_attn.k_proj.weight``)."""
    return f"layers.{layer}.{name}"


def projection_key(layer: int, name: str = "weight") -> str:
    """Layer ``layer``'s projection parameter or buffer (weight: linear; kernel, layout: windowed)."""
    return layer_key(layer, f"self_attn.projection.{name}")


# WindowProjection's persistent ``layout`` buffer = [method code, stride]: mean and max pooling have
# no parameter that would tell them apart in a checkpoint
WINDOW_METHOD_CODES = {"conv": 0, "mean": 1, "max": 2}
_METHOD_NAMES = {code: name for name, code in WINDOW_METHOD_CODES.items()}


def positions_offset(padding_idx: int = 1) -> int:
    """Rows before position 0 in fairseq's learned positional embedding (``padding_idx + 1``)."""
    return padding_idx + 1


def positions_length(weight: torch.Tensor, padding_idx: int = 1) -> int:
    """max_positions of a learned position table."""
    return weight.size(0) - positions_offset(padding_idx)


def linformer_layout(model_state) -> Optional[str]:
    """Whose Linformer projections a state dict holds: "plugin", "reference" (fairseq's
    examples/linformer) or None (none: e.g. a RoBERTa)."""
    if any(_PROJECTION_KEY.search(key) for key in model_state):
        return "plugin"
    if any(_REFERENCE_KEY.search(key) for key in model_state):
        return "reference"
    return None


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
_REFERENCE_KEY = re.compile(r"(self_attn\.compress_[kv]|compress_layer)\.(weight|bias)$")


def upgrade_reference_state_dict(state_dict, prefix: str, options: LinformerOptions):
    """Map a state dict of fairseq's ``examples/linformer`` onto this plugin's layout, in place.

    ``prefix`` names the TransformerEncoder (``encoder.sentence_encoder.``). The reference keeps
    ``compress_k`` / ``compress_v`` (nn.Linear, k x n) per layer, or one ``compress_layer`` on
    the encoder for layerwise sharing (its bias is never used in the reference's forward).
    """
    if options.projection != "linear" or options.sharing == "none":
        raise LinformerConfigError(
            "this is a checkpoint of fairseq's reference Linformer, whose projections are linear and "
            "shared by the heads of a layer, but the model is built with "
            f"--compressed-projection {options.projection} --compressed-sharing {options.sharing}: load it "
            "with --compressed-projection linear and the reference's sharing flags "
            "(--shared-kv-compressed / --shared-layer-kv-compressed as it was trained)"
        )
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
        state_dict[f"{prefix}{SHARED_PROJECTION}.weight"] = state_dict.pop(shared_key)
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
        state_dict[prefix + projection_key(layer)] = weight


_PROJECTION_KEY = re.compile(r"(layers\.(\d+)\.self_attn\.projection|shared_projection)\.(weight|kernel|layout)$")


def _projection_entries(state_dict, prefix: str):
    """{owner: {name: tensor}} for the Linformer projections under ``prefix``; owner is
    "layers.<i>" or "shared_projection" (layerwise)."""
    entries = {}
    for key, tensor in state_dict.items():
        if key.startswith(prefix):
            match = _PROJECTION_KEY.match(key[len(prefix):])
            if match:
                owner = f"layers.{match.group(2)}" if match.group(2) is not None else SHARED_PROJECTION
                entries.setdefault(owner, {})[match.group(3)] = tensor
    return entries


def _describe_entry(entry) -> str:
    if not entry:
        return "no projection of its own"
    if "weight" in entry:
        rows, columns = entry["weight"].shape
        # E and F (and per-head maps) are stored stacked: rows = k x the number of maps
        return f"a linear projection of {rows} stacked rows (k x its E/F maps) x {columns} positions"
    layout = entry.get("layout")
    method, stride = (_METHOD_NAMES.get(int(layout[0]), "?"), int(layout[1])) if layout is not None else ("?", "?")
    if "kernel" in entry:
        maps, taps = entry["kernel"].shape
        return f"a conv projection of {maps} kernel(s) of {taps} taps (stride {stride})"
    return f"{method} pooling over windows of {stride} tokens"


_LAYER_KEY = re.compile(r"layers\.(\d+)\.")


def _shape_of(state_dict, prefix: str, entries) -> dict:
    """The model sizes a state dict holds, in the user's terms: layers, width (embedding dim), n and
    k (linear projections only: layer 0's, or the shared one; None when not readable)."""
    layers = {int(m.group(1)) for key in state_dict if key.startswith(prefix)
              for m in [_LAYER_KEY.match(key[len(prefix):])] if m}
    tokens, positions = state_dict.get(prefix + "embed_tokens.weight"), state_dict.get(prefix + "embed_positions.weight")
    entry = entries.get("layers.0") or entries.get(SHARED_PROJECTION) or {}
    return {"layers": len(layers), "width": tokens.shape[1] if tokens is not None else None,
            "n": positions_length(positions) if positions is not None else None,
            "rows": entry["weight"].shape[0] if "weight" in entry else None}


def _mismatch_in_user_terms(theirs: dict, mine: dict, options: LinformerOptions, architectures: dict) -> str:
    """'the checkpoint has 4 layers of width 256, n = 512, k = 64; this command builds ...: pass ...'."""
    k_mine = options.compressed_dim
    # k from the checkpoint's rows, read with this command's sharing (rows per k: E and F stacked, heads)
    k_theirs = (theirs["rows"] * k_mine // mine["rows"]
                if theirs["rows"] and mine["rows"] and (theirs["rows"] * k_mine) % mine["rows"] == 0 else None)

    def sizes(side, k):
        k_text = f", k = {k}" if k else ""
        return f"{side['layers']} layers of width {side['width']}, n = {side['n']}{k_text}"

    flags = []
    if (theirs["layers"], theirs["width"]) != (mine["layers"], mine["width"]):
        arch = next((name for name, size in sorted(architectures.items()) if name.startswith("linformer_roberta_")
                     and (size["encoder_layers"], size["encoder_embed_dim"]) == (theirs["layers"], theirs["width"])), None)
        flags.append(f"--arch {arch}" if arch else f"--encoder-layers {theirs['layers']} "
                     f"--encoder-embed-dim {theirs['width']} (and its heads and ffn size)")
    if k_theirs and k_theirs != k_mine:
        flags.append(f"--compressed-dim {k_theirs}")
    if theirs["n"] and theirs["n"] != mine["n"]:
        flags.append(f"--max-positions {theirs['n']}")
    advice = f"; pass {' '.join(flags)}" if flags else ""
    return (f"the checkpoint has {sizes(theirs, k_theirs)}; this command builds {sizes(mine, k_mine)} "
            f"({describe(options)}){advice}")


def check_projection_layout(state_dict, prefix: str, expected, options: LinformerOptions,
                            architectures: Optional[dict] = None):
    """A clear error when a checkpoint does not fit the model: another depth or width, projection
    method, sharing mode, k (per layer) or n, instead of a size mismatch in ``load_state_dict``.

    ``expected`` is the model's own state dict (keys relative to ``prefix``). The message states both
    sides in the user's terms (layers, width, n, k) and the flags that would build the checkpoint's
    model, then the first projection that differs."""
    got = _projection_entries(state_dict, prefix)
    want = _projection_entries(expected, "")
    theirs, mine = _shape_of(state_dict, prefix, got), _shape_of(expected, "", want)
    if theirs["width"] is not None and (theirs["layers"], theirs["width"]) != (mine["layers"], mine["width"]):
        raise LinformerConfigError(
            f"the checkpoint does not fit the model: {_mismatch_in_user_terms(theirs, mine, options, architectures or {})}. "
            "Build the model with the options the checkpoint was trained with (its cfg.model)"
        )
    for owner in sorted(want.keys() | got.keys()):
        if owner not in want and owner.startswith("layers.") and not want.get(SHARED_PROJECTION):
            continue  # a layer the model does not have
        mine_entry, theirs_entry = want.get(owner, {}), got.get(owner, {})
        same = mine_entry.keys() == theirs_entry.keys() and all(
            mine_entry[name].shape == theirs_entry[name].shape
            and (name != "layout" or torch.equal(mine_entry[name], theirs_entry[name]))
            for name in mine_entry
        )
        if not same:
            raise LinformerConfigError(
                f"the checkpoint does not fit the model: {_mismatch_in_user_terms(theirs, mine, options, architectures or {})}. In "
                f"detail, the checkpoint's Linformer projections do not fit the model built with {describe(options)}: "
                f"at {prefix}{owner} the checkpoint has {_describe_entry(theirs_entry)}, the model expects "
                f"{_describe_entry(mine_entry)}. "
                "Build the model with the options the checkpoint was trained with "
                "(its cfg.model: compressed_projection, compressed_sharing, compressed_dim or compressed_dims, "
                "shared_kv_compressed, shared_layer_kv_compressed, max_positions)"
            )

