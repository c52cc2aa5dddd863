"""Prints a `mixattn bench --rounds N --json` result round by round: each model's ms per step, its place in the
round's order, what the garbage collector did inside the round, and (CUDA-graph models) the host phases of a step.

usage: python3 rounds_summary.py BENCH.json [BENCH.json ...]
"""
import json
import sys

for path in sys.argv[1:]:
    d = json.load(open(path))
    res = d["results"]
    print(f"== {path}: {len(res)} models, {res[0]['rounds']} rounds of {res[0]['steps']} steps, "
          f"context {res[0]['context']} x batch {res[0]['batch']}, collect before rounds: {res[0].get('collect_before_rounds')}")
    for r in res:
        name = r["model"].split("/")[-2]
        print(f"  {name:10s} median {r['decode_ms_per_step']:.3f} ms/step, speedup {r['speedup']:.3f}")
        phases = r.get("graph_step_ms_rounds") or []
        for k, ms in enumerate(r["decode_ms_per_step_rounds"]):
            gc = (r.get("gc_rounds") or [{}] * (k + 1))[k]
            line = (f"    round {k + 1:2d} pos {r['round_positions'][k]}  {ms:7.3f} ms  gc {gc.get('gen0', '-')}/{gc.get('gen1', '-')}/"
                    f"{gc.get('gen2', '-')} pause {gc.get('pause_ms', 0):.2f} ms  alloc {gc.get('allocated_bytes_per_step', '-')} B/step")
            if k < len(phases):
                p = phases[k]
                line += f"  | inputs {p['inputs']:.3f} replay {p['replay']:.3f} logits {p['logits']:.3f} ms"
            print(line)
