#!/usr/bin/env bash
# Publishes what tools/genai-compare/run.sh needs on a machine without dotnet, self-contained for linux-x64, into .pub/
# (gitignored; carry .pub): mixattn.tar.xz (tools/gpu/e2e/publish.sh: trimmed, without ORT's native libraries) and
# genai-bench.tar.xz (GenAIBench, trimmed, with onnxruntime-genai's and ORT's CPU native libraries; run.sh gives the
# same libonnxruntime.so to mixattn).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
bash "$root/tools/gpu/e2e/publish.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# Trim warnings of the genai wrapper are not ours to fix: not errors here.
dotnet publish "$root/tools/genai-compare/GenAIBench" -c Release -r linux-x64 --self-contained -p:PublishTrimmed=true \
  -p:TreatWarningsAsErrors=false -o "$tmp/app" >/dev/null
rm -f "$tmp"/app/*.pdb
tar cf - -C "$tmp/app" . | xz -6 -T2 > "$root/.pub/genai-bench.tar.xz"
du -h "$root/.pub/genai-bench.tar.xz"
