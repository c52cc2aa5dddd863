#!/usr/bin/env python3
"""GPU kernel time per decode step of a benchmark run under Nsight Compute (tools/gpu/e2e/e2e.sh kernels).

usage: kernel_summary.py BENCH.json NCU.csv
BENCH.json is `mixattn bench --json` of the profiled run (for the step count; its wall times are distorted by the
profiler), NCU.csv is `ncu --csv --metrics gpu__time_duration.sum` of the same run. Prints the kernel time per step
and the kernels grouped by a short family name, most expensive first.
"""
import csv
import json
import re
import sys
from collections import defaultdict


def family(name: str) -> str:
    n = re.sub(r"\(.*", "", name)                      # parameter list
    n = re.sub(r"<[^<>]*(<[^<>]*(<[^<>]*>[^<>]*)*>[^<>]*)*>", "", n)  # template arguments (3 levels)
    n = n.replace("void ", "").strip()
    return n[-70:] or name[:70]


def main() -> None:
    bench = json.load(open(sys.argv[1]))["results"][0]
    steps = bench["steps"]
    lines = open(sys.argv[2]).read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith('"ID"'))
    fam = defaultdict(lambda: [0.0, 0])
    for r in csv.DictReader(lines[start:]):
        if r["Metric Name"] != "gpu__time_duration.sum":
            continue
        scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}[r["Metric Unit"]]
        f = fam[family(r["Kernel Name"])]
        f[0] += float(r["Metric Value"].replace(",", "")) * scale / steps
        f[1] += 1 / steps
    total = sum(v[0] for v in fam.values())
    launches = sum(v[1] for v in fam.values())
    model = bench["model"].split("/")[-2]
    print(f"== {model} graph={bench['cuda_graph']} context {bench['context']} batch {bench['batch']}: "
          f"GPU kernels {total:.0f} µs/step in {launches:.0f} kernels ({total / max(launches, 1):.1f} µs each)")
    for k, (us, n) in sorted(fam.items(), key=lambda kv: -kv[1][0])[:25]:
        print(f"  {us:9.1f} µs {100 * us / total:5.1f}%  {n:6.1f}×  {us / max(n, 1e-9):7.2f} µs each  {k}")


if __name__ == "__main__":
    main()
