"""E and F: learned maps along the sequence axis, n positions -> k rows (Linformer, eq. 7)."""

import math
from typing import Optional

import torch
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


class SequenceProjection(nn.Module):
    """``num_maps`` stacked (k x max_positions) matrices applied along the sequence axis.

    With ``num_maps=2`` the rows ``[0, k)`` are E (keys) and ``[k, 2k)`` are F (values), so
    one GEMM projects the inputs of both. A sequence of length S <= max_positions uses the
    first S columns. Padded positions contribute nothing: a token at position t of its
    sentence (counting only real tokens, as fairseq's positional embeddings do) always
    meets column t, so neither right nor left padding changes the result.
    """

    def __init__(self, max_positions: int, compressed_dim: int, num_maps: int = 2, freeze: bool = False):
        super().__init__()
        self.max_positions = max_positions
        self.compressed_dim = compressed_dim
        self.num_maps = num_maps
        self.weight = nn.Parameter(torch.empty(num_maps * compressed_dim, max_positions))
        self.reset_parameters()
        self.weight.requires_grad_(not freeze)

    def reset_parameters(self):
        # each map initialised as fairseq's reference initialises its compress_k / compress_v
        for block in self.weight.data.split(self.compressed_dim):
            nn.init.xavier_uniform_(block, gain=1 / math.sqrt(2))

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
        # position of each real token among the real tokens of its sentence
        keep = ~padding_mask
        positions = (keep.cumsum(dim=1) - 1).clamp_(min=0)  # B x S
        # index_select: its backward is one index_add_ (no sort, unlike advanced indexing's)
        per_sentence = weight.to(x.dtype).index_select(1, positions.flatten()).view(-1, bsz, seq_len)
        per_sentence = per_sentence * keep.to(x.dtype)  # rows x B x S, zero at pads
        projected = torch.bmm(per_sentence.transpose(0, 1), x.transpose(0, 1))  # B x rows x C
        return projected.transpose(0, 1)

    def extra_repr(self) -> str:
        return (
            f"max_positions={self.max_positions}, compressed_dim={self.compressed_dim}, "
            f"num_maps={self.num_maps}, trainable={self.weight.requires_grad}"
        )
