"""Linformer multi-head self-attention, a drop-in for fairseq's ``MultiheadAttention`` in an encoder.

    head_i = softmax(Q_i (E K_i)^T / sqrt(d)) (F V_i)          (Wang et al. 2020, eq. 7)

Keys and values are built from projected inputs, K = (E X) W_k^T + b_k and V = (F X) W_v^T + b_v,
as fairseq's reference does (so its checkpoints give the same outputs), and attention runs over
the k projected keys through ``F.scaled_dot_product_attention``.

Variants (section 4 of the paper): E and F may be linear (k x n matrices) or windowed (conv,
mean or max pooling with kernel = stride = n/k, see ``WindowProjection``), shared by the heads
of a layer (the default), by keys and values, by all layers, or one per head (``per_head``:
head i uses K_i = (E_i X) W_{k,i}^T + b_{k,i}, with W_{k,i} the rows of W_k of head i). Every
projection answers the same call (``sequence_projection``), padding included.
"""

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq.modules.quant_noise import quant_noise

from ..options import LinformerOptions, attention_sharing, check_attention
from .padding import right_padded_keep
from .sequence_projection import build_projection

PER_HEAD_ORDERS = ("project_input", "project_heads")
# Right-padded inputs up to this size (S x B x C) take the zeroed-pads path: a pass over the input and one
# over its gradient (about 2.6 ps an element each on an H200, so at most 0.09 ms a layer and step) in place
# of the per-sentence columns' autograd.Function and extra ops (about 0.5 ms of host time a layer and step
# on the GPU machine's CPU). Small batches (fine-tuning, the hub) wait on the host, and there the passes
# cost a fifth of what they save at most; larger ones (pretraining), paced by the GPU, take the columns
# (a pass over B x 2k x S only, and no second copy of the input).
ZEROED_PADS_MAX_ELEMENTS = 2 ** 24


