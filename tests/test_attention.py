"""LinformerSelfAttention against the paper's formula, across paths, lengths and paddings."""

import pytest
import torch

from linformer_plugin.modules import LinformerSelfAttention, SequenceProjection

C, H, N, K = 32, 4, 24, 6


def make_attention(sharing="headwise", **kwargs):
    torch.manual_seed(0)
    shared = SequenceProjection(N, K, num_maps=1) if sharing == "layerwise" else None
    attn = LinformerSelfAttention(
        C, H, max_positions=N, compressed_dim=K, shared_kv=sharing == "kv", shared_projection=shared, **kwargs
    )
    for p in attn.parameters():  # non-trivial biases
        torch.nn.init.normal_(p, std=0.3)
    if shared is not None:  # owned by the encoder in a model, so converted here by hand
        torch.nn.init.normal_(shared.weight, std=0.3)
        shared.double()
    return attn.double().eval()


def reference_attention(attn, x, lengths=None):
    """Eq. 7 of the paper written out per sentence, with the reference's K = (E X) W_k^T + b_k.
    Sentences of ``lengths`` are the first tokens of each column of x (right padding)."""
    proj = attn.sequence_projection.weight
    E, F_ = (proj[:K], proj[K:]) if proj.size(0) == 2 * K else (proj, proj)
    T, B, _ = x.shape
    out = torch.zeros_like(x)
    for b in range(B):
        L = T if lengths is None else lengths[b]
        xb = x[:L, b]  # L x C, the sentence alone
        q = xb @ attn.q_proj.weight.T + attn.q_proj.bias
        k = (E[:, :L] @ xb) @ attn.k_proj.weight.T + attn.k_proj.bias
        v = (F_[:, :L] @ xb) @ attn.v_proj.weight.T + attn.v_proj.bias
        heads = []
        for h in range(H):
            s = slice(h * C // H, (h + 1) * C // H)
            w = torch.softmax(q[:, s] @ k[:, s].T / (C // H) ** 0.5, dim=-1)
            heads.append(w @ v[:, s])
        out[:L, b] = torch.cat(heads, dim=-1) @ attn.out_proj.weight.T + attn.out_proj.bias
    return out


@pytest.mark.parametrize("sharing", ["headwise", "kv", "layerwise"])
@pytest.mark.parametrize("seq_len", [N, 13])
def test_matches_paper_formula(sharing, seq_len):
    attn = make_attention(sharing)
    x = torch.randn(seq_len, 3, C, dtype=torch.double)
    out, _ = attn(x, x, x, need_weights=False)
    torch.testing.assert_close(out, reference_attention(attn, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sharing", ["headwise", "kv", "layerwise"])
def test_sdpa_path_equals_explicit_path(sharing):
    attn = make_attention(sharing)
    x = torch.randn(N, 5, C, dtype=torch.double)
    fast, none = attn(x, x, x, need_weights=False)
    explicit, weights = attn(x, x, x, need_weights=True)
    assert none is None
    torch.testing.assert_close(fast, explicit, rtol=1e-9, atol=1e-9)
    assert weights.shape == (5, N, K)  # averaged over heads
    torch.testing.assert_close(weights.sum(-1), torch.ones(5, N, dtype=torch.double))
    _, head_weights = attn(x, x, x, need_head_weights=True)
    assert head_weights.shape == (H, 5, N, K)
    torch.testing.assert_close(head_weights.mean(0), weights)


@pytest.mark.parametrize("sharing", ["headwise", "kv", "layerwise"])
def test_padding_contributes_nothing(sharing):
    """A sentence's output does not depend on the padding its batch adds, right or left."""
    attn = make_attention(sharing)
    lengths = [N, 17, 9, 1]
    x = torch.randn(N, len(lengths), C, dtype=torch.double)
    right_mask = torch.arange(N)[None, :] >= torch.tensor(lengths)[:, None]  # B x T
    x_right = x.masked_fill(right_mask.T[..., None], 1e3)  # garbage in the pads
    out, _ = attn(x_right, x_right, x_right, key_padding_mask=right_mask, need_weights=False)
    expected = reference_attention(attn, x, lengths)
    for b, L in enumerate(lengths):
        torch.testing.assert_close(out[:L, b], expected[:L, b], rtol=1e-9, atol=1e-9)
        alone, _ = attn(x[:L, b:b + 1], x[:L, b:b + 1], x[:L, b:b + 1], need_weights=False)
        torch.testing.assert_close(out[:L, b], alone[:, 0], rtol=1e-9, atol=1e-9)

    # left padding: the same sentences moved to the end of each column
    x_left = torch.full_like(x, -1e3)
    left_mask = torch.ones_like(right_mask)
    for b, L in enumerate(lengths):
        x_left[N - L:, b] = x[:L, b]
        left_mask[b, N - L:] = False
    out_left, _ = attn(x_left, x_left, x_left, key_padding_mask=left_mask, need_weights=False)
    for b, L in enumerate(lengths):
        torch.testing.assert_close(out_left[N - L:, b], expected[:L, b], rtol=1e-9, atol=1e-9)


def test_padding_mask_on_explicit_path_and_int_mask():
    attn = make_attention().float()
    x = torch.randn(N, 2, C)
    mask = torch.zeros(2, N, dtype=torch.uint8)
    mask[1, 10:] = 1
    fast, _ = attn(x, x, x, key_padding_mask=mask, need_weights=False)
    explicit, _ = attn(x, x, x, key_padding_mask=mask.bool(), need_weights=True)
    torch.testing.assert_close(fast, explicit, rtol=1e-5, atol=1e-5)


def test_distinct_key_and_value_inputs():
    attn = make_attention()
    q, kv_k, kv_v = (torch.randn(L, 2, C, dtype=torch.double) for L in (7, N, N))
    out, _ = attn(q, kv_k, kv_v, need_weights=False)
    proj = attn.sequence_projection.weight
    k = attn.k_proj(torch.einsum("ks,sbc->kbc", proj[:K], kv_k))
    v = attn.v_proj(torch.einsum("ks,sbc->kbc", proj[K:], kv_v))
    qh = attn.q_proj(q).view(7, 2, H, -1).permute(1, 2, 0, 3)
    kh, vh = (t.view(K, 2, H, -1).permute(1, 2, 0, 3) for t in (k, v))
    ref = torch.softmax(qh @ kh.transpose(-1, -2) / (C // H) ** 0.5, -1) @ vh
    ref = attn.out_proj(ref.permute(2, 0, 1, 3).reshape(7, 2, C))
    torch.testing.assert_close(out, ref)


def test_gradients_reach_every_parameter_including_layerwise_projection():
    shared = SequenceProjection(N, K, num_maps=1)
    attn = LinformerSelfAttention(C, H, max_positions=N, compressed_dim=K, shared_projection=shared)
    assert "projection.weight" not in dict(attn.named_parameters())  # owned by the encoder
    x = torch.randn(N, 2, C)
    attn(x, x, x, need_weights=False)[0].sum().backward()
    assert all(p.grad is not None for p in attn.parameters())
    assert shared.weight.grad is not None and shared.weight.grad.abs().sum() > 0


def test_frozen_projection_is_not_trained():
    attn = LinformerSelfAttention(C, H, max_positions=N, compressed_dim=K, freeze_projection=True)
    assert not attn.projection.weight.requires_grad


def test_too_long_input_is_a_clear_error():
    attn = make_attention()
    x = torch.randn(N + 1, 2, C, dtype=torch.double)
    with pytest.raises(ValueError, match=rf"sequence length {N + 1} exceeds max_positions={N}.*--max-positions"):
        attn(x, x, x)


def test_attn_mask_is_refused():
    attn = make_attention()
    x = torch.randn(N, 2, C, dtype=torch.double)
    causal = torch.triu(torch.ones(N, N, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="attn_mask is not supported by Linformer"):
        attn(x, x, x, attn_mask=causal)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="embed_dim=30 is not divisible by num_heads=4"):
        LinformerSelfAttention(30, 4, max_positions=N, compressed_dim=K)
    attn = make_attention()
    x = torch.randn(N, 2, C, dtype=torch.double)
    with pytest.raises(ValueError, match="key_padding_mask must be batch x source length"):
        attn(x, x, x, key_padding_mask=torch.zeros(N, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="incremental_state"):
        attn(x, x, x, incremental_state={})


def test_long_queries_split_into_chunks_stay_exact():
    """With few sentences and heads the queries are split into chunks (see query_chunks)."""
    from linformer_plugin.modules.linformer_attention import query_chunks

    assert query_chunks(1024, 2) == 4 and query_chunks(512, 1536) == 1 and query_chunks(1023, 2) == 1
    torch.manual_seed(0)
    attn = LinformerSelfAttention(16, 2, max_positions=1024, compressed_dim=8).double().eval()
    x = torch.randn(1024, 1, 16, dtype=torch.double, requires_grad=True)
    out, _ = attn(x, x, x, need_weights=False)
    explicit, _ = attn(x, x, x, need_weights=True)  # never chunked
    torch.testing.assert_close(out, explicit, rtol=1e-9, atol=1e-9)
    grad = torch.randn_like(out)
    (g_chunked,) = torch.autograd.grad(out, x, grad)
    (g_explicit,) = torch.autograd.grad(explicit, x, grad)
    torch.testing.assert_close(g_chunked, g_explicit, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- the padded projection


def padded_case(S=12, B=3, channels=16, n=16, k=8, dtype=torch.float64, padding="mixed"):
    """A right-padded, a left-padded and an interior-padded sentence (2 k <= channels: the per-sentence
    columns path); padding="right": every sentence right-padded (fairseq's batches), one unpadded."""
    torch.manual_seed(0)
    proj = SequenceProjection(n, k, num_maps=2).to(dtype)
    x = torch.randn(S, B, channels, dtype=dtype, requires_grad=True)
    mask = torch.zeros(B, S, dtype=torch.bool)
    if padding == "right":
        mask[0, 9:], mask[1, 4:] = True, True
    else:
        mask[0, 9:], mask[1, :4], mask[2, 2] = True, True, True
    return proj, x, mask


def per_sentence_product(weight, x, mask):
    """E X sentence by sentence: real token number p meets column p, pads meet nothing."""
    out = []
    for b in range(x.size(1)):
        real = x[~mask[b], b]
        out.append(weight[:, :real.size(0)] @ real)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("channels", [16, 5])  # per-sentence columns; 2 k > C: a compacted copy of x
@pytest.mark.parametrize("padding", ["mixed", "right"])  # right: E's own columns, zeroed at pads
def test_padded_projection_and_its_gradients_are_exact(channels, padding):
    proj, x, mask = padded_case(channels=channels, padding=padding)
    keys, values, key_mask = proj(x, mask)  # E X and F X, each 1 x k x B x C
    assert key_mask is None
    for maps, out in ((slice(0, 16), torch.cat([keys[0], values[0]])), (slice(0, 8), keys[0]), (slice(8, 16), values[0])):
        expected = per_sentence_product(proj.weight[maps], x, mask)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
        grad = torch.randn_like(out)
        got = torch.autograd.grad((out * grad).sum(), [proj.weight, x], retain_graph=True)
        want = torch.autograd.grad((expected * grad).sum(), [proj.weight, x])
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
    w = proj.weight.detach().clone().requires_grad_()
    b_major = x.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()  # fairseq's first layer
    for inputs in (x, b_major):
        assert torch.autograd.gradcheck(
            lambda w, x: torch.func.functional_call(proj, {"weight": w}, (x, mask))[0], (w, inputs))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("seq_len,width", [(12, 16), (13, 16), (15, 15)])  # 15 of 15: no whole last word
def test_right_padded_columns_are_e_zeroed_at_pads(dtype, seq_len, width):
    """Right padding: E's own first S columns, bit for bit, and zeros at each sentence's pads (through
    E's 64-bit words where its width allows, else elementwise)."""
    from linformer_plugin.modules.padding import _build_columns, _columns_per_sentence

    mask = torch.zeros(3, seq_len, dtype=torch.bool)
    mask[1, 5:], mask[2, 1:] = True, True
    plan = _build_columns(mask, find_right_padding=True)
    assert plan.right_padded
    weight = torch.randn(6, width).to(dtype)
    got = _columns_per_sentence(weight, plan, seq_len)
    want = torch.where(mask[:, None, :], 0.0, weight[None, :, :seq_len].double()).to(dtype)
    assert got.shape == (3, 6, seq_len) and torch.equal(got, want)


def test_padded_linear_projection_reads_the_mask_once_and_never_under_compile(monkeypatch):
    """Eager: one read of the mask on the host (is it right-padded?), kept on the mask for every
    layer. Under torch.compile and for inference-mode masks none: the plan is index work on the
    device, so it runs on the meta device, where any read of the mask's values on the host fails."""
    from linformer_plugin.modules import padding

    proj, x, mask = padded_case()
    x, mask = x.detach().to("meta"), mask.to("meta")
    with pytest.raises(Exception):  # eager looks for right padding on the host
        padding.project_per_sentence(x, proj.weight.detach().to("meta"), mask)
    with torch.inference_mode():  # an inference-mode mask: its plan is built in every layer, without reads
        rows = padding.project_per_sentence(x, proj.weight.detach().to("meta"), mask.clone())
        assert rows.shape == (16, 3, 16) and rows.device.type == "meta"
        padding.compaction(x, mask.clone())
    monkeypatch.setattr(padding, "_compiling", lambda: True)
    rows = padding.project_per_sentence(x, proj.weight.detach().to("meta"), mask)
    assert rows.shape == (16, 3, 16) and rows.device.type == "meta"


@pytest.mark.parametrize("padding", ["mixed", "right"])
def test_compiled_form_of_the_padded_projection_is_the_same(monkeypatch, padding):
    """Under torch.compile the same products come from differentiable ops (the compiler plans the
    memory): values and gradients as the custom backward's."""
    from linformer_plugin.modules import padding as padding_module

    proj, x, mask = padded_case(padding=padding)
    outs = []
    for compiling in (False, True):  # a mask of its own each: compiling, the plan is built without host reads
        monkeypatch.setattr(padding_module, "_compiling", lambda compiling=compiling: compiling)
        out = padding_module.project_per_sentence(x, proj.weight, mask.clone())
        outs.append((out, *torch.autograd.grad(out.pow(2).sum(), [proj.weight, x])))
    for custom, composite in zip(*outs):
        torch.testing.assert_close(custom, composite, rtol=0, atol=1e-12)


def test_padded_attention_compiles_into_one_graph():
    """torch.compile traces the padded path (plan included) without a graph break, and the compiled
    module gives the eager one's outputs and gradients, for right, left and interior padding."""
    attn = make_attention()
    x = torch.randn(N, 3, C, dtype=torch.double, requires_grad=True)
    mask = torch.zeros(3, N, dtype=torch.bool)
    mask[0, 17:], mask[1, :5], mask[2, 9] = True, True, True
    explained = torch._dynamo.explain(attn)(x, x, x, key_padding_mask=mask, need_weights=False)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(attn, backend="aot_eager")  # the graph as inductor gets it, without a C++ build
    for module_ in (attn, compiled):
        out, _ = module_(x, x, x, key_padding_mask=mask, need_weights=False)
        grad = torch.autograd.grad(out.pow(2).sum(), x)[0]
        if module_ is attn:
            expected = out, grad
    torch.testing.assert_close(out, expected[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, expected[1], rtol=0, atol=1e-12)


def test_sentence_columns_are_built_once_per_mask():
    from linformer_plugin.modules.padding import sentence_columns

    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, 4:] = True
    first = sentence_columns(mask)
    assert sentence_columns(mask) is first and first.column.tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 6, 6]]
    mask[0, 0] = True  # a new plan when the mask changes in place
    second = sentence_columns(mask)
    assert second is not first and second.column[0].tolist() == [6, 0, 1, 2, 3, 4]
    assert second.source.T.tolist() == [[1, 2, 3, 4, 5, 12], [6, 7, 8, 9, 12, 12]]  # B S = 12: the zero row


def test_compaction_gradients():
    """compact_tokens (the one place padding is handled) against finite differences, in both memory
    layouts of x and with extra rows (whole windows)."""
    from linformer_plugin.modules.padding import compact_tokens

    _, x, mask = padded_case()
    b_major = x.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    for inputs, rows in ((x, None), (b_major, None), (x, 16)):
        assert torch.autograd.gradcheck(lambda x: compact_tokens(x, mask, rows=rows)[0], (inputs,))


def test_right_padding_is_compacted_in_place_exactly():
    """Right padding (fairseq's and the hub's) takes the path that only zeroes the pads: the same
    values and gradients as the general gather, in both memory layouts and with extra rows."""
    from linformer_plugin.modules.padding import _Compact, _build_compaction, compact_tokens, compaction

    torch.manual_seed(0)
    x = torch.randn(12, 3, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(3, 12, dtype=torch.bool)
    mask[0, 9:], mask[2, 5:] = True, True
    b_major = x.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    for inputs, rows in ((x, None), (b_major, None), (x, 16)):
        assert compaction(inputs, mask, rows).in_place
        assert torch.autograd.gradcheck(lambda x: compact_tokens(x, mask, rows=rows)[0], (inputs,))
        general = _build_compaction(inputs, mask, rows, compaction(inputs, mask, rows).b_major, find_right_padding=False)
        assert not general.in_place
        fast, slow = compact_tokens(inputs, mask, rows=rows)[0], _Compact.apply(inputs, general, 0.0)
        assert torch.equal(fast, slow)
        grad = torch.randn_like(fast)
        assert torch.equal(*(torch.autograd.grad(out, inputs, grad)[0] for out in (fast, slow)))


def test_compaction_plan_is_built_once_per_mask():
    """Every layer gets the same mask: the plan is reused, and rebuilt if the mask is changed in place."""
    from linformer_plugin.modules import sequence_projection

    x = torch.randn(6, 2, 4)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, 4:] = True
    first = sequence_projection.compaction(x, mask)
    assert sequence_projection.compaction(x, mask) is first and first.in_place
    mask[0, 0] = True  # now left-padded: a new plan
    second = sequence_projection.compaction(x, mask)
    assert second is not first and not second.in_place and second.lengths.tolist() == [5, 4]


def _kept_for_the_backward(monkeypatch, projection, x, mask):
    """Everything the saved-tensor pack hooks are given in the forward (the projections' own hooks too)."""
    kept = []
    hooks = torch.autograd.graph.saved_tensors_hooks

    class Recording(hooks):  # records what each pack hook keeps, the projection's own included
        def __init__(self, pack, unpack):
            super().__init__(lambda t: kept.append(pack(t)) or kept[-1], unpack)

    monkeypatch.setattr(torch.autograd.graph, "saved_tensors_hooks", Recording)
    with Recording(lambda t: t, lambda t: t):
        keys, values, _ = projection(x, mask)
    (keys.sum() + values.sum()).backward()  # and the backward still works from what was kept
    return kept


def test_padded_projection_keeps_no_per_sentence_columns_for_the_backward(monkeypatch):
    """Neither per-sentence columns (B x S x rows) nor a copy of the input (S x B x C) are kept for
    the backward: the forward keeps E and X itself (the layer's input, kept by q_proj anyway)."""
    proj, x, mask = padded_case(S=64, B=4, channels=64, n=64, k=32)  # B x S x rows: the size of X
    kept = _kept_for_the_backward(monkeypatch, proj, x, mask)
    tensors = [t for t in kept if isinstance(t, torch.Tensor)]
    storages = {t.untyped_storage().data_ptr() for t in (x, proj.weight)}
    assert all(t.untyped_storage().data_ptr() in storages or t.numel() <= mask.numel() for t in tensors)
    assert any(t is x for t in tensors)
    torch.testing.assert_close(x.grad, torch.autograd.grad(
        (per_sentence_product(proj.weight, x, mask)).sum(), x)[0], rtol=0, atol=1e-12)


def test_compacted_input_is_gathered_again_for_the_backward(monkeypatch):
    """The other projections run on each sentence's tokens moved to its start: that copy is not kept,
    the backward makes it again from X."""
    from linformer_plugin.modules import WindowProjection
    from linformer_plugin.modules.padding import _GatheredAgain

    _, x, mask = padded_case(S=64, B=4, channels=8, n=64, k=32)
    proj = WindowProjection(64, 16, method="max").double()  # amax keeps its input
    kept = _kept_for_the_backward(monkeypatch, proj, x, mask)
    assert not any(isinstance(t, torch.Tensor) and t.numel() >= x.numel() and t is not x for t in kept)
    assert any(isinstance(t, _GatheredAgain) for t in kept)


def test_padded_projection_under_autocast():
    proj, x, mask = padded_case(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        keys, values, _ = proj(x, mask)
        out = torch.cat([keys[0], values[0]])
    assert out.dtype == torch.bfloat16  # as a matmul under autocast
    out.float().sum().backward()
    assert proj.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    weight, x32 = proj.weight.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    per_sentence_product(weight, x32, mask).sum().backward()
    # bfloat16 keeps 8 bits: sums of a few products of O(1) values are good to ~0.03
    torch.testing.assert_close(proj.weight.grad, weight.grad, rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(x.grad, x32.grad, rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("sharing", ["headwise", "kv", "layerwise"])
def test_right_padded_batches_take_zeroed_pads_and_agree_with_the_columns(monkeypatch, sharing):
    """Right padding (fairseq's batches) up to ZEROED_PADS_MAX_ELEMENTS: the pads are zeroed and the
    unpadded product runs. Real tokens' outputs and every gradient equal the per-sentence columns'
    (what larger batches take), the pads get no gradient, and the input itself is not kept for the
    backward (the zeroed copy, shared by q_proj and the projection, is kept in its place)."""
    from linformer_plugin.modules import linformer_attention, sequence_projection

    lengths = [N, 17, 9, 1]
    mask = torch.arange(N)[None, :] >= torch.tensor(lengths)[:, None]
    x0 = torch.randn(N, len(lengths), C, dtype=torch.double).masked_fill(mask.T[..., None], 1e3)
    runs = {}
    for path, limit in (("zeroed", linformer_attention.ZEROED_PADS_MAX_ELEMENTS), ("columns", 0)):
        monkeypatch.setattr(linformer_attention, "ZEROED_PADS_MAX_ELEMENTS", limit)
        attn = make_attention(sharing)
        x = x0.clone().requires_grad_()
        calls = []
        monkeypatch.setattr(sequence_projection, "project_per_sentence",
                            lambda *a, f=sequence_projection.project_per_sentence: calls.append(1) or f(*a))
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
            out, _ = attn(x, x, x, key_padding_mask=mask.clone(), need_weights=False)
        real = torch.cat([out[:L, b] for b, L in enumerate(lengths)])
        real.pow(2).sum().backward()
        runs[path] = real.detach(), x.grad, [p.grad for p in attn.parameters()]
        keeps_x = any(t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() for t in kept)
        assert keeps_x == (path == "columns") and bool(calls) == (path == "columns")
        if path == "zeroed":
            assert torch.equal(x.grad.masked_select(mask.T[..., None]), torch.zeros(int(mask.sum()) * C,
                                                                                    dtype=torch.double))
    torch.testing.assert_close(runs["zeroed"][0], runs["columns"][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(runs["zeroed"][1], runs["columns"][1], rtol=1e-12, atol=1e-12)
    for zeroed, columns in zip(runs["zeroed"][2], runs["columns"][2]):
        torch.testing.assert_close(zeroed, columns, rtol=1e-10, atol=1e-10)


def test_left_padded_batches_keep_the_columns(monkeypatch):
    """Left padding moves token p off column p: zeroing the pads would be wrong, the columns run."""
    from linformer_plugin.modules import sequence_projection

    mask = torch.zeros(2, N, dtype=torch.bool)
    mask[1, :5] = True
    calls = []
    monkeypatch.setattr(sequence_projection, "project_per_sentence",
                        lambda *a, f=sequence_projection.project_per_sentence: calls.append(1) or f(*a))
    x = torch.randn(N, 2, C, dtype=torch.double)
    make_attention()(x, x, x, key_padding_mask=mask, need_weights=False)
    assert calls


def test_right_padding_is_read_once_per_mask_for_every_plan(monkeypatch):
    """A small left-padded batch asks twice (zeroed pads? then the columns' plan): one host read."""
    from linformer_plugin.modules import padding

    reads = []
    monkeypatch.setattr(padding, "is_right_padded", lambda m, f=padding.is_right_padded: reads.append(1) or f(m))
    mask = torch.zeros(2, N, dtype=torch.bool)
    mask[1, :5] = True
    x = torch.randn(N, 2, C, dtype=torch.double)
    attn = make_attention()
    for _ in range(2):  # two layers' worth
        attn(x, x, x, key_padding_mask=mask, need_weights=False)
    assert len(reads) == 1
