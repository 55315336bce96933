"""``linformer_roberta``: fairseq's RoBERTa with Linformer self-attention, and its architectures."""

import argparse
import os

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

from ..checkpoint import CHECKPOINT_VERSION, check_projection_layout, upgrade_reference_state_dict
from ..modules.linformer_encoder import LinformerTransformerEncoder
from ..options import LinformerConfigError, LinformerOptions, add_linformer_args, set_linformer_defaults


@register_model("linformer_roberta")
class LinformerModel(RobertaModel):
    @staticmethod
    def add_args(parser):
        RobertaModel.add_args(parser)
        add_linformer_args(parser)

    @classmethod
    def build_model(cls, args, task):
        from omegaconf import OmegaConf

        if OmegaConf.is_config(args):  # under fairseq-hydra-train: the defaults add keys
            OmegaConf.set_struct(args, False)
        base_architecture(args)
        if not safe_hasattr(args, "max_positions") or args.max_positions is None:
            if not safe_hasattr(args, "tokens_per_sample"):
                args.tokens_per_sample = task.max_positions()
            args.max_positions = args.tokens_per_sample
        encoder = LinformerEncoder(args, task.source_dictionary)
        if OmegaConf.is_config(args):
            OmegaConf.set_struct(args, True)
        return cls(args, encoder)

    @classmethod
    def hub_models(cls):
        return {}  # no downloadable archives: models are trained locally

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="model.pt", data_name_or_path=".",
                        sentencepiece_model=None, **kwargs):
        """Load a checkpoint for inference: ``LinformerModel.from_pretrained("checkpoints",
        "checkpoint_best.pt", "data-bin")``. The sentencepiece model is ``sentencepiece_model`` or a
        ``sentencepiece.bpe.model`` in the model or the data directory."""
        from fairseq import hub_utils

        from ..hub_interface import LinformerHubInterface

        data_dir = (os.path.join(model_name_or_path, data_name_or_path)
                    if data_name_or_path.startswith(".") else data_name_or_path)
        candidates = [os.path.join(d, "sentencepiece.bpe.model") for d in (model_name_or_path, data_dir)]
        if sentencepiece_model is None:
            sentencepiece_model = next((c for c in candidates if os.path.isfile(c)), None)
            if sentencepiece_model is None:
                raise FileNotFoundError(
                    f"no sentencepiece model for {model_name_or_path}: pass sentencepiece_model=PATH "
                    f"or put sentencepiece.bpe.model in the model or data directory (looked at {candidates})"
                )
        elif not os.path.isfile(sentencepiece_model):
            raise FileNotFoundError(f"sentencepiece_model not found: {sentencepiece_model}")
        loaded = hub_utils.from_pretrained(
            model_name_or_path, checkpoint_file, data_name_or_path, archive_map=cls.hub_models(),
            bpe="sentencepiece", sentencepiece_model=os.path.abspath(sentencepiece_model),
            load_checkpoint_heads=True, **kwargs,
        )
        return LinformerHubInterface(loaded["args"], loaded["task"], loaded["models"][0])


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
        prefix = name + "." if name != "" else ""
        embed_key = f"{prefix}sentence_encoder.embed_tokens.weight"
        if embed_key in state_dict and state_dict[embed_key].size(0) != len(self.dictionary):
            raise LinformerConfigError(
                f"the checkpoint's vocabulary has {state_dict[embed_key].size(0)} entries but the data's "
                f"dictionary has {len(self.dictionary)} (its dict.txt): the data was binarized with another "
                "dictionary than the checkpoint was trained with. Give the data directory the checkpoint was "
                "trained on (in Python: from_pretrained's data_name_or_path), or binarize this data with the "
                "checkpoint's dictionary: linformer-prepare-classification-data --pretraining-data "
                "<the pretraining data-bin> (linformer-prepare-pretraining-data: --spm-model and --srcdict)."
            )
        super().upgrade_state_dict_named(state_dict, name)
        version = utils.item(state_dict.get(f"{prefix}version", torch.tensor(1)))
        encoder = self.sentence_encoder
        if version < CHECKPOINT_VERSION:
            upgrade_reference_state_dict(state_dict, prefix + "sentence_encoder.", encoder.options)
        if not getattr(self.args, "encoder_layers_to_keep", None):  # pruned layers are renumbered later
            check_projection_layout(state_dict, prefix + "sentence_encoder.", encoder.state_dict(), encoder.options,
                                    architectures=architecture_sizes())
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


SIZE_KEYS = ("encoder_layers", "encoder_embed_dim", "encoder_attention_heads", "encoder_ffn_embed_dim")


def architecture_sizes():
    """{arch: {size key: value}} for every registered ``linformer_roberta`` architecture, as
    fairseq-train fills an empty args with it (keys: ``SIZE_KEYS``)."""
    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_INV_REGISTRY

    sizes = {}
    for arch in ARCH_MODEL_INV_REGISTRY["linformer_roberta"]:
        args = argparse.Namespace()
        ARCH_CONFIG_REGISTRY[arch](args)
        sizes[arch] = {key: int(getattr(args, key)) for key in SIZE_KEYS}
    return sizes
