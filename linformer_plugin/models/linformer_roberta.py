"""``linformer_roberta``: fairseq's RoBERTa with Linformer self-attention, and its architectures."""

import logging

import torch
from fairseq import utils
from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta import (
    RobertaEncoder,
    RobertaModel,
    base_architecture as roberta_base_architecture,
    init_bert_params,
    roberta_large_architecture,
)
from fairseq.utils import safe_hasattr

from ..checkpoint import upgrade_reference_state_dict
from ..modules.linformer_encoder import LinformerTransformerEncoder
from ..options import LinformerOptions, add_linformer_args, set_linformer_defaults

logger = logging.getLogger(__name__)

# 3: this plugin's layout (E and F stacked in one SequenceProjection per layer).
# 2 and 1: fairseq's reference (examples/linformer), upgraded on load.
CHECKPOINT_VERSION = 3


@register_model("linformer_roberta")
class LinformerModel(RobertaModel):
    @staticmethod
    def add_args(parser):
        RobertaModel.add_args(parser)
        add_linformer_args(parser)

    @classmethod
    def build_model(cls, args, task):
        base_architecture(args)
        if not safe_hasattr(args, "max_positions") or args.max_positions is None:
            if not safe_hasattr(args, "tokens_per_sample"):
                args.tokens_per_sample = task.max_positions()
            args.max_positions = args.tokens_per_sample
        encoder = LinformerEncoder(args, task.source_dictionary)
        return cls(args, encoder)


class LinformerEncoder(RobertaEncoder):
    """RoBERTa's encoder (embeddings, LM head) around a Linformer TransformerEncoder."""

    def __init__(self, args, dictionary):
        super().__init__(args, dictionary)
        self.register_buffer("version", torch.tensor(CHECKPOINT_VERSION))

    def build_encoder(self, args, dictionary, embed_tokens):
        encoder = LinformerTransformerEncoder(args, dictionary, embed_tokens, LinformerOptions.from_args(args))
        encoder.apply(init_bert_params)
        return encoder

    def upgrade_state_dict_named(self, state_dict, name):
        super().upgrade_state_dict_named(state_dict, name)
        prefix = name + "." if name != "" else ""
        version = utils.item(state_dict.get(f"{prefix}version", torch.tensor(1)))
        if version < CHECKPOINT_VERSION:
            upgrade_reference_state_dict(state_dict, prefix + "sentence_encoder.", self.sentence_encoder.options)
        state_dict[f"{prefix}version"] = torch.tensor(CHECKPOINT_VERSION)


@register_model_architecture("linformer_roberta", "linformer_roberta")
def base_architecture(args):
    set_linformer_defaults(args)
    roberta_base_architecture(args)


@register_model_architecture("linformer_roberta", "linformer_roberta_base")
def linformer_roberta_base_architecture(args):
    base_architecture(args)


@register_model_architecture("linformer_roberta", "linformer_roberta_large")
def linformer_roberta_large_architecture(args):
    roberta_large_architecture(args)
    base_architecture(args)


def _small(args, layers, dim, heads, ffn):
    args.encoder_layers = getattr(args, "encoder_layers", layers)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", dim)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", heads)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", ffn)
    base_architecture(args)


@register_model_architecture("linformer_roberta", "linformer_roberta_medium")
def linformer_roberta_medium_architecture(args):
    """8 layers, 512 dim, 8 heads: ~1/3 of base, for studies on one GPU."""
    _small(args, 8, 512, 8, 2048)


@register_model_architecture("linformer_roberta", "linformer_roberta_small")
def linformer_roberta_small_architecture(args):
    """4 layers, 256 dim, 4 heads: the CPU quickstart."""
    _small(args, 4, 256, 4, 1024)


@register_model_architecture("linformer_roberta", "linformer_roberta_tiny")
def linformer_roberta_tiny_architecture(args):
    """2 layers, 64 dim, 2 heads: unit tests."""
    _small(args, 2, 64, 2, 256)
