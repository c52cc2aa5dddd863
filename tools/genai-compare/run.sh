#!/usr/bin/env bash
# onnxruntime-genai vs our conversions on CPU (issue 21), on a machine with python3 (numpy, onnx) and no dotnet:
# unpacks the apps from .pub (tools/genai-compare/publish.sh), then compare.py builds the model, converts it and runs
# every measurement in its own process. Usage: tools/genai-compare/run.sh [compare.py options]; results in $OUT
# (default out/genai-compare): genai-compare.csv, genai-compare.md, cpu.txt (the machine).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${OUT:-$root/out/genai-compare}; work=${MIXATTN_GENAI_WORK:-${TMPDIR:-/tmp}/mixattn-genai}
rm -rf "$work"; mkdir -p "$OUT" "$work/mixattn" "$work/genai"
tar xJf "$root/.pub/mixattn.tar.xz" -C "$work/mixattn"
tar xJf "$root/.pub/genai-bench.tar.xz" -C "$work/genai"
# One ORT for both: the CPU build genai ships with.
cp "$work/genai/libonnxruntime.so" "$work/mixattn/"
{ lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|NUMA node\(s\)|Flags" | cut -c1-200; free -g | head -2; } > "$OUT/cpu.txt"
cat "$OUT/cpu.txt"
python3 "$root/tools/genai-compare/compare.py" --mixattn "$work/mixattn/mixattn" --genai "$work/genai/genai-bench" \
  --out "$OUT" --work "$work/models" "$@"
