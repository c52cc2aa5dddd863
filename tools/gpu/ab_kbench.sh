#!/usr/bin/env bash
# A/B of the decode kernels in one run on the GPU machine: kbench built from the working tree ("new") and from the
# working tree with the files of PREV_DIR copied over native/src/cuda ("old"), each shape timed twice, interleaved,
# without and with rotary inside the op (kbench's r variant).
#
#   here:        mkdir -p ab_prev && for f in decode_tc.cu decode.cu kernel_common.cuh; do git show REV:native/src/cuda/$f > ab_prev/$f; done
#   GPU machine: bash tools/gpu/ab_kbench.sh ab_prev ["KIND B T D" ...]      (carry .ortgpu and .ortinc)
# Prints "old|new,KIND,B,T,variant,splits,us,pct_peak" rows.
set -u
prev=${1:?usage: ab_kbench.sh PREV_DIR [shape ...]}; shift
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=("sliding 1 1024 128" "sliding 8 1024 128" "global 1 2048 128" "global 1 4096 128" \
                                   "sliding 16 1024 64" "sliding 1 1024 64" "global 8 32768 128")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd); cd "$root"
ab=${MIXATTN_AB_WORK:-${TMPDIR:-/tmp}/mixattn-ab}   # scratch: the old tree, both builds and their logs
# shellcheck disable=SC1091
source .ortgpu/unpack.sh >/dev/null; export PATH=$PATH:/usr/local/cuda/bin
rm -rf "$ab" && mkdir -p "$ab/old/src/tools" && cp -r tools/gpu $ab/old/src/tools/ && cp -r native $ab/old/src/ \
  && cp "$prev"/* $ab/old/src/native/src/cuda/ || exit 1
for v in old new; do
  src=$([ $v = new ] && echo tools/gpu || echo $ab/old/src/tools/gpu)
  (cmake -S $src -B $ab/$v/build -G Ninja -DORT_DIR="$ORTGPU_DIR" -DORT_INCLUDE_DIR="$root/.ortinc" -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" \
     > $ab/$v-cmake.log 2>&1 && cmake --build $ab/$v/build --target kbench -j 8 > $ab/$v-build.log 2>&1 || tail -20 $ab/$v-build.log) &
done
wait
for rep in 1 2; do
  for s in "${shapes[@]}"; do
    # shellcheck disable=SC2086
    for v in old new; do $ab/$v/build/kbench shape $s r | grep -v "^#\|^kind" | sed "s/^/$v,/" | cut -d, -f1-4,7-10; done
  done
done
