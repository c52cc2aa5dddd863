#!/usr/bin/env bash
# Publishes mixattn self-contained and trimmed for linux-x64 into .pub/mixattn.tar.xz (~9 MB, gitignored),
# without ORT's own native libraries (the GPU machine gets those from .ortgpu). Run here, then carry .pub.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
dotnet publish "$root/tools/MixAttention.Onnx.Cli" -c Release -r linux-x64 --self-contained -p:PublishTrimmed=true -o "$tmp/app" >/dev/null
rm -f "$tmp"/app/libonnxruntime*.so "$tmp"/app/*.pdb
mkdir -p "$root/.pub"
tar cf - -C "$tmp/app" . | xz -6 -T2 > "$root/.pub/mixattn.tar.xz"
exclude=$(git rev-parse --git-path info/exclude); grep -qx '.pub' "$exclude" 2>/dev/null || echo '.pub' >> "$exclude"
du -h "$root/.pub/mixattn.tar.xz"
