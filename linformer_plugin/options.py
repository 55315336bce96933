"""The Linformer options: one place that reads them, derives k and validates them.

Command-line flags are those of fairseq's ``examples/linformer`` (integer 0/1 flags, a
compression ratio) plus ``--compressed-dim`` for users who think in k, and the projections of
section 4 of the paper that the reference does not implement:

* ``--compressed-projection {linear,conv,mean,max}``: how n positions become k rows. ``linear``
  is the learned k x n matrix (the reference's); ``conv``, ``mean`` and ``max`` act on windows of
  s = n / k consecutive tokens (kernel = stride = s), so they need k to divide n.
* ``--compressed-sharing {none,headwise,kv,layerwise}``: which heads, keys/values and layers share
  a projection. ``headwise`` is the reference's default (one E and one F per layer, shared by all
  its heads); ``none`` gives every head its own E_i and F_i. The reference's integer flags map
  onto it: ``--shared-kv-compressed 1`` is ``kv``, ``--shared-layer-kv-compressed 1`` is
  ``layerwise``; an explicit value that contradicts them is an error.
* ``--compressed-dims K1,K2,...``: one k per encoder layer (the paper suggests smaller k in higher
  layers), instead of ``--compressed``/``--compressed-dim``.
* ``--compressed-init {xavier,normal,mean}``: how learned projections start (see
  ``sequence_projection.init_projection``).
"""

from dataclasses import dataclass
from typing import Optional, Tuple

SHARING_MODES = ("none", "headwise", "kv", "layerwise")
PROJECTION_METHODS = ("linear", "conv", "mean", "max")
WINDOW_METHODS = ("conv", "mean", "max")  # kernel = stride = n / k
POOLING_METHODS = ("mean", "max")  # no parameters
INIT_METHODS = ("xavier", "normal", "mean")
DEFAULT_INIT = "mean"  # new projections start as mean pooling: it trains to RoBERTa's perplexity, xavier does not
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
    parser.add_argument(
        "--compressed-projection",
        choices=PROJECTION_METHODS,
        help="how the n positions are projected to k rows: linear (a learned k x n matrix, the "
        "default), conv (a learned kernel with kernel = stride = n/k), mean or max (pooling over "
        "windows of n/k tokens); conv, mean and max need k to divide max_positions",
    )
    parser.add_argument(
        "--compressed-sharing",
        choices=SHARING_MODES,
        help="none: a projection per head; headwise (default): one E and one F per layer for all "
        "heads; kv: E = F per layer (= --shared-kv-compressed 1); layerwise: one projection for "
        "every layer (= --shared-layer-kv-compressed 1)",
    )
    parser.add_argument(
        "--compressed-dims",
        type=str,
        metavar="K1,K2,...",
        help="one k per encoder layer (e.g. 256,256,128,128: smaller k in higher layers), instead "
        "of --compressed/--compressed-dim; not with layerwise sharing",
    )
    parser.add_argument(
        "--compressed-init",
        choices=INIT_METHODS,
        help="initial values of new learned projections (linear, conv); loading a checkpoint "
        "ignores it: mean (default: each of the k rows averages its window of about n/k "
        "consecutive positions, so the projection starts as mean pooling and learns from there), "
        "xavier (xavier-uniform, gain 1/sqrt(2), what the reference writes), normal (N(0, 0.02): "
        "what the reference's projections actually get, RoBERTa's init_bert_params "
        "re-initialising them)",
    )


def set_linformer_defaults(args):
    """Architecture defaults; ``compressed`` stays unset when k is given directly."""
    if (getattr(args, "compressed", None) is None and getattr(args, "compressed_dim", None) is None
            and getattr(args, "compressed_dims", None) is None):
        args.compressed = DEFAULT_COMPRESSED
    args.compressed = getattr(args, "compressed", None)
    args.compressed_dim = getattr(args, "compressed_dim", None)
    args.shared_kv_compressed = getattr(args, "shared_kv_compressed", 0)
    args.shared_layer_kv_compressed = getattr(args, "shared_layer_kv_compressed", 0)
    args.freeze_compress = getattr(args, "freeze_compress", 0)
    args.compressed_projection = getattr(args, "compressed_projection", None)
    args.compressed_sharing = getattr(args, "compressed_sharing", None)
    args.compressed_dims = getattr(args, "compressed_dims", None)
    args.compressed_init = getattr(args, "compressed_init", None)


