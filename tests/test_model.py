"""The registered model: architectures, sharing modes, padding, lengths, state dicts, bad options."""

import io

import pytest
import torch

from conftest import build_tiny_model
from fairseq.models import ARCH_MODEL_REGISTRY
from linformer_plugin.options import LinformerConfigError

SHARING_FLAGS = {
    "headwise": {},
    "kv": {"shared_kv_compressed": 1},
    "layerwise": {"shared_layer_kv_compressed": 1},
}


def features(model, tokens):
    return model(tokens, features_only=True)[0]  # B x T x C


def random_tokens(dictionary, bsz, length, generator=None):
    return torch.randint(dictionary.nspecial, len(dictionary) - 1, (bsz, length), generator=generator)


def test_architectures_are_registered():
    for arch in ("linformer_roberta", "linformer_roberta_base", "linformer_roberta_large",
                 "linformer_roberta_medium", "linformer_roberta_small", "linformer_roberta_tiny"):
        assert ARCH_MODEL_REGISTRY[arch].__name__ == "LinformerModel"


def test_base_and_large_sizes_and_reference_defaults():
    import argparse

    from fairseq.models import ARCH_CONFIG_REGISTRY

    base, large = argparse.Namespace(), argparse.Namespace()
    ARCH_CONFIG_REGISTRY["linformer_roberta_base"](base)
    ARCH_CONFIG_REGISTRY["linformer_roberta_large"](large)
    assert (base.encoder_layers, base.encoder_embed_dim, base.encoder_attention_heads) == (12, 768, 12)
    assert (large.encoder_layers, large.encoder_embed_dim, large.encoder_attention_heads) == (24, 1024, 16)
    # the reference's defaults: ratio 4, headwise sharing, trained projections
    assert (base.compressed, base.shared_kv_compressed, base.shared_layer_kv_compressed, base.freeze_compress) == (4, 0, 0, 0)


@pytest.mark.parametrize("sharing", list(SHARING_FLAGS))
def test_padding_invariance(sharing):
    """Each sentence encodes the same alone and in a padded batch (right and left padding)."""
    model, d = build_tiny_model(**SHARING_FLAGS[sharing])
    lengths = [32, 20, 7]
    sentences = [random_tokens(d, 1, L)[0] for L in lengths]
    alone = [features(model, s[None])[0] for s in sentences]
    right = torch.full((3, 32), d.pad())
    left = torch.full((3, 32), d.pad())
    for b, s in enumerate(sentences):
        right[b, : len(s)] = s
        left[b, 32 - len(s):] = s
    out_right, out_left = features(model, right), features(model, left)
    worst = 0.0
    for b, s in enumerate(sentences):
        worst = max(worst, (out_right[b, : len(s)] - alone[b]).abs().max().item())
        worst = max(worst, (out_left[b, 32 - len(s):] - alone[b]).abs().max().item())
    assert worst < 1e-5, f"padding changed a sentence's features by {worst}"


def test_layerwise_projection_is_one_parameter():
    model, _ = build_tiny_model(shared_layer_kv_compressed=1)
    keys = [k for k in model.state_dict() if "projection" in k]
    assert keys == ["encoder.sentence_encoder.shared_projection.weight"]
    layers = model.encoder.sentence_encoder.layers
    assert all(layer.self_attn.sequence_projection is layers[0].self_attn.sequence_projection for layer in layers)
    assert sum(1 for n, _ in model.named_parameters() if "projection" in n) == 1


@pytest.mark.parametrize("sharing,rows", [("headwise", 16), ("kv", 8), ("layerwise", 8)])
def test_projection_shapes_follow_compressed(sharing, rows):
    model, _ = build_tiny_model(max_positions=32, **SHARING_FLAGS[sharing])  # k = 32 // 4 = 8
    weights = [v for k, v in model.state_dict().items() if "projection" in k]
    assert all(w.shape == (rows, 32) for w in weights)


def test_compressed_dim_gives_k_directly():
    model, _ = build_tiny_model(max_positions=32, compressed_dim=5)
    assert model.encoder.sentence_encoder.layers[0].self_attn.compressed_dim == 5


def test_freeze_compress_keeps_projections_fixed():
    for flags in ({}, {"shared_layer_kv_compressed": 1}):
        model, _ = build_tiny_model(freeze_compress=1, **flags)
        frozen = [p for n, p in model.named_parameters() if "projection" in n]
        assert frozen and not any(p.requires_grad for p in frozen)


@pytest.mark.parametrize("sharing", list(SHARING_FLAGS))
def test_state_dict_round_trip(sharing):
    model, d = build_tiny_model(**SHARING_FLAGS[sharing])
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)  # a different initialisation
    fresh, _ = build_tiny_model(**SHARING_FLAGS[sharing])
    fresh.load_state_dict(torch.load(buffer), strict=True)
    tokens = random_tokens(d, 2, 17)
    torch.testing.assert_close(features(fresh, tokens), features(model, tokens), rtol=0, atol=0)


def test_any_length_up_to_max_positions_and_clear_error_beyond():
    model, d = build_tiny_model(max_positions=32)
    for length in (1, 5, 31, 32):
        assert features(model, random_tokens(d, 2, length)).shape == (2, length, 64)
    with pytest.raises(ValueError, match="sequence length 33 exceeds max_positions=32.*--max-positions"):
        features(model, random_tokens(d, 2, 33))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"compressed_dim": 0}, "k must be positive"),
        ({"compressed_dim": -3}, "k must be positive"),
        ({"compressed_dim": 33}, "k=33 exceeds max_positions=32"),
        ({"compressed": 0}, "--compressed must be a positive ratio"),
        ({"compressed": 64}, "--compressed 64 is larger than max_positions=32"),
        ({"compressed": 4, "compressed_dim": 5}, "--compressed 4 gives k = 32 // 4 = 8, but --compressed-dim is 5"),
        ({"shared_kv_compressed": 2}, "--shared-kv-compressed must be 0 or 1"),
        ({"shared_layer_kv_compressed": 3}, "--shared-layer-kv-compressed must be 0 or 1"),
        ({"freeze_compress": -1}, "--freeze-compress must be 0 or 1"),
        ({"encoder_embed_dim": 30, "encoder_attention_heads": 4}, "embed_dim=30 is not divisible by num_heads=4"),
    ],
)
def test_bad_options_fail_when_the_model_is_built(overrides, message):
    with pytest.raises((LinformerConfigError, ValueError), match=message):
        build_tiny_model(max_positions=32, **overrides)


def test_consistent_compressed_and_compressed_dim_are_accepted():
    model, _ = build_tiny_model(max_positions=32, compressed=4, compressed_dim=8)
    assert model.encoder.sentence_encoder.layers[0].self_attn.compressed_dim == 8
