#!/usr/bin/env python3
"""Writes the single-node ONNX graphs that the GPU harness needs.

usage: make_models.py SPEC_FILE OUT_DIR     (SPEC_FILE = output of `harness plan`)

Spec lines:  NAME owner|reader DTYPE HQ HKV WINDOW SOFTCAP HAS_NEW_LENGTHS [ROTARY INTERLEAVED]
             NAME gqa DTYPE HQ HKV LOCAL_WINDOW SLIDING_WINDOW_CACHE
All dimensions are symbolic, so one graph serves every batch / length / cache size.
"""
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

DT = {"f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}


def vi(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


def ours(name, kind, dt, hq, hkv, window, softcap, has_nl, rotary=0, interleaved=0):
    t = DT[dt]
    attrs = dict(num_heads=hq, kv_num_heads=hkv, window=window)
    if softcap > 0:
        attrs["softcap"] = softcap
    if rotary:
        attrs["rotary_interleaved"] = interleaved
    if kind == "owner":
        ins = [vi("query", t, ["B", "S", "QH"]), vi("key", t, ["B", "S", "KH"]), vi("value", t, ["B", "S", "KH"]),
               vi("past_key", t, ["B", "HKV", "C", "D"]), vi("past_value", t, ["B", "HKV", "C", "D"]),
               vi("past_lengths", TensorProto.INT32, ["B"])]
        outs = [vi("output", t, ["B", "S", "QH"]), vi("present_key", t, ["B", "HKV", "C", "D"]),
                vi("present_value", t, ["B", "HKV", "C", "D"])]
        op = "WindowedAttention"
    else:
        ins = [vi("query", t, ["B", "S", "QH"]), vi("key_cache", t, ["B", "HKV", "C", "D"]),
               vi("value_cache", t, ["B", "HKV", "C", "D"]), vi("past_lengths", TensorProto.INT32, ["B"])]
        outs = [vi("output", t, ["B", "S", "QH"])]
        op = "SharedKvAttention"
    if has_nl:
        ins.append(vi("new_lengths", TensorProto.INT32, ["B"]))
    if rotary:  # the op's own rotary: cos/sin caches [M, R/2] after new_lengths
        ins += [vi("cos_cache", t, ["M", "R2"]), vi("sin_cache", t, ["M", "R2"])]
    node = helper.make_node(op, [i.name for i in ins], [o.name for o in outs], domain="com.mixattention", **attrs)
    graph = helper.make_graph([node], name, ins, outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.mixattention", 1)],
                             ir_version=8)


def gqa(name, dt, hq, hkv, local_window, swc):
    t = DT[dt]
    ins = [vi("query", t, ["B", "S", "QH"]), vi("key", t, ["B", "S", "KH"]), vi("value", t, ["B", "S", "KH"]),
           vi("past_key", t, ["B", "HKV", "C", "D"]), vi("past_value", t, ["B", "HKV", "C", "D"]),
           vi("seqlens_k", TensorProto.INT32, ["B"]), vi("total_sequence_length", TensorProto.INT32, [1])]
    outs = [vi("output", t, ["B", "S", "QH"]), vi("present_key", t, ["B", "HKV", "C", "D"]),
            vi("present_value", t, ["B", "HKV", "C", "D"])]
    attrs = dict(num_heads=hq, kv_num_heads=hkv, local_window_size=local_window)
    if swc:
        attrs["sliding_window_cache"] = 1
    node = helper.make_node("GroupQueryAttention", [i.name for i in ins], [o.name for o in outs],
                            domain="com.microsoft", **attrs)
    graph = helper.make_graph([node], name, ins, outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=8)


def main():
    spec, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for line in spec.read_text().splitlines():
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        name, kind, dt = f[0], f[1], f[2]
        if kind == "gqa":
            m = gqa(name, dt, int(f[3]), int(f[4]), int(f[5]), int(f[6]))
        else:
            m = ours(name, kind, dt, int(f[3]), int(f[4]), int(f[5]), float(f[6]), int(f[7]), *map(int, f[8:10]))
        onnx.save(m, str(out / (name + ".onnx")))
        n += 1
    print(f"make_models: wrote {n} graphs to {out}")


if __name__ == "__main__":
    main()
