"""E and F: maps along the sequence axis, n positions -> k rows (Linformer, eq. 7).

Every projection answers one call::

    keys, values, key_mask = projection(x, padding_mask)

x is S x B x C (sequence first, as in fairseq), padding_mask B x S (True at pads) or None. keys
and values are G x k' x B x C: G = 1 when all heads share the map (E and F, or E = F) and G = H
with one map per head; key_mask is None (every key exists) or B x k', True where a window holds
tokens of that sentence (windowed projections of padded input). For E = F, keys is values.

* ``SequenceProjection`` (linear): learned k x n matrices, all maps in one GEMM;
* ``WindowProjection`` (conv, mean, max pooling): kernel = stride = n / k (section 4 of the paper).

Padding is handled in ``padding``: real token number p of a sentence meets column p (window
p // s) wherever the padding put it, so right, left and interior padding give what the sentence alone
gives. The linear projection over all channels (the default) runs one batched GEMM with per-sentence
columns of E; the others run their unpadded code on each sentence's tokens moved to its start.
"""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import WINDOW_METHOD_CODES
from ..options import DEFAULT_INIT
from .padding import _Compact, _gathered_again, compaction, project_per_sentence


def check_sequence_length(seq_len: int, max_positions: int):
    """The one error for inputs longer than the projections (never silent truncation)."""
    if seq_len > max_positions:
        raise ValueError(
            f"sequence length {seq_len} exceeds max_positions={max_positions} of this "
            f"Linformer (its projections have {max_positions} columns). Train with a "
            "larger --max-positions/--tokens-per-sample, extend the checkpoint, or pass "
            "shorter inputs (e.g. --truncate-sequence)."
        )


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
    exact_on_zeroed_pads = False  # True: a right-padded input with zeroed pads may take the unpadded path
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
            rows, key_mask = self._project_padded(x, padding_mask, grouped)
        if rows.size(0) == 1:  # E = F
            return rows, rows, key_mask
        keys, values = rows.view(2, -1, *rows.shape[1:]).unbind(0)  # backward: one stack, not two slices
        return keys, values, key_mask

    def _project_padded(self, x: Tensor, padding_mask: Tensor, grouped: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """``_project`` on each sentence's real tokens, moved to its start."""
        plan = compaction(x, padding_mask, self._compacted_rows(x.size(0)))
        compacted = _Compact.apply(x, plan, self.fill)
        with _gathered_again(compacted, x, plan, self.fill):
            return self._project(compacted, plan.lengths, grouped)

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

    # linear: zeroed pads add nothing, and under right padding token p meets column p as when unpadded
    exact_on_zeroed_pads = True

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

    def _project_padded(self, x, padding_mask, grouped):
        # per-sentence columns (B x S x rows) against a compacted copy of x (S x B x C): the smaller
        if grouped or self.weight.size(0) > x.size(-1):  # (many per-head maps, k > C / 2)
            return super()._project_padded(x, padding_mask, grouped)
        rows = project_per_sentence(x, self.weight, padding_mask)
        return rows.view(self.num_maps, self.compressed_dim, *rows.shape[1:]), None

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
