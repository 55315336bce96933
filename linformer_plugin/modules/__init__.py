from .linformer_attention import LinformerSelfAttention  # noqa: F401
from .linformer_encoder import LinformerEncoderLayer, LinformerTransformerEncoder  # noqa: F401
from .sequence_projection import SequenceProjection  # noqa: F401
