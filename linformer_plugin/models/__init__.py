from .linformer_roberta import LinformerModel  # noqa: F401  (registers linformer_roberta)

__all__ = ["LinformerModel"]
