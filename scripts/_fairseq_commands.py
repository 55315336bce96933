"""The flag blocks that the study scripts' fairseq-train commands share: RoBERTa's optimizer and
schedule, the masked-LM and sentence_prediction tasks, restoring a checkpoint, the model sizes.
Light (no torch, no fairseq), so that the scripts can build commands before importing either."""

# the studies' model: linformer_roberta_medium's size (8 layers x 512, 8 heads), and the tests' tiny one
STUDY_SIZE = {"encoder_layers": 8, "encoder_embed_dim": 512, "encoder_ffn_embed_dim": 2048,
              "encoder_attention_heads": 8}
TINY_SIZE = {"encoder_layers": 2, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128,
             "encoder_attention_heads": 2}
SIZE_KEYS = tuple(STUDY_SIZE)
DROPOUT = ["--dropout", "0.1", "--attention-dropout", "0.1"]


def size_flags(size):
    return [flag for key in SIZE_KEYS for flag in (f"--{key.replace('_', '-')}", str(size[key]))]


def adam_polynomial(lr, max_update, warmup, weight_decay, clip_norm):
    """RoBERTa's optimizer: Adam (0.9, 0.98), eps 1e-6, linear warmup then linear decay to max_update."""
    return ["--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6",
            "--weight-decay", str(weight_decay), "--clip-norm", str(clip_norm), "--lr", str(lr),
            "--lr-scheduler", "polynomial_decay", "--warmup-updates", str(warmup),
            "--total-num-update", str(max_update), "--max-update", str(max_update)]


def masked_lm(tokens_per_sample, break_mode):
    return ["--task", "masked_lm", "--criterion", "masked_lm", "--tokens-per-sample", str(tokens_per_sample),
            "--sample-break-mode", break_mode]


def sentence_prediction(num_classes):
    """The task, RoBERTa's <s> ... </s> framing, and checkpoints chosen by accuracy."""
    return ["--task", "sentence_prediction", "--criterion", "sentence_prediction", "--num-classes", str(num_classes),
            "--init-token", "0", "--separator-token", "2",
            "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric"]


def restore(checkpoint):
    """Start from a checkpoint's weights only: a new optimizer, schedule, data order and meters."""
    return ["--restore-file", checkpoint, "--reset-optimizer", "--reset-dataloader", "--reset-meters",
            "--reset-lr-scheduler"]
