"""fairseq's TransformerEncoder(Layer) with Linformer self-attention: one hook overridden in each."""

from typing import Optional

from torch import nn

from fairseq.distributed import fsdp_wrap
from fairseq.models.transformer import TransformerConfig, TransformerEncoder
from fairseq.modules import TransformerEncoderLayer
from fairseq.modules.checkpoint_activations import checkpoint_wrapper

from ..options import LinformerOptions
from .linformer_attention import LinformerSelfAttention
from .sequence_projection import build_projection, check_sequence_length


class LinformerEncoderLayer(TransformerEncoderLayer):
    """A fairseq encoder layer whose self-attention is ``LinformerSelfAttention``.

    ``compressed_dim`` is this layer's k (``options.compressed_dim`` unless per-layer k is given).
    """

    def __init__(self, args, options: LinformerOptions, shared_projection: Optional[nn.Module] = None,
                 compressed_dim: Optional[int] = None):
        # set before super().__init__, which calls build_self_attention; a tuple keeps the
        # shared projection from being registered in every layer
        self.linformer = (options, shared_projection, compressed_dim or options.compressed_dim)
        super().__init__(args)

    def build_self_attention(self, embed_dim, cfg):
        options, shared_projection, compressed_dim = self.linformer
        cfg = TransformerConfig.from_namespace(cfg)
        return LinformerSelfAttention(
            embed_dim,
            cfg.encoder.attention_heads,
            max_positions=options.max_positions,
            compressed_dim=compressed_dim,
            shared_kv=options.sharing == "kv",
            shared_projection=shared_projection,
            freeze_projection=options.freeze,
            dropout=cfg.attention_dropout,
            q_noise=self.quant_noise,
            qn_block_size=self.quant_noise_block_size,
            projection_method=options.projection,
            per_head=options.sharing == "none",
            projection_init=options.init,
        )


class LinformerTransformerEncoder(TransformerEncoder):
    """fairseq's TransformerEncoder built from ``LinformerEncoderLayer``s.

    With layerwise sharing the encoder owns the one ``shared_projection`` all layers use. With
    per-layer k (``options.compressed_dims``) layer i gets the i-th k.
    """

    def __init__(self, args, dictionary, embed_tokens, options: LinformerOptions):
        self.options = options
        self.shared_projection = None
        self._layer_dims = options.layer_dims(TransformerConfig.from_namespace(args).encoder.layers)
        self._layers_built = 0
        super().__init__(args, dictionary, embed_tokens)

    def forward(self, src_tokens, *args, **kwargs):
        # before the positional embedding, which would fail with an index error
        check_sequence_length(src_tokens.size(1), self.options.max_positions)
        return super().forward(src_tokens, *args, **kwargs)

    def build_encoder_layer(self, args):
        options = self.options
        if options.sharing == "layerwise" and self.shared_projection is None:
            self.shared_projection = build_projection(
                options.projection, options.max_positions, options.compressed_dim, num_maps=1, freeze=options.freeze,
                init=options.init,
            )
        # fairseq builds the layers in order, one call each
        compressed_dim = self._layer_dims[self._layers_built]
        self._layers_built += 1
        layer = LinformerEncoderLayer(args, options, self.shared_projection, compressed_dim)
        # the wrapping fairseq's TransformerEncoderBase.build_encoder_layer applies
        cfg = TransformerConfig.from_namespace(args)
        if cfg.checkpoint_activations:
            layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
        min_params_to_wrap = cfg.min_params_to_wrap if not cfg.checkpoint_activations else 0
        return fsdp_wrap(layer, min_num_params=min_params_to_wrap)
