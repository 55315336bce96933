"""Padded batches, in one place: which column of E each real token meets.

Real token number p of a sentence (as fairseq's positional embeddings count) meets column p of a
linear projection, or window p // s of a windowed one, wherever the padding put it: a sentence gives
what it gives alone, in right-, left- or interior-padded batches alike. Two plans, each built once
per padding mask (kept on the mask: every layer of an encoder gets the same one) from index work on
the device:

* ``sentence_columns`` (the linear projection over all channels, the default model): E X becomes one
  batched GEMM over the sentences, with E's columns per sentence (a zero column at pads, B x rows x
  S, a third of X's size for k = 128 and C = 768). Under right padding (fairseq's, the hub's) they
  are E's first S columns with their pads zeroed, one elementwise pass. Nothing B x S x C copied or
  kept for the backward (``_ColumnsPerSentence``).
* ``compaction`` (windowed projections, per-head maps on channel groups): each sentence's real
  tokens move to its start, so the unpadded code runs on the result. Right padding (fairseq's, the
  hub's) needs no move: its pads are zeroed in one pass. The compacted copy is not kept for the
  backward (``_gathered_again``): the backward makes it again from x, which q_proj keeps anyway.

Small right-padded batches take neither plan for a linear projection: the attention zeroes the pads
of its input (``right_padded_keep``) and runs the unpadded product, exact there (see
``linformer_attention.ZEROED_PADS_MAX_ELEMENTS``).

Finding right padding reads one bool on the host, once per mask; under torch.compile and for
inference-mode masks (rebuilt in every layer) the plans take the general path instead, with no read.
"""

from contextlib import contextmanager
from typing import Callable, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _compiling() -> bool:
    return getattr(torch.compiler, "is_compiling", lambda: False)()  # (torch < 2.3 has none)


def _reads_mask_on_host(padding_mask: Tensor) -> bool:
    """Whether a plan may read the mask on the host (one sync): only where the plan is kept for every
    layer, so not under torch.compile (a graph break) nor for an inference-mode mask (no version
    counter: its plan is built again in each layer)."""
    return not _compiling() and not padding_mask.is_inference()


def _kept_on_mask(padding_mask: Tensor, name: str, key: tuple, build: Callable):
    """``build()``, kept on the mask under ``name`` and rebuilt when ``key`` or the mask changes
    (in place too: its version counter is part of the key). Not kept under torch.compile."""
    if _compiling():
        return build()
    try:
        key = (*key, padding_mask._version)
    except RuntimeError:  # an inference-mode tensor has no version counter: not kept
        return build()
    cached = getattr(padding_mask, name, None)
    if cached is not None and cached[0] == key:
        return cached[1]
    plan = build()
    setattr(padding_mask, name, (key, plan))
    return plan


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast computes matmuls in on this device type, None where it is off."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return None
    except RuntimeError:  # a device type autocast does not know (meta)
        return None
    except (TypeError, AttributeError):  # torch < 2.4: one function per device type
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
        return None


# ----------------------------------------------------------------------------- right padding: zeroed pads


def right_padded_keep(padding_mask: Tensor) -> Optional[Tensor]:
    """S x B x 1, True at real tokens, when padding_mask (B x S, True at pads) is right-padded (every
    sentence's tokens first: fairseq's and the hub's batches); None when it is not, or when that cannot
    be known without a host read in every layer (torch.compile, inference-mode masks).

    Under right padding real token p sits at position p, so a linear projection of the input with its
    pads zeroed is the unpadded product, exact. One host read per mask, shared with the plans."""
    if not _reads_mask_on_host(padding_mask):
        return None
    return _kept_on_mask(padding_mask, "_linformer_right_keep", (), lambda: (
        (~padding_mask).T.contiguous()[..., None] if _right_padded(padding_mask) else None))


# ----------------------------------------------------------------------------- the linear projection


class SentenceColumns(NamedTuple):
    """Which column of E each token of a padded batch meets (B x S, S: the sequence length)."""

    column: Tensor  # B x S: token (b, p) meets column[b, p] (its number among its sentence's real tokens); S at pads
    source: Optional[Tensor]  # S x B: row b S + p of a B x S x * tensor holds sentence b's real token number q;
    # B S past its length (None under right padding, which sums over the sentences without it)
    keep: Optional[Tensor]  # right padding (every sentence's tokens first): B x S, True at real tokens; else None
    lane_masks: dict  # right padding: element size -> B x words, made on first use (``_lane_masks``)

    @property
    def right_padded(self) -> bool:
        return self.keep is not None


