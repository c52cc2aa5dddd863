"""Summarizes an ONNX Runtime profile written by `mixattn bench --ort-profile`: for the last N runs (the timed decode
steps), the wall time of a run, the host time spent inside nodes, and the host time per op type and provider.
For CUDA nodes the time is the host side (launch), so it shows how much of a step is launching, not computing.

usage: python3 profile_summary.py PROFILE.json [--last N]
"""
import collections
import json
import sys

path = sys.argv[1]
last = int(sys.argv[sys.argv.index("--last") + 1]) if "--last" in sys.argv else 8
events = json.load(open(path))
runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
runs = runs[-last:]
nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
per_op = collections.Counter()
per_provider = collections.Counter()
count = 0
inside = 0
for r in runs:
    t0, t1 = r["ts"], r["ts"] + r["dur"]
    for n in nodes:
        if t0 <= n["ts"] <= t1:
            a = n.get("args", {})
            per_op[a.get("op_name", "?")] += n["dur"]
            per_provider[a.get("provider", "?")] += n["dur"]
            inside += n["dur"]
            count += 1
k = max(1, len(runs))
wall = sum(r["dur"] for r in runs) / k
print(f"{path}: {len(runs)} runs, wall {wall / 1000:.3f} ms/run, {count / k:.0f} nodes/run, host time in nodes {inside / k / 1000:.3f} ms/run")
for prov, us in per_provider.most_common():
    print(f"  provider {prov:28s} {us / k / 1000:8.3f} ms/run")
for op, us in per_op.most_common(15):
    print(f"  {op:32s} {us / k / 1000:8.3f} ms/run")
