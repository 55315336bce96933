"""The pieces of the fairseq commands that the benchmarks and studies build: how to launch this
repository's modules in a child process, RoBERTa's optimizer and schedule, the masked-LM and
sentence_prediction tasks, restoring a checkpoint, and the model sizes.

Light at import (no torch, no fairseq), so that a harness can build commands before importing
either; the sizes are read from the registered architectures when first asked for."""

import functools
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN_DIR = os.path.join(REPO_ROOT, "linformer_plugin")  # --user-dir
# fairseq-train entry points of this package, run as `python -m MODULE` in a child (see child_env)
TRAIN_WITH_PEAK_MEMORY = "examples.common.train_with_peak_memory"
FAIRSEQ_TRAIN = "examples.common.fairseq_train"

SIZE_KEYS = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads")
STUDY_ARCH = "linformer_roberta_medium"  # the studies' model: 8 layers x 512, 8 heads, FFN 2048
TINY_ARCH = "linformer_roberta_tiny"  # the smoke runs' model
DROPOUT = ["--dropout", "0.1", "--attention-dropout", "0.1"]


def child_env(extra=None, base=None):
    """The environment of a child process that imports this repository's packages (examples,
    linformer_plugin) whatever its working directory: the repository root first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


@functools.lru_cache(maxsize=None)
def arch_size(arch):
    """{size key: value} of a registered linformer_roberta architecture, as fairseq-train fills an empty args."""
    from linformer_plugin.models.linformer_roberta import architecture_sizes

    sizes = architecture_sizes()
    if arch not in sizes:
        raise ValueError(f"unknown architecture {arch!r}; registered linformer ones: {sorted(sizes)}")
    return {key: sizes[arch][key] for key in SIZE_KEYS}


def study_size():
    return arch_size(STUDY_ARCH)


def tiny_size():
    return arch_size(TINY_ARCH)


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