def sentence_columns(padding_mask: Tensor) -> SentenceColumns:
    """The plan of ``project_per_sentence`` for padding_mask (B x S, True at pads), kept on the mask.

    Finding right padding reads one bool on the host, once per mask (see ``_reads_mask_on_host``)."""
    return _kept_on_mask(padding_mask, "_linformer_columns", (), lambda: _build_columns(
        padding_mask, find_right_padding=_reads_mask_on_host(padding_mask)))


def is_right_padded(padding_mask: Tensor) -> bool:
    """No sentence has a pad before a real token (fairseq's and the hub's batches). One host sync."""
    return not bool((padding_mask[:, :-1] & ~padding_mask[:, 1:]).any())


def _right_padded(padding_mask: Tensor) -> bool:
    """``is_right_padded``, read once per mask and kept on it for every plan that asks (callers check
    ``_reads_mask_on_host`` first)."""
    return _kept_on_mask(padding_mask, "_linformer_right_padded", (), lambda: is_right_padded(padding_mask))


def _build_columns(padding_mask: Tensor, find_right_padding: bool = False) -> SentenceColumns:
    bsz, seq_len = padding_mask.shape
    keep = ~padding_mask
    column = torch.where(keep, keep.cumsum(dim=1) - 1, seq_len)
    if find_right_padding and _right_padded(padding_mask):
        return SentenceColumns(column, None, keep, {})
    # scatter each real token's row to its number; every pad writes the spare last column (dropped)
    source = torch.full((bsz, seq_len + 1), bsz * seq_len, dtype=torch.long, device=padding_mask.device)
    rows = torch.arange(bsz * seq_len, device=padding_mask.device).view(bsz, seq_len)
    source.scatter_(1, column, rows)
    return SentenceColumns(column, source[:, :seq_len].T.contiguous(), None, {})


def _lane_masks(keep: Tensor, element_size: int, words: int) -> Tensor:
    """B x words int64: lane j of word w all ones where token (w per_word + j) is real, else zeros
    (per_word = 8 / element_size tokens a word; tokens past S count as pads)."""
    per_word = 8 // element_size
    keep = F.pad(keep, (0, words * per_word - keep.size(1))).view(keep.size(0), words, per_word)
    bits = 8 * element_size
    lanes = [((1 << bits) - 1) << (bits * j) for j in range(per_word)]
    lanes = torch.tensor([lane - (1 << 64) if lane >= 1 << 63 else lane for lane in lanes], device=keep.device)
    return (keep.to(torch.int64) * lanes).sum(dim=-1)


