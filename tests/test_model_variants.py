"""The paper's variants at the model level (section 4): padding invariance of the whole model,
checkpoint round trips and layouts, per-layer k, the options and their errors, conversion.

The attention-level checks against the formula written out per sentence are in
test_projection_variants.py, whose variant list this file shares.
"""

import argparse
import io
import re
from types import SimpleNamespace

import pytest
import torch

from conftest import build_tiny_model, tiny_dictionary
from linformer_plugin.options import (
    LinformerConfigError, LinformerOptions, add_linformer_args, set_linformer_defaults,
)
from test_projection_variants import MODEL_VARIANTS

# ----------------------------------------------------------------------------- the model


def features(model, tokens):
    return model(tokens, features_only=True)[0]


def variant_flags(projection, sharing):
    return {"compressed_projection": projection, "compressed_sharing": sharing}


@pytest.mark.parametrize("projection,sharing", MODEL_VARIANTS)
def test_model_padding_invariance(projection, sharing):
    model, d = build_tiny_model(**variant_flags(projection, sharing))
    lengths = [32, 21, 7, 1]
    gen = torch.Generator().manual_seed(1)
    sentences = [torch.randint(d.nspecial, len(d) - 1, (L,), generator=gen) for L in lengths]
    alone = [features(model, s[None])[0] for s in sentences]
    right = torch.full((len(lengths), 32), d.pad())
    left = torch.full((len(lengths), 32), d.pad())
    for b, s in enumerate(sentences):
        right[b, :len(s)] = s
        left[b, 32 - len(s):] = s
    out_right, out_left = features(model, right), features(model, left)
    for b, s in enumerate(sentences):
        torch.testing.assert_close(out_right[b, :len(s)], alone[b], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_left[b, 32 - len(s):], alone[b], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("projection,sharing", MODEL_VARIANTS + [("conv", "per-layer"), ("linear", "per-layer")])
def test_checkpoint_round_trip(projection, sharing):
    flags = ({"compressed_projection": projection, "compressed_dims": "8,4"} if sharing == "per-layer"
             else variant_flags(projection, sharing))
    model, d = build_tiny_model(**flags)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)  # a different initialisation
    fresh, _ = build_tiny_model(**flags)
    fresh.load_state_dict(torch.load(buffer), strict=True)
    tokens = torch.randint(d.nspecial, len(d) - 1, (2, 19))
    torch.testing.assert_close(features(fresh, tokens), features(model, tokens), rtol=0, atol=0)


@pytest.mark.parametrize(
    "saved,loaded,message",
    [
        ({}, {"compressed_projection": "conv"},
         r"layers\.0 the checkpoint has a linear projection of 16 stacked rows \(k x its E/F maps\) x 32 positions, the model expects a conv "
         r"projection of 2 kernel\(s\) of 4 taps \(stride 4\)"),
        ({"compressed_projection": "mean"}, {"compressed_projection": "max"},
         "the checkpoint has mean pooling over windows of 4 tokens, the model expects max pooling"),
        ({"compressed_projection": "conv"}, {"compressed_projection": "conv", "compressed_dim": 4},
         r"kernel\(s\) of 4 taps \(stride 4\), the model expects a conv projection of 2 kernel\(s\) of 8 taps"),
        ({}, {"compressed_sharing": "none"}, "16 stacked rows \(k x its E/F maps\) x 32 positions, the model expects a linear projection of 32 stacked rows"),
        ({"compressed_dims": "8,4"}, {"compressed_dims": "8,8"},
         r"layers\.1 the checkpoint has a linear projection of 8 stacked rows \(k x its E/F maps\) x 32 positions, the model expects .* 16 stacked rows"),
        ({"shared_layer_kv_compressed": 1}, {},
         r"layers\.0 the checkpoint has no projection of its own, the model expects a linear projection"),
    ],
)
def test_loading_another_variant_is_a_clear_error(saved, loaded, message):
    model, _ = build_tiny_model(**saved)
    other, _ = build_tiny_model(**loaded)
    with pytest.raises(LinformerConfigError, match="the checkpoint's Linformer projections do not fit the model "
                                                  "built with --compressed-projection") as info:
        other.load_state_dict(model.state_dict(), strict=True)
    assert "Build the model with the options the checkpoint was trained with" in str(info.value)
    assert re.search(message, str(info.value)), str(info.value)


def reference_layout(state):
    """A plugin state dict of a linear headwise model rewritten as fairseq's reference saves it."""
    state = dict(state)
    del state["encoder.version"]
    for key in [k for k in state if k.endswith("self_attn.projection.weight")]:
        weight = state.pop(key)
        base = key[: -len("projection.weight")]
        state[base + "compress_k.weight"], state[base + "compress_v.weight"] = weight.chunk(2)
    return state


