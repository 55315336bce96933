"""Run in its own process (the reference and the plugin both register `linformer_roberta`):
load a checkpoint with fairseq's reference Linformer and save its encoder features.

    python reference_features.py REFERENCE_USER_DIR CHECKPOINT DATA TOKENS.pt OUT.pt
"""

import argparse
import sys

import torch
from fairseq import checkpoint_utils, utils

# the reference's own loader meets torch >= 2.6's weights_only default too
torch.serialization.add_safe_globals([argparse.Namespace])

user_dir, checkpoint, data, tokens_path, out_path = sys.argv[1:]
utils.import_user_module(argparse.Namespace(user_dir=user_dir))
models, _, _ = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data})
model = models[0].eval()
with torch.no_grad():
    features = model(torch.load(tokens_path), features_only=True)[0]
torch.save(features, out_path)
