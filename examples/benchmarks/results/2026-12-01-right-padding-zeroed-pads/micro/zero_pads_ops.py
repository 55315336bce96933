"""Micro: ways to zero the pads of x (S x B x C fp16), forward and the grad pass."""
import torch
S, B, C = 512, 128, 768
dev = "cuda"
x = torch.randn(S, B, C, device=dev, dtype=torch.float16)
lengths = torch.tensor([S - b * S // (2 * B) for b in range(B)], device=dev)
keep = (torch.arange(S, device=dev)[:, None] < lengths[None, :])  # S x B
k3 = keep[..., None]
kh = k3.to(torch.float16)
words = torch.where(k3, torch.tensor(-1, device=dev, dtype=torch.int64), torch.tensor(0, device=dev, dtype=torch.int64))
pad_rows = (~keep).flatten().nonzero().flatten()
def t(f, n=50):
    for _ in range(5): f()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n): f()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / n * 1e3
cases = {
    "where(keep, x, 0.0)": lambda: torch.where(k3, x, 0.0),
    "x * keep(fp16)": lambda: x * kh,
    "bitwise_and int64 words": lambda: torch.bitwise_and(x.view(torch.int64), words).view(torch.float16),
    "clone + index_fill_ pad rows": lambda: x.clone().view(-1, C).index_fill_(0, pad_rows, 0),
    "masked_fill(~keep)": lambda: x.masked_fill(~k3, 0),
    "clone (bandwidth ref)": lambda: x.clone(),
}
for name, f in cases.items():
    print(f"{name:32s} {t(f):8.1f} us")
