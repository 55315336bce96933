"""E and F: maps along the sequence axis, n positions -> k rows (Linformer, eq. 7).

Every projection answers one call::

    keys, values, key_mask = projection(x, padding_mask)

x is S x B x C (sequence first, as in fairseq), padding_mask B x S (True at pads) or None. keys
and values are G x k' x B x C: G = 1 when all heads share the map (E and F, or E = F) and G = H
with one map per head; key_mask is None (every key exists) or B x k', True where a window holds
tokens of that sentence (windowed projections of padded input). For E = F, keys is values.

* ``SequenceProjection`` (linear): learned k x n matrices, all maps in one GEMM;
* ``WindowProjection`` (conv, mean, max pooling): kernel = stride = n / k (section 4 of the paper).

Padding is handled in one place, ``compact_tokens``: each sentence's real tokens move to its
start (token t goes to its position among its sentence's real tokens, as fairseq's positional
embeddings count), so every projection runs its unpadded code on the result, and right, left and
interior padding give what the sentence alone gives. Right padding (fairseq's, the hub's) needs
no move: its pads are zeroed in one pass. The plan is built once per padding mask, not per layer.
The compacted copy is not kept for the backward (``_gathered_again``): the backward makes it again
from x, which q_proj keeps anyway.
"""

import math
from contextlib import contextmanager
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import WINDOW_METHOD_CODES
from ..options import DEFAULT_INIT


def check_sequence_length(seq_len: int, max_positions: int):
    """The one error for inputs longer than the projections (never silent truncation)."""
    if seq_len > max_positions:
        raise ValueError(
            f"sequence length {seq_len} exceeds max_positions={max_positions} of this "
            f"Linformer (its projections have {max_positions} columns). Train with a "
            "larger --max-positions/--tokens-per-sample, extend the checkpoint, or pass "
            "shorter inputs (e.g. --truncate-sequence)."
        )


# ----------------------------------------------------------------------------- padding, in one place


class Compaction(NamedTuple):
    """Where each token of a padded batch goes (index work done once per padding mask).

    Rows are x's (S x B) positions in x's memory order: B-major when x is a transpose of a B x S x C
    tensor (fairseq's encoder input), else S-major; compacted rows are always S-major. ``in_place``:
    every sentence's tokens already come first (right padding, what fairseq and the hub produce), so
    compacting is zeroing the pads, with no gather.
    """

    gather: Optional[Tensor]  # compacted row i (of the first S x B) is x's row gather[i] (None: in place)
    inverse: Optional[Tensor]  # x's row r goes to compacted row inverse[r] (None: in place)
    pads: Tensor  # x's rows that are pads
    beyond: Tensor  # rows x B: compacted positions past the sentence's tokens (filled)
    lengths: Tensor  # B: real tokens per sentence
    b_major: bool
    in_place: bool


def compaction(x: Tensor, padding_mask: Tensor, rows: Optional[int] = None) -> Compaction:
    """The compaction of x (S x B x C) under padding_mask (B x S), into ``rows`` >= S rows.

    Every layer of an encoder gets the same mask, so the plan is kept on the mask tensor and built
    once per forward (with one host sync, to know whether the batch is right-padded)."""
    b_major = not x.is_contiguous() and x.transpose(0, 1).is_contiguous()
    compiling = getattr(torch.compiler, "is_compiling", lambda: False)()  # (torch < 2.3 has none)
    try:
        key = (b_major, rows or x.size(0), padding_mask._version)
    except RuntimeError:  # an inference-mode tensor has no version counter: not cached
        key = None
    cached = getattr(padding_mask, "_linformer_compaction", None)
    if cached is not None and key is not None and cached[0] == key and not compiling:
        return cached[1]
    # the host sync that finds right padding would break a compiled graph: the general plan there
    plan = _build_compaction(x, padding_mask, rows, b_major, find_right_padding=not compiling)
    if key is not None and not compiling:
        padding_mask._linformer_compaction = (key, plan)
    return plan


