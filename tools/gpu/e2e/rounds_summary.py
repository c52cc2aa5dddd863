"""Prints a `mixattn bench --rounds N --json` result round by round: each model's ms per step, its place in the
round's order, what the garbage collector did inside the round, (CUDA-graph models) the host phases of a step, and
with --smi the card's state while the round ran (mean SM / memory clock, GPU / memory temperature, power, and any
active clock-event reasons, from an `nvidia-smi --query-gpu=... -lms N --format=csv` log as e2e.sh rounds writes it).

usage: python3 rounds_summary.py [--smi SMI.csv] BENCH.json [BENCH.json ...]
"""
import csv
import json
import sys
from datetime import datetime, timezone

args = sys.argv[1:]
smi = []
if len(args) >= 2 and args[0] == "--smi":
    with open(args[1]) as f:
        rows = list(csv.reader(f, skipinitialspace=True))
    head = [h.split(" [")[0].strip() for h in rows[0]]

    def num(v):
        try:
            return float(v.split()[0])
        except (ValueError, IndexError):
            return None

    for r in rows[1:]:
        if len(r) != len(head):
            continue
        d = dict(zip(head, r))
        # nvidia-smi's timestamp is local time; e2e.sh runs it with TZ=UTC.
        t = datetime.strptime(d["timestamp"], "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
        smi.append((t, {k: num(v) for k, v in d.items() if k != "timestamp" and "reasons" not in k},
                    {k: v for k, v in d.items() if "reasons" in k}))
    args = args[2:]


def card_state(window):
    """Mean of the smi samples inside a round's [start, end] (or the nearest sample for a round shorter than the log
    interval)."""
    if not smi or window is None:
        return ""
    start = datetime.fromisoformat(window["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(window["end"].replace("Z", "+00:00"))
    inside = [s for s in smi if start <= s[0] <= end] or [min(smi, key=lambda s: abs((s[0] - start).total_seconds()))]
    mean = {}
    for k in inside[0][1]:
        vals = [s[1][k] for s in inside if s[1][k] is not None]
        mean[k] = sum(vals) / len(vals) if vals else float("nan")
    reasons = sorted({v for s in inside for v in s[2].values() if v.strip() not in ("0x0000000000000000", "")})
    def pick(*parts):  # the column whose name has all these parts (nvidia-smi writes clocks.sm as clocks.current.sm)
        return next((v for k, v in mean.items() if all(p in k for p in parts)), float("nan"))

    return (f"  | sm {pick('clocks', 'sm'):5.0f} mem {pick('clocks', 'mem'):5.0f} MHz"
            f" gpu {pick('temperature.gpu'):3.0f} C mem {pick('temperature.mem'):3.0f} C {pick('power.draw'):4.0f} W ({len(inside)} samples)" + (f" reasons {','.join(reasons)}" if reasons else ""))


for path in args:
    d = json.load(open(path))
    res = d["results"]
    print(f"== {path}: {len(res)} models, {res[0]['rounds']} rounds of {res[0]['steps']} steps, "
          f"context {res[0]['context']} x batch {res[0]['batch']}, collect before rounds: {res[0].get('collect_before_rounds')}")
    for r in res:
        name = r["model"].split("/")[-2]
        print(f"  {name:10s} median {r['decode_ms_per_step']:.3f} ms/step, speedup {r['speedup']:.3f}")
        phases = r.get("graph_step_ms_rounds") or []
        windows = r.get("round_utc") or []
        for k, ms in enumerate(r["decode_ms_per_step_rounds"]):
            gc = (r.get("gc_rounds") or [{}] * (k + 1))[k]
            line = (f"    round {k + 1:2d} pos {r['round_positions'][k]}  {ms:7.3f} ms  gc {gc.get('gen0', '-')}/{gc.get('gen1', '-')}/"
                    f"{gc.get('gen2', '-')} pause {gc.get('pause_ms', 0):.2f} ms  alloc {gc.get('allocated_bytes_per_step', '-')} B/step")
            if k < len(phases):
                p = phases[k]
                line += f"  | inputs {p['inputs']:.3f} replay {p['replay']:.3f} logits {p['logits']:.3f} ms"
            print(line + card_state(windows[k] if k < len(windows) else None))
