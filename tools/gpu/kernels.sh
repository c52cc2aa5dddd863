#!/usr/bin/env bash
# The kernels alone, without ONNX Runtime: builds the CUDA kernel library, kbench and the kernel-level GoogleTests
# (kvq_test: quantized caches; paged_test: paged caches; prefill_test: the prefill kernels against a CPU reference),
# runs the tests, then kbench on the given shapes. The quick
# loop for kernel work on the GPU machine (run.sh builds and checks everything, ORT's CUDA build included).
#
#   tools/gpu/kernels.sh ["KIND B T D [variant...]" | "prefill [B S P D W]..." ...]     e.g. "global 8 32768 128 p64"
#   KERNEL_TESTS="paged_test kvq_test"  which GoogleTests to run (default all three; empty: none)
#   KBENCH_ENV="KBENCH_QUANT=1"         environment of the kbench runs
#   KERNEL_TEST_TIMEOUT=240             seconds each GoogleTest may run (kbench: 300 an entry)
# A "prefill ..." entry also runs tools/gpu/torch_prefill_bench.py on its global shapes (all of them without shapes);
# then tools/gpu/prefill_table.py prints the planned kernel against torch's best per shape.
#
# GoogleTest: the system's, else a carried .gtest/ (include/gtest, lib/libgtest*.a). Scratch: $MIXATTN_GPU_WORK
# (default ${TMPDIR:-/tmp}/mixattn-gpu/kernels). Prints the tests' summaries and kbench's CSV rows.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
work=${MIXATTN_GPU_WORK:-${TMPDIR:-/tmp}/mixattn-gpu}/kernels
mkdir -p "$work" "$work/no-ort"
rm -f "$work/prefill-kbench.csv" "$work/prefill-torch.csv"
export PATH=$PATH:/usr/local/cuda/bin
gtest=()
[ -f /usr/include/gtest/gtest.h ] || { [ -d "$root/.gtest" ] && gtest=(-DGTEST_ROOT="$root/.gtest"); }
tests=${KERNEL_TESTS-prefill_test paged_test kvq_test}
start=$(date +%s)
# ORT_DIR: an empty folder (the harness, which links ORT, is not built here).
cmake -S tools/gpu -B "$work/build" -G Ninja -DORT_DIR="$work/no-ort" -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" \
  "${gtest[@]}" > "$work/cmake.log" 2>&1 || { tail -20 "$work/cmake.log"; exit 1; }
# shellcheck disable=SC2086
cmake --build "$work/build" --target kbench $tests -j "$(nproc)" > "$work/build.log" 2>&1 \
  || { grep -E "error" -A3 "$work/build.log" | head -60; exit 1; }
echo "== built in $(( $(date +%s) - start )) s"
# The wgmma prefill kernels' registers and spills, and ptxas's warnings where it had to serialize wgmma.
bash tools/gpu/ptxas-summary.sh PrefillWgmmaKernel < "$work/build.log"
rc=0
for t in $tests; do
  # A bounded run: a kernel that hangs (a barrier never completed) fails its test run instead of the GPU call.
  timeout "${KERNEL_TEST_TIMEOUT:-240}" "$work/build/$t" > "$work/$t.log" 2>&1 \
    || { e=$?; rc=1; echo "== $t: exit $e (124: timed out; last started: $(grep -E '^\[ RUN' "$work/$t.log" | tail -1))"; }
  grep -E "Failure|error" -A4 "$work/$t.log" | head -40
  echo "== $t: $(grep -E '^\[  (PASSED|FAILED)  \]' "$work/$t.log" | tr '\n' ' ')"
done
nvidia-smi --query-gpu=name --format=csv,noheader
for s in "$@"; do
  # shellcheck disable=SC2086
  case $s in  # "prefill [B S P D W]...": kbench's prefill rows (no shape: its standard list); else a decode shape
    prefill*) timeout 300 env ${KBENCH_ENV:-} "$work/build/kbench" $s 2> /dev/null | grep -v "^#" | tee -a "$work/prefill-kbench.csv" ;;
    *) timeout 300 env ${KBENCH_ENV:-} "$work/build/kbench" shape $s 2> /dev/null | grep -v "^#\|^kind" ;;
  esac
done
# Prefill rows: torch SDPA (flash, cuDNN) on the same global shapes in the same run, where torch is installed (the
# baseline of issue #23; windowed shapes have no torch counterpart).
for s in "$@"; do
  case $s in
    prefill*)
      read -r -a f <<< "$s"; args=()
      for ((i = 1; i + 4 < ${#f[@]} + 1; i += 5)); do [ "${f[i+4]}" = 0 ] && args+=("${f[i]}" "${f[i+1]}" "${f[i+2]}" "${f[i+3]}"); done
      if [ ${#f[@]} -eq 1 ] || [ ${#args[@]} -gt 0 ]; then
        python3 tools/gpu/torch_prefill_bench.py "${args[@]}" 2> /dev/null | grep -v "^#\|,efficient," \
          | tee -a "$work/prefill-torch.csv" || echo "== torch prefill: not run"
      fi ;;
  esac
done
# The prefill rows joined: the planned kernel against torch's best per shape (tools/gpu/prefill_table.py).
if [ -s "$work/prefill-kbench.csv" ]; then
  touch "$work/prefill-torch.csv"
  python3 tools/gpu/prefill_table.py "$work/prefill-kbench.csv" "$work/prefill-torch.csv" || rc=1
fi
exit $rc
