"""The hub interface: fairseq's RoBERTa hub interface, with sentencepiece pieces and padded batches."""

from typing import List

import torch
from fairseq.data import data_utils
from fairseq.models.roberta.hub_interface import RobertaHubInterface


class LinformerHubInterface(RobertaHubInterface):
    """``encode``/``decode``/``extract_features``/``fill_mask``/``predict`` as for RoBERTa.

    Padding is masked inside the Linformer projections, so a right-padded batch of mixed-length
    sentences (``encode_batch``) gives each sentence the result it gets alone. Input longer than the
    model's max_positions gets one error from every entry point (``check_length``).
    """

    def encode_batch(self, sentences: List[str]) -> torch.LongTensor:
        """Encode sentences and right-pad them into one batch (B x T)."""
        tokens = [self.encode(sentence) for sentence in sentences]
        return data_utils.collate_tokens(tokens, pad_idx=self.task.source_dictionary.pad())

    def check_length(self, length: int):
        """A ValueError worded for Python callers when ``length`` tokens do not fit the model."""
        limit = self.model.max_positions()
        if length > limit:
            raise ValueError(
                f"input of {length} tokens (with <s> and </s>) exceeds max_positions={limit} of this model: "
                f"pass at most {limit} tokens (split the text, or keep tokens[..., :{limit}]), or load a "
                "checkpoint made for longer input (linformer_plugin.convert.extend_linformer_positions, "
                "the command `linformer-convert-checkpoint extend`, then fine-tune it at that length)"
            )

    def extract_features(self, tokens: torch.LongTensor, return_all_hiddens: bool = False):
        self.check_length(tokens.size(-1))
        return super().extract_features(tokens, return_all_hiddens=return_all_hiddens)

    def fill_mask(self, masked_input: str, topk: int = 5):
        # the tokens fairseq's fill_mask builds: the pieces around <mask>, between <s> and </s>
        spans = [self.bpe.encode(span.rstrip()) for span in masked_input.split("<mask>")]
        self.check_length(len(" <mask> ".join(spans).split()) + 2)
        return super().fill_mask(masked_input, topk=topk)