class LinformerSelfAttention(nn.Module):
    """Multi-head attention whose keys and values are projected along the sequence to length k.

    ``projection`` is this layer's own ``SequenceProjection`` (linear) or ``WindowProjection``
    (``projection_method`` conv, mean or max), registered here, unless ``shared_projection`` is
    given: then one projection, owned by the encoder, serves every layer (layerwise sharing) and
    is not registered twice. A projection with one map serves keys and values alike (E = F); with
    two, its first map projects keys and the second values.

    ``per_head`` (sharing "none"): 2 H maps, the first H for the keys of heads 0..H-1, the next H
    for their values. Since (E_i X) W^T = E_i (X W^T), there are two exact orders, both the same
    projection call:

    * ``project_input``: project the input once per head, E_i X (one GEMM for all 2H maps with a
      linear projection, 2H cheap passes for conv), then each head's slice of k_proj/v_proj:
      2 H k n C + 2 k C^2 multiply-adds per sentence.
    * ``project_heads``: k_proj/v_proj at full length without bias, then map m on channel group m
      (head m's keys, then its values: ``grouped``), then the bias: 2 n C^2 + 2 k n C.

    ``per_head_order=None`` picks the cheaper: ``project_heads`` for a linear projection when
    H k > C + k (e.g. C = 768, H = 12, k >= 70), else ``project_input`` (always for conv, whose
    per-head pass costs n C, not k n C).

    The options are validated by ``LinformerOptions`` and ``options.check_attention``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        max_positions: int,
        compressed_dim: int,
        shared_kv: bool = False,
        shared_projection: Optional[nn.Module] = None,
        freeze_projection: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
        q_noise: float = 0.0,
        qn_block_size: int = 8,
        projection_method: str = "linear",
        per_head: bool = False,
        per_head_order: Optional[str] = None,
        projection_init: Optional[str] = None,
    ):
        super().__init__()
        options = LinformerOptions(
            max_positions, compressed_dim, sharing=attention_sharing(per_head, shared_kv, shared_projection is not None),
            freeze=freeze_projection, projection=projection_method, init=projection_init,
        )
        check_attention(options, embed_dim, num_heads, q_noise)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout

        def linear():
            return quant_noise(nn.Linear(embed_dim, embed_dim, bias=bias), q_noise, qn_block_size)

        self.q_proj, self.k_proj, self.v_proj, self.out_proj = linear(), linear(), linear(), linear()
        if shared_projection is None:
            self.projection = build_projection(
                projection_method, max_positions, compressed_dim, options.maps_per_layer(num_heads),
                freeze=freeze_projection, init=projection_init,
            )
        else:
            self._shared_projection = (shared_projection,)  # a tuple: not registered as a child
        self.per_head = per_head
        if per_head and per_head_order is None:
            cheaper = projection_method == "linear" and num_heads * compressed_dim > embed_dim + compressed_dim
            per_head_order = "project_heads" if cheaper else "project_input"
        if per_head and per_head_order not in PER_HEAD_ORDERS:
            raise ValueError(f"per_head_order must be one of {PER_HEAD_ORDERS}, got {per_head_order!r}")
        self.per_head_order = per_head_order if per_head else None
        self.reset_parameters()

    @property
    def sequence_projection(self):
        """This layer's projection: a ``SequenceProjection`` or a ``WindowProjection``."""
        shared = self.__dict__.get("_shared_projection")
        return shared[0] if shared is not None else self.projection

    @property
    def compressed_dim(self) -> int:
        return self.sequence_projection.compressed_dim

    def reset_parameters(self):
        # as fairseq's MultiheadAttention (RoBERTa re-initialises with init_bert_params)
        gain = 2 ** -0.5
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight, gain=gain)
        nn.init.xavier_uniform_(self.out_proj.weight)
        if self.out_proj.bias is not None:
            nn.init.constant_(self.out_proj.bias, 0.0)

    def project_keys_values(
        self, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor]
    ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Projected keys and values, each k' x B x C, and a key mask (B x k', True for keys that
        may be attended; None: all). k' = k, except for windowed projections: ceil(S / s).

        fairseq's encoder passes key is value; distinct ones (standalone use) are projected by the
        same call, side by side in the channels."""
        projection = self.sequence_projection
        if self.per_head_order == "project_heads":
            weights = (self.k_proj.weight, self.v_proj.weight)
            if key is value:  # one GEMM for both
                full = F.linear(key, torch.cat(weights))
            else:
                full = torch.cat([F.linear(key, weights[0]), F.linear(value, weights[1])], dim=-1)
            keys, values, key_mask = projection(full, key_padding_mask, grouped=True)  # H x k' x B x d each
            return self._merge_heads(keys, self.k_proj.bias), self._merge_heads(values, self.v_proj.bias), key_mask
        distinct = key is not value
        keys, values, key_mask = projection(torch.cat([key, value], dim=-1) if distinct else key, key_padding_mask)
        if distinct:
            keys, values = keys[..., :self.embed_dim], values[..., self.embed_dim:]
        if keys.size(0) == 1:  # all heads share the map: G x k' x B x C with G = 1
            return self.k_proj(keys.squeeze(0)), self.v_proj(values.squeeze(0)), key_mask  # views
        return self._head_linear(keys, self.k_proj), self._head_linear(values, self.v_proj), key_mask

    def _head_linear(self, rows: Tensor, linear: nn.Linear) -> Tensor:
        """rows: H x k' x B x C, head i's projected input -> k' x B x C, head i's channels from
        ``linear``'s rows of head i: K_i = (E_i X) W_i^T + b_i."""
        weight = linear.weight.view(self.num_heads, self.head_dim, -1)
        out = torch.einsum("hjbc,hdc->jbhd", rows, weight.to(rows.dtype))
        if linear.bias is not None:
            out = out + linear.bias.view(self.num_heads, self.head_dim).to(out.dtype)  # (under autocast too)
        return out.reshape(out.size(0), out.size(1), -1)

    def _merge_heads(self, rows: Tensor, bias: Optional[Tensor]) -> Tensor:
        """rows: H x k' x B x d, head i's keys (or values) without bias -> k' x B x C."""
        out = rows.permute(1, 2, 0, 3)
        if bias is not None:
            out = out + bias.view(self.num_heads, self.head_dim).to(out.dtype)
        return out.reshape(out.size(0), out.size(1), -1)

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor] = None,
        value: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """query: T x B x C; key, value: S x B x C (default: query); key_padding_mask: B x S,
        True (or 1) at pads. Returns (T x B x C, weights): weights are B x T x k averaged over
        heads, H x B x T x k with ``need_head_weights``, None unless asked for."""
        if attn_mask is not None:
            raise ValueError(
                "attn_mask is not supported by Linformer self-attention: each projected key "
                "mixes all positions, so a causal or per-position mask cannot be applied. "
                "Use fairseq's MultiheadAttention for masked (decoder) attention."
            )
        if incremental_state is not None or static_kv or before_softmax:
            raise ValueError(
                "Linformer self-attention is for encoders: incremental_state, static_kv and "
                "before_softmax are not supported"
            )
        key = query if key is None else key
        value = key if value is None else value
        tgt_len, bsz, embed_dim = query.shape
        if embed_dim != self.embed_dim:
            raise ValueError(f"query has {embed_dim} channels, this attention expects {self.embed_dim}")
        if key_padding_mask is not None:
            if key_padding_mask.shape != (bsz, key.size(0)):
                raise ValueError(
                    f"key_padding_mask must be batch x source length {(bsz, key.size(0))}, "
                    f"got {tuple(key_padding_mask.shape)}"
                )
            key_padding_mask = key_padding_mask.to(torch.bool)

        projection_mask = key_padding_mask
        if key_padding_mask is not None and key is query and value is query \
                and self.sequence_projection.exact_on_zeroed_pads and query.numel() <= ZEROED_PADS_MAX_ELEMENTS:
            keep = right_padded_keep(key_padding_mask)
            if keep is not None:
                # right padding (fairseq's, the hub's) and a linear projection: with the pads zeroed the
                # unpadded path is exact (two ops, no per-sentence work). q_proj takes the same tensor, so
                # it alone is kept for the backward, and the pads' gradient is 0 (they change no output
                # of a real token)
                query = key = value = torch.where(keep, query, 0.0)
                projection_mask = None
        q = self.q_proj(query)
        k, v, key_mask = self.project_keys_values(key, value, projection_mask)
        dropout_p = self.dropout if self.training else 0.0
        want_weights = need_weights or need_head_weights
        # chunks help the backward only (the forward has enough query blocks as it is)
        backward = torch.is_grad_enabled() and (query.requires_grad or self.q_proj.weight.requires_grad)
        chunks = query_chunks(tgt_len, bsz * self.num_heads) if backward and not want_weights else 1
        heads, head_dim = self.num_heads, self.head_dim
        if chunks == 1:  # T x B x C -> B x H x T x d, as views: SDPA takes the strides
            q = q.view(tgt_len, bsz, heads, head_dim).permute(1, 2, 0, 3)
            k, v = (t.view(-1, bsz, heads, head_dim).permute(1, 2, 0, 3) for t in (k, v))
        else:
            # Few sentences x heads (long inputs): the attention backward, parallel over key blocks
            # (here one), would leave most of the GPU idle. Each query attends to all k keys on its
            # own, so the queries split exactly into chunks that act as extra batch entries:
            # (chunks, B*H, T/chunks, d), with keys and values broadcast over the chunks.
            q = q.view(chunks, tgt_len // chunks, bsz * heads, head_dim).transpose(1, 2)
            k, v = (t.view(-1, bsz * heads, head_dim).transpose(0, 1).expand(chunks, -1, -1, -1) for t in (k, v))
        mask = None
        if key_mask is not None:  # windowed projections of padded batches: empty windows are no keys
            mask = key_mask[:, None, None, :]  # B x 1 x 1 x k'
            if chunks > 1:  # (chunks, B*H, T/chunks, k'): one row per sentence and head
                mask = key_mask[:, None, :].expand(bsz, heads, -1).reshape(1, bsz * heads, 1, -1)

        weights = None
        if want_weights:
            attn, weights = self._attention_with_weights(q, k, v, dropout_p, mask)
            weights = weights.transpose(0, 1)  # H x B x T x k
            if not need_head_weights:
                weights = weights.mean(dim=0)
        else:
            attn = _sdpa(q, k, v, mask, dropout_p, padded=key_padding_mask is not None)
        if chunks == 1:
            attn = attn.permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim)
        else:  # (chunks, B*H, T/chunks, d) -> T x B x C
            attn = attn.transpose(1, 2).reshape(tgt_len, bsz, embed_dim)
        return self.out_proj(attn), weights

    @staticmethod
    def _attention_with_weights(q: Tensor, k: Tensor, v: Tensor, dropout_p: float,
                                mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """The explicit computation, returning the softmax weights too (in at least fp32)."""
        scores = (q * q.size(-1) ** -0.5) @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))
        probs = F.dropout(weights.type_as(q), p=dropout_p, training=dropout_p > 0)
        return probs @ v, weights


