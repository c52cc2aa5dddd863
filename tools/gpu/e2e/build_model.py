"""Writes a 1B-class Llama-style decoder in onnxruntime-genai's layout (GroupQueryAttention with fused rotary,
SimplifiedLayerNormalization, SiLU MLP), fp16 (or fp32), random weights, weights in one external-data file, and the
genai_config.json onnxruntime-genai's builder writes for it (past_present_share_buffer, as the builder sets for GQA).

usage: python3 build_model.py OUT_DIR [--layers 24] [--hidden 2048] [--heads 32] [--kv-heads 8] [--ffn 5632]
                              [--vocab 32000] [--max-pos 131072] [--dtype fp16|fp32] [--norms skip|plain]
Random weights (seeded, N(0, 0.02)): the benchmarks measure speed and memory, not text. tools/genai-compare builds its
fp32 CPU model with this script.

--norms skip (default) writes the residual stream as GenAI's builder does: the first norm a SimplifiedLayerNormalization,
every later one a com.microsoft SkipSimplifiedLayerNormalization that also adds the residual (its fourth output is the
sum); --norms plain (the fixture of the first four sessions) keeps separate Add nodes before plain norms (48 more small
kernels a step at 24 layers; ORT does not fuse them, as the sum also feeds the next residual Add).
"""
import argparse
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--layers", type=int, default=24)
p.add_argument("--hidden", type=int, default=2048)
p.add_argument("--heads", type=int, default=32)
p.add_argument("--kv-heads", type=int, default=8)
p.add_argument("--ffn", type=int, default=5632)
p.add_argument("--vocab", type=int, default=32000)
p.add_argument("--max-pos", type=int, default=131072)
p.add_argument("--norms", choices=["skip", "plain"], default="skip")
p.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16")
a = p.parse_args()
DT = np.float16 if a.dtype == "fp16" else np.float32
ELEM = TensorProto.FLOAT16 if a.dtype == "fp16" else TensorProto.FLOAT
H, nh, kvh, L, F, V = a.hidden, a.heads, a.kv_heads, a.layers, a.ffn, a.vocab
hd = H // nh
rng = np.random.default_rng(0)
inits, nodes = [], []
count = [0]


def init(name, arr):
    inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
    return name


