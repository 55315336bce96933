"""E and F: maps along the sequence axis, n positions -> k rows (Linformer, eq. 7): the learned
linear ``SequenceProjection`` and the windowed ``WindowProjection`` (conv, mean and max pooling)."""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def check_sequence_length(seq_len: int, max_positions: int):
    """The one error for inputs longer than the projections (never silent truncation)."""
    if seq_len > max_positions:
        raise ValueError(
            f"sequence length {seq_len} exceeds max_positions={max_positions} of this "
            f"Linformer (its projections have {max_positions} columns). Train with a "
            "larger --max-positions/--tokens-per-sample, extend the checkpoint, or pass "
            "shorter inputs (e.g. --truncate-sequence)."
        )


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast computes matmuls in on this device type, None where it is off."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return None
    except (TypeError, AttributeError):  # torch < 2.4: one function per device type
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
        return None


class _PaddedSequenceProjection(torch.autograd.Function):
    """E X for a padded batch, each sentence meeting E's columns of its real tokens' positions.

    The same as ``bmm(columns_per_sentence(E), X)``, but the per-sentence columns (rows x B x S, as
    large as X itself when 2k = C) are not kept for the backward: they are gathered again there, a
    cheap index_select, instead of holding one more activation per layer. X is kept, but it is the
    layer's input, which k_proj/q_proj keep anyway. Under autocast the products run in autocast's
    dtype, as ``bmm`` would.
    """

    @staticmethod
    def forward(ctx, weight: Tensor, x: Tensor, padding_mask: Tensor) -> Tensor:
        device_type = x.device.type
        dtype = autocast_dtype(device_type) or x.dtype
        with torch.autocast(device_type, enabled=False):
            per_sentence = columns_per_sentence(weight, padding_mask, dtype)  # rows x B x S
            projected = torch.bmm(per_sentence.transpose(0, 1), x.to(dtype).transpose(0, 1))  # B x rows x C
        ctx.save_for_backward(weight, x, padding_mask)
        ctx.dtype = dtype
        return projected.transpose(0, 1)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        weight, x, padding_mask = ctx.saved_tensors
        dtype = ctx.dtype
        grad_weight = grad_x = None
        positions, keep = sentence_positions(padding_mask)
        with torch.autocast(x.device.type, enabled=False):
            grad = grad_output.to(dtype).transpose(0, 1)  # B x rows x C
            if ctx.needs_input_grad[1]:
                per_sentence = _gather_columns(weight, positions, keep, dtype)  # gathered again
                grad_x = torch.bmm(per_sentence.permute(1, 2, 0), grad).transpose(0, 1).to(x.dtype)  # S x B x C
            if ctx.needs_input_grad[0]:
                grad_columns = torch.bmm(grad, x.to(dtype).permute(1, 2, 0)) * keep[:, None, :].to(dtype)  # B x rows x S
                rows = weight.size(0)
                # summed over the batch's tokens in at least fp32, whatever the training precision
                accumulate = torch.promote_types(dtype, torch.float32)
                grad_weight = torch.zeros(weight.shape, dtype=accumulate, device=weight.device)
                grad_weight.index_add_(1, positions.flatten(),
                                       grad_columns.transpose(0, 1).reshape(rows, -1).to(accumulate))
                grad_weight = grad_weight.to(weight.dtype)
        return grad_weight, grad_x, None


def sentence_positions(padding_mask: Tensor) -> Tuple[Tensor, Tensor]:
    """padding_mask B x S (True at pads) -> (each token's position among its sentence's real
    tokens, as fairseq's positional embeddings count, 0 at pads; the real-token mask)."""
    keep = ~padding_mask
    return (keep.cumsum(dim=1) - 1).clamp_(min=0), keep


