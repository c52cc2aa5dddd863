#!/usr/bin/env python3
"""torch SDPA decode timings on the harness's shapes (fp16, 32 q / 8 kv heads, D = 128).

usage: torch_bench.py [quick] > torch.csv
Two forms per shape: `sdpa_gqa` = F.scaled_dot_product_attention(q[B,32,1,D], k, v, enable_gqa=True);
`sdpa_rows` = the 4 query heads of a KV group as 4 query rows of an 8-head MHA (the same math).
K/V hold L = T (global) or min(T, 1024) (sliding) keys. Each timing replays a CUDA graph of R calls
that rotate over R copies of K/V (R copies >= 4x L2), so neither the host nor the L2 flatters it.
"""
import sys

import torch
import torch.nn.functional as F

Hq, Hkv, D, W = 32, 8, 128, 1024
quick = len(sys.argv) > 1 and sys.argv[1] == "quick"
dev = torch.device("cuda")
props = torch.cuda.get_device_properties(0)
l2 = getattr(props, "L2_cache_size", 50 << 20)


def time_graph(calls, reps):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            for c in calls:
                c()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for c in calls:
            c()
    g.replay()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        g.replay()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) * 1e3 / (reps * len(calls))


# D2D copy peak (bytes read + written), for reference next to the harness's own measurement.
x = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
y = torch.empty_like(x)
us = time_graph([lambda: y.copy_(x)], 20)
print(f"# torch d2d_copy_peak_GBps {2 * x.numel() / (us * 1e3):.1f}")
del x, y
print("kind,B,T,L,sdpa_gqa_us,sdpa_rows_us")
Ts = [1024, 16384] if quick else [1024 << i for i in range(8)]
for kind in ("sliding", "global"):
    for B in (1, 8, 32):
        for T in Ts:
            L = min(T, W) if kind == "sliding" else T
            nbytes = 2 * B * Hkv * L * D * 2
            R = max(1, min(32, 4 * l2 // nbytes + 1))
            res = []
            try:
                ks = [torch.randn(B, Hkv, L, D, device=dev, dtype=torch.float16) for _ in range(R)]
                vs = [torch.randn(B, Hkv, L, D, device=dev, dtype=torch.float16) for _ in range(R)]
                q = torch.randn(B, Hq, 1, D, device=dev, dtype=torch.float16)
                qr = q.view(B, Hkv, Hq // Hkv, D)
                reps = max(5, min(200, int(2e5 / (nbytes / 3e3 + 5) / R)))
                res.append(time_graph([lambda i=i: F.scaled_dot_product_attention(q, ks[i], vs[i], enable_gqa=True)
                                       for i in range(R)], reps))
                res.append(time_graph([lambda i=i: F.scaled_dot_product_attention(qr, ks[i], vs[i]) for i in range(R)],
                                      reps))
                del ks, vs
            except Exception as e:  # OOM or an unsupported form: report, keep going
                print(f"# {kind} B={B} T={T}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
                res += [float("nan")] * (2 - len(res))
            torch.cuda.empty_cache()
            print(f"{kind},{B},{T},{L},{res[0]:.3f},{res[1]:.3f}", flush=True)