def _build_compaction(x: Tensor, padding_mask: Tensor, rows: Optional[int], b_major: bool,
                      find_right_padding: bool = True) -> Compaction:
    seq_len, bsz, _ = x.shape
    keep = ~padding_mask
    lengths = keep.sum(dim=1)
    beyond = torch.arange(rows or seq_len, device=x.device)[:, None] >= lengths[None, :]
    pads = (padding_mask if b_major else padding_mask.T).flatten()
    # right padding: no pad before a real token in any sentence
    if find_right_padding and not bool((padding_mask[:, :-1] & keep[:, 1:]).any()):
        return Compaction(None, None, pads, beyond, lengths, b_major, True)
    # real token number p (fairseq's count) goes to position p; the pads follow, in order
    position = torch.where(keep, keep.cumsum(dim=1) - 1, lengths[:, None] + padding_mask.cumsum(dim=1) - 1)
    to_row = position * bsz + torch.arange(bsz, device=x.device)[:, None]  # B x S, S-major rows
    inverse = (to_row if b_major else to_row.T).flatten()
    gather = torch.empty_like(inverse)
    gather[inverse] = torch.arange(inverse.numel(), device=x.device)
    return Compaction(gather, inverse, pads, beyond, lengths, b_major, False)


def _x_rows(x: Tensor, b_major: bool) -> Tensor:
    return (x.transpose(0, 1) if b_major else x).reshape(-1, x.size(-1))  # a view, except for odd strides


def _fill(src: Tensor, where: Tensor, fill: float, out: Optional[Tensor]) -> Tensor:
    """out = src with ``fill`` where ``where`` (S x B) is True, in one pass (out may be src).

    A broadcast mul or add (masked_fill_ with a broadcast mask is several times slower on CPU);
    x's pads are finite (fairseq's are), so they become exactly 0 or -inf here."""
    if fill == 0:
        return torch.mul(src, (~where)[..., None].to(src.dtype), out=out)
    return torch.add(src, torch.where(where, fill, 0.0)[..., None].to(src.dtype), out=out)  # fill = -inf


def _compact(x: Tensor, plan: Compaction, fill: float) -> Tensor:
    seq_len, bsz, channels = x.shape
    rows = plan.beyond.size(0)
    out = x.new_empty(rows, bsz, channels)
    body = out[:seq_len]
    if plan.in_place:  # x's rows stay where they are: the pads are filled on the way
        src = x
    else:
        torch.index_select(_x_rows(x, plan.b_major), 0, plan.gather, out=body.view(-1, channels))
        src = body
    _fill(src, plan.beyond[:seq_len], fill, out=body)
    if rows > seq_len:  # rows past x's (whole windows): set, never multiplied (empty memory may hold NaN)
        out[seq_len:] = fill
    return out


class _Compact(torch.autograd.Function):
    """``_compact`` with the inverse gather as its backward."""

    @staticmethod
    def forward(ctx, x: Tensor, plan: Compaction, fill: float) -> Tensor:
        ctx.plan, ctx.shape = plan, x.shape
        return _compact(x, plan, fill)

    @staticmethod
    def backward(ctx, grad: Tensor):
        plan, (seq_len, bsz, channels) = ctx.plan, ctx.shape
        if plan.in_place:  # pads get no gradient
            return _fill(grad[:seq_len], plan.beyond[:seq_len], 0.0, out=None), None, None
        grad = grad[:seq_len].reshape(-1, channels).index_select(0, plan.inverse)
        grad.mul_((~plan.pads)[:, None].to(grad.dtype))  # pads get no gradient
        grad = grad.view(bsz, seq_len, channels).transpose(0, 1) if plan.b_major else grad.view(seq_len, bsz, channels)
        return grad, None, None


