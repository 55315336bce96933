"""examples.benchmarks.sdpa_backends: the SDPA choices a benchmark can force on ours' attention give
the library's outputs and gradients (only the kernels differ), and the library is restored after."""

import pytest
import torch
import torch.nn.functional as F

from examples.benchmarks import sdpa_backends
from linformer_plugin.modules import linformer_attention
from linformer_plugin.modules.linformer_attention import LinformerSelfAttention


def run(attn, x, mask):
    x = x.clone().requires_grad_(True)
    out, _ = attn(x, x, x, key_padding_mask=mask, need_weights=False)
    out.pow(2).sum().backward()
    grads = [x.grad] + [p.grad.clone() for p in attn.parameters()]
    attn.zero_grad()
    return out.detach(), grads


@pytest.mark.parametrize("choice", sdpa_backends.CHOICES)
@pytest.mark.parametrize("length, bsz, padded", [(40, 3, True), (64, 2, False), (1040, 1, False)])
def test_choices_give_the_library_results(choice, length, bsz, padded):
    """(1040, 1): few sentences x heads, the queries split into four chunks of 260 (extra batch entries)."""
    torch.manual_seed(0)
    attn = LinformerSelfAttention(32, 4, max_positions=1040, compressed_dim=16).double()
    x = torch.randn(length, bsz, 32, dtype=torch.float64)
    mask = None
    if padded:
        lengths = torch.tensor([length, length - 7, length // 2])[:bsz]
        mask = torch.arange(length)[None, :] >= lengths[:, None]
    expected_out, expected_grads = run(attn, x, mask)
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, *args, **kwargs):
        seen.append(q.size(-2))
        return sdpa(q, *args, **kwargs)

    library = linformer_attention._sdpa
    with sdpa_backends.sdpa_backends(choice):
        F.scaled_dot_product_attention = spy
        try:
            out, grads = run(attn, x, mask)
        finally:
            F.scaled_dot_product_attention = sdpa
    assert linformer_attention._sdpa is library
    torch.testing.assert_close(out, expected_out, rtol=1e-10, atol=1e-10)
    for grad, expected in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10)
    assert seen, "SDPA was not called"
    if choice == "cudnn-bucketed":  # the queries SDPA sees: a multiple of 64
        assert all(n % sdpa_backends.BUCKET == 0 for n in seen), seen


def test_unknown_choice_names_the_choices():
    with pytest.raises(ValueError, match="give one of library, flash"):
        with sdpa_backends.sdpa_backends("cudnn-fast"):
            pass


def test_profile_attention_runs_each_padding_and_choice(capsys):
    """examples.benchmarks.profile_attention (CPU: no GPU time): one forward and one training-step
    summary per padding and SDPA choice, each named."""
    from examples.benchmarks import profile_attention

    profile_attention.main(["--n", "64", "--k", "16", "--dtype", "fp32", "--tokens", "256", "--padding", "none",
                            "right", "--sdpa", "library", "cudnn-bucketed", "--steps", "1", "--rows", "2"])
    headers = [line for line in capsys.readouterr().out.splitlines() if line.startswith("=== ")]
    assert [h.split(" (")[0] for h in headers] == [
        f"=== ours n=64 k=16 fp32 padding {padding}{sdpa} {phase}"
        for padding in ("none", "right") for sdpa in ("", " sdpa cudnn-bucketed") for phase in ("fwd", "train")]
