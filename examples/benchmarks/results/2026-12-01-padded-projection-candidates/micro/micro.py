# micro-benchmark (issue #16): building E's per-sentence columns, and GEMM forms, fp16, one H200.
# Each op timed alone between CUDA events (median of 50, us): figures under about 50 us include the
# Python issuing the op; read them for order, and the profiles for kernel times. Output: micro.txt
# Run from the repository root: PYTHONPATH=. python examples/benchmarks/results/2026-12-01-padded-projection-candidates/micro/micro.py
import torch, statistics
from examples.benchmarks.attention import padding_mask
dev = "cuda"; dt = torch.float16
def ms(f, rep=50, warm=10):
    for _ in range(warm): f()
    torch.cuda.synchronize()
    ev = []
    for _ in range(rep):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); f(); b.record(); ev.append((a, b))
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in ev) * 1e3  # us
for n, B in ((512, 128), (4096, 16), (65536, 2)):
    rows, C = 256, 768
    W = torch.randn(rows, n, device=dev, dtype=dt)
    mask = padding_mask(n, B, dev, "right"); keep = ~mask
    x = torch.randn(n, B, C, device=dev, dtype=dt)
    xb = x.transpose(0, 1)
    out = torch.empty(rows, B, C, device=dev, dtype=dt); ob = out.transpose(0, 1)
    Lmin = int(keep.sum(1).min()); m8 = Lmin // 8 * 8
    keep_f = keep.to(dt)
    E_full = torch.where(keep[:, None, :], W, W.new_zeros(()))
    k64 = keep.view(B, n // 4, 4).to(torch.int64)  # lanes
    lanes = (k64 * torch.tensor([0xFFFF, 0xFFFF << 16, 0xFFFF << 32, -(1 << 48)], device=dev)).sum(-1)
    W64 = W.view(torch.int64)
    r = {}
    r["where"] = ms(lambda: torch.where(keep[:, None, :], W, W.new_zeros(())))
    r["mul"] = ms(lambda: W * keep_f[:, None, :])
    r["bitand64"] = ms(lambda: torch.bitwise_and(W64, lanes[:, None, :]).view(dt))
    r["expand_contig"] = ms(lambda: W.expand(B, rows, n).contiguous())
    r["mm_unpadded"] = ms(lambda: torch.mm(W, x.view(n, -1), out=out.view(rows, -1)))
    r["bmm_Econtig"] = ms(lambda: torch.bmm(E_full, xb, out=ob))
    r["bmm_Etransposed"] = ms(lambda: torch.bmm(E_full.transpose(1, 2).contiguous().transpose(1, 2), xb, out=ob))
    for K in (Lmin, m8):
        r[f"mm_head_K{K}"] = ms(lambda: torch.mm(W[:, :K], x[:K].view(K, -1), out=out.view(rows, -1)))
        r[f"addmm_head_beta1_K{K}"] = ms(lambda: out.view(rows, -1).addmm_(W[:, :K], x[:K].view(K, -1)))
        Et = E_full[:, :, K:].contiguous()
        r[f"bmm_tail_K{n-K}"] = ms(lambda: torch.bmm(Et, xb[:, K:], out=ob))
        r[f"baddbmm_tail_beta1_K{n-K}"] = ms(lambda: ob.baddbmm_(Et, xb[:, K:]))
        r[f"where_tail_K{n-K}"] = ms(lambda: torch.where(keep[:, None, K:], W[:, K:], W.new_zeros(())))
    print(f"n={n} B={B} Lmin={Lmin}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()), flush=True)
