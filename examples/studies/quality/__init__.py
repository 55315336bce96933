"""Masked-LM pretraining of roberta and linformer_roberta on the same budget, then SST-2."""
