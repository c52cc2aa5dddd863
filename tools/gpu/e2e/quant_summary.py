"""Prints the table of `e2e.sh quant` (issue 18, end to end): per shape, decode ms/step and tokens/s of gqa-full, cai and
cai-fp8 (`mixattn bench`, interleaved rounds: quant-C-B.json) and of gqa-fp8 and gqa-full through ort_decode_bench
(odb-MODEL-C-B.json); the ratios cai-fp8/cai (median of per-round ratios, same run), cai-fp8/gqa-fp8 and
cai-fp8/gqa-full (tokens/s ratios; gqa-fp8 runs in its own process just after, so that ratio is of medians); the
cross-check of the two harnesses on gqa-full (ort_decode_bench ms / mixattn bench ms, and whether their KV bytes agree);
KV bytes per sequence and sequences in 64 GiB.

usage: python3 quant_summary.py OUT_DIR
"""
import glob
import json
import os
import re
import sys

BUDGET = 64 << 30


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"  ({os.path.basename(path)}: {e})")
        return None


out = sys.argv[1]
shapes = []
for p in glob.glob(os.path.join(out, "quant-*-*.json")):
    m = re.fullmatch(r"quant-(\d+)-(\d+)\.json", os.path.basename(p))
    if m:
        shapes.append((int(m.group(1)), int(m.group(2))))
if not shapes:
    sys.exit(f"no quant-CONTEXT-BATCH.json in {out}")

rows = []
for ctx, b in sorted(shapes, reverse=True):
    bench = load(os.path.join(out, f"quant-{ctx}-{b}.json"))
    by = {r["model"].split("/")[-2]: r for r in (bench or {}).get("results", [])}
    odb = {m: load(os.path.join(out, f"odb-{m}-{ctx}-{b}.json")) for m in ("gqa-full", "gqa-fp8")}
    print(f"== context {ctx} x batch {b}")
    for name in ("gqa-full", "cai", "cai-fp8"):
        r = by.get(name)
        if r:
            print(f"  {name:9s} (mixattn bench)     {r['decode_ms_per_step']:8.3f} ms/step {r['tokens_per_second']:9.1f} tok/s  "
                  f"graph={r['cuda_graph']!s:5s} KV/seq {r['kv_bytes_per_sequence'] / 2**20:8.1f} MiB  seqs in 64 GiB {r['sequences_in_budget']}")
    for name, r in odb.items():
        if r:
            print(f"  {name:9s} (ort_decode_bench)  {r['decode_ms_per_step']:8.3f} ms/step {r['tokens_per_second']:9.1f} tok/s  "
                  f"{r['cache_dtype']:12s} KV/seq {r['kv_bytes_per_sequence'] / 2**20:8.1f} MiB  seqs in 64 GiB {BUDGET // r['kv_bytes_per_sequence']}")
    cai, fp8, full = by.get("cai"), by.get("cai-fp8"), by.get("gqa-full")
    row = {"shape": f"{ctx // 1024}K x {b}"}
    if cai and fp8:
        row["fp8/cai"] = median([a / c for a, c in zip(cai["decode_ms_per_step_rounds"], fp8["decode_ms_per_step_rounds"])])
    if fp8 and odb["gqa-fp8"]:
        row["fp8/gqa-fp8"] = fp8["tokens_per_second"] / odb["gqa-fp8"]["tokens_per_second"]
    if fp8 and full:
        row["fp8/gqa-full"] = fp8["speedup"]  # median of per-round ratios against gqa-full, the bench's first model
    if full and odb["gqa-full"]:
        row["odb/bench"] = odb["gqa-full"]["decode_ms_per_step"] / full["decode_ms_per_step"]
        row["kv agree"] = "yes" if odb["gqa-full"]["kv_bytes_per_sequence"] == full["kv_bytes_per_sequence"] else "NO"
    for name, r in (("gqa-full", full), ("cai", cai), ("cai-fp8", fp8)):
        if r:
            row[name] = (r["decode_ms_per_step"], r["tokens_per_second"], r["kv_bytes_per_sequence"], r["sequences_in_budget"])
    for name, key in (("gqa-fp8", "gqa-fp8"), ("gqa-full", "gqa-full (odb)")):
        if odb[name]:
            r = odb[name]
            row[key] = (r["decode_ms_per_step"], r["tokens_per_second"], r["kv_bytes_per_sequence"], BUDGET // r["kv_bytes_per_sequence"])
    rows.append(row)


def cell(row, key):
    v = row.get(key)
    if v is None:
        return "-"
    return f"{v[0]:.3f} ({v[1]:,.0f})"


def ratio(row, key):
    return f"{row[key]:.2f}x" if key in row else "-"


models = ("gqa-full", "gqa-full (odb)", "gqa-fp8", "cai", "cai-fp8")
print()
print("ms/step (tok/s); gqa-fp8 and gqa-full (odb) by ort_decode_bench, the rest by mixattn bench (medians of rounds)")
print("| context x batch | " + " | ".join(models) + " | cai-fp8 / cai | cai-fp8 / gqa-fp8 | cai-fp8 / gqa-full | gqa-full: ort_decode_bench / bench ms (KV agree) |")
print("| --- |" + " ---: |" * len(models) + " ---: | ---: | ---: | --- |")
for row in rows:
    agree = f"{row['odb/bench']:.3f} ({row['kv agree']})" if "odb/bench" in row else "-"
    print(f"| {row['shape']} | " + " | ".join(cell(row, m) for m in models) +
          f" | {ratio(row, 'fp8/cai')} | {ratio(row, 'fp8/gqa-fp8')} | {ratio(row, 'fp8/gqa-full')} | {agree} |")
print()
kv_models = ("gqa-full", "gqa-fp8", "cai", "cai-fp8")
print("KV bytes per sequence (MiB) and sequences in 64 GiB")
print("| context x batch | " + " | ".join(kv_models) + " |")
print("| --- |" + " ---: |" * len(kv_models))
for row in rows:
    print(f"| {row['shape']} | " + " | ".join(
        f"{row[m][2] / 2**20:,.1f} ({row[m][3]:,})" if m in row else "-" for m in kv_models) + " |")
