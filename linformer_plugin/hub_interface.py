"""The hub interface: fairseq's RoBERTa hub interface, with sentencepiece pieces and padded batches."""

from typing import List

import torch
from fairseq.data import data_utils
from fairseq.models.roberta.hub_interface import RobertaHubInterface


class LinformerHubInterface(RobertaHubInterface):
    """``encode``/``decode``/``extract_features``/``fill_mask``/``predict`` as for RoBERTa.

    Padding is masked inside the Linformer projections, so a right-padded batch of mixed-length
    sentences (``encode_batch``) gives each sentence the result it gets alone.
    """

    def encode_batch(self, sentences: List[str]) -> torch.LongTensor:
        """Encode sentences and right-pad them into one batch (B x T)."""
        tokens = [self.encode(sentence) for sentence in sentences]
        return data_utils.collate_tokens(tokens, pad_idx=self.task.source_dictionary.pad())