def columns_per_sentence(weight: Tensor, padding_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """weight (..., n) -> (..., B, S): for each sentence, the column of each real token's position
    among the real tokens of its sentence (as fairseq's positional embeddings count), zero at pads."""
    return _gather_columns(weight, *sentence_positions(padding_mask), dtype)


def _gather_columns(weight: Tensor, positions: Tensor, keep: Tensor, dtype: torch.dtype) -> Tensor:
    # index_select: its backward is one index_add_ (no sort, unlike advanced indexing's)
    columns = weight.to(dtype).index_select(weight.dim() - 1, positions.flatten())
    return columns.view(*weight.shape[:-1], *keep.shape) * keep.to(dtype)


def init_projection(block: Tensor, method: Optional[str] = None):
    """Initialise one map in place: a (k x n) linear E, or a (maps x s) block of conv kernels.

    * ``xavier`` (default): xavier-uniform with gain 1/sqrt(2), as fairseq's reference writes it for
      its compress_k / compress_v;
    * ``normal``: N(0, 0.02), what the reference's projections actually start from (its RobertaModel
      applies ``init_bert_params``, which re-initialises every ``nn.Linear``, compress_k included);
    * ``mean``: row i of E averages the positions [floor(i n / k), floor((i + 1) n / k)) (a conv
      kernel: every tap 1/s), so the projection starts as mean pooling over windows of ~n/k tokens.
      Learned projections must otherwise discover locality from a random mix of all n positions;
      mean pooling with the same k trained to a lower perplexity than the xavier start in our study
      (docs/results.md), and this start keeps the freedom to learn any E.
    """
    method = method or "xavier"
    with torch.no_grad():
        if method == "xavier":
            nn.init.xavier_uniform_(block, gain=1 / math.sqrt(2))
        elif method == "normal":
            block.normal_(mean=0.0, std=0.02)
        elif method == "mean":
            rows, n = block.shape
            edges = [i * n // rows for i in range(rows + 1)]
            block.zero_()
            for i in range(rows):
                block[i, edges[i]:edges[i + 1]] = 1.0 / (edges[i + 1] - edges[i])
        else:
            raise ValueError(f"unknown projection initialisation {method!r}; choose xavier, normal or mean")
    return block


class SequenceProjection(nn.Module):
    """``num_maps`` stacked (k x max_positions) matrices applied along the sequence axis.

    With ``num_maps=2`` the rows ``[0, k)`` are E (keys) and ``[k, 2k)`` are F (values), so
    one GEMM projects the inputs of both. A sequence of length S <= max_positions uses the
    first S columns. Padded positions contribute nothing: a token at position t of its
    sentence (counting only real tokens, as fairseq's positional embeddings do) always
    meets column t, so neither right nor left padding changes the result.
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

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None, maps: Optional[slice] = None) -> Tensor:
        """x: S x B x C (sequence first, as in fairseq); padding_mask: B x S, True at pads.

        Returns (rows x B x C) where rows = k per map selected by ``maps`` (default all).
        """
        seq_len, bsz, channels = x.shape
        check_sequence_length(seq_len, self.max_positions)
        weight = self.weight if maps is None else self.weight[maps]
        if padding_mask is None:
            # one GEMM over all sentences: (rows x S) @ (S x B*C), no transposes
            projected = weight[:, :seq_len].to(x.dtype) @ x.reshape(seq_len, bsz * channels)
            return projected.view(-1, bsz, channels)
        return _PaddedSequenceProjection.apply(weight, x, padding_mask)

    def extra_repr(self) -> str:
        return (
            f"max_positions={self.max_positions}, compressed_dim={self.compressed_dim}, "
            f"num_maps={self.num_maps}, trainable={self.weight.requires_grad}"
        )


WINDOW_METHOD_CODES = {"conv": 0, "mean": 1, "max": 2}


class WindowProjection(nn.Module):
    """The paper's "general projections" (section 4): conv, mean or max pooling along the sequence
    with kernel = stride = s = max_positions / k, so n positions give k rows.

    * ``conv``: a learned kernel of s taps per map, the same for every channel (a
      ``Conv1d(1, 1, s, stride=s)`` run on each channel): it is the linear projection E restricted
      to a block-diagonal k x n matrix whose blocks are one kernel, so E X W^T = E (X W^T) still
      holds and a projection per head stays meaningful. It neither mixes channels (a
      ``Conv1d(C, C, s, stride=s)`` would be a full extra C x C layer per window, before k_proj,
      which is itself a C x C layer) nor has a kernel per channel; its cost is B n C
      multiply-adds per map and its parameters ``num_maps x s``. Initialised like one row of
      the linear projection (``init_projection``: xavier-uniform with gain 1/sqrt(2) on each
      (1 x s) block by default, which gives the projected rows the linear projection's variance).
    * ``mean`` / ``max``: pooling over each window, per channel; no parameters, one map that
      serves keys and values alike.

    Windows are defined by a token's position among the real tokens of its sentence (as the
    linear projection's columns are): real token number p falls in window p // s at tap p % s,
    so right or left padding never changes which window a token falls in. For a sentence of
    L < n tokens only ceil(L / s) windows hold tokens, and the last may be partial: conv uses
    the kernel's first taps (zeros for the missing tokens, like a linear E's first L columns),
    mean divides by the number of real tokens in the window, max takes the max over them. The
    empty windows are not keys: without a padding mask all sentences have the padded length S and
    only ceil(S / s) rows are returned; with one, ``ceil(S / s)`` rows are returned with a
    ``key_mask`` (B x rows, True for windows that hold tokens of that sentence) that attention
    applies, so a sentence gives the same output alone as inside any padded batch.

    The persistent buffer ``layout`` = [method code, stride] records the variant in checkpoints
    (mean and max pooling have no parameter that would tell them apart).
    """

    def __init__(self, max_positions: int, compressed_dim: int, num_maps: int = 2, method: str = "conv",
                 freeze: bool = False, init: Optional[str] = None):
        super().__init__()
        if method not in WINDOW_METHOD_CODES:
            raise ValueError(f"unknown window projection {method!r}; choose one of {', '.join(WINDOW_METHOD_CODES)}")
        if compressed_dim <= 0 or max_positions % compressed_dim:
            raise ValueError(
                f"a {method} projection with kernel = stride = n/k needs k to divide n, got "
                f"n={max_positions}, k={compressed_dim}"
            )
        self.max_positions = max_positions
        self.compressed_dim = compressed_dim
        self.stride = max_positions // compressed_dim
        self.method = method
        self.num_maps = num_maps if method == "conv" else 1
        self.init = init
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

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None, maps: Optional[slice] = None):
        """x: S x B x C; padding_mask: B x S, True at pads.

        Returns ``(rows, key_mask)``: rows is (maps x W x B x C) with W = ceil(S / s) windows (maps
        selected by ``maps``, default all; one for pooling), key_mask is None without a padding
        mask, else B x W, True where the window holds tokens of that sentence.
        """
        seq_len, bsz, channels = x.shape
        check_sequence_length(seq_len, self.max_positions)
        s = self.stride
        windows = -(-seq_len // s)
        key_mask = lengths = None
        if padding_mask is not None:
            x, lengths = compact_tokens(x, padding_mask)  # real tokens first, zeros after
            # a sentence of no tokens keeps window 0 (all zeros): a softmax needs one key
            key_mask = torch.arange(windows, device=x.device)[None, :] < ((lengths + s - 1) // s).clamp(min=1)[:, None]
        pad = windows * s - seq_len
        if self.method == "max":
            if lengths is not None:  # pads (after compaction: positions >= length) never win
                beyond = torch.arange(seq_len, device=x.device)[:, None] >= lengths[None, :]  # S x B
                x = x.masked_fill(beyond[..., None], float("-inf"))
            if pad:
                x = F.pad(x, (0, 0, 0, 0, 0, pad), value=float("-inf"))
            rows = x.view(windows, s, bsz, channels).amax(dim=1)  # a view: no copy
            if key_mask is not None:  # empty windows: 0 rather than -inf (masked anyway, and no NaN)
                rows = rows.masked_fill(~key_mask.T[..., None], 0.0)
            return rows.unsqueeze(0), key_mask
        if pad:
            x = F.pad(x, (0, 0, 0, 0, 0, pad))
        xv = x.view(windows, s, bsz, channels)  # splits the sequence axis: a view whatever x's strides
        if self.method == "mean":
            if lengths is None:
                counts = torch.full((windows, 1), s, dtype=x.dtype, device=x.device)
                counts[-1] = seq_len - (windows - 1) * s
            else:
                starts = torch.arange(windows, device=x.device)[:, None] * s
                counts = (lengths[None, :] - starts).clamp(min=1, max=s).to(x.dtype)  # W x B
            return (xv.sum(dim=1) / counts[..., None]).unsqueeze(0), key_mask
        kernel = self.kernel if maps is None else self.kernel[maps]
        return torch.einsum("mr,wrbc->mwbc", kernel.to(x.dtype), xv), key_mask

    def extra_repr(self) -> str:
        trainable = self.kernel is not None and self.kernel.requires_grad
        return (f"method={self.method}, max_positions={self.max_positions}, compressed_dim={self.compressed_dim}, "
                f"stride={self.stride}, num_maps={self.num_maps}, trainable={trainable}")


def compact_tokens(x: Tensor, padding_mask: Tensor) -> Tuple[Tensor, Tensor]:
    """Each sentence's real tokens moved to its start in their order, zeros after them.

    x: S x B x C, padding_mask: B x S (True at pads). Returns (S x B x C, lengths B). Right padding
    leaves x as it is (but copied); left padding shifts each sentence to the front.
    """
    seq_len, bsz, channels = x.shape
    # a stable sort of the pad flags puts the real tokens first, in their order
    order = torch.sort(padding_mask.to(torch.uint8), dim=1, stable=True).indices  # B x S
    batch = torch.arange(bsz, device=x.device)
    if x.transpose(0, 1).is_contiguous():  # B x S x C in memory (fairseq transposes B x T x C): no copy
        flat = (order + batch[:, None] * seq_len).flatten()
        compact = x.transpose(0, 1).reshape(bsz * seq_len, channels).index_select(0, flat)
        compact = compact.view(bsz, seq_len, channels).transpose(0, 1)
    else:
        flat = (order.T * bsz + batch).flatten()  # row of x.view(S*B, C)
        compact = x.reshape(seq_len * bsz, channels).index_select(0, flat).view(seq_len, bsz, channels)
    lengths = (~padding_mask).sum(dim=1)
    valid = torch.arange(seq_len, device=x.device)[:, None] < lengths[None, :]  # S x B
    return compact * valid[..., None].to(x.dtype), lengths


def build_projection(method: str, max_positions: int, compressed_dim: int, num_maps: int, freeze: bool = False,
                     init: Optional[str] = None):
    """A ``SequenceProjection`` (linear) or a ``WindowProjection`` (conv, mean, max)."""
    if method == "linear":
        return SequenceProjection(max_positions, compressed_dim, num_maps=num_maps, freeze=freeze, init=init)
    return WindowProjection(max_positions, compressed_dim, num_maps=num_maps, method=method, freeze=freeze,
                            init=init)
