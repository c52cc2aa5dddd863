#!/usr/bin/env python3
"""Merges the harness and torch decode timings into a markdown table and a bandwidth plot.

usage: plot.py BENCH_CSV TORCH_CSV PNG [KBENCH_CSV] > summary.md
Effective bandwidth = the K/V bytes a decode step must read (2 * B * Hkv * L * D * 2) / time, as a
share of the D2D-copy peak measured in the same harness run. With KBENCH_CSV (kbench: our decode
kernels alone, CUDA-graph replay like torch) the table also shows the kernel time without ORT, for
the tensor-core kernel ("tc", the default) and the SIMT kernel it replaced ("simt"). kbench times a
sliding ring only at T = 1024 and 131072 (its time does not depend on T); other T use the T = 1024 row.
"""
import csv
import io
import math
import os
import sys


def read(path):
    meta, rows = {}, []
    lines = []
    for line in open(path):
        if line.startswith("#"):
            parts = line[1:].split()
            if len(parts) >= 2:
                try:
                    meta[parts[-2]] = float(parts[-1])
                except ValueError:
                    meta[parts[0]] = " ".join(parts[1:])
            if line.startswith("# device"):
                meta["device"] = line[len("# device "):].strip()
        elif line.strip():
            lines.append(line)
    rows = list(csv.DictReader(io.StringIO("".join(lines))))
    return meta, rows


def main():
    bmeta, brows = read(sys.argv[1])
    _, trows = read(sys.argv[2])
    png = sys.argv[3]
    peak = bmeta.get("d2d_copy_peak_GBps", float("nan"))
    empty = bmeta.get("empty_kernel_us", float("nan"))
    torch_by = {(r["kind"], int(r["B"]), int(r["T"])): r for r in trows}
    kb = {}
    if len(sys.argv) > 4:
        _, krows = read(sys.argv[4])
        for r in krows:
            if r["kernel"] in ("tc", "simt"):  # the first row of each: the automatic plan
                kb.setdefault((r["kind"], int(r["B"]), int(r["T"]), r["kernel"]), float(r["us"]))

    def kernel_us(kind, B, T, k):
        v = kb.get((kind, B, T, k))
        if v is None and kind == "sliding":
            v = kb.get((kind, B, 1024, k))
        return v if v is not None else float("nan")

    print(f"Card: {bmeta.get('device', '?')}; D2D copy peak {peak:.0f} GB/s; empty kernel {empty:.2f} us per launch\n")
    print("| layer | B | T | B·T | ours µs (ORT) | ours % peak | ORT GQA µs | ours vs GQA | torch SDPA µs (best form) | ours vs torch "
          "| kernel µs (no ORT) | kernel % peak | kernel vs torch | SIMT kernel µs (before) | GQA max abs diff |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    data = []
    for r in brows:
        kind, B, T = r["kind"], int(r["B"]), int(r["T"])
        nbytes = float(r["bytes"])
        ours, gqa = float(r["ours_us"]), float(r["gqa_us"])
        t = torch_by.get((kind, B, T))
        tb = min(float(t["sdpa_gqa_us"]), float(t["sdpa_rows_us"])) if t else float("nan")
        if t and math.isnan(tb):
            tb = float(t["sdpa_rows_us"]) if not math.isnan(float(t["sdpa_rows_us"])) else float(t["sdpa_gqa_us"])
        bw = lambda us: nbytes / (us * 1e3) if us and not math.isnan(us) else float("nan")
        data.append((kind, B, T, bw(ours), bw(gqa), bw(tb), ours, gqa, tb))
        kt, ks = kernel_us(kind, B, T, "tc"), kernel_us(kind, B, T, "simt")
        print(f"| {kind} | {B} | {T} | {B*T} | {ours:.2f} | {100*bw(ours)/peak:.0f}% | {gqa:.2f} | {gqa/ours:.2f}x | "
              f"{tb:.2f} | {tb/ours:.2f}x | {kt:.2f} | {100*bw(kt)/peak:.0f}% | {tb/kt:.2f}x | {ks:.2f} | {r['gqa_max_abs_diff']} |")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(matplotlib missing: no plot)")
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    colors = {1: "tab:blue", 8: "tab:orange", 32: "tab:green"}
    for ax, kind in zip(axes, ("global", "sliding")):
        for B in (1, 8, 32):
            pts = sorted((T, o, g, tb, ou, gu, tu) for k, b, T, o, g, tb, ou, gu, tu in data if k == kind and b == B)
            if not pts:
                continue
            Ts = [p[0] for p in pts]
            if kind == "global":
                ax.plot(Ts, [100 * p[1] / peak for p in pts], "-o", color=colors[B], label=f"ours B={B}")
                ax.plot(Ts, [100 * p[2] / peak for p in pts], "--s", color=colors[B], alpha=0.7, label=f"ORT GQA B={B}")
                ax.plot(Ts, [100 * p[3] / peak for p in pts], ":^", color=colors[B], alpha=0.7, label=f"torch SDPA B={B}")
                ax.set_ylabel("effective bandwidth, % of measured D2D peak")
            else:
                ax.plot(Ts, [p[4] for p in pts], "-o", color=colors[B], label=f"ours B={B}")
                ax.plot(Ts, [p[5] for p in pts], "--s", color=colors[B], alpha=0.7, label=f"ORT GQA B={B}")
                ax.plot(Ts, [p[6] for p in pts], ":^", color=colors[B], alpha=0.7, label=f"torch SDPA (L=1024) B={B}")
                ax.set_ylabel("µs per decode step (one layer)")
                ax.set_yscale("log")
        if kind == "sliding":
            ax.axhline(empty, color="gray", lw=1)
            ax.text(1024, empty * 1.05, "empty kernel launch", color="gray")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context T (tokens)")
        ax.set_title(f"{kind} layer decode, fp16, 32q/8kv heads, D=128" + (", W=1024" if kind == "sliding" else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=3)
    fig.suptitle(f"{bmeta.get('device', '')}: D2D peak {peak:.0f} GB/s")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"\nplot: {os.path.relpath(png)}")


if __name__ == "__main__":
    main()
