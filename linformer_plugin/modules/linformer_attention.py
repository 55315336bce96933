"""Linformer multi-head self-attention, a drop-in for fairseq's ``MultiheadAttention`` in an encoder.

    head_i = softmax(Q_i (E K_i)^T / sqrt(d)) (F V_i)          (Wang et al. 2020, eq. 7)

Keys and values are built from projected inputs, K = (E X) W_k^T + b_k and V = (F X) W_v^T + b_v,
as fairseq's reference does (so its checkpoints give the same outputs), and attention runs over
the k projected keys through ``F.scaled_dot_product_attention``.
"""

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq.modules.quant_noise import quant_noise

from .sequence_projection import SequenceProjection


class LinformerSelfAttention(nn.Module):
    """Multi-head attention whose keys and values are projected along the sequence to length k.

    ``projection`` is this layer's own ``SequenceProjection`` (registered here) unless
    ``shared_projection`` is given: then one projection, owned by the encoder, serves every
    layer (layerwise sharing) and is not registered twice. A projection with one map serves
    keys and values alike (E = F); with two, its first k rows project keys and the rest values.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        max_positions: int,
        compressed_dim: int,
        shared_kv: bool = False,
        shared_projection: Optional[SequenceProjection] = None,
        freeze_projection: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
        q_noise: float = 0.0,
        qn_block_size: int = 8,
    ):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}; choose "
                "--encoder-embed-dim a multiple of --encoder-attention-heads"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout

        def linear():
            return quant_noise(nn.Linear(embed_dim, embed_dim, bias=bias), q_noise, qn_block_size)

        self.q_proj, self.k_proj, self.v_proj, self.out_proj = linear(), linear(), linear(), linear()
        if shared_projection is None:
            self.projection = SequenceProjection(
                max_positions, compressed_dim, num_maps=1 if shared_kv else 2, freeze=freeze_projection
            )
        else:
            self._shared_projection = (shared_projection,)  # a tuple: not registered as a child
        self.reset_parameters()

    @property
    def sequence_projection(self) -> SequenceProjection:
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
    ) -> Tuple[Tensor, Tensor]:
        """Projected keys and values, each k x B x C."""
        projection = self.sequence_projection
        k = projection.compressed_dim
        two_maps = projection.num_maps == 2
        if key is value:
            rows = projection(key, key_padding_mask)  # one GEMM for E X and F X
            key_rows, value_rows = (rows[:k], rows[k:]) if two_maps else (rows, rows)
        else:
            key_rows = projection(key, key_padding_mask, slice(0, k))
            value_rows = projection(value, key_padding_mask, slice(k, 2 * k) if two_maps else None)
        return self.k_proj(key_rows), self.v_proj(value_rows)

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

        q = self.q_proj(query)
        k, v = self.project_keys_values(key, value, key_padding_mask)
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

        weights = None
        if want_weights:
            attn, weights = self._attention_with_weights(q, k, v, dropout_p)
            weights = weights.transpose(0, 1)  # H x B x T x k
            if not need_head_weights:
                weights = weights.mean(dim=0)
        else:
            attn = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        if chunks == 1:
            attn = attn.permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim)
        else:  # (chunks, B*H, T/chunks, d) -> T x B x C
            attn = attn.transpose(1, 2).reshape(tgt_len, bsz, embed_dim)
        return self.out_proj(attn), weights

    @staticmethod
    def _attention_with_weights(q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> Tuple[Tensor, Tensor]:
        """The explicit computation, returning the softmax weights too (in at least fp32)."""
        scores = (q * q.size(-1) ** -0.5) @ k.transpose(-2, -1)
        weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))
        probs = F.dropout(weights.type_as(q), p=dropout_p, training=dropout_p > 0)
        return probs @ v, weights


def query_chunks(tgt_len: int, batch_heads: int, target_blocks: int = 256, min_chunk: int = 256) -> int:
    """How many equal chunks to split the queries into: enough that chunks x batch x heads fills
    the GPU in the attention backward, never chunks shorter than ``min_chunk``."""
    chunks = 1
    while (batch_heads * chunks < target_blocks and tgt_len % (2 * chunks) == 0
           and tgt_len // (2 * chunks) >= min_chunk):
        chunks *= 2
    return chunks