def w(name, *shape):
    return init(name, (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(DT))


def node(op, inputs, outputs=None, domain="", **attrs):
    count[0] += 1
    outputs = outputs or [f"{op}_{count[0]}"]
    nodes.append(helper.make_node(op, inputs, outputs, name=f"{op}_node_{count[0]}", domain=domain, **attrs))
    return outputs[0]


def norm(x, name):
    return node("SimplifiedLayerNormalization", [x, init(name, np.ones(H, DT))], axis=-1, epsilon=1e-5, stash_type=1)


def residual_norm(x, residual, name, last=False):
    """norm(residual + x) and the new residual (residual + x); last: the norm only (GenAI's last_layernorm)."""
    if a.norms == "plain":
        total = node("Add", [residual, x])
        return norm(total, name), total
    gamma = init(name, np.ones(H, DT))
    outs = [f"{name}.out"] if last else [f"{name}.out", "", "", f"{name}.sum"]
    node("SkipSimplifiedLayerNormalization", [x, residual, gamma], outs, domain="com.microsoft", epsilon=1e-5)
    return outs[0], (None if last else outs[3])


inv_freq = 1.0 / (10000.0 ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
freqs = np.outer(np.arange(a.max_pos, dtype=np.float64), inv_freq)
cos = init("cos_cache", np.cos(freqs).astype(DT))
sin = init("sin_cache", np.sin(freqs).astype(DT))
inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
          helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"])]
outputs = [helper.make_tensor_value_info("logits", ELEM, ["batch_size", "sequence_length", V])]
for i in range(L):
    for kv in ("key", "value"):
        inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kv}", ELEM, ["batch_size", kvh, "past_sequence_length", hd]))
        outputs.append(helper.make_tensor_value_info(f"present.{i}.{kv}", ELEM, ["batch_size", kvh, "total_sequence_length", hd]))
one = init("one_i64", np.array(1, np.int64))
ax1 = init("axes_1", np.array([1], np.int64))
seqlens = node("Cast", [node("Sub", [node("ReduceSum", ["attention_mask", ax1], keepdims=0), one])], ["seqlens_k"], to=TensorProto.INT32)
total = node("Cast", [node("Gather", [node("Shape", ["attention_mask"]), init("index_1", np.array(1, np.int64))], axis=0)], ["total_sequence_length"], to=TensorProto.INT32)
residual = node("Gather", [w("embed", V, H), "input_ids"], axis=0)
n1 = norm(residual, "l0.ln1")
for i in range(L):
    if i > 0:
        n1, residual = residual_norm(mlp, residual, f"l{i}.ln1")
    q = node("MatMul", [n1, w(f"l{i}.q", H, nh * hd)])
    k = node("MatMul", [n1, w(f"l{i}.k", H, kvh * hd)])
    v = node("MatMul", [n1, w(f"l{i}.v", H, kvh * hd)])
    att = node("GroupQueryAttention", [q, k, v, f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens, total, cos, sin],
               [f"l{i}.attn", f"present.{i}.key", f"present.{i}.value"], domain="com.microsoft",
               num_heads=nh, kv_num_heads=kvh, do_rotary=1, local_window_size=-1)
    n2, residual = residual_norm(node("MatMul", [att, w(f"l{i}.o", nh * hd, H)]), residual, f"l{i}.ln2")
    g = node("MatMul", [n2, w(f"l{i}.gate", H, F)])
    u = node("MatMul", [n2, w(f"l{i}.up", H, F)])
    act = node("Mul", [node("Mul", [g, node("Sigmoid", [g])]), u])
    mlp = node("MatMul", [act, w(f"l{i}.down", F, H)])
node("MatMul", [residual_norm(mlp, residual, "final_norm", last=True)[0], w("lm_head", H, V)], ["logits"])
model = helper.make_model(helper.make_graph(nodes, "llama1b_gqa", inputs, outputs, initializer=inits),
                          opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
                          producer_name="MixAttention.Onnx tools/gpu/e2e/build_model.py")
model.ir_version = 10
os.makedirs(a.out, exist_ok=True)
onnx.save(model, os.path.join(a.out, "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
          location="model.onnx.data", size_threshold=1024)
params = sum(int(np.prod(t.dims)) for t in inits)
json.dump({"num_hidden_layers": L, "hidden_size": H, "num_attention_heads": nh, "num_key_value_heads": kvh,
           "intermediate_size": F, "vocab_size": V, "parameters": params, "norms": a.norms, "dtype": a.dtype},
          open(os.path.join(a.out, "config.json"), "w"), indent=1)
# What onnxruntime-genai's builder writes for a GQA Llama (src/python/py/models/builders/base.py, make_genai_config).
genai = {
    "model": {
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "type": "llama", "vocab_size": V, "context_length": a.max_pos,
        "decoder": {
            "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
            "filename": "model.onnx", "head_size": hd, "hidden_size": H, "num_attention_heads": nh,
            "num_hidden_layers": L, "num_key_value_heads": kvh,
            "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                       "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
            "outputs": {"logits": "logits", "present_key_names": "present.%d.key", "present_value_names": "present.%d.value"},
        },
    },
    "search": {"diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0, "max_length": a.max_pos,
               "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1, "num_return_sequences": 1, "past_present_share_buffer": True,
               "repetition_penalty": 1.0, "temperature": 1.0, "top_k": 1, "top_p": 1.0},
}
json.dump(genai, open(os.path.join(a.out, "genai_config.json"), "w"), indent=1)
print(f"wrote {a.out}/model.onnx: {L} layers, {params / 1e9:.3f} B parameters, {a.dtype}")
