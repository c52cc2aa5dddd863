"""Decode tokens/s and KV / process memory on CPU: onnxruntime-genai's Generator on a GenAI-layout model against our
`cai` and `native` conversions of the same model (issue 21). Every measurement runs in its own process; this script
starts them one after the other, takes each one's peak RSS from the kernel (wait4), and prints ratios against genai
measured in the same run.

usage: python3 compare.py --mixattn PATH/mixattn --genai PATH/genai-bench --out DIR [--work DIR]
                          [--shapes 4096:1,4096:8,16384:1,16384:8] [--native-contexts 4096] [--systems genai,cai,native] [--steps 32]
                          [--layers 8 --hidden 768 --heads 6 --kv-heads 2 --ffn 2048 --vocab 32000] [--window 1024]
Writes DIR/genai-compare.csv (one row per system and shape) and DIR/genai-compare.md (the table).
"""
import argparse
import csv
import json
import os
import selectors
import subprocess
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--mixattn", required=True)
p.add_argument("--genai", required=True)
p.add_argument("--out", required=True)
p.add_argument("--work", default="/tmp/genai-compare")
p.add_argument("--shapes", default="4096:1,4096:8,16384:1,16384:8")
p.add_argument("--native-contexts", default="4096", help="contexts at which the native conversion runs too (comma list)")
p.add_argument("--systems", default="genai,cai,native", help="which systems run (comma list; a rerun of one cell)")
p.add_argument("--steps", type=int, default=32)
p.add_argument("--window", type=int, default=1024)
p.add_argument("--timeout", type=int, default=240, help="seconds for one measurement")
for name, default in [("layers", 8), ("hidden", 768), ("heads", 6), ("kv-heads", 2), ("ffn", 2048), ("vocab", 32000)]:
    p.add_argument(f"--{name}", type=int, default=default)
a = p.parse_args()
here = os.path.dirname(os.path.abspath(__file__))
os.makedirs(a.out, exist_ok=True)
base, cai, native = (os.path.join(a.work, n) for n in ("base", "cai", "native"))


def log(msg):
    print(f"== {msg} ({time.strftime('%H:%M:%S', time.gmtime())})", flush=True)


def run_measured(cmd, timeout):
    """Runs cmd (killed after timeout s); returns (returncode, stdout, stderr, its peak RSS in bytes, seconds).
    fork/exec and os.wait4, so the peak RSS is this child's alone (RUSAGE_CHILDREN would be the largest child so far)."""
    t0 = time.time()
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(w_out, 1)
        os.dup2(w_err, 2)
        os.close(r_out)
        os.close(r_err)
        try:
            os.execv(cmd[0], cmd)
        finally:
            os._exit(127)
    os.close(w_out)
    os.close(w_err)
    sel = selectors.DefaultSelector()
    bufs = {r_out: [], r_err: []}
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    open_fds = set(bufs)
    killed = False
    while open_fds:
        left = timeout - (time.time() - t0)
        if left <= 0 and not killed:
            os.kill(pid, 9)
            killed = True
        for key, _ in sel.select(timeout=max(0.1, min(left, 1.0)) if not killed else 1.0):
            chunk = os.read(key.fd, 65536)
            if chunk:
                bufs[key.fd].append(chunk)
            else:
                sel.unregister(key.fd)
                os.close(key.fd)
                open_fds.discard(key.fd)
    _, status, usage = os.wait4(pid, 0)
    rc = 124 if killed else os.waitstatus_to_exitcode(status)
    return rc, b"".join(bufs[r_out]).decode(), b"".join(bufs[r_err]).decode(), usage.ru_maxrss * 1024, time.time() - t0


log("build the model")
subprocess.run([sys.executable, os.path.join(here, "..", "gpu", "e2e", "build_model.py"), base, "--dtype", "fp32",
                "--layers", str(a.layers), "--hidden", str(a.hidden), "--heads", str(a.heads), "--kv-heads", str(a.kv_heads),
                "--ffn", str(a.ffn), "--vocab", str(a.vocab), "--max-pos", "32768"], check=True)
