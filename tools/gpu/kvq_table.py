#!/usr/bin/env python3
"""The quantized-cache decode table (issue #18, Proof 2) from one `run.sh quant` run.

usage: kvq_table.py KBENCH_QUANT_CSV... FLOORS_CSV [--gqa BENCH_FP8_CSV]

Each KBENCH_QUANT_CSV is `KBENCH_QUANT=1 KBENCH_D=d kbench` output (rows tc, tc_fp8, tc_int8 of the same shapes, one
run; d is read from the file name, `...-d64.csv`); FLOORS_CSV is `kbench floors` of the same run (read_peak_GBps,
sliding_read_1b rows). Prints, per shape, the fp16 time, the fp8 time and split count, the int8 time, their ratio to
fp16 (same run), the fp8 read rate as a share of the card's fastest measured read, and for sliding D = 128 layers the
fp8 time over the pure read of its own bytes; then which of the issue's kernel targets hold. With --gqa, also our op
against ORT GroupQueryAttention over fp8 caches (`harness bench-fp8`, both through ORT in one run) and those targets.
"""
import csv
import sys


def read_floors(path):
    peak, floors = None, {}
    for line in open(path):
        if line.startswith("# read_peak_GBps"):
            peak = float(line.split()[-1])
    for r in csv.reader(l for l in open(path) if not l.startswith("#")):
        if r and r[0] == "sliding_read_1b":
            floors[int(r[1])] = float(r[3])
    return peak, floors


def main():
    args = sys.argv[1:]
    gqa_path = None
    if "--gqa" in args:
        i = args.index("--gqa")
        gqa_path = args[i + 1]
        del args[i:i + 2]
    *runs, floors_path = args
    peak, floors = read_floors(floors_path)
    print(f"fastest measured read: {peak:.0f} GB/s\n")
    print("| kind | D | B | T | fp16 µs | fp8 µs (splits) | fp8 / fp16 | fp8 read / fastest | int8 µs | int8 / fp16 | "
          "fp8 / 1-byte floor |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    miss = {"fp8 global >= 90% of the fastest read at B*T >= 64K": [], "sliding within 1.5x of its floor": []}
    for path in runs:
        d = 0
        rows = {}
        for r in csv.reader(l for l in open(path) if not l.startswith("#")):
            if not r or r[0] == "kind":
                continue
            rows[(r[0], int(r[1]), int(r[2]), r[5])] = (float(r[7]), float(r[4]), r[6])
        d = int(path.split("-d")[-1].split(".")[0]) if "-d" in path else 128
        for (kind, b, t, name), (us, _, _) in rows.items():
            if name != "tc":
                continue
            f8, f8_bytes, f8_splits = rows[(kind, b, t, "tc_fp8")]
            i8, _, _ = rows[(kind, b, t, "tc_int8")]
            read = f8_bytes / (f8 * 1e3) / peak
            floor = ""
            if kind == "sliding" and d == 128 and b in floors:
                ratio = f8 / floors[b]
                floor = f"{ratio:.2f}"
                if ratio > 1.5:
                    miss["sliding within 1.5x of its floor"].append(f"B={b} T={t}")
            if kind == "global" and b * t >= 65536 and read < 0.9:
                miss["fp8 global >= 90% of the fastest read at B*T >= 64K"].append(f"D={d} B={b} T={t}")
            print(f"| {kind} | {d} | {b} | {t} | {us:.2f} | {f8:.2f} ({f8_splits}) | {f8 / us:.2f} | {100 * read:.0f}% | {i8:.2f} | "
                  f"{i8 / us:.2f} | {floor} |")
    if gqa_path:
        print("\n| kind | B | T | ours µs | GQA-fp8 µs | ours vs GQA | max abs output diff |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        miss["ours >= 1.0x GQA-fp8 at every measured shape"] = []
        miss["sliding >= 2x GQA-fp8"] = []
        for r in csv.DictReader(l for l in open(gqa_path) if not l.startswith("#")):
            ours, gqa = float(r["ours_us"]), float(r["gqa_us"])
            ratio = gqa / ours
            cell = f"{r['kind']} B={r['B']} T={r['T']}"
            if not ratio >= 1.0:  # NaN (GQA did not run) counts as missed
                miss["ours >= 1.0x GQA-fp8 at every measured shape"].append(cell)
            if r["kind"] == "sliding" and not ratio >= 2.0:
                miss["sliding >= 2x GQA-fp8"].append(cell)
            diff = "" if r["gqa_max_abs_diff"] == "nan" else r["gqa_max_abs_diff"]
            print(f"| {r['kind']} | {r['B']} | {r['T']} | {ours:.2f} | {gqa:.2f} | {ratio:.2f}x | {diff} |")
    print()
    for goal, cells in miss.items():
        print(f"- {goal}: {'met' if not cells else 'missed at ' + ', '.join(cells)}")


if __name__ == "__main__":
    main()