def compact_tokens(x: Tensor, padding_mask: Tensor, fill: float = 0.0,
                   rows: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Each sentence's real tokens moved to its start in their order, ``fill`` after them.

    x: S x B x C, padding_mask: B x S (True at pads). Returns (rows x B x C, lengths B), rows = S
    unless given (more rows: whole windows without another copy).
    """
    plan = compaction(x, padding_mask, rows)
    return _Compact.apply(x, plan, fill), plan.lengths


class _GatheredAgain:
    """What an op keeps instead of (a view of) the compacted input: x and the plan to gather it again."""

    def __init__(self, x: Tensor, plan: Compaction, fill: float, view: Tensor):
        self.x, self.version, self.plan, self.fill = x, x._version, plan, fill
        self.view = (view.size(), view.stride(), view.storage_offset())

    def tensor(self) -> Tensor:
        if self.x._version != self.version:
            raise RuntimeError("the input of a Linformer projection was modified in place after the forward; "
                               "its backward needs the original values (clone it before changing it)")
        with torch.no_grad():
            return _compact(self.x, self.plan, self.fill).as_strided(*self.view)


def _unpack(saved):
    return saved.tensor() if isinstance(saved, _GatheredAgain) else saved


@contextmanager
def _gathered_again(compacted: Tensor, x: Tensor, plan: Compaction, fill: float):
    """Ops in this block that save the compacted input for the backward keep a ``_GatheredAgain``
    instead: the backward gathers it again from x (a cheap index_select) rather than the forward
    holding one more S x B x C activation per layer. Under torch.compile the compiler decides."""
    if getattr(torch.compiler, "is_compiling", lambda: False)():  # (torch < 2.3 has no is_compiling)
        yield
        return
    storage = compacted.untyped_storage().data_ptr()

    def pack(t: Tensor):
        if t.device == compacted.device and t.untyped_storage().data_ptr() == storage:
            return _GatheredAgain(x, plan, fill, t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, _unpack):
        yield


# ----------------------------------------------------------------------------- the projections


def _init_xavier(block: Tensor):
    nn.init.xavier_uniform_(block, gain=1 / math.sqrt(2))


def _init_normal(block: Tensor):
    block.normal_(mean=0.0, std=0.02)


def _init_mean(block: Tensor):
    rows, n = block.shape
    edges = [i * n // rows for i in range(rows + 1)]
    block.zero_()
    for i in range(rows):
        block[i, edges[i]:edges[i + 1]] = 1.0 / (edges[i + 1] - edges[i])


_INITS = {"xavier": _init_xavier, "normal": _init_normal, "mean": _init_mean}


def init_projection(block: Tensor, method: Optional[str] = None):
    """Initialise one map in place (``method`` is validated by ``LinformerOptions``): a (k x n)
    linear E, or a (1 x s) conv kernel.

    * ``xavier``: xavier-uniform with gain 1/sqrt(2), as fairseq's reference writes it for its
      compress_k / compress_v;
    * ``normal``: N(0, 0.02), what the reference's projections actually start from (its RobertaModel
      applies ``init_bert_params``, which re-initialises every ``nn.Linear``, compress_k included);
    * ``mean`` (the default, ``options.DEFAULT_INIT``): row i of E averages the positions
      [floor(i n / k), floor((i + 1) n / k)) (a conv
      kernel: every tap 1/s), so the projection starts as mean pooling over windows of ~n/k tokens
      and keeps the freedom to learn any E (a random E must otherwise discover locality).
    """
    with torch.no_grad():
        _INITS[method or DEFAULT_INIT](block)
    return block


class _Projection(nn.Module):
    """The contract shared by every projection (see the module docstring); subclasses implement
    ``_project`` for unpadded input, padding is handled here."""

    fill = 0.0  # the value of compacted positions past a sentence's tokens
    max_positions: int
    num_maps: int

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None,
                grouped: bool = False) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """x: S x B x C, padding_mask: B x S (True at pads). Returns (keys, values, key_mask), keys
        and values G x k' x B x C. ``grouped``: x's channels are ``num_maps`` groups and map m acts
        on group m only (per-head maps applied after k_proj/v_proj); keys and values are then
        (maps / 2) x k' x B x (C / maps)."""
        check_sequence_length(x.size(0), self.max_positions)
        if padding_mask is None:
            rows, key_mask = self._project(x, None, grouped)
        else:
            plan = compaction(x, padding_mask, self._compacted_rows(x.size(0)))
            compacted = _Compact.apply(x, plan, self.fill)
            with _gathered_again(compacted, x, plan, self.fill):
                rows, key_mask = self._project(compacted, plan.lengths, grouped)
        if rows.size(0) == 1:  # E = F
            return rows, rows, key_mask
        keys, values = rows.view(2, -1, *rows.shape[1:]).unbind(0)  # backward: one stack, not two slices
        return keys, values, key_mask

    def _compacted_rows(self, seq_len: int) -> int:
        return seq_len

    def _project(self, x: Tensor, lengths: Optional[Tensor], grouped: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """x: S' x B x C, each sentence's tokens first (``lengths`` of them; None: all S). Returns
        (maps x k' x B x C rows, key_mask)."""
        raise NotImplementedError


class SequenceProjection(_Projection):
    """``num_maps`` stacked (k x max_positions) matrices applied along the sequence axis.

    With ``num_maps=2`` the rows ``[0, k)`` are E (keys) and ``[k, 2k)`` are F (values); with 2 H,
    E_0..E_{H-1} then F_0..F_{H-1}; with one, E = F. A sequence of length S <= max_positions uses
    the first S columns: real token number t of a sentence always meets column t.
    """

    def __init__(self, max_positions: int, compressed_dim: int, num_maps: int = 2, freeze: bool = False,
                 init: Optional[str] = None):
        super().__init__()
        self.max_positions = max_positions
        self.compressed_dim = compressed_dim
        self.num_maps = num_maps
        self.init = init
        self.weight = nn.Parameter(torch.empty(num_maps * compressed_dim, max_positions))
        self.reset_parameters()
        self.weight.requires_grad_(not freeze)

    def reset_parameters(self):
        for block in self.weight.data.split(self.compressed_dim):  # each map on its own
            init_projection(block, self.init)

    def _project(self, x, lengths, grouped):
        seq_len, bsz = x.shape[:2]
        weight = self.weight[:, :seq_len].to(x.dtype)
        if grouped:  # one batched GEMM over the maps, each on its channel group
            maps = weight.view(self.num_maps, self.compressed_dim, seq_len)
            return torch.einsum("mjs,sbmd->mjbd", maps, x.view(seq_len, bsz, self.num_maps, -1)), None
        # one GEMM over all maps and sentences: (rows x S) @ (S x B*C), no transposes
        rows = weight @ x.reshape(seq_len, -1)
        return rows.view(self.num_maps, self.compressed_dim, bsz, -1), None

    def extra_repr(self) -> str:
        return (
            f"max_positions={self.max_positions}, compressed_dim={self.compressed_dim}, "
            f"num_maps={self.num_maps}, trainable={self.weight.requires_grad}"
        )


class WindowProjection(_Projection):
    """The paper's "general projections" (section 4): conv, mean or max pooling along the sequence
    with kernel = stride = s = max_positions / k, so n positions give k rows.

    * ``conv``: a learned kernel of s taps per map, the same for every channel (a
      ``Conv1d(1, 1, s, stride=s)`` run on each channel): it is the linear projection E restricted
      to a block-diagonal k x n matrix whose blocks are one kernel, so E X W^T = E (X W^T) still
      holds and a projection per head stays meaningful. It neither mixes channels (a
      ``Conv1d(C, C, s, stride=s)`` would be a full extra C x C layer per window) nor has a kernel
      per channel; its cost is B n C multiply-adds per map and its parameters ``num_maps x s``.
      Initialised like one row of the linear projection (``init_projection`` on each (1 x s) block),
      which gives the projected rows the linear projection's variance.
    * ``mean`` / ``max``: pooling over each window, per channel; no parameters, one map that
      serves keys and values alike.

    Real token number p of a sentence falls in window p // s at tap p % s. For a sentence of
    L < n tokens only ceil(L / s) windows hold tokens, and the last may be partial: conv uses the
    kernel's first taps, mean divides by the number of real tokens in the window, max takes the
    max over them. Without a padding mask ceil(S / s) rows are returned; with one, ceil(S / s) rows
    and a key_mask (B x rows, True for windows that hold tokens of that sentence), so a sentence
    gives the same output alone as inside any padded batch.

    The persistent buffer ``layout`` = [method code, stride] records the variant in checkpoints
    (mean and max pooling have no parameter that would tell them apart).
    """

    def __init__(self, max_positions: int, compressed_dim: int, num_maps: int = 2, method: str = "conv",
                 freeze: bool = False, init: Optional[str] = None):
        super().__init__()
        self.max_positions = max_positions
        self.compressed_dim = compressed_dim
        self.stride = max_positions // compressed_dim
        self.method = method
        self.num_maps = num_maps if method == "conv" else 1
        self.init = init
        self.fill = float("-inf") if method == "max" else 0.0  # pads never win a max
        if method == "conv":
            self.kernel = nn.Parameter(torch.empty(self.num_maps, self.stride))
            self.reset_parameters()
            self.kernel.requires_grad_(not freeze)
        else:
            self.register_parameter("kernel", None)
        self.register_buffer("layout", torch.tensor([WINDOW_METHOD_CODES[method], self.stride]))

    def reset_parameters(self):
        if self.kernel is not None:
            for kernel in self.kernel.data.split(1):  # each map a (1 x s) block, as one row of E
                init_projection(kernel, self.init)

    def _compacted_rows(self, seq_len: int) -> int:
        return -(-seq_len // self.stride) * self.stride  # whole windows: no padding copy after

    def _project(self, x, lengths, grouped):
        seq_len, bsz = x.shape[:2]
        s = self.stride
        windows = -(-seq_len // s)
        pad = windows * s - seq_len  # unpadded input only: compacted input has whole windows
        if pad:
            x = F.pad(x, (0, 0, 0, 0, 0, pad), value=self.fill)
        xv = x.view(windows, s, bsz, -1)  # splits the sequence axis: a view whatever x's strides
        key_mask = None
        if lengths is not None:  # a sentence of no tokens keeps window 0 (all fill): a softmax needs one key
            key_mask = torch.arange(windows, device=x.device)[None, :] < ((lengths + s - 1) // s).clamp(min=1)[:, None]
        if self.method == "max":
            rows = xv.amax(dim=1)
            if key_mask is not None:  # empty windows: 0 rather than -inf (masked anyway, and no NaN)
                rows = rows.masked_fill(~key_mask.T[..., None], 0.0)
            return rows.unsqueeze(0), key_mask
        if self.method == "mean":
            if lengths is None:
                counts = torch.full((windows, 1), s, dtype=x.dtype, device=x.device)
                counts[-1] = seq_len - (windows - 1) * s
            else:
                starts = torch.arange(windows, device=x.device)[:, None] * s
                counts = (lengths[None, :] - starts).clamp(min=1, max=s).to(x.dtype)  # W x B
            return (xv.sum(dim=1) / counts[..., None]).unsqueeze(0), key_mask
        kernel = self.kernel.to(x.dtype)
        if grouped:  # map m on channel group m
            return torch.einsum("mr,wrbmd->mwbd", kernel, xv.view(windows, s, bsz, self.num_maps, -1)), key_mask
        return torch.einsum("mr,wrbc->mwbc", kernel, xv), key_mask

    def extra_repr(self) -> str:
        trainable = self.kernel is not None and self.kernel.requires_grad
        return (f"method={self.method}, max_positions={self.max_positions}, compressed_dim={self.compressed_dim}, "
                f"stride={self.stride}, num_maps={self.num_maps}, trainable={trainable}")


def build_projection(method: str, max_positions: int, compressed_dim: int, num_maps: int, freeze: bool = False,
                     init: Optional[str] = None) -> _Projection:
    """A ``SequenceProjection`` (linear) or a ``WindowProjection`` (conv, mean, max)."""
    if method == "linear":
        return SequenceProjection(max_positions, compressed_dim, num_maps=num_maps, freeze=freeze, init=init)
    return WindowProjection(max_positions, compressed_dim, num_maps=num_maps, method=method, freeze=freeze,
                            init=init)
