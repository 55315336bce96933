"""Data-parallel training, mixed precision and resume of linformer_roberta through fairseq-train."""
