#!/usr/bin/env bash
# Copies the ORT 1.31 C/C++ headers from the NuGet cache into .ortinc/ (git-ignored through
# .git/info/exclude) so that they travel to the GPU machine with `carry: [".ortgpu", ".ortinc"]`.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
src=${NUGET_PACKAGES:-$HOME/.nuget/packages}/microsoft.ml.onnxruntime.gpu.linux/1.31.0/buildTransitive/native/include
mkdir -p "$root/.ortinc"
cp "$src"/*.h "$src"/*.inc "$root/.ortinc/" 2>/dev/null || cp "$src"/*.h "$root/.ortinc/"
grep -qx '/.ortinc/' "$root/.git/info/exclude" 2>/dev/null || echo '/.ortinc/' >> "$root/.git/info/exclude"
du -sh "$root/.ortinc"
