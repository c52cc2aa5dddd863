#!/usr/bin/env python3
"""Issue #23's table from one run: kbench prefill rows and torch_prefill_bench.py rows, joined by shape.

    python3 tools/gpu/prefill_table.py KBENCH_CSV TORCH_CSV

Either file may hold several header lines and other rows (kernels.sh's stdout as it is): rows are recognised by their
columns. Per shape (B, S, P, D, W): the row the automatic plan runs (column planned = 1), the mma.sync kernel as
planned for it, the fastest wgmma row (variant and splits), torch's flash / cuDNN / best, and planned / best torch
(> 1: ours is faster). Windowed shapes have no torch counterpart. Exit status 1 when a planned row is missing or
non-finite output was seen.
"""
import csv
import sys


def rows(path, width):
    with open(path, newline="") as f:
        for r in csv.reader(f):
            if len(r) == width and r[0] == "prefill":
                yield r


def main(kbench_path, torch_path):
    shapes = {}
    for r in rows(kbench_path, 12):  # kind,B,S,P,D,W,kernel,splits,us,tflops,nonfinite,planned
        key = tuple(int(x) for x in r[1:6])
        shapes.setdefault(key, []).append(
            {"kernel": r[6], "splits": int(r[7]), "us": float(r[8]), "tflops": float(r[9]), "bad": int(r[10]),
             "planned": r[11] == "1"})
    torch = {}
    for r in rows(torch_path, 8):  # kind,B,S,P,D,backend,us,tflops
        torch.setdefault(tuple(int(x) for x in r[1:5]), {})[r[5]] = float(r[6])
    status = 0
    print("| B | S | P | D | W | planned (splits) | µs (TFLOP/s) | mma.sync (splits) | fastest wgmma | flash | cuDNN "
          "| planned / best torch |")
    print("| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for key, rs in shapes.items():
        planned = [r for r in rs if r["planned"]]
        mma = [r for r in rs if r["kernel"] == "mma"]
        wgmma = sorted((r for r in rs if r["kernel"].startswith("wgmma")), key=lambda r: r["us"])
        if any(r["bad"] for r in rs):
            status = 1
        if not planned:
            print(f"| {' | '.join(map(str, key))} | (no planned row) | | | | | | |")
            status = 1
            continue
        p = planned[0]
        t = torch.get(key[:4], {}) if key[4] == 0 else {}
        best = t.get("best")
        fastest = f"{wgmma[0]['kernel']} ({wgmma[0]['splits']}) {wgmma[0]['us']:.2f}" if wgmma else "–"
        ratio = f"{best / p['us']:.2f}×" if best else "–"
        flash = f"{t['flash']:.2f}" if "flash" in t else "–"
        cudnn = f"{t['cudnn']:.2f}" if "cudnn" in t else "–"
        print(f"| {' | '.join(str(k) for k in key[:4])} | {key[4] or '–'} "
              f"| {p['kernel']} ({p['splits']}) | {p['us']:.2f} ({p['tflops']:.0f}) "
              f"| {mma[0]['us']:.2f} ({mma[0]['splits']}) | {fastest} | {flash} | {cudnn} | {ratio} |")
    return status


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