def test_reference_checkpoints_load_only_into_linear_headwise_layouts():
    model, d = build_tiny_model()
    tokens = torch.randint(d.nspecial, len(d) - 1, (2, 32))
    same, _ = build_tiny_model()
    same.load_state_dict(reference_layout(model.state_dict()), strict=True)
    torch.testing.assert_close(features(same, tokens), features(model, tokens), rtol=0, atol=0)
    for flags, message in (
        ({"compressed_projection": "conv"}, "this is a checkpoint of fairseq's reference Linformer, whose projections "
                                            "are linear .* --compressed-projection conv"),
        ({"compressed_sharing": "none"}, "--compressed-sharing none: load it with --compressed-projection linear"),
        ({"compressed_dims": "8,4"}, r"layers\.1 the checkpoint has a linear projection of 16 stacked rows \(k x its E/F maps\) x 32 positions, "
                                     "the model expects a linear projection of 8 stacked rows"),
    ):
        other, _ = build_tiny_model(**flags)
        with pytest.raises(LinformerConfigError, match=message):
            other.load_state_dict(reference_layout(model.state_dict()), strict=True)


def test_per_layer_k_shapes():
    model, _ = build_tiny_model(compressed_dims="16,8")
    layers = model.encoder.sentence_encoder.layers
    assert [layer.self_attn.compressed_dim for layer in layers] == [16, 8]
    assert [tuple(layer.self_attn.projection.weight.shape) for layer in layers] == [(32, 32), (16, 32)]
    model, _ = build_tiny_model(compressed_dims=[8, 4], compressed_projection="conv", compressed_sharing="none")
    layers = model.encoder.sentence_encoder.layers
    assert [tuple(layer.self_attn.projection.kernel.shape) for layer in layers] == [(4, 4), (4, 8)]
    model, _ = build_tiny_model(compressed_dims="8,4", compressed_projection="max")
    layers = model.encoder.sentence_encoder.layers
    assert [layer.self_attn.projection.stride for layer in layers] == [4, 8]
    with torch.no_grad():  # layer attention weights: 8 then 4 keys
        x = torch.randn(32, 1, 64)
        assert layers[0].self_attn(x, x, x, need_weights=True)[1].shape == (1, 32, 8)
        assert layers[1].self_attn(x, x, x, need_weights=True)[1].shape == (1, 32, 4)
    # uniform per-layer k with layerwise sharing is one k: accepted
    build_tiny_model(compressed_dims="8,8", shared_layer_kv_compressed=1)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"compressed_dims": "8,4", "compressed_sharing": "layerwise"},
         "layerwise sharing uses one projection for every layer, so every layer has the same k, but "
         "--compressed-dims gives 8,4: use --compressed-sharing headwise"),
        ({"compressed_dims": "8,4", "shared_layer_kv_compressed": 1}, "layerwise sharing uses one projection"),
        ({"compressed_dims": "8,4,2"}, "--compressed-dims gives 3 values .* but the encoder has 2 layers"),
        ({"compressed_dims": "8,x"}, "--compressed-dims must be comma-separated integers"),
        ({"compressed_dims": "8,0"}, "k must be positive, got k=0"),
        ({"compressed_dims": "8,40"}, "k=40 exceeds max_positions=32"),
        ({"compressed_dims": "8,4", "compressed_dim": 8},
         "--compressed-dims gives k per layer, and --compressed-dim gives one k .*drop --compressed-dim"),
        ({"compressed_dims": "8,4", "compressed": 4}, "drop --compressed"),
        ({"compressed_projection": "conv", "compressed_dim": 5},
         r"--compressed-projection conv: a convolution with kernel = stride = n/k needs k to divide max_positions, "
         r"but n=32, k=5 gives n/k = 6.4; choose k = 4 or 8"),
        ({"compressed_projection": "mean", "compressed_dims": "8,6"}, "mean pooling with kernel = stride = n/k needs"),
        ({"compressed_projection": "mean", "compressed_sharing": "kv"},
         "mean pooling has no parameters to share, so --compressed-sharing kv / --shared-kv-compressed 1 means "
         "nothing"),
        ({"compressed_projection": "max", "compressed_sharing": "none"}, "max pooling has no parameters to share"),
        ({"compressed_projection": "max", "shared_layer_kv_compressed": 1}, "max pooling has no parameters"),
        ({"compressed_projection": "gaussian"}, "unknown projection 'gaussian'"),
        ({"compressed_sharing": "everything"}, "unknown --compressed-sharing 'everything'"),
        ({"compressed_sharing": "none", "shared_kv_compressed": 1},
         r"--compressed-sharing none contradicts --shared-kv-compressed 1 \(which means kv sharing\); pass only one"),
        ({"compressed_sharing": "headwise", "shared_layer_kv_compressed": 1},
         "--compressed-sharing headwise contradicts --shared-layer-kv-compressed 1"),
        ({"compressed_sharing": "kv", "shared_layer_kv_compressed": 1}, "contradicts --shared-layer-kv-compressed 1"),
        ({"compressed_sharing": "none", "quant_noise_pq": 0.1}, "quant-noise .* not supported with a projection per head"),
    ],
)
def test_bad_combinations_fail_when_the_model_is_built(overrides, message):
    with pytest.raises((LinformerConfigError, ValueError), match=message):
        build_tiny_model(max_positions=32, **overrides)


