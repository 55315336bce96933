"""GPU behaviour: half precision against fp32, and the SDPA kernels against the explicit path.
Marked `gpu`: skipped where CUDA is not available (CI)."""

import pytest
import torch

from conftest import build_tiny_model
from test_projection_variants import VARIANTS as ALL_VARIANTS
from linformer_plugin.modules import LinformerSelfAttention, SequenceProjection, WindowProjection

pytestmark = pytest.mark.gpu
HALF = [torch.float16, torch.bfloat16]


def relative_error(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def attention(sharing="headwise", C=768, H=12, n=1024, k=128):
    torch.manual_seed(0)
    shared = SequenceProjection(n, k, num_maps=1).cuda() if sharing == "layerwise" else None
    return LinformerSelfAttention(C, H, max_positions=n, compressed_dim=k, shared_kv=sharing == "kv",
                                  shared_projection=shared).cuda(), shared


def padding_mask(bsz, n, device="cuda"):
    lengths = torch.randint(n // 4, n + 1, (bsz,), device=device)
    lengths[0] = n
    return torch.arange(n, device=device)[None, :] >= lengths[:, None]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("sharing", ["headwise", "kv", "layerwise"])
@pytest.mark.parametrize("padded", [False, True])
def test_half_precision_matches_fp32(dtype, sharing, padded):
    assert_half_matches_fp32(*attention(sharing), dtype, length=1024, padded=padded)


def assert_half_matches_fp32(attn, shared, dtype, length, padded):
    """The attention in dtype against itself in fp32 (padded or not); gradients finite."""
    x = torch.randn(length, 4, 768, device="cuda")
    mask = padding_mask(4, length) if padded else None
    reference, _ = attn(x, x, x, key_padding_mask=mask, need_weights=False)
    attn.to(dtype)
    if shared is not None:
        shared.to(dtype)
    xh = x.to(dtype).requires_grad_()
    out, _ = attn(xh, xh, xh, key_padding_mask=mask, need_weights=False)
    assert out.dtype == dtype
    assert relative_error(out, reference) < (1e-2 if dtype == torch.float16 else 3e-2)
    out.float().pow(2).mean().backward()
    assert torch.isfinite(xh.grad).all()
    params = list(attn.parameters()) + (list(shared.parameters()) if shared is not None else [])
    assert all(torch.isfinite(p.grad).all() for p in params if p.requires_grad)


@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
def test_sdpa_kernels_equal_explicit_path(dtype):
    attn, _ = attention()
    attn.to(dtype)
    x = torch.randn(1024, 4, 768, device="cuda", dtype=dtype)
    fast, _ = attn(x, x, x, need_weights=False)
    explicit, weights = attn(x, x, x, need_weights=True)
    assert weights.shape == (4, 1024, 128)
    assert relative_error(fast, explicit) < (1e-4 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_cudnn_attention_only_for_unpadded_training(padded, grad):
    """cuDNN's attention builds a plan per new shape (milliseconds of CPU): padded batches and
    inference, whose lengths change from call to call, take another SDPA backend, forward and backward;
    unpadded training batches (one fixed shape) are left to SDPA's choice."""
    attn, _ = attention()
    attn.half()
    x = torch.randn(1024, 4, 768, device="cuda", dtype=torch.float16, requires_grad=grad)
    mask = padding_mask(4, 1024) if padded else None
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.set_grad_enabled(grad):
            out, _ = attn(x, x, x, key_padding_mask=mask, need_weights=False)
            if grad:
                out.float().sum().backward()
    ops = {e.key for e in prof.key_averages()}
    assert any("attention" in op and op.startswith("aten::_") for op in ops), sorted(ops)
    if padded or not grad:
        assert not any("cudnn_attention" in op for op in ops), sorted(ops)


# ----------------------------------------------------------------------------- projection variants
# (projection, sharing, per-head order): see tests/test_projection_variants.py for the CPU checks

# the linear headwise / kv / layerwise variants have their own tests above
VARIANTS = [v for v in ALL_VARIANTS if v[0] != "linear" or v[1] == "none"]
VARIANT_IDS = [f"{p}-{s}" + (f"-{o}" if o else "") for p, s, o in VARIANTS]


def variant_attention(projection, sharing, order=None, C=768, H=12, n=1024, k=128):
    torch.manual_seed(0)
    shared = None
    if sharing == "layerwise":
        shared = (SequenceProjection(n, k, num_maps=1) if projection == "linear"
                  else WindowProjection(n, k, num_maps=1, method=projection)).cuda()
    attn = LinformerSelfAttention(C, H, max_positions=n, compressed_dim=k, shared_kv=sharing == "kv",
                                  shared_projection=shared, projection_method=projection,
                                  per_head=sharing == "none", per_head_order=order).cuda()
    return attn, shared


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("projection,sharing,order", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("length,padded", [(1024, False), (1024, True), (700, True), (700, False)])
def test_variant_half_precision_matches_fp32(dtype, projection, sharing, order, length, padded):
    """fp16/bf16 against fp32, full length and T < n, padded or not; gradients finite."""
    assert_half_matches_fp32(*variant_attention(projection, sharing, order), dtype, length=length, padded=padded)


@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
@pytest.mark.parametrize("projection,sharing,order", VARIANTS, ids=VARIANT_IDS)
def test_variant_sdpa_equals_explicit_path_with_padding(dtype, projection, sharing, order):
    """SDPA (with the window key mask for padded batches) against the explicit softmax."""
    attn, shared = variant_attention(projection, sharing, order)
    attn.to(dtype)
    if shared is not None:
        shared.to(dtype)
    x = torch.randn(1024, 4, 768, device="cuda", dtype=dtype)
    mask = padding_mask(4, 1024)
    fast, _ = attn(x, x, x, key_padding_mask=mask, need_weights=False)
    explicit, weights = attn(x, x, x, key_padding_mask=mask, need_weights=True)
    assert weights.shape == (4, 1024, 128)
    assert relative_error(fast, explicit) < (1e-4 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("projection,sharing,order", VARIANTS, ids=VARIANT_IDS)
def test_variant_under_autocast(projection, sharing, order):
    """fairseq --amp: fp32 weights and residual stream, fp16 matmuls."""
    attn, _ = variant_attention(projection, sharing, order)
    x = torch.randn(1024, 4, 768, device="cuda")
    mask = padding_mask(4, 1024)
    reference, _ = attn(x, x, x, key_padding_mask=mask, need_weights=False)
    with torch.autocast("cuda", dtype=torch.float16):
        out, _ = attn(x, x, x, key_padding_mask=mask, need_weights=False)
    assert relative_error(out, reference) < 1e-2


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("flags", [
    {},  # the default: linear, headwise
    {"compressed_projection": "conv"},
    {"compressed_projection": "mean"},
    {"compressed_projection": "max"},
    {"compressed_sharing": "none"},
    {"compressed_projection": "conv", "compressed_sharing": "none"},
    {"compressed_dims": "64,16"},
], ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "default")
def test_model_variant_half_precision_and_padding_invariance(dtype, flags):
    model, d = build_tiny_model(max_positions=256, **({"compressed_dim": 32} if "compressed_dims" not in flags else {}),
                                **flags)
    model = model.cuda()
    tokens = torch.randint(d.nspecial, len(d) - 1, (3, 256), device="cuda")
    reference = model(tokens, features_only=True)[0]
    model.to(dtype)
    out = model(tokens, features_only=True)[0]
    assert relative_error(out, reference) < 3e-2
    for side in ("right", "left"):
        padded = tokens.clone()
        if side == "right":
            padded[1, 100:] = d.pad()
            in_batch = model(padded, features_only=True)[0][1:2, :100]
        else:
            padded[1, :156] = d.pad()
            padded[1, 156:] = tokens[1, :100]
            in_batch = model(padded, features_only=True)[0][1:2, 156:]
        alone = model(tokens[1:2, :100], features_only=True)[0]
        assert relative_error(in_batch, alone) < 1e-2
