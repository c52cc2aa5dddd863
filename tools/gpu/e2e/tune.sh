#!/usr/bin/env bash
# Runtime of `mixattn tune` (issue 20) on the GPU machine: the 24-layer 1.2 B e2e model (build_model.py: GenAI GQA
# layout, fp16, random weights) over 4096 tokens (random ids: the weights are random, so any text is), every candidate
# converted in memory and run on CUDA. Needs (carried from the repo root): .ortgpu (docs/gpu.md), .ortinc
# (tools/gpu/stage-headers.sh), .pub/mixattn.tar.xz (tools/gpu/e2e/publish.sh).
# Usage: tools/gpu/e2e/tune.sh      (env: BUDGET, default 25%; WINDOW, default 1024; SHARE, default 4; TOKENS, default 4096)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
OUT=${OUT:-$root/out/tune}; work=${TMPDIR:-/tmp}/mixattn-tune
rm -rf "$work"; mkdir -p "$OUT"
# shellcheck source=tools/gpu/e2e/setup.sh
source tools/gpu/e2e/setup.sh
step "build the 1.2 B model"
python3 tools/gpu/e2e/build_model.py "$work/base" 2>&1 | tail -2 || exit 1
python3 -c "import numpy as np; print(' '.join(map(str, np.random.default_rng(1).integers(0, 32000, ${TOKENS:-4096}))))" > "$work/ids.txt"
step "tune"
start=$(date +%s.%N)
"$work/app/mixattn" tune "$work/base/model.onnx" --tokens "$work/ids.txt" --budget "${BUDGET:-25%}" --window "${WINDOW:-1024}" \
  --context "${TOKENS:-4096}" --prefill-chunk 256 --share-distance "${SHARE:-4}" --device cuda --json -o "$OUT/tuned.json" \
  > "$OUT/tune.json" 2> "$OUT/tune.err"
rc=$?
end=$(date +%s.%N)
echo "rc=$rc tune_seconds=$(python3 -c "print(round($end - $start, 1))")" | tee "$OUT/tune-time.txt"
grep -v onnxruntime "$OUT/tune.err" | tail -15
python3 - "$OUT/tune.json" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"no result: {e}")
c = d["chosen"]
print(f"chosen {c['layout']} kv {c['kv_bytes_per_sequence']} of {d['unconverted_bytes']} (budget {d['budget_bytes']}), "
      f"mean KL {c['quality']['mean_kl']:.4g}, top-1 {c['quality']['top1_agreement']:.3f}; {d['evaluations']} layouts in {d['elapsed_s']:.1f} s")
PY
