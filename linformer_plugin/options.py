"""The Linformer options: one place that reads them, derives k and validates them.

Command-line flags are those of fairseq's ``examples/linformer`` (integer 0/1 flags, a
compression ratio) plus ``--compressed-dim`` for users who think in k.
"""

from dataclasses import dataclass

SHARING_MODES = ("headwise", "kv", "layerwise")
DEFAULT_COMPRESSED = 4


class LinformerConfigError(ValueError):
    """A Linformer option, or a combination of them, that cannot build a model."""


def add_linformer_args(parser):
    """The Linformer flags, with the reference's names, types and meanings."""
    parser.add_argument(
        "--compressed",
        type=int,
        metavar="R",
        help="compression ratio of the sequence length: k = max_positions // R "
        f"(default {DEFAULT_COMPRESSED} unless --compressed-dim is given)",
    )
    parser.add_argument(
        "--compressed-dim",
        type=int,
        metavar="K",
        help="projected length k of keys and values, given directly",
    )
    parser.add_argument(
        "--shared-kv-compressed",
        type=int,
        choices=[0, 1],
        help="1: one projection per layer for keys and values (E = F)",
    )
    parser.add_argument(
        "--shared-layer-kv-compressed",
        type=int,
        choices=[0, 1],
        help="1: one projection for keys and values of all layers",
    )
    parser.add_argument(
        "--freeze-compress",
        type=int,
        choices=[0, 1],
        help="1: keep the projections at their initial values (not trained)",
    )


def set_linformer_defaults(args):
    """Architecture defaults; ``compressed`` stays unset when k is given directly."""
    if getattr(args, "compressed", None) is None and getattr(args, "compressed_dim", None) is None:
        args.compressed = DEFAULT_COMPRESSED
    args.compressed = getattr(args, "compressed", None)
    args.compressed_dim = getattr(args, "compressed_dim", None)
    args.shared_kv_compressed = getattr(args, "shared_kv_compressed", 0)
    args.shared_layer_kv_compressed = getattr(args, "shared_layer_kv_compressed", 0)
    args.freeze_compress = getattr(args, "freeze_compress", 0)


def _flag(args, name):
    value = getattr(args, name, 0)
    value = 0 if value is None else value
    if value not in (0, 1, True, False):
        raise LinformerConfigError(
            f"--{name.replace('_', '-')} must be 0 or 1, got {value!r}"
        )
    return bool(value)


@dataclass(frozen=True)
class LinformerOptions:
    """What a Linformer encoder needs to know, validated once."""

    max_positions: int  # n: the longest sequence, and the number of columns of E and F
    compressed_dim: int  # k: the number of projected keys and values
    sharing: str = "headwise"  # headwise: E, F per layer; kv: E = F per layer; layerwise: one E for all
    freeze: bool = False  # projections not trained

    def __post_init__(self):
        if self.max_positions is None or self.max_positions <= 0:
            raise LinformerConfigError(
                f"max_positions must be a positive integer, got {self.max_positions!r}; "
                "set --max-positions (or --tokens-per-sample)"
            )
        if self.compressed_dim <= 0:
            raise LinformerConfigError(
                f"the projected length k must be positive, got k={self.compressed_dim}; "
                "pass --compressed-dim K with K >= 1 (or --compressed R with R <= max_positions)"
            )
        if self.compressed_dim > self.max_positions:
            raise LinformerConfigError(
                f"the projected length k={self.compressed_dim} exceeds max_positions="
                f"{self.max_positions}: a Linformer projects the sequence down, so pass "
                "--compressed-dim K with K <= max_positions"
            )
        if self.sharing not in SHARING_MODES:
            raise LinformerConfigError(
                f"unknown sharing mode {self.sharing!r}; choose one of {', '.join(SHARING_MODES)}"
            )

    @property
    def projections_per_layer(self) -> int:
        """How many n -> k maps a layer's own projection holds (E and F, or one)."""
        return 2 if self.sharing == "headwise" else 1

    @classmethod
    def from_args(cls, args) -> "LinformerOptions":
        max_positions = getattr(args, "max_positions", None)
        compressed = getattr(args, "compressed", None)
        compressed_dim = getattr(args, "compressed_dim", None)
        if compressed is not None and compressed <= 0:
            raise LinformerConfigError(
                f"--compressed must be a positive ratio, got {compressed}"
            )
        if compressed_dim is None:
            if compressed is None:
                compressed = DEFAULT_COMPRESSED
            if max_positions is not None and compressed > max_positions:
                raise LinformerConfigError(
                    f"--compressed {compressed} is larger than max_positions={max_positions}, "
                    f"which gives k = {max_positions} // {compressed} = 0; use a smaller ratio "
                    "or --compressed-dim K"
                )
            compressed_dim = max_positions // compressed if max_positions else 0
        elif compressed is not None and max_positions and max_positions // compressed != compressed_dim:
            raise LinformerConfigError(
                f"--compressed {compressed} gives k = {max_positions} // {compressed} = "
                f"{max_positions // compressed}, but --compressed-dim is {compressed_dim}; "
                "pass only one of them"
            )
        if _flag(args, "shared_layer_kv_compressed"):
            sharing = "layerwise"
        elif _flag(args, "shared_kv_compressed"):
            sharing = "kv"
        else:
            sharing = "headwise"
        return cls(
            max_positions=max_positions,
            compressed_dim=compressed_dim,
            sharing=sharing,
            freeze=_flag(args, "freeze_compress"),
        )
