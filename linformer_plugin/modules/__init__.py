from .linformer_attention import LinformerSelfAttention
from .linformer_encoder import LinformerEncoderLayer, LinformerTransformerEncoder
from .sequence_projection import SequenceProjection, WindowProjection

__all__ = ["LinformerEncoderLayer", "LinformerSelfAttention", "LinformerTransformerEncoder", "SequenceProjection",
           "WindowProjection"]