def _flag(args, name):
    value = getattr(args, name, 0)
    value = 0 if value is None else value
    if value not in (0, 1, True, False):
        raise LinformerConfigError(
            f"--{name.replace('_', '-')} must be 0 or 1, got {value!r}"
        )
    return bool(value)


def parse_compressed_dims(value) -> Optional[Tuple[int, ...]]:
    """``--compressed-dims``: "256,256,128" (command line), or a list/tuple (code, hydra)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            raise LinformerConfigError(
                f"--compressed-dims must be comma-separated integers, one k per encoder layer "
                f"(e.g. 256,256,128,128), got {value!r}"
            ) from None
    elif isinstance(value, int):
        dims = (value,)
    else:
        try:
            dims = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise LinformerConfigError(
                f"--compressed-dims must be a list of integers, one k per encoder layer, got {value!r}"
            ) from None
    if not dims:
        raise LinformerConfigError("--compressed-dims is empty: give one k per encoder layer")
    return dims


def _divisors_near(n: int, k: int) -> str:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    below = max((d for d in divisors if d < k), default=None)
    above = min((d for d in divisors if d > k), default=None)
    return " or ".join(str(d) for d in (below, above) if d is not None)


@dataclass(frozen=True)
class LinformerOptions:
    """What a Linformer encoder needs to know, validated once.

    Sharing modes: ``none`` (a projection per head: E_i, F_i), ``headwise`` (one E and one F
    per layer for all its heads: the reference's default), ``kv`` (E = F per layer),
    ``layerwise`` (one projection for keys and values of every layer, owned by the encoder).
    ``compressed_dims`` gives each layer its own k (``compressed_dim`` is then layer 0's).
    """

    max_positions: int  # n: the longest sequence, and the number of columns of E and F
    compressed_dim: Optional[int]  # k: the number of projected keys and values (None: compressed_dims[0])
    sharing: str = "headwise"  # none | headwise | kv | layerwise
    freeze: bool = False  # projections not trained
    projection: str = "linear"  # linear | conv | mean | max
    compressed_dims: Optional[Tuple[int, ...]] = None  # k per layer
    init: Optional[str] = None  # mean (None: DEFAULT_INIT) | xavier | normal: initial values of learned projections

    def __post_init__(self):
        if self.max_positions is None or self.max_positions <= 0:
            raise LinformerConfigError(
                f"max_positions must be a positive integer, got {self.max_positions!r}; "
                "set --max-positions (or --tokens-per-sample)"
            )
        if self.projection not in PROJECTION_METHODS:
            raise LinformerConfigError(
                f"unknown projection {self.projection!r}; choose --compressed-projection from "
                f"{', '.join(PROJECTION_METHODS)}"
            )
        if self.init is not None and self.init not in INIT_METHODS:
            raise LinformerConfigError(
                f"unknown projection initialisation {self.init!r}; choose --compressed-init from "
                f"{', '.join(INIT_METHODS)}"
            )
        if self.init is not None and self.projection in POOLING_METHODS:
            raise LinformerConfigError(
                f"--compressed-init {self.init} initialises learned projections, but {self.projection} "
                "pooling has no parameters; drop --compressed-init, or use --compressed-projection linear "
                "--compressed-init mean for a learned projection that starts as mean pooling"
            )
        if self.sharing not in SHARING_MODES:
            raise LinformerConfigError(
                f"unknown sharing mode {self.sharing!r}; choose one of {', '.join(SHARING_MODES)}"
            )
        if self.compressed_dims is not None:
            dims = parse_compressed_dims(self.compressed_dims)
            object.__setattr__(self, "compressed_dims", dims)
            if self.compressed_dim is None:
                object.__setattr__(self, "compressed_dim", dims[0])
            elif self.compressed_dim != dims[0]:
                raise LinformerConfigError(
                    f"compressed_dim={self.compressed_dim} disagrees with compressed_dims={list(dims)}; "
                    "with per-layer k give only --compressed-dims"
                )
        if self.compressed_dim is None:
            raise LinformerConfigError("no k given: pass --compressed-dim K, --compressed R or --compressed-dims")
        for k in self.compressed_dims or (self.compressed_dim,):
            self._check_k(k)
        if self.compressed_dims is not None and self.sharing == "layerwise" and len(set(self.compressed_dims)) > 1:
            raise LinformerConfigError(
                f"layerwise sharing uses one projection for every layer, so every layer has the same k, "
                f"but --compressed-dims gives {','.join(map(str, self.compressed_dims))}: use "
                "--compressed-sharing headwise (or kv, none) for per-layer k, or one k with --compressed-dim"
            )
        if self.projection in POOLING_METHODS and self.sharing != "headwise":
            flag = {"kv": "--compressed-sharing kv / --shared-kv-compressed 1",
                    "layerwise": "--compressed-sharing layerwise / --shared-layer-kv-compressed 1",
                    "none": "--compressed-sharing none"}[self.sharing]
            raise LinformerConfigError(
                f"{self.projection} pooling has no parameters to share, so {flag} means nothing: every "
                "head, keys and values already pool the same windows (computed once per layer). Drop "
                "the sharing option (sharing applies to --compressed-projection linear or conv)"
            )

    def _check_k(self, k):
        if not isinstance(k, int) or k <= 0:
            raise LinformerConfigError(
                f"the projected length k must be positive, got k={k}; "
                "pass --compressed-dim K with K >= 1 (or --compressed R with R <= max_positions)"
            )
        if k > self.max_positions:
            raise LinformerConfigError(
                f"the projected length k={k} exceeds max_positions="
                f"{self.max_positions}: a Linformer projects the sequence down, so pass "
                "--compressed-dim K with K <= max_positions"
            )
        if self.projection in WINDOW_METHODS and self.max_positions % k:
            what = "convolution" if self.projection == "conv" else f"{self.projection} pooling"
            raise LinformerConfigError(
                f"--compressed-projection {self.projection}: a {what} with kernel = stride = n/k needs k to "
                f"divide max_positions, but n={self.max_positions}, k={k} gives n/k = "
                f"{self.max_positions / k:g}; choose k = {_divisors_near(self.max_positions, k)} "
                "(or --compressed-projection linear, which takes any k)"
            )

    def layer_dims(self, num_layers: int) -> Tuple[int, ...]:
        """k of each of ``num_layers`` layers (checked against ``compressed_dims``)."""
        self.check_num_layers(num_layers)
        return self.compressed_dims or (self.compressed_dim,) * num_layers

    def check_num_layers(self, num_layers: Optional[int]):
        if self.compressed_dims is not None and num_layers is not None and len(self.compressed_dims) != num_layers:
            raise LinformerConfigError(
                f"--compressed-dims gives {len(self.compressed_dims)} values "
                f"({','.join(map(str, self.compressed_dims))}) but the encoder has {num_layers} layers "
                "(--encoder-layers): give exactly one k per layer"
            )

    def maps_per_layer(self, num_heads: int) -> int:
        """How many n -> k maps (linear matrices or conv kernels) one layer's projection holds."""
        if self.projection in POOLING_METHODS:
            return 1
        return {"none": 2 * num_heads, "headwise": 2}.get(self.sharing, 1)  # kv, layerwise: E = F

    def to_args(self, args):
        """Set the Linformer fields of ``args`` (a model Namespace) so that ``from_args`` gives these
        options back: the inverse of ``from_args``, for checkpoints written by a conversion."""
        args.max_positions = self.max_positions
        args.compressed = None
        args.compressed_dims = ",".join(map(str, self.compressed_dims)) if self.compressed_dims else None
        args.compressed_dim = None if self.compressed_dims else self.compressed_dim
        # the reference's integer flags where they can say it, so that its code reads the checkpoint too
        args.shared_kv_compressed = int(self.sharing == "kv")
        args.shared_layer_kv_compressed = int(self.sharing == "layerwise")
        args.compressed_sharing = self.sharing if self.sharing == "none" else None
        args.compressed_projection = None if self.projection == "linear" else self.projection
        args.freeze_compress = int(self.freeze)
        args.compressed_init = self.init
        return args

    def to_flags(self) -> str:
        """The command-line flags that build these options (for messages and recipes)."""
        dims = self.compressed_dims
        k = f"--compressed-dims {','.join(map(str, dims))}" if dims else f"--compressed-dim {self.compressed_dim}"
        flags = f"--compressed-projection {self.projection} --compressed-sharing {self.sharing} {k}"
        return flags + (f" --compressed-init {self.init}" if self.init else "") + (" --freeze-compress 1" if self.freeze else "")

    @classmethod
    def from_args(cls, args) -> "LinformerOptions":
        max_positions = getattr(args, "max_positions", None)
        compressed = getattr(args, "compressed", None)
        compressed_dim = getattr(args, "compressed_dim", None)
        compressed_dims = parse_compressed_dims(getattr(args, "compressed_dims", None))
        if compressed is not None and compressed <= 0:
            raise LinformerConfigError(
                f"--compressed must be a positive ratio, got {compressed}"
            )
        if compressed_dims is not None:
            if compressed_dim is not None or compressed is not None:
                given = "--compressed-dim" if compressed_dim is not None else "--compressed"
                raise LinformerConfigError(
                    f"--compressed-dims gives k per layer, and {given} gives one k for all layers: "
                    f"pass only one of them (drop {given})"
                )
        elif compressed_dim is None:
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
        options = cls(
            max_positions=max_positions,
            compressed_dim=compressed_dim,
            sharing=sharing_from_args(args),
            freeze=_flag(args, "freeze_compress"),
            projection=getattr(args, "compressed_projection", None) or "linear",
            compressed_dims=compressed_dims,
            init=getattr(args, "compressed_init", None) or None,
        )
        options.check_num_layers(getattr(args, "encoder_layers", None))
        return options


def sharing_from_args(args) -> str:
    """``--compressed-sharing``, or the mode the reference's integer flags imply; both must agree."""
    if _flag(args, "shared_layer_kv_compressed"):
        implied, flag = "layerwise", "--shared-layer-kv-compressed 1"
    elif _flag(args, "shared_kv_compressed"):
        implied, flag = "kv", "--shared-kv-compressed 1"
    else:
        implied, flag = None, None
    explicit = getattr(args, "compressed_sharing", None)
    if explicit is None or explicit == "":
        return implied or "headwise"
    if explicit not in SHARING_MODES:
        raise LinformerConfigError(
            f"unknown --compressed-sharing {explicit!r}; choose one of {', '.join(SHARING_MODES)}"
        )
    if implied is not None and implied != explicit:
        raise LinformerConfigError(
            f"--compressed-sharing {explicit} contradicts {flag} (which means {implied} sharing); "
            "pass only one of them"
        )
    return explicit


def describe(options: "LinformerOptions") -> str:
    """The options that shape the projections, as flags (for error messages)."""
    return f"{options.to_flags()} (max_positions={options.max_positions})"



def attention_sharing(per_head: bool, shared_kv: bool, layerwise: bool) -> str:
    """The sharing mode that ``LinformerSelfAttention``'s keyword arguments mean."""
    if per_head and (shared_kv or layerwise):
        raise LinformerConfigError(
            "per_head (sharing none) excludes shared_kv and a shared (layerwise) projection: pass only one"
        )
    return "none" if per_head else "layerwise" if layerwise else "kv" if shared_kv else "headwise"


def check_attention(options: LinformerOptions, embed_dim: int, num_heads: int, quant_noise: float = 0.0):
    """The checks that need the attention's shape, for the model and the standalone module alike."""
    if embed_dim % num_heads:
        raise LinformerConfigError(
            f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}; choose "
            "--encoder-embed-dim a multiple of --encoder-attention-heads"
        )
    if options.sharing == "none" and quant_noise > 0:
        raise LinformerConfigError(
            "quant-noise (--quant-noise-pq) is not supported with a projection per head (--compressed-sharing "
            "none): its per-head path uses slices of k_proj/v_proj; drop one of the two"
        )
