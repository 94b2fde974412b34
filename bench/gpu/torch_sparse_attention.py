#!/usr/bin/env python3
"""Plain PyTorch sparse attention (gather the selected rows, then matmul + softmax + matmul): the
baseline the CUDA kernels are timed against, and an independent check of their output.

  torch_sparse_attention.py check DUMP_DIR   compare the outputs sparse_attention_bench wrote into
                                             DUMP_DIR with a float32 PyTorch computation
  torch_sparse_attention.py time             time the PyTorch versions on the bench's shapes

Counts as in bench/gpu/sparse_attention_bench.cu: MLA FLOPs n_q*H*k*2*(576+512), bytes
n_q*k*1152 + q + out + indices; GQA FLOPs n_q*H*k*4*D, bytes n_q*G*k*2*D*elt + q + out + indices.
"""
import itertools
import math
import os
import sys

import numpy as np
import torch

DEV = "cuda"


def mla_torch(q, kv, idx, scale, dtype, chunk=128):
    """q [T, H, 576], kv [N, 576], idx [T, k] (-1 = none) -> out [T, H, 512] f32, lse [T, H]."""
    T, H, _ = q.shape
    out = torch.empty(T, H, 512, dtype=torch.float32, device=q.device)
    lse = torch.empty(T, H, dtype=torch.float32, device=q.device)
    for t0 in range(0, T, chunk):
        i = idx[t0:t0 + chunk]
        valid = i >= 0
        g = kv[i.clamp(min=0).long()].to(dtype)  # [c, k, 576]
        s = torch.bmm(q[t0:t0 + chunk].to(dtype), g.transpose(1, 2)).float() * scale
        s.masked_fill_(~valid[:, None, :], float("-inf"))
        l = torch.logsumexp(s, -1)
        p = torch.exp(s - l[..., None]).nan_to_num_(0.0)  # a row with no valid key: zeros
        out[t0:t0 + chunk] = torch.bmm(p.to(dtype), g[..., :512]).float()
        lse[t0:t0 + chunk] = l
    return out, lse


def gqa_torch(q, k, v, idx, scale, chunk=512):
    """q [T, H, D], k/v [G, cap, D], idx [T, kk] -> out [T, H, D] f32."""
    T, H, D = q.shape
    G = k.shape[0]
    out = torch.empty(T, H, D, dtype=torch.float32, device=q.device)
    for t0 in range(0, T, chunk):
        i = idx[t0:t0 + chunk]
        c = i.shape[0]
        valid = i >= 0
        ic = i.clamp(min=0).long()
        kg, vg = k[:, ic].float(), v[:, ic].float()  # [G, c, kk, D]
        qg = q[t0:t0 + chunk].float().view(c, G, H // G, D).permute(1, 0, 2, 3)  # [G, c, r, D]
        s = torch.einsum("gtrd,gtkd->gtrk", qg, kg) * scale
        s.masked_fill_(~valid[None, :, None, :], float("-inf"))
        p = torch.softmax(s, -1).nan_to_num_(0.0)
        out[t0:t0 + chunk] = torch.einsum("gtrk,gtkd->gtrd", p, vg).permute(1, 0, 2, 3).reshape(c, H, D)
    return out


def load(path, dtype, shape):
    return torch.from_numpy(np.fromfile(path, dtype=dtype).reshape(shape)).to(DEV)


def check(dump):
    bad = 0
    T, H, N, k, scale = open(os.path.join(dump, "mla.txt")).read().split()
    T, H, N, k, scale = int(T), int(H), int(N), int(k), float(scale)
    q = torch.from_numpy(np.fromfile(f"{dump}/mla_q.bin", dtype=np.int16).reshape(T, H, 576)).to(DEV).view(torch.bfloat16)
    kv = torch.from_numpy(np.fromfile(f"{dump}/mla_kv.bin", dtype=np.int16).reshape(N, 576)).to(DEV).view(torch.bfloat16)
    idx = load(f"{dump}/mla_idx.bin", np.int32, (T, k))
    ours = load(f"{dump}/mla_out.bin", np.float32, (T, H, 512))
    ours_lse = load(f"{dump}/mla_lse.bin", np.float32, (T, H))
    ref, ref_lse = mla_torch(q, kv, idx, scale, torch.float32, chunk=16)
    rel = ((ours - ref).norm() / ref.norm()).item()
    lse_err = (ours_lse - ref_lse).abs().max().item()
    # bf16 P in our P V product: relative error near 2^-9 / sqrt(k) in norm; 1e-2 is the upper end
    # of what bf16 operands give (docs: METHOD.md); f32 LSE within 1e-3 absolute.
    ok = rel < 1e-2 and lse_err < 1e-3 and torch.isfinite(ours).all().item()
    bad += not ok
    print(f"torch check mla T={T} H={H} k={k} N={N}: |ours - torch| / |torch| = {rel:.2e}, "
          f"max |lse diff| = {lse_err:.2e}: {'ok' if ok else 'FAIL'}")
    T, H, G, D, cap, kk, scale = open(os.path.join(dump, "gqa.txt")).read().split()
    T, H, G, D, cap, kk, scale = int(T), int(H), int(G), int(D), int(cap), int(kk), float(scale)
    q = load(f"{dump}/gqa_q.bin", np.float32, (T, H, D))
    kc = load(f"{dump}/gqa_k.bin", np.float32, (G, cap, D))
    vc = load(f"{dump}/gqa_v.bin", np.float32, (G, cap, D))
    idx = load(f"{dump}/gqa_idx.bin", np.int32, (T, kk))
    ours = load(f"{dump}/gqa_out.bin", np.float32, (T, H, D))
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = gqa_torch(q, kc, vc, idx, scale)
    rel = ((ours - ref).norm() / ref.norm()).item()
    ok = rel < 1e-5
    bad += not ok
    print(f"torch check gqa T={T} H={H}/{G} D={D} k={kk}: |ours - torch| / |torch| = {rel:.2e}: "
          f"{'ok' if ok else 'FAIL'} (f32 throughout)")
    return bad


def bench(fn, warm=2, reps=5):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]