def test_config_errors_are_linformer_config_errors():
    with pytest.raises(LinformerConfigError):
        build_tiny_model(compressed_projection="conv", compressed_dim=5)
    with pytest.raises(LinformerConfigError):
        build_tiny_model(compressed_dims="8,4", compressed_sharing="layerwise")


def parse(argv):
    parser = argparse.ArgumentParser()
    add_linformer_args(parser)
    args = parser.parse_args(argv)
    args.max_positions, args.encoder_layers = 32, 2
    set_linformer_defaults(args)
    return LinformerOptions.from_args(args)


@pytest.mark.parametrize(
    "argv,sharing",
    [
        ([], "headwise"),
        (["--shared-kv-compressed", "1"], "kv"),
        (["--shared-layer-kv-compressed", "1"], "layerwise"),
        (["--shared-layer-kv-compressed", "1", "--shared-kv-compressed", "1"], "layerwise"),  # as the reference
        (["--compressed-sharing", "none"], "none"),
        (["--compressed-sharing", "headwise"], "headwise"),
        (["--compressed-sharing", "kv", "--shared-kv-compressed", "1"], "kv"),
        (["--compressed-sharing", "kv", "--shared-kv-compressed", "0"], "kv"),
        (["--compressed-sharing", "layerwise", "--shared-layer-kv-compressed", "1"], "layerwise"),
    ],
)
def test_reference_flags_map_onto_sharing(argv, sharing):
    options = parse(argv)
    assert options.sharing == sharing and options.projection == "linear" and options.compressed_dim == 8


def test_command_line_flags():
    options = parse(["--compressed-projection", "conv", "--compressed-sharing", "none", "--compressed-dims", "16,8"])
    assert (options.projection, options.sharing, options.compressed_dims, options.compressed_dim) == (
        "conv", "none", (16, 8), 16)
    assert options.layer_dims(2) == (16, 8)
    assert parse(["--compressed-dim", "4"]).layer_dims(2) == (4, 4)
    with pytest.raises(SystemExit):
        parse(["--compressed-projection", "gaussian"])


def test_flags_through_fairseq_train_parser():
    """The new flags parse next to all of fairseq-train's (no clash) and build the model."""
    import linformer_plugin
    from fairseq import options
    from fairseq.models import ARCH_MODEL_REGISTRY

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        "unused-data", "--user-dir", linformer_plugin.USER_DIR, "--task", "masked_lm", "--criterion", "masked_lm",
        "--arch", "linformer_roberta_tiny", "--tokens-per-sample", "32", "--compressed-projection", "conv",
        "--compressed-sharing", "kv", "--compressed-dims", "8,4", "--cpu",
    ])
    assert (args.compressed_projection, args.compressed_sharing, args.compressed_dims) == ("conv", "kv", "8,4")
    assert args.compressed is None and args.compressed_dim is None  # no ratio default with per-layer k
    model = ARCH_MODEL_REGISTRY["linformer_roberta_tiny"].build_model(
        args, SimpleNamespace(source_dictionary=tiny_dictionary(), max_positions=lambda: 32))
    layers = model.encoder.sentence_encoder.layers
    assert [tuple(layer.self_attn.projection.kernel.shape) for layer in layers] == [(1, 4), (1, 8)]


