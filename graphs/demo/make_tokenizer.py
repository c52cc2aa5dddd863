#!/usr/bin/env python3
"""Trims the GPT-2 tokenizer of tiny-random-gpt2 to the 1000 ids the sample model (graphs/gpt2-ortattention) knows.

GPT-2's byte-level BPE numbers its tokens 0-255 (bytes) then 256+i for merge i, so the first 1000 ids form a
complete, self-consistent BPE: the 256 byte tokens plus the first 744 merges. Added tokens above 999
(<|endoftext|> = 50256 and the CodeGen whitespace runs) are dropped, so the tokenizer never emits an id the
model cannot embed. Standard library only.

usage: python3 make_tokenizer.py [SRC_DIR [OUT_DIR]]   (SRC_DIR holds tokenizer.json, tokenizer_config.json;
       default graphs/gpt2-tokenizer, the full GPT-2 tokenizer of tiny-random-gpt2-fp32;
       its tokenizer.json is committed as tokenizer.json.br: run tools/fixtures/unpack-fixtures.sh first)
"""
import json
import os
import sys

VOCAB = 1000

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpt2-tokenizer")
out = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(src, "tokenizer.json"), encoding="utf-8") as f:
    tok = json.load(f)
with open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8") as f:
    cfg = json.load(f)

vocab = {t: i for t, i in tok["model"]["vocab"].items() if i < VOCAB}
merges = []
for m in tok["model"]["merges"]:
    a, b = m.split(" ") if isinstance(m, str) else m
    if a in vocab and b in vocab and vocab.get(a + b, VOCAB) < VOCAB:
        merges.append(m)
assert len(vocab) == VOCAB and len(merges) == VOCAB - 256, (len(vocab), len(merges))
tok["model"]["vocab"] = vocab
tok["model"]["merges"] = merges
tok["added_tokens"] = [a for a in tok["added_tokens"] if a["id"] < VOCAB]

cfg = {
    "add_prefix_space": False,
    "clean_up_tokenization_spaces": False,
    "model_max_length": 2048,
    "tokenizer_class": "GPT2Tokenizer",
    # The ChatML template of the Qwen1.5 / Qwen2 instruct models (README.md), so the chat client and the sample
    # server render real Jinja on the demo model.
    "chat_template": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
}
with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
    json.dump(tok, f, ensure_ascii=False, separators=(",", ":"))
with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump(cfg, f, ensure_ascii=False, indent=2)
    f.write("\n")
print(f"{len(vocab)} tokens, {len(merges)} merges -> {out}")
