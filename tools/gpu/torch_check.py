#!/usr/bin/env python3
"""Checks the harness dumps against a float64 torch reference written from docs/ops.md.

usage: torch_check.py DUMP_DIR        (DUMP_DIR = the directory `harness check` wrote)
Each case dir has meta.txt, the inputs (as float32 after rounding to the op's type) and the CPU op's
and the CUDA op's outputs. Prints one line per case and 'N passed, N failed'; exit 1 on a failure.
"""
import sys
from pathlib import Path

import numpy as np
import torch

TOL = {"f32": 1e-4, "f16": 4e-3, "bf16": 3e-2}


def load(d, name, shape, dtype=np.float32, ext="f32"):
    return torch.from_numpy(np.fromfile(d / f"{name}.{ext}", dtype=dtype).reshape(shape))


def reference(d):
    kind, dt, B, S, Hq, Hkv, D, C, W, softcap, has_nl, *rot = (d / "meta.txt").read_text().split()
    B, S, Hq, Hkv, D, C, W, has_nl = map(int, (B, S, Hq, Hkv, D, C, W, has_nl))
    R, interleaved, M = map(int, rot) if rot else (0, 0, 0)
    softcap = float(softcap)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    f64 = lambda t: t.to(dev, torch.float64)
    q = f64(load(d, "query", (B, S, Hq, D)))
    k = f64(load(d, "key", (B, S, Hkv, D))) if kind == "owner" else None
    v = f64(load(d, "value", (B, S, Hkv, D))) if kind == "owner" else None
    kc = f64(load(d, "key_cache", (B, Hkv, C, D)))
    vc = f64(load(d, "value_cache", (B, Hkv, C, D)))
    past = np.fromfile(d / "past_lengths.i32", dtype=np.int32)
    newl = np.fromfile(d / "new_lengths.i32", dtype=np.int32) if has_nl else np.full(B, S, np.int32)
    if R:  # the op's own rotary (docs/ops.md): this step's real queries and keys turned at position P + s
        cos = f64(load(d, "cos_cache", (M, R // 2)))
        sin = f64(load(d, "sin_cache", (M, R // 2)))
        first = torch.arange(0, R, 2, device=dev) if interleaved else torch.arange(R // 2, device=dev)
        second = first + 1 if interleaved else first + R // 2

        def rotate(x):
            y = x.clone()
            for b in range(B):
                for s in range(int(newl[b])):
                    c, sn = cos[int(past[b]) + s], sin[int(past[b]) + s]
                    a, o = x[b, s, :, first], x[b, s, :, second]
                    y[b, s, :, first], y[b, s, :, second] = a * c - o * sn, o * c + a * sn
            return y

        q = rotate(q)
        k = rotate(k) if k is not None else None
    G = Hq // Hkv
    scale = 1.0 / np.sqrt(D)
    out = torch.zeros(B, S, Hq, D, dtype=torch.float64, device=dev)
    for b in range(B):
        P, N = int(past[b]), int(newl[b])
        for s in range(N):
            p = P + s
            lo = max(0, p - W + 1) if W > 0 else 0
            pos = torch.arange(lo, p + 1, device=dev)
            K = kc[b][:, pos % C, :]  # [Hkv, L, D]
            V = vc[b][:, pos % C, :]
            if kind == "owner":  # positions >= P come from this chunk
                from_chunk = (pos >= P)[None, :, None]
                row = (pos - P).clamp(min=0)
                K = torch.where(from_chunk, k[b, row].transpose(0, 1), K)
                V = torch.where(from_chunk, v[b, row].transpose(0, 1), V)
            K = K.repeat_interleave(G, dim=0)
            V = V.repeat_interleave(G, dim=0)
            sc = torch.einsum("hd,hld->hl", q[b, s], K) * scale
            if softcap > 0:
                sc = softcap * torch.tanh(sc / softcap)
            out[b, s] = torch.einsum("hl,hld->hd", torch.softmax(sc, dim=-1), V)
    return dt, out.reshape(B, S, Hq * D).cpu()


def main():
    root = Path(sys.argv[1])
    passed = failed = 0
    for d in sorted(p for p in root.iterdir() if (p / "meta.txt").exists()):
        dt, ref = reference(d)
        shape = ref.shape
        res = []
        ok = True
        for which in ("out_gpu", "out_cpu"):
            o = load(d, which, shape).double()
            err = (o - ref).abs().max().item() if torch.isfinite(o).all() else float("nan")
            rel = ((o - ref).norm() / ref.norm().clamp(min=1e-30)).item()
            ok = ok and err <= TOL[dt]
            res.append(f"{which[4:]} max|d|={err:.2e} relL2={rel:.2e}")
        print(f"{d.name:60s} vs torch float64: {'  '.join(res)}  {'PASS' if ok else 'FAIL'}")
        passed += ok
        failed += not ok
    print(f"torch_check: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
