#!/usr/bin/env bash
# Compiles every CUDA source of the project for errors with clang's CUDA front end (-fsyntax-only: templates
# instantiated, device code checked for sm_80; no nvcc, no GPU, nothing written). For kernel work on a machine
# without the CUDA toolkit's compiler; the GPU machine's nvcc build (run.sh, kernels.sh) stays the real check, since
# clang does not read inline PTX or the sm_90 code paths.
#
#   CUDA_HEADERS=DIR tools/gpu/cuda-syntax.sh      DIR: a CUDA 12 / 13 toolkit's root (include/, nvvm/libdevice/)
#   CLANG=clang++-14 (default: clang++)   ORT_INCLUDE_DIR=DIR: also cuda_ops.cc (plain C++, ORT 1.31 headers)
#
# GoogleTest headers (for kvq_test / paged_test): the system's. Exit status: the number of files with errors.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
headers=${CUDA_HEADERS:?set CUDA_HEADERS to a CUDA toolkit root (with include/ and nvvm/libdevice/)}
clang=${CLANG:-clang++}
# clang looks for a toolkit layout (bin/, lib64/, include/, nvvm/libdevice/ and a version): a folder of links to DIR's.
fake=$(mktemp -d)
trap 'rm -rf "$fake"' EXIT
mkdir -p "$fake/bin" "$fake/nvvm" "$fake/lib64"
ln -s "$headers/include" "$fake/include"
ln -s "$headers/nvvm/libdevice" "$fake/nvvm/libdevice"
printf '#!/bin/sh\nexit 1\n' > "$fake/bin/nvcc" && chmod +x "$fake/bin/nvcc"
echo "CUDA Version 12.0.0" > "$fake/version.txt"
flags=(-x cuda -fsyntax-only --cuda-path="$fake" --cuda-gpu-arch=sm_80 -nocudalib --no-cuda-version-check -std=c++17
       -Wno-unknown-cuda-version -Wno-unknown-attributes -D__CLANG_CUDA_TEXTURE_INTRINSICS_H__
       -include tools/gpu/clang-cuda-shim.h -Inative/src -Inative/include -Itools/gpu -DMIXATTN_TUNING=1)
failed=0
for f in native/src/cuda/*.cu tools/gpu/*.cu; do
  if out=$("$clang" "${flags[@]}" "$f" 2>&1) && ! grep -q "error" <<< "$out"; then
    echo "ok    $f"
  else
    echo "ERROR $f"; grep -E "error" -A3 <<< "$out" | head -20; failed=$((failed + 1))
  fi
done
if [ -n "${ORT_INCLUDE_DIR:-}" ]; then
  for f in native/src/cuda/*.cc; do
    if g++ -std=c++17 -fsyntax-only -Inative/src -Inative/include -I"$ORT_INCLUDE_DIR" "$f"; then echo "ok    $f"
    else echo "ERROR $f"; failed=$((failed + 1)); fi
  done
fi
exit $failed