def _columns_per_sentence(weight: Tensor, plan: SentenceColumns, seq_len: int, differentiable: bool = False) -> Tensor:
    """weight (rows x n, n >= S = seq_len) -> B x rows x S: sentence b's column p is column
    column[b, p] of weight (0 at pads), possibly a view of a wider tensor.

    Right padding: weight's own columns zeroed at pads, one elementwise pass over B x rows x S (no
    gather, no transposed copy of E). It runs on the 64-bit words of E (a bitwise and with a lane
    mask per sentence), when E's rows allow: four times fewer elements than a 16-bit ``where``,
    which PyTorch's kernel for broadcast operands runs at a fraction of memory bandwidth."""
    rows = weight.size(0)
    if not plan.right_padded:
        padded = F.pad(weight[:, :seq_len], (0, 1))  # column S: the zero column of pads
        return padded.index_select(1, plan.column.flatten()).view(rows, *plan.column.shape).transpose(0, 1)
    per_word = 8 // weight.element_size()
    words = -(-seq_len // per_word)
    if (differentiable or words * per_word > weight.size(1) or weight.stride(1) != 1
            or weight.stride(0) % per_word or weight.storage_offset() % per_word or weight.data_ptr() % 8):
        return torch.where(plan.keep[:, None, :], weight[:, :seq_len], weight.new_zeros(()))
    masks = plan.lane_masks.get(weight.element_size())
    if masks is None:
        masks = plan.lane_masks[weight.element_size()] = _lane_masks(plan.keep, weight.element_size(), words)
    as_words = weight[:, :words * per_word].view(torch.int64)
    return torch.bitwise_and(as_words, masks[:, None, :]).view(weight.dtype)[..., :seq_len]


class _ColumnsPerSentence(torch.autograd.Function):
    """E X for a padded batch as one batched GEMM over the sentences, (rows x S) @ (S x C) each,
    with sentence b's own columns of E: real token number p meets column p, pads meet zeros.

    The per-sentence columns (B x rows x S) are made again in the backward rather than kept;
    the forward keeps x (the layer's input, which q_proj keeps anyway) and E. The GEMMs read and
    write x's layout through strides (no transposed copies), and the output is rows x B x C as the
    unpadded path's. E may have more columns than S (whole words for ``_columns_per_sentence``):
    they get a zero gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, plan: SentenceColumns) -> Tensor:
        seq_len, bsz, channels = x.shape
        ctx.plan = plan
        ctx.save_for_backward(x, weight)
        out = x.new_empty(weight.size(0), bsz, channels)
        torch.bmm(_columns_per_sentence(weight, plan, seq_len), x.transpose(0, 1), out=out.transpose(0, 1))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        plan = ctx.plan
        seq_len, bsz, channels = x.shape
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:  # pads meet zero columns: their gradient is 0
            grad_x = x.new_empty(seq_len, bsz, channels)
            torch.bmm(_columns_per_sentence(weight, plan, seq_len).transpose(1, 2), grad.transpose(0, 1),
                      out=grad_x.transpose(0, 1))
        if ctx.needs_input_grad[1]:
            grad_weight = _summed_over_sentences(x, grad, plan)
            if weight.size(1) > seq_len:  # E's columns past S (whole words) meet no token
                grad_weight = F.pad(grad_weight, (0, weight.size(1) - seq_len))
        return grad_x, grad_weight, None


def _summed_over_sentences(x: Tensor, grad: Tensor, plan: SentenceColumns) -> Tensor:
    """E's gradient (rows x S): each token's product with the output's gradient, those of real token
    number q summed over the sentences, with no atomics (deterministic). x: S x B x C, grad: rows x B x C."""
    (seq_len, bsz, _), rows = x.shape, grad.size(0)
    if plan.right_padded:
        # B x S x rows products; position p's 1 x B keep row times its B x rows products (S GEMVs)
        products = torch.bmm(x.transpose(0, 1), grad.permute(1, 2, 0))
        keep = plan.keep.T.to(products.dtype)
        return torch.bmm(keep[:, None, :], products.transpose(0, 1)).view(seq_len, rows).T
    # B S products (pads too) and a zero row, gathered by real token number, then summed
    products = x.new_empty(bsz * seq_len + 1, rows)
    products[-1] = 0
    torch.bmm(x.transpose(0, 1), grad.permute(1, 2, 0), out=products[:-1].view(bsz, seq_len, rows))
    return products.index_select(0, plan.source.view(-1)).view(seq_len, bsz, rows).sum(dim=1).T


def project_per_sentence(x: Tensor, weight: Tensor, padding_mask: Tensor) -> Tensor:
    """weight (rows x n) applied to x (S x B x C) sentence by sentence under padding_mask (B x S,
    True at pads): rows x B x C, where real token number p of each sentence meets column p.

    Under autocast the products run in autocast's dtype, as a matmul's would."""
    plan = sentence_columns(padding_mask)
    seq_len = x.size(0)
    weight = weight[:, :min(weight.size(1), -(-seq_len // 8) * 8)]  # whole 64-bit words of 8-bit to 64-bit E
    dtype = autocast_dtype(x.device.type)
    if dtype is None:
        return _project_per_sentence(x, weight.to(x.dtype), plan)
    with torch.autocast(x.device.type, enabled=False):
        return _project_per_sentence(x.to(dtype), weight.to(dtype), plan)


def _project_per_sentence(x: Tensor, weight: Tensor, plan: SentenceColumns) -> Tensor:
    if _compiling():  # the same products from differentiable ops: the compiler plans the memory
        per_sentence = _columns_per_sentence(weight, plan, x.size(0), differentiable=True)
        return torch.bmm(per_sentence, x.transpose(0, 1)).transpose(0, 1)
    return _ColumnsPerSentence.apply(x, weight, plan)


# ----------------------------------------------------------------------------- compaction (the other projections)


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
    return _kept_on_mask(padding_mask, "_linformer_compaction", (b_major, rows or x.size(0)), lambda: _build_compaction(
        x, padding_mask, rows, b_major, find_right_padding=_reads_mask_on_host(padding_mask)))


def _build_compaction(x: Tensor, padding_mask: Tensor, rows: Optional[int], b_major: bool,
                      find_right_padding: bool = True) -> Compaction:
    seq_len, bsz, _ = x.shape
    keep = ~padding_mask
    lengths = keep.sum(dim=1)
    beyond = torch.arange(rows or seq_len, device=x.device)[:, None] >= lengths[None, :]
    pads = (padding_mask if b_major else padding_mask.T).flatten()
    if find_right_padding and _right_padded(padding_mask):
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
    if _compiling():
        yield
        return
    storage = compacted.untyped_storage().data_ptr()

    def pack(t: Tensor):
        if t.device == compacted.device and t.untyped_storage().data_ptr() == storage:
            return _GatheredAgain(x, plan, fill, t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, _unpack):
        yield
