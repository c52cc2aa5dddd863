#!/usr/bin/env python3
"""Writes the single-node ONNX graphs that the GPU harness needs.

usage: make_models.py SPEC_FILE OUT_DIR     (SPEC_FILE = output of `harness plan`)

Spec lines:  NAME owner|reader DTYPE HQ HKV WINDOW SOFTCAP HAS_NEW_LENGTHS [ROTARY INTERLEAVED [CACHE KRANK VRANK]]
             (CACHE i8 | f8: quantized caches with k_scale / v_scale inputs of rank KRANK / VRANK, 1 or 4)
             NAME gqa DTYPE HQ HKV LOCAL_WINDOW SLIDING_WINDOW_CACHE [f8]
             (f8: float8e4m3fn caches, per-tensor k_scale / v_scale [1], k_quant_type = v_quant_type = PER_TENSOR)
All dimensions are symbolic, so one graph serves every batch / length / cache size.
"""
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

DT = {"f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16,
      "i8": TensorProto.INT8, "f8": TensorProto.FLOAT8E4M3FN}


def vi(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


def ours(name, kind, dt, hq, hkv, window, softcap, has_nl, rotary=0, interleaved=0, cache=None, krank=1, vrank=1):
    t = DT[dt]
    ct = DT[cache] if cache else t
    attrs = dict(num_heads=hq, kv_num_heads=hkv, window=window)
    if softcap > 0:
        attrs["softcap"] = softcap
    if rotary:
        attrs["rotary_interleaved"] = interleaved
    if kind == "owner":
        ins = [vi("query", t, ["B", "S", "QH"]), vi("key", t, ["B", "S", "KH"]), vi("value", t, ["B", "S", "KH"]),
               vi("past_key", ct, ["B", "HKV", "C", "D"]), vi("past_value", ct, ["B", "HKV", "C", "D"]),
               vi("past_lengths", TensorProto.INT32, ["B"])]
        outs = [vi("output", t, ["B", "S", "QH"]), vi("present_key", ct, ["B", "HKV", "C", "D"]),
                vi("present_value", ct, ["B", "HKV", "C", "D"])]
        op = "WindowedAttention"
    else:
        ins = [vi("query", t, ["B", "S", "QH"]), vi("key_cache", ct, ["B", "HKV", "C", "D"]),
               vi("value_cache", ct, ["B", "HKV", "C", "D"]), vi("past_lengths", TensorProto.INT32, ["B"])]
        outs = [vi("output", t, ["B", "S", "QH"])]
        op = "SharedKvAttention"
    if has_nl:
        ins.append(vi("new_lengths", TensorProto.INT32, ["B"]))
    if rotary:  # the op's own rotary: cos/sin caches [M, R/2] after new_lengths
        ins += [vi("cos_cache", t, ["M", "R2"]), vi("sin_cache", t, ["M", "R2"])]
    names = [i.name for i in ins]
    if cache:  # k_scale / v_scale after the optional inputs; the absent ones before them as "" (docs/ops.md)
        if not has_nl:
            names.append("")
        if not rotary:
            names += ["", ""]
        scale = lambda n, rank: vi(n, TensorProto.FLOAT, [1] if rank == 1 else [1, "HKV", 1, n.upper() + "D"])
        ins += [scale("k_scale", krank), scale("v_scale", vrank)]
        names += ["k_scale", "v_scale"]
    node = helper.make_node(op, names, [o.name for o in outs], domain="com.mixattention", **attrs)
    graph = helper.make_graph([node], name, ins, outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.mixattention", 1)],
                             ir_version=10 if cache == "f8" else 8)


def gqa(name, dt, hq, hkv, local_window, swc, cache=None):
    t = DT[dt]
    ct = DT[cache] if cache else t
    ins = [vi("query", t, ["B", "S", "QH"]), vi("key", t, ["B", "S", "KH"]), vi("value", t, ["B", "S", "KH"]),
           vi("past_key", ct, ["B", "HKV", "C", "D"]), vi("past_value", ct, ["B", "HKV", "C", "D"]),
           vi("seqlens_k", TensorProto.INT32, ["B"]), vi("total_sequence_length", TensorProto.INT32, [1])]
    outs = [vi("output", t, ["B", "S", "QH"]), vi("present_key", ct, ["B", "HKV", "C", "D"]),
            vi("present_value", ct, ["B", "HKV", "C", "D"])]
    attrs = dict(num_heads=hq, kv_num_heads=hkv, local_window_size=local_window)
    if swc:
        attrs["sliding_window_cache"] = 1
    names = [i.name for i in ins]
    if cache:  # GQA's inputs 7-11 (cos_cache, sin_cache, position_ids, attention_bias, head_sink) absent, then the scales
        names += ["", "", "", "", ""]
        ins += [vi("k_scale", TensorProto.FLOAT, [1]), vi("v_scale", TensorProto.FLOAT, [1])]
        names += ["k_scale", "v_scale"]
        attrs.update(k_quant_type="PER_TENSOR", v_quant_type="PER_TENSOR", kv_cache_bit_width=8)
    node = helper.make_node("GroupQueryAttention", names, [o.name for o in outs], domain="com.microsoft", **attrs)
    graph = helper.make_graph([node], name, ins, outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=10 if cache else 8)


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
            m = gqa(name, dt, int(f[3]), int(f[4]), int(f[5]), int(f[6]), *f[7:8])
        else:
            q = (f[10], int(f[11]), int(f[12])) if len(f) > 10 else ()
            m = ours(name, kind, dt, int(f[3]), int(f[4]), int(f[5]), float(f[6]), int(f[7]), *map(int, f[8:10]), *q)
        onnx.save(m, str(out / (name + ".onnx")))
        n += 1
    print(f"make_models: wrote {n} graphs to {out}")


if __name__ == "__main__":
    main()