def test_initialisation_through_the_model_and_its_errors():
    model, _ = build_tiny_model(compressed_init="mean", compressed_dim=8)
    weight = model.encoder.sentence_encoder.layers[1].self_attn.projection.weight
    assert torch.equal(weight[:, :4].sum(1) > 0, torch.tensor([True] + [False] * 7 + [True] + [False] * 7))
    torch.testing.assert_close(weight.sum(1), torch.ones(16))
    shared = build_tiny_model(compressed_init="normal", compressed_sharing="layerwise")[0].encoder.sentence_encoder
    assert shared.shared_projection.weight.std() < 0.03
    with pytest.raises(LinformerConfigError, match="--compressed-init mean initialises learned projections, but max "
                       "pooling has no parameters; drop --compressed-init"):
        build_tiny_model(compressed_projection="max", compressed_init="mean")
    with pytest.raises(LinformerConfigError, match="unknown projection initialisation 'orthogonal'; choose "
                       "--compressed-init from xavier, normal, mean"):
        LinformerOptions(max_positions=32, compressed_dim=8, init="orthogonal")
    with pytest.raises(SystemExit):
        parse(["--compressed-init", "orthogonal"])
    assert parse(["--compressed-init", "mean"]).init == "mean" and parse([]).init is None


# ----------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("flags", [
    {"compressed_projection": "conv"},
    {"compressed_projection": "mean", "compressed_dims": "8,4"},
    {"compressed_projection": "max"},
    {"compressed_sharing": "none"},
    {"compressed_dims": "8,4"},
])
def test_extend_positions_of_variants(flags):
    """Windowed projections keep their window: k doubles with n, and inputs up to the old n give the
    original outputs exactly. Linear ones keep k (columns block-copied and scaled)."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    from linformer_plugin.convert import extend_linformer_positions

    model, d = build_tiny_model(**flags)
    args = argparse.Namespace(**vars(model.args))
    new = extend_linformer_positions({"model": model.state_dict(), "args": args, "cfg": None}, 64)
    new_args = new["args"]
    assert new_args.max_positions == 64
    longer = ARCH_MODEL_REGISTRY["linformer_roberta_tiny"].build_model(
        new_args, SimpleNamespace(source_dictionary=d, max_positions=lambda: 64)).eval()
    longer.load_state_dict(new["model"], strict=True)
    old_dims = [layer.self_attn.compressed_dim for layer in model.encoder.sentence_encoder.layers]
    new_dims = [layer.self_attn.compressed_dim for layer in longer.encoder.sentence_encoder.layers]
    windowed = flags.get("compressed_projection") in ("conv", "mean", "max")
    assert new_dims == [2 * k for k in old_dims] if windowed else new_dims == old_dims
    tokens = torch.randint(d.nspecial, len(d) - 1, (2, 32))
    assert features(longer, torch.cat([tokens, tokens], dim=1)).shape == (2, 64, 64)
    if windowed:
        torch.testing.assert_close(features(longer, tokens), features(model, tokens), rtol=1e-5, atol=1e-5)


def test_roberta_to_linformer_with_a_projection_per_head():
    from fairseq.models import ARCH_MODEL_REGISTRY

    from linformer_plugin.convert import roberta_to_linformer

    model, d = build_tiny_model()  # its non-Linformer weights stand in for a RoBERTa checkpoint
    state = {k: v for k, v in model.state_dict().items() if "projection" not in k and k != "encoder.version"}
    new = roberta_to_linformer({"model": state, "args": argparse.Namespace(**vars(model.args)), "cfg": None}, 8,
                               sharing="none")
    assert new["model"]["encoder.sentence_encoder.layers.0.self_attn.projection.weight"].shape == (2 * 2 * 8, 32)
    assert new["args"].compressed_sharing == "none"
    linformer = ARCH_MODEL_REGISTRY["linformer_roberta"].build_model(
        new["args"], SimpleNamespace(source_dictionary=d, max_positions=lambda: 32)).eval()
    linformer.load_state_dict(new["model"], strict=True)
    assert linformer.encoder.sentence_encoder.layers[0].self_attn.per_head


@pytest.mark.parametrize("argv", [
    [], ["--compressed-dim", "8"], ["--compressed", "2"], ["--compressed-dims", "16,8"],
    ["--compressed-sharing", "none", "--compressed-init", "mean"], ["--shared-kv-compressed", "1"],
    ["--shared-layer-kv-compressed", "1", "--freeze-compress", "1"], ["--compressed-projection", "conv", "--compressed-dim", "8"],
    ["--compressed-projection", "max", "--compressed-dim", "4"],
])
def test_options_to_args_is_the_inverse_of_from_args(argv):
    """What a conversion writes into a checkpoint's args builds the same options back."""
    options = parse(argv)
    args = options.to_args(argparse.Namespace(encoder_layers=2))
    assert LinformerOptions.from_args(args) == options
