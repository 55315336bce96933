"""The paper's other projections (section 4) in the attention module: a projection per head
(sharing none), convolution and mean/max pooling with kernel = stride = n/k.

Each variant is checked against the formula written out per sentence in float64, for padding
(right, left and interior), lengths below max_positions, gradients and initialisation. The
model-level checks (checkpoints, options, conversion) are in test_model_variants.py.
"""

import math

import pytest
import torch

from linformer_plugin.modules import LinformerSelfAttention, SequenceProjection, WindowProjection
from linformer_plugin.modules.padding import compact_tokens

C, H, N, K = 32, 4, 24, 6  # window s = N / K = 4
S = N // K

# (projection, sharing, per-head order): every valid combination
VARIANTS = [
    ("linear", "none", "project_input"),
    ("linear", "none", "project_heads"),
    ("linear", "headwise", None),
    ("linear", "kv", None),
    ("linear", "layerwise", None),
    ("conv", "none", "project_input"),
    ("conv", "headwise", None),
    ("conv", "kv", None),
    ("conv", "layerwise", None),
    ("mean", "headwise", None),
    ("max", "headwise", None),
]
VARIANT_IDS = [f"{p}-{s}" + (f"-{o}" if o else "") for p, s, o in VARIANTS]
MODEL_VARIANTS = [(p, s) for p, s, o in VARIANTS if o != "project_heads"]


def make_attention(projection, sharing, order=None, n=N, k=K, embed_dim=C, heads=H):
    torch.manual_seed(0)
    shared = None
    if sharing == "layerwise":
        shared = (SequenceProjection(n, k, num_maps=1) if projection == "linear"
                  else WindowProjection(n, k, num_maps=1, method=projection))
    attn = LinformerSelfAttention(
        embed_dim, heads, max_positions=n, compressed_dim=k, shared_kv=sharing == "kv", shared_projection=shared,
        projection_method=projection, per_head=sharing == "none", per_head_order=order,
    )
    for p in attn.parameters():  # non-trivial biases and kernels
        torch.nn.init.normal_(p, std=0.3)
    if shared is not None:  # owned by the encoder in a model, so converted here by hand
        for p in shared.parameters():
            torch.nn.init.normal_(p, std=0.3)
        shared.double()
    return attn.double().eval()


def projected_rows(attn, x, m):
    """Map m of the layer's projection applied to one sentence x (L x C), as the paper defines it:
    E X with E (rows x L) written out, or the pooling of each window of s real tokens."""
    proj = attn.sequence_projection
    L = x.size(0)
    if isinstance(proj, SequenceProjection):
        k = proj.compressed_dim
        return proj.weight[m * k:(m + 1) * k, :L] @ x
    s = proj.stride
    windows = math.ceil(L / s)
    if proj.method == "conv":  # E: block j holds the kernel at columns j s .. j s + s - 1
        E = torch.zeros(windows, L, dtype=x.dtype)
        for j in range(windows):
            for t in range(j * s, min((j + 1) * s, L)):
                E[j, t] = proj.kernel[m, t - j * s]
        return E @ x
    pool = (lambda w: w.mean(0)) if proj.method == "mean" else (lambda w: w.max(0).values)
    return torch.stack([pool(x[j * s:(j + 1) * s]) for j in range(windows)])


def key_value_maps(attn, head):
    """Which maps project the keys and values of ``head``."""
    proj = attn.sequence_projection
    if attn.per_head:
        return head, attn.num_heads + head
    if isinstance(proj, WindowProjection) and proj.method != "conv":
        return 0, 0
    return (0, 1) if proj.num_maps == 2 else (0, 0)


def reference_attention(attn, x, lengths=None):
    """Eq. 7 of the paper per sentence and per head: head_i = softmax(Q_i K_i^T / sqrt d) V_i with
    K_i = (E_i X) W_{k,i}^T + b_{k,i}, V_i = (F_i X) W_{v,i}^T + b_{v,i} (the reference's order).
    Sentences of ``lengths`` are the first tokens of each column of x (right padding)."""
    T, B, _ = x.shape
    d = C // H
    out = torch.zeros_like(x)
    for b in range(B):
        L = T if lengths is None else lengths[b]
        xb = x[:L, b]  # the sentence alone
        q = xb @ attn.q_proj.weight.T + attn.q_proj.bias
        heads = []
        for h in range(H):
            sl = slice(h * d, (h + 1) * d)
            mk, mv = key_value_maps(attn, h)
            k = projected_rows(attn, xb, mk) @ attn.k_proj.weight[sl].T + attn.k_proj.bias[sl]
            v = projected_rows(attn, xb, mv) @ attn.v_proj.weight[sl].T + attn.v_proj.bias[sl]
            w = torch.softmax(q[:, sl] @ k.T / d ** 0.5, dim=-1)
            heads.append(w @ v)
        out[:L, b] = torch.cat(heads, dim=-1) @ attn.out_proj.weight.T + attn.out_proj.bias
    return out


