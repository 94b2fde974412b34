#!/usr/bin/env python3
"""Plain PyTorch versions of the DSA indexer scores and top-k, on the device, for
scripts/device-dsa.sh: (1) checks the C++ bench's dumped case (dsa_index_bench --dump DIR)
against torch in float32 on the dequantised inputs; (2) times einsum/matmul scores (bf16,
query chunks so no [T*H, L] buffer exceeds a few GB) and torch.topk at the bench's sizes."""
import sys
import numpy as np
import torch

def load(d, name, dtype, shape):
    return torch.from_numpy(np.fromfile(f"{d}/{name}", dtype=dtype).reshape(shape)).cuda()

def ref_scores(q, k, w, ks, q_pos0):  # q [T,H,d] f32, k [L,d] f32 -> [T,L] f32, causal -inf
    s = torch.einsum("thd,ld->thl", q, k).relu_()
    s = torch.einsum("th,thl->tl", w, s) * ks[None, :]
    T, L = s.shape
    pos = torch.arange(L, device=s.device)[None, :] > (q_pos0 + torch.arange(T, device=s.device))[:, None]
    return s.masked_fill(pos, float("-inf"))

def check(d):
    T, H, D, L, K = 256, 64, 128, 10000, 2048
    ok = True
    for tag in ("fp8", "bf16"):
        if tag == "fp8":
            q = load(d, "fp8_q.bin", np.uint8, (T, H, D)).view(torch.float8_e4m3fn).float()
            k = load(d, "fp8_k.bin", np.uint8, (L, D)).view(torch.float8_e4m3fn).float()
            ks = load(d, "fp8_ks.bin", np.float32, (L,))
        else:
            q = load(d, "bf16_q.bin", np.int16, (T, H, D)).view(torch.bfloat16).float()
            k = load(d, "bf16_k.bin", np.int16, (L, D)).view(torch.bfloat16).float()
            ks = torch.ones(L, device="cuda")
        w = load(d, f"{tag}_w.bin", np.float32, (T, H))
        ours = load(d, f"{tag}_scores.bin", np.float32, (T, L))
        ours_tk = load(d, f"{tag}_topk.bin", np.int32, (T, K)).long()
        torch.backends.cuda.matmul.allow_tf32 = False
        ref = torch.cat([ref_scores(q[i:i+64].double(), k.double(), w[i:i+64].double(), ks.double(), L - T + i)
                         for i in range(0, T, 64)]).float()
        fin = torch.isfinite(ref)
        same_mask = bool((torch.isfinite(ours) == fin).all())
        rel = ((ours[fin] - ref[fin]).norm() / ref[fin].norm()).item()
        # top-k: our indices must be a top-k set of our own scores, and nearly torch's set.
        tv, ti = torch.topk(ref, K, dim=1)
        ours_vals = torch.gather(ref, 1, ours_tk)
        overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(ours_tk.cpu(), ti.cpu())])
        kth = tv[:, -1:]
        worst = ((kth - ours_vals) / ref.abs().amax(1, keepdim=True)).max().item()
        good = same_mask and rel < (3e-3 if tag == "fp8" else 1e-5) and overlap > 0.99 and worst < 1e-3
        ok &= good
        print(f"torch check {tag}: scores rel err {rel:.2e}, mask {'ok' if same_mask else 'WRONG'}, "
              f"top-k overlap with torch.topk {overlap:.5f}, worst selected below k-th (rel) {worst:.2e}: "
              f"{'ok' if good else 'FAIL'}", flush=True)
    return ok

def timed(f, reps=5):
    f(); torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(reps):
        a.record(); f(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]

def bench(Ls, out):
    T, D = 4096, 128
    lines = []
    for L in Ls:
        for H in (32, 64):
            q = torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(L, D, device="cuda", dtype=torch.bfloat16)
            w = torch.randn(T, H, device="cuda")
            res = torch.empty(T, L, device="cuda")
            ch = max(1, (4 << 30) // (H * L * 2))
            def scores():
                for i in range(0, T, ch):
                    s = torch.matmul(q[i:i+ch].reshape(-1, D), k.t()).relu_().view(-1, H, L)
                    res[i:i+ch] = torch.einsum("th,thl->tl", w[i:i+ch], s.float())
            ms = timed(scores, 3)
            pairs = T * (L - T) + T * (T + 1) / 2
            lines.append(f"torch scores bf16 H {H:2d} d 128 L {L:6d} T {T} | {ms:9.3f} ms | "
                         f"{2*H*D*pairs/ms/1e9:7.1f} TFLOP/s (causal pairs; torch computes all T x L)")
            del q, k, w, res
        for name, rows in (("decode b1", 1), ("decode b64", 64), ("prefill", min(4096, L))):
            s = torch.rand(rows, L, device="cuda") * 8 - 4
            ms = timed(lambda: torch.topk(s, 2048, dim=1), 20)
            lines.append(f"torch topk {name:<10s} k 2048 L {L:6d} rows {rows:4d} | {ms*1e3:8.1f} us")
        torch.cuda.empty_cache()
    for l in lines:
        print(l, flush=True)
    if out:
        open(out, "a").write("\n".join(lines) + "\n")

if __name__ == "__main__":
    d = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else None
    Ls = [int(x) for x in sys.argv[3].split(",")] if len(sys.argv) > 3 else [10000, 60000, 120000, 200000]
    ok = check(d)
    bench(Ls, out)
    sys.exit(0 if ok else 1)