def rand_bf16(*shape):
    return torch.randn(*shape, device=DEV, dtype=torch.bfloat16)


def time_all():
    g = torch.Generator(device=DEV).manual_seed(0)
    scale = 1 / math.sqrt(576)
    for H, T in ((64, 4096), (128, 2048)):
        for ctx in (10240, 204800):
            q, kv = rand_bf16(T, H, 576), rand_bf16(ctx, 576)
            idx = torch.randint(0, ctx, (T, 2048), device=DEV, dtype=torch.int32, generator=g)
            ms = bench(lambda: mla_torch(q, kv, idx, scale, torch.bfloat16))
            fl = T * H * 2048 * 2 * 1088
            print(f"torch mla prefill T={T} H={H} k=2048 ctx={ctx}: {ms:.3f} ms, {fl / ms / 1e9:.1f} TFLOP/s")
            del q, kv, idx
    # Decode at every context length, as the CUDA bench: each sequence owns `region` cache rows.
    for region, H, B in itertools.product((10240, 61440, 122880, 204800), (64, 128), (1, 64)):
        q, kv = rand_bf16(B, H, 576), rand_bf16(B * region, 576)
        idx = (torch.randint(0, region, (B, 2048), device=DEV, dtype=torch.int32, generator=g)
               + torch.arange(B, device=DEV, dtype=torch.int32)[:, None] * region)
        ms = bench(lambda: mla_torch(q, kv, idx, scale, torch.bfloat16))
        by = B * 2048 * 1152 + B * H * (576 * 2 + 512 * 4 + 4) + B * 2048 * 4
        print(f"torch mla decode B={B} H={H} k=2048 ctx={region}: {ms:.3f} ms, {by / ms / 1e6:.0f} GB/s")
        del q, kv, idx
    # GQA (SmolLM2's shape) over one cache of every length: prefill (4096 queries), decode at batch 64 and 1.
    for (dt, elt), cap, T in itertools.product(((torch.float32, 4), (torch.bfloat16, 2)),
                                               (10240, 61440, 122880, 204800), (4096, 64, 1)):
        q = torch.randn(T, 9, 64, device=DEV)
        kc, vc = torch.randn(3, cap, 64, device=DEV, dtype=dt), torch.randn(3, cap, 64, device=DEV, dtype=dt)
        idx = torch.randint(0, cap, (T, 2048), device=DEV, dtype=torch.int32, generator=g)
        ms = bench(lambda: gqa_torch(q, kc, vc, idx, 0.125))
        by = T * 3 * 2048 * 2 * 64 * elt + T * 9 * (64 * 8 + 4) + T * 2048 * 4
        print(f"torch gqa {'prefill' if T > 64 else 'decode'} {str(dt)[6:]} T={T} H=9/3 D=64 k=2048 ctx={cap}: "
              f"{ms:.3f} ms, {by / ms / 1e6:.0f} GB/s")
        del q, kc, vc, idx


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "check":
        sys.exit(1 if check(sys.argv[2]) else 0)
    if len(sys.argv) >= 2 and sys.argv[1] == "time":
        time_all()
        sys.exit(0)
    print(__doc__)
    sys.exit(2)