try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel

    _NOT_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
except ImportError:  # older torch has no cuDNN attention to avoid
    sdpa_kernel = None


def _sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], dropout_p: float, padded: bool) -> Tensor:
    """SDPA, kept off cuDNN's backend on CUDA except for unpadded training batches. cuDNN's attention
    (torch's first choice on Hopper) builds a plan for each new shape, milliseconds of CPU, and padded
    batches (fine-tuning, ``complete`` and ``complete_doc`` blocks, whose batch size follows the length
    under --max-tokens) and inference inputs (the hub's one text at a time) bring a new shape in most
    calls. Fixed-length pretraining batches (unpadded, with grad) keep SDPA's choice: there the plan is
    built once and cuDNN's training kernels are the faster."""
    if (padded or not torch.is_grad_enabled()) and q.is_cuda and sdpa_kernel is not None:
        with sdpa_kernel(_NOT_CUDNN):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def query_chunks(tgt_len: int, batch_heads: int, target_blocks: int = 256, min_chunk: int = 256) -> int:
    """How many equal chunks to split the queries into: enough that chunks x batch x heads fills
    the GPU in the attention backward, never chunks shorter than ``min_chunk``."""
    chunks = 1
    while (batch_heads * chunks < target_blocks and tgt_len % (2 * chunks) == 0
           and tgt_len // (2 * chunks) >= min_chunk):
        chunks *= 2
    return chunks
