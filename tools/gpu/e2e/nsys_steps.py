"""Splits the CUDA-graph decode steps of an Nsight Systems report (exported to SQLite) into host and GPU phases, per
round of `mixattn bench --rounds N`: where a step's time goes when it changes from one round to the next.

usage: python3 nsys_steps.py REPORT.sqlite

Rounds are found from the gaps: a replay more than 5x the median period after the one before starts a new round
(the other models ran in between).

A graphed step is one cudaGraphLaunch (the replay); the step's other host calls are those of the same thread between
two replays (the input copy before, the synchronisation after). Per step:
  gpu      the graph's execution on the GPU (CUPTI graph trace: first node start to last node end)
  lag      cudaGraphLaunch entered -> graph starts on the GPU
  launch   time inside cudaGraphLaunch
  tail     graph ends on the GPU -> the host call that waited for it returns (synchronisation wake-up)
  host     previous step's wait returned -> this step's cudaGraphLaunch entered (host work: inputs, copies, ORT)
  period   cudaGraphLaunch to cudaGraphLaunch
Prints the median of each per round, and the API calls between replays with their median durations.
"""
import collections
import sqlite3
import statistics
import sys

path = sys.argv[1]
db = sqlite3.connect(path)
tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
names = dict(db.execute("select id, value from StringIds"))
api = [(s, e, tid, corr, names.get(n, "?")) for s, e, tid, corr, n in
       db.execute("select start, end, globalTid, correlationId, nameId from CUPTI_ACTIVITY_KIND_RUNTIME order by start")]
launches = [a for a in api if a[4].startswith("cudaGraphLaunch")]
if not launches:
    sys.exit(f"{path}: no cudaGraphLaunch calls (tables: {sorted(tables)})")
gpu = {}
if "CUPTI_ACTIVITY_KIND_GRAPH_TRACE" in tables:
    for s, e, corr in db.execute("select start, end, correlationId from CUPTI_ACTIVITY_KIND_GRAPH_TRACE"):
        gpu[corr] = (s, e)
else:  # node-level trace: a graph's kernels carry the launch's correlation id
    for s, e, corr in db.execute("select start, end, correlationId from CUPTI_ACTIVITY_KIND_KERNEL"):
        a, b = gpu.get(corr, (s, e))
        gpu[corr] = (min(a, s), max(b, e))
tid = launches[0][2]
thread = [a for a in api if a[2] == tid]
index = {id(a): i for i, a in enumerate(thread)}
steps = []
for k, L in enumerate(launches):
    if L[2] != tid or L[3] not in gpu:
        continue
    g0, g1 = gpu[L[3]]
    i = index[id(L)]
    # The wait for this replay: the first call on the thread after the launch that returns after the graph ended.
    wait = next((a for a in thread[i + 1:] if a[1] >= g1), None)
    prev_wait_end = steps[-1]["wait_end"] if steps else None
    between = [a for a in thread[index[id(launches[k - 1])] + 1:i]] if k > 0 else []
    steps.append({"launch_start": L[0], "launch": L[1] - L[0], "lag": g0 - L[0], "gpu": g1 - g0,
                  "tail": (wait[1] - g1) if wait else None, "wait_end": wait[1] if wait else None,
                  "host": (L[0] - prev_wait_end) if prev_wait_end else None, "between": between})
for k in range(1, len(steps)):
    steps[k]["period"] = steps[k]["launch_start"] - steps[k - 1]["launch_start"]
typical = statistics.median(s["period"] for s in steps[1:]) if len(steps) > 1 else 0
groups = [[steps[0]]] if steps else []
for s in steps[1:]:
    if s["period"] > 5 * typical:
        groups.append([])
    groups[-1].append(s)
print(f"{path}: {len(steps)} graphed steps on thread {tid} in {len(groups)} rounds of {[len(g) for g in groups]} steps")
cols = ["period", "gpu", "lag", "launch", "tail", "host"]
print("round  " + "".join(f"{c:>10s}" for c in cols) + "   (µs, medians)")
for r, group in enumerate(groups):
    chunk = group[1:]  # the first step of a round follows another model's steps
    row = []
    for c in cols:
        v = [s[c] for s in chunk if s.get(c) is not None]
        row.append(f"{statistics.median(v) / 1e3:10.1f}" if v else f"{'-':>10s}")
    print(f"{r + 1:5d}  " + "".join(row))
    calls = collections.defaultdict(list)
    for s in chunk:
        for a in s["between"]:
            calls[a[4]].append(a[1] - a[0])
    print("       between replays: " + ", ".join(f"{n.split('_v')[0]} ×{len(v) / max(len(chunk), 1):.1f} {statistics.median(v) / 1e3:.1f} µs"
                                               for n, v in sorted(calls.items(), key=lambda kv: -sum(kv[1]))[:6]))