params = json.load(open(os.path.join(base, "config.json")))["parameters"]
log("convert: cai and native")
for out_dir, layout in ((cai, ["--layout", "cai", "--window", str(a.window)]), (native, ["--layout", "native"])):
    rc, out, err, _, s = run_measured([a.mixattn, "convert", os.path.join(base, "model.onnx"), "-o", os.path.join(out_dir, "model.onnx"), *layout,
                              "--force", "--check", "structure", "--json"], 600)
    if rc != 0:
        sys.exit(f"convert {layout} failed ({rc}): {err[-2000:]}")
    print(f"   {layout[1]}: {s:.1f} s", flush=True)

rows = []
fields = ["system", "context", "batch", "steps", "decode_ms_per_step", "tokens_per_second", "prefill_tokens_per_second",
          "kv_bytes_allocated", "kv_bytes_per_sequence", "peak_rss_bytes", "seconds", "status"]
csv_path = os.path.join(a.out, "genai-compare.csv")


def record(row):
    rows.append(row)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


native_contexts = {int(c) for c in a.native_contexts.split(",") if c}
for shape in a.shapes.split(","):
    ctx, batch = (int(x) for x in shape.split(":"))
    systems = [("genai", [a.genai, base, "--context", str(ctx), "--batch", str(batch), "--steps", str(a.steps)]),
               ("cai", [a.mixattn, "bench", os.path.join(cai, "model.onnx"), "--context", str(ctx), "--batch", str(batch),
                        "--steps", str(a.steps), "--json"])]
    if ctx in native_contexts:
        systems.append(("native", [a.mixattn, "bench", os.path.join(native, "model.onnx"), "--context", str(ctx), "--batch", str(batch),
                                   "--steps", str(a.steps), "--json"]))
    for name, cmd in systems:
        if name not in a.systems.split(","):
            continue
        log(f"{name} context {ctx} batch {batch}")
        rc, out, err, rss, secs = run_measured(cmd, a.timeout)
        row = {"system": name, "context": ctx, "batch": batch, "steps": a.steps, "peak_rss_bytes": rss, "seconds": round(secs, 1)}
        if rc != 0:
            row["status"] = "timeout" if rc == 124 else f"exit {rc}"
            print(f"   {row['status']}: {err[-1500:]}", flush=True)
            record(row)
            continue
        if name == "genai":
            r = json.loads(out.strip().splitlines()[-1])
        else:
            r = json.loads(out)["results"][0]
        for k in ("decode_ms_per_step", "tokens_per_second", "prefill_tokens_per_second", "kv_bytes_allocated", "kv_bytes_per_sequence"):
            row[k] = r[k]
        row["status"] = "ok"
        print(f"   {r['tokens_per_second']:.1f} tokens/s, KV {r['kv_bytes_allocated'] / 2**20:.1f} MiB, peak RSS {rss / 2**30:.2f} GiB, {secs:.0f} s",
              flush=True)
        record(row)

# The table: ratios against genai at the same shape, from this run.
by = {(r["system"], r["context"], r["batch"]): r for r in rows if r.get("status") == "ok"}
lines = [f"model: Llama-style GenAI layout, fp32, {a.layers} layers, hidden {a.hidden}, {a.heads} query / {a.kv_heads} KV heads, "
         f"FFN {a.ffn}, vocab {a.vocab}, {params / 1e6:.0f} M parameters; cai window {a.window}; {a.steps} timed decode steps",
         "",
         "| context | batch | system | tokens/s | vs genai | KV allocated | KV vs genai | peak process memory |",
         "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
for shape in a.shapes.split(","):
    ctx, batch = (int(x) for x in shape.split(":"))
    g = by.get(("genai", ctx, batch))
    for name in ("genai", "cai", "native"):
        r = by.get((name, ctx, batch))
        if r is None:
            continue
        speed = f"{r['tokens_per_second'] / g['tokens_per_second']:.2f}×" if g else "-"
        kv = f"{g['kv_bytes_allocated'] / r['kv_bytes_allocated']:.1f}× less" if g and name != "genai" else "-"
        lines.append(f"| {ctx} | {batch} | {name} | {r['tokens_per_second']:.1f} | {speed} | {r['kv_bytes_allocated'] / 2**20:.0f} MiB | {kv} | "
                     f"{r['peak_rss_bytes'] / 2**30:.2f} GiB |")
table = "\n".join(lines)
open(os.path.join(a.out, "genai-compare.md"), "w").write(table + "\n")
print(table)
