#!/usr/bin/env bash
# Shared start of the GPU-machine scripts in this folder (sourced, not run): unpacks the published app from
# .pub/mixattn.tar.xz with ORT's CUDA build from .ortgpu, puts the CUDA-built ops library beside it and sets M to
# the app (built here: Release, no tuning knobs; about a minute on 16 cores).
# Needs: root, OUT and work set by the caller; .ortgpu (docs/gpu.md) and .ortinc (tools/gpu/stage-headers.sh).
# shellcheck disable=SC1091
source .ortgpu/unpack.sh
export PATH=$PATH:/usr/local/cuda/bin DOTNET_CLI_TELEMETRY_OPTOUT=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/card.txt"
step() { echo "== $* ($(date -u +%T))"; }

step app
mkdir -p "$work/app"
tar xJf .pub/mixattn.tar.xz -C "$work/app" && cp "$ORTGPU_DIR"/*.so "$work/app/" || exit 1
step native ops with CUDA
# Beside the work folder, not in it: an incremental rebuild when the machine kept it from an earlier run.
native_build=${MIXATTN_E2E_NATIVE:-$work-native}
cmake -S native -B "$native_build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMIXATTN_CUDA=ON -DMIXATTN_TESTS=OFF \
  -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DORT_INCLUDE_DIR="$root/.ortinc" > "$OUT/cmake.log" 2>&1 \
  && cmake --build "$native_build" -j "$(nproc)" > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log" "$OUT/cmake.log"; exit 1; }
cp "$native_build/libmixattention_ops.so" "$work/app/"
M="$work/app/mixattn"