def pad_batch(x, lengths, side, fill):
    """The sentences x[:L, b], padded on ``side`` (right, left, or interior: pads spread among the
    tokens) with garbage; returns (batch, mask B x T)."""
    T = x.size(0)
    batch = torch.full_like(x, fill)
    mask = torch.ones(x.size(1), T, dtype=torch.bool)
    for b, L in enumerate(lengths):
        if side == "interior":
            positions = torch.randperm(T, generator=torch.Generator().manual_seed(b))[:L].sort().values
        else:
            start = 0 if side == "right" else T - L
            positions = torch.arange(start, start + L)
        batch[positions, b] = x[:L, b]
        mask[b, positions] = False
    return batch, mask


# ----------------------------------------------------------------------------- the attention module


@pytest.mark.parametrize("projection,sharing,order", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("seq_len", [N, 13, 1])
def test_matches_paper_formula(projection, sharing, order, seq_len):
    attn = make_attention(projection, sharing, order)
    x = torch.randn(seq_len, 3, C, dtype=torch.double)
    out, _ = attn(x, x, x, need_weights=False)
    torch.testing.assert_close(out, reference_attention(attn, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("projection,sharing,order", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("T", [N, 22])  # the batch's padded length: 22 is not a whole number of windows
def test_padding_contributes_nothing(projection, sharing, order, T):
    """A sentence gives the same output alone as inside a right-, left- or interior-padded batch."""
    attn = make_attention(projection, sharing, order)
    lengths = [T, 17, 9, 4, 1]  # full, partial last window, exact windows, one window, one token
    x = torch.randn(T, len(lengths), C, dtype=torch.double)
    expected = reference_attention(attn, x, lengths)
    for side, fill in (("right", 1e3), ("left", -1e3), ("interior", 1e3)):
        batch, mask = pad_batch(x, lengths, side, fill)
        out, _ = attn(batch, batch, batch, key_padding_mask=mask, need_weights=False)
        explicit, _ = attn(batch, batch, batch, key_padding_mask=mask, need_weights=True)
        for b, L in enumerate(lengths):
            rows = (~mask[b]).nonzero()[:, 0]  # where the sentence's tokens are
            torch.testing.assert_close(out[rows, b], expected[:L, b], rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(explicit[rows, b], expected[:L, b], rtol=1e-9, atol=1e-9)
            alone, _ = attn(x[:L, b:b + 1], x[:L, b:b + 1], x[:L, b:b + 1], need_weights=False)
            torch.testing.assert_close(out[rows, b], alone[:, 0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("projection,sharing,order", VARIANTS, ids=VARIANT_IDS)
def test_sdpa_path_equals_explicit_path_and_weights(projection, sharing, order):
    attn = make_attention(projection, sharing, order)
    x = torch.randn(N, 5, C, dtype=torch.double)
    fast, none = attn(x, x, x, need_weights=False)
    explicit, weights = attn(x, x, x, need_weights=True)
    assert none is None
    torch.testing.assert_close(fast, explicit, rtol=1e-9, atol=1e-9)
    assert weights.shape == (5, N, K)
    # shorter input: a windowed projection has only ceil(T / s) keys, a linear one still k
    short = x[:13]
    _, weights = attn(short, short, short, need_head_weights=True)
    assert weights.shape == (H, 5, 13, K if projection == "linear" else math.ceil(13 / S))
    # padded: the empty windows of a short sentence get no weight
    _, mask = pad_batch(x[:, :2], [N, 5], "right", 0.0)
    _, weights = attn(x[:, :2], x[:, :2], x[:, :2], key_padding_mask=mask, need_weights=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, N, dtype=torch.double))
    if projection != "linear":
        assert (weights[1, :, math.ceil(5 / S):] == 0).all()


@pytest.mark.parametrize("projection,sharing,order", VARIANTS, ids=VARIANT_IDS)
def test_distinct_key_and_value_inputs(projection, sharing, order):
    """key and value given as different tensors (projected side by side by the same call) give the
    same result."""
    attn = make_attention(projection, sharing, order)
    x = torch.randn(N, 3, C, dtype=torch.double)
    _, mask = pad_batch(x, [N, 11, 3], "left", 0.0)
    fused, _ = attn(x, x, x, key_padding_mask=mask, need_weights=False)
    separate, _ = attn(x, x.clone(), x.clone(), key_padding_mask=mask, need_weights=False)
    torch.testing.assert_close(separate, fused, rtol=1e-9, atol=1e-9)


def test_per_head_orders_agree_and_the_cheaper_is_chosen():
    x = torch.randn(N, 3, C, dtype=torch.double)
    _, mask = pad_batch(x, [N, 10, 2], "left", 0.0)
    for projection in ("linear", "conv"):  # the same projection call, on the input or grouped after k_proj/v_proj
        a = make_attention(projection, "none", "project_input")
        b = make_attention(projection, "none", "project_heads")
        torch.testing.assert_close(a(x, x, x, key_padding_mask=mask)[0], b(x, x, x, key_padding_mask=mask)[0],
                                   rtol=1e-9, atol=1e-9)
    # H k > C + k: k_proj at full length first is cheaper; else the input is projected per head
    assert LinformerSelfAttention(768, 12, 1024, 128, per_head=True).per_head_order == "project_heads"
    assert LinformerSelfAttention(768, 12, 1024, 32, per_head=True).per_head_order == "project_input"
    assert LinformerSelfAttention(768, 12, 1024, 128, per_head=True,
                                  projection_method="conv").per_head_order == "project_input"
    assert LinformerSelfAttention(768, 12, 1024, 128).per_head_order is None


@pytest.mark.parametrize("projection,sharing,order", VARIANTS, ids=VARIANT_IDS)
def test_gradients_reach_the_projection(projection, sharing, order):
    attn = make_attention(projection, sharing, order).float().train()
    x = torch.randn(N, 2, C, requires_grad=True)
    _, mask = pad_batch(x.detach(), [N, 7], "left", 0.0)
    attn(x, x, x, key_padding_mask=mask, need_weights=False)[0].pow(2).sum().backward()
    params = list(attn.parameters()) + list(attn.sequence_projection.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert torch.isfinite(x.grad).all()
    if projection in ("linear", "conv"):
        assert attn.sequence_projection.parameters().__next__().grad.abs().sum() > 0


@pytest.mark.parametrize("projection", ["conv", "mean", "max"])
def test_long_queries_split_into_chunks_keep_the_window_mask(projection):
    """Few sentences x heads: queries are split into chunks (query_chunks); the key mask follows."""
    torch.manual_seed(0)
    attn = LinformerSelfAttention(16, 2, max_positions=1024, compressed_dim=8,
                                  projection_method=projection).double().eval()
    x = torch.randn(1024, 2, 16, dtype=torch.double, requires_grad=True)
    _, mask = pad_batch(x.detach(), [1024, 300], "right", 0.0)
    out, _ = attn(x, x, x, key_padding_mask=mask, need_weights=False)  # chunked (needs grad)
    explicit, _ = attn(x, x, x, key_padding_mask=mask, need_weights=True)  # never chunked
    torch.testing.assert_close(out, explicit, rtol=1e-9, atol=1e-9)
    alone, _ = attn(x[:300, 1:], x[:300, 1:], x[:300, 1:], need_weights=False)
    torch.testing.assert_close(out[:300, 1:], alone, rtol=1e-9, atol=1e-9)
    grad = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, x, grad)[0], torch.autograd.grad(explicit, x, grad)[0],
                               rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- the window projection


def test_window_projection_short_inputs():
    """T < n: ceil(T / s) windows; the last partial one averages (or maxes) its real tokens only."""
    x = torch.randn(10, 2, 3, dtype=torch.double)  # s = 4: windows [0, 4), [4, 8), [8, 10)
    mean = WindowProjection(24, 6, method="mean")
    rows, values, key_mask = mean(x)  # one map: keys and values alike
    assert rows.shape == (1, 3, 2, 3) and key_mask is None and values is rows
    torch.testing.assert_close(rows[0, 2], x[8:10].mean(0))
    rows, _, _ = WindowProjection(24, 6, method="max")(x)
    torch.testing.assert_close(rows[0, 2], x[8:10].max(0).values)
    conv = WindowProjection(24, 6, num_maps=2, method="conv").double()
    _, rows, _ = conv(x)  # the values' map
    torch.testing.assert_close(rows[0, 2], conv.kernel[1, 0] * x[8] + conv.kernel[1, 1] * x[9])
    # padded batch (sentence 1: 5 tokens, left-padded): windows of its own tokens, the rest masked
    padded = torch.cat([torch.full((5, 1, 3), 9.0, dtype=torch.double), x[:5, 1:]])
    batch = torch.cat([x[:, :1], padded], dim=1)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[1, :5] = True
    rows, _, key_mask = mean(batch, mask)
    assert key_mask.tolist() == [[True, True, True], [True, True, False]]
    torch.testing.assert_close(rows[0, 1, 1], x[4:5, 1].mean(0))
    assert (rows[0, 2, 1] == 0).all()


def test_compact_tokens_moves_real_tokens_first():
    x = torch.arange(12.0).view(4, 3, 1)  # S=4, B=3
    mask = torch.tensor([[False, False, True, True], [True, True, False, False], [True, False, True, False]])
    for layout in (x, x.transpose(0, 1).contiguous().transpose(0, 1)):  # S x B x C or B x S x C in memory
        compact, lengths = compact_tokens(layout, mask)
        assert lengths.tolist() == [2, 2, 2]
        assert compact[:, :, 0].T.tolist() == [[0, 3, 0, 0], [7, 10, 0, 0], [5, 11, 0, 0]]


def test_conv_initialisation_matches_linear_variance():
    torch.manual_seed(0)
    x = torch.randn(1024, 64, 8)
    linear, _, _ = SequenceProjection(1024, 32, num_maps=1)(x)
    conv, _, _ = WindowProjection(1024, 32, num_maps=1, method="conv")(x)
    assert 0.8 < conv.var().item() / linear.var().item() < 1.25


# ----------------------------------------------------------------------------- initialisation


def test_initialisations_of_a_linear_projection():
    torch.manual_seed(0)
    xavier = SequenceProjection(512, 128, num_maps=2, init="xavier").weight
    bound = math.sqrt(6 / (512 + 128)) / math.sqrt(2)  # per (k x n) map, as the reference writes it
    assert xavier.abs().max() <= bound and xavier.abs().max() > 0.99 * bound
    normal = SequenceProjection(512, 128, num_maps=2, init="normal").weight
    assert abs(normal.std().item() - 0.02) < 0.001 and abs(normal.mean().item()) < 0.001
    # mean: row i averages positions [floor(i n / k), floor((i + 1) n / k)), in every map
    mean = SequenceProjection(10, 4, num_maps=2, init="mean").weight
    assert torch.equal(SequenceProjection(10, 4, num_maps=2).weight, mean)  # the default for new models
    window = torch.tensor([[.5, .5, 0, 0, 0, 0, 0, 0, 0, 0],
                           [0, 0, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0, 0],
                           [0, 0, 0, 0, 0, .5, .5, 0, 0, 0],
                           [0, 0, 0, 0, 0, 0, 0, 1 / 3, 1 / 3, 1 / 3]])
    torch.testing.assert_close(mean.detach(), torch.cat([window, window]))
    assert mean.requires_grad  # a start, not a constraint
    conv = WindowProjection(24, 6, num_maps=2, method="conv", init="mean").kernel
    torch.testing.assert_close(conv.detach(), torch.full((2, 4), 0.25))


@pytest.mark.parametrize("sharing", ["headwise", "kv", "layerwise"])
def test_mean_initialised_linear_projection_starts_as_mean_pooling(sharing):
    """At full length, a linear E = F that starts as window means gives the mean-pooling layer's output."""
    torch.manual_seed(0)
    shared = SequenceProjection(N, K, num_maps=1, init="mean") if sharing == "layerwise" else None
    linear = LinformerSelfAttention(C, H, max_positions=N, compressed_dim=K, shared_kv=sharing == "kv",
                                    shared_projection=shared, projection_init="mean").double().eval()
    pooled = LinformerSelfAttention(C, H, max_positions=N, compressed_dim=K, projection_method="mean").double().eval()
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        getattr(pooled, name).load_state_dict(getattr(linear, name).state_dict())
    x = torch.randn(N, 3, C, dtype=torch.float64)
    if shared is not None:
        shared.double()
    torch.testing.assert_close(linear(x, x, x)[0], pooled(x, x, x)[0])
