#!/usr/bin/env python3
"""torch SDPA prefill timings for the global shapes of `kbench prefill` (fp16, 32 q / 8 kv heads).

usage: torch_prefill_bench.py [B S P D]... > torch_prefill.csv   (no arguments: kbench's standard global shapes)
A chunk of S queries after P cached tokens: q [B, 32, S, D] against k, v [B, 8, P + S, D] with the causal mask aligned
to the bottom right (query s sees keys <= P + s: torch.nn.attention.bias.causal_lower_right). Each backend that
accepts the call (flash, cuDNN, memory-efficient; GQA through enable_gqa) is timed; `best` is the fastest.
TFLOP/s counts 4 D Hq per visible (query, key) pair, as kbench does.
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

Hq, Hkv = 32, 8
dev = torch.device("cuda")
args = [int(x) for x in sys.argv[1:]]
shapes = [args[i:i + 4] for i in range(0, len(args) - 3, 4)] or [
    [1, 256, 0, 128], [1, 256, 4096, 128], [1, 256, 32512, 128], [1, 256, 16128, 64], [1, 64, 32704, 128],
    [16, 256, 32512, 128], [16, 256, 32512, 64],
    [1, 4096, 0, 128], [1, 16384, 0, 128], [1, 16384, 0, 64], [4, 4096, 0, 256]]


def timed(fn, reps=None):
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    torch.cuda.synchronize()
    ms = a.elapsed_time(b)
    reps = reps or max(3, min(200, int(50 / max(ms, 1e-3))))
    samples = []
    for _ in range(5):
        a.record()
        for _ in range(reps):
            fn()
        b.record()
        torch.cuda.synchronize()
        samples.append(a.elapsed_time(b) * 1e3 / reps)
    return sorted(samples)[2]


print("kind,B,S,P,D,backend,us,tflops")
for B, S, P, D in shapes:
    T = P + S
    q = torch.randn(B, Hq, S, D, device=dev, dtype=torch.float16)
    k = torch.randn(B, Hkv, T, D, device=dev, dtype=torch.float16)
    v = torch.randn(B, Hkv, T, D, device=dev, dtype=torch.float16)
    mask = causal_lower_right(S, T)
    flops = 4.0 * D * Hq * B * sum(P + s + 1 for s in range(S))
    best = None
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                us = timed(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True))
        except Exception as e:  # a backend that rejects this shape / mask
            print(f"# {name} B={B} S={S} P={P} D={D}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            continue
        print(f"prefill,{B},{S},{P},{D},{name},{us:.2f},{flops / (us * 1e6):.1f}")
        best = us if best is None else min(best, us)
    if best is not None:
        print(f"prefill,{B},{S},{P},{D},best,{best:.2f},{flops / (best * 1e6):.1f}")
    sys.stdout.flush()
    del q, k, v
