#!/usr/bin/env python3
"""The PyTorch peers of bench/gpu/moe_bench.cu, on the device, at the same shape (hidden 2048,
64 experts top-4, moe_intermediate_size 1536, bf16) and token counts:
  loop     HF transformers' way (Glm4MoeLiteExperts.forward): per expert that has tokens, gather
           them, one fused gate|up linear, silu * up, the down linear, weighted index_add_;
  grouped  sort the (token, slot) pairs by expert, torch._grouped_mm for both projections, then a
           weighted index_add_ (where this torch has torch._grouped_mm).
Routing is the same sigmoid router on random weights (n_group 1). Times are CUDA-event medians;
the two versions are checked against each other."""
import sys
import torch
import torch.nn.functional as F

D, I, E, K = 2048, 1536, 64, 4


def route(x, w_router, bias):
    scores = F.linear(x.float(), w_router.float()).sigmoid()
    idx = torch.topk(scores + bias, K, dim=-1).indices
    w = scores.gather(1, idx)
    return idx, w / (w.sum(-1, keepdim=True) + 1e-20) * 1.8


def experts_loop(x, idx, w, gate_up, down):
    out = torch.zeros_like(x)
    mask = F.one_hot(idx, num_classes=E).permute(2, 1, 0)  # [E, K, T]
    hit = (mask.sum(dim=(-1, -2)) > 0).nonzero()
    for e in hit[:, 0].tolist():
        slot, tok = torch.where(mask[e])
        g, u = F.linear(x[tok], gate_up[e]).chunk(2, dim=-1)
        y = F.linear(F.silu(g) * u, down[e]) * w[tok, slot, None]
        out.index_add_(0, tok, y.to(out.dtype))
    return out


def experts_grouped(x, idx, w, gate_up, down):
    flat = idx.reshape(-1)
    order = torch.argsort(flat, stable=True)
    tok = order // K
    offs = torch.cumsum(torch.bincount(flat, minlength=E), 0).to(torch.int32)
    xp = x[tok]
    h = torch._grouped_mm(xp, gate_up.transpose(-2, -1), offs=offs)
    g, u = h.chunk(2, dim=-1)
    y = torch._grouped_mm(F.silu(g) * u, down.transpose(-2, -1), offs=offs)
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    out.index_add_(0, tok, y.float() * w.reshape(-1)[order, None])
    return out.to(x.dtype)


def time_ms(f, reps):
    for _ in range(3):
        f()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]


def main():
    sizes = [int(s) for s in sys.argv[1:]] or [1, 64, 4096, 16384]
    torch.manual_seed(0)
    dev = "cuda"
    gate_up = (torch.randn(E, 2 * I, D, device=dev) / D**0.5).bfloat16()
    down = (torch.randn(E, D, I, device=dev) / I**0.5).bfloat16()
    w_router = (torch.randn(E, D, device=dev) / D**0.5).bfloat16()
    bias = torch.rand(E, device=dev) * 0.01
    has_grouped = hasattr(torch, "_grouped_mm")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; torch._grouped_mm: {has_grouped}")
    print("| tokens | GFLOP | HF loop us | loop TFLOP/s | torch._grouped_mm us | grouped TFLOP/s | grouped vs loop rel |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        x = torch.randn(n, D, device=dev).bfloat16()
        idx, w = route(x, w_router, bias)
        flops = 6.0 * D * I * n * K
        reps = 20 if n >= 4096 else 100
        t_loop = time_ms(lambda: experts_loop(x, idx, w, gate_up, down), reps)
        row = f"| {n} | {flops / 1e9:.2f} | {t_loop * 1e3:.1f} | {flops / t_loop / 1e9:.1f} |"
        if has_grouped:
            try:
                t_g = time_ms(lambda: experts_grouped(x, idx, w, gate_up, down), reps)
                a, b = experts_loop(x, idx, w, gate_up, down).float(), experts_grouped(x, idx, w, gate_up, down).float()
                rel = ((a - b).norm() / a.norm()).item()
                row += f" {t_g * 1e3:.1f} | {flops / t_g / 1e9:.1f} | {rel:.1e} |"
            except Exception as e:  # an unsupported layout or dtype on this build: say so
                row += f" failed: {type(e).__name__}: {str(e)[:80]} | | |"
        else:
            row += " n/a | | |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
