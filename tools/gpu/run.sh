#!/usr/bin/env bash
# Builds the CUDA ops and the harness on the GPU machine, then checks and/or benchmarks them.
#
#   tools/gpu/run.sh check      build; every CUDA path vs the CPU op and vs torch; memcheck (quick cases)
#   tools/gpu/run.sh bench      build; decode benchmark (ours / ORT GQA / torch SDPA, T = 1K..128K) + plot
#   tools/gpu/run.sh all        both
#   tools/gpu/run.sh smoke      build; check; a quick benchmark (T = 1K, 16K); memcheck
#   tools/gpu/run.sh kbench     build; the decode kernels alone (kbench: no ORT, CUDA-graph replay)
#   tools/gpu/run.sh floors     build; kbench floors only (best pure read, empty kernel, sliding layers' pure reads)
#   tools/gpu/run.sh dev        build; check; kbench; memcheck
#   tools/gpu/run.sh prefill    build; the prefill kernel alone (kbench prefill) and torch SDPA prefill, same shapes
#   tools/gpu/run.sh build      build only (then run $MIXATTN_GPU_WORK/harness/kbench by hand)
#   tools/gpu/run.sh quant      build; check (kvq_test and the harness: quantized caches too); memcheck (harness quick
#                               cases and kvq_test's D = 128 decode / prefill cases); kbench over fp16 / fp8 / int8
#                               caches (KBENCH_QUANT=1, D = 128 and 64); floors; ours vs ORT GQA over fp8 caches (bench-fp8)
#
# MIXATTN_GPU_WORK: build and scratch folder (default ${TMPDIR:-/tmp}/mixattn-gpu, outside the repository).
#   tools/gpu/run.sh profile    build; kbench on PROFILE_SHAPES ("kind B T D [variants]" each, see kbench.cu) and
#                               an Nsight Compute report (--set full, cold caches) of each shape's first decode launch
#
# Needs (from the repo root, on the machine that has the GPU): .ortgpu/ (ORT 1.31's CUDA build with an unpack.sh
# that sets ORTGPU_DIR, docs/gpu.md) and .ortinc/ (ORT 1.31 headers, tools/gpu/stage-headers.sh).
# Results go to $OUT (default out/gpu): logs.tgz, bench.csv, torch.csv, floors.csv, summary.md, goals.md, gpu_bandwidth.png.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
mode=${1:-all}
quick=""
OUT=${OUT:-$root/out/gpu}
work=${MIXATTN_GPU_WORK:-${TMPDIR:-/tmp}/mixattn-gpu}
logs=$work/logs
mkdir -p "$OUT" "$logs"
cd "$root"
# shellcheck disable=SC1091
source .ortgpu/unpack.sh
export PATH=$PATH:/usr/local/cuda/bin
nvcc=$(command -v nvcc)
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv; nvcc --version | tail -2; } \
  > "$logs/machine.txt" 2>&1
cat "$logs/machine.txt"

step() { echo "== $*"; }
summary=()
build() {
  step "build native ops with CUDA (kbench in parallel)"
  # GoogleTest: the system's, else a carried .gtest/ (include/gtest, lib/libgtest*.a) for a machine without the package.
  gtest=()
  [ -f /usr/include/gtest/gtest.h ] || { [ -d "$root/.gtest" ] && gtest=(-DGTEST_ROOT="$root/.gtest"); }
  cmake -S tools/gpu -B "$work/harness" -G Ninja -DORT_DIR="$ORTGPU_DIR" -DORT_INCLUDE_DIR="$root/.ortinc" "${gtest[@]}" \
    -DCMAKE_CUDA_COMPILER="$nvcc" > "$logs/cmake-harness.log" 2>&1 || { cat "$logs/cmake-harness.log"; return 1; }
  cmake --build "$work/harness" --target kbench -j 6 -- -v > "$logs/build-kbench.log" 2>&1 &
  local kpid=$!
  cmake -S native -B "$work/native" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMIXATTN_CUDA=ON -DMIXATTN_TUNING=ON -DMIXATTN_TESTS=OFF \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DORT_INCLUDE_DIR="$root/.ortinc" > "$logs/cmake-native.log" 2>&1 || { cat "$logs/cmake-native.log"; return 1; }
  cmake --build "$work/native" -j "$(nproc)" -- -v > "$logs/build-native.log" 2>&1 || { grep -E "error|Error" -A3 "$logs/build-native.log" | head -60; return 1; }
  grep -E "registers|spill" "$logs/build-native.log" > "$logs/ptxas.txt" || true
  step build harness
  cmake --build "$work/harness" --target harness -j "$(nproc)" > "$logs/build-harness.log" 2>&1 || { grep -E "error" -A3 "$logs/build-harness.log" | head -60; return 1; }
  if grep -q "harness_test" "$work/harness/build.ninja" 2>/dev/null; then
    cmake --build "$work/harness" --target harness_test -j "$(nproc)" > "$logs/build-harness-test.log" 2>&1 || { grep -E "error" -A3 "$logs/build-harness-test.log" | head -40; return 1; }
  fi
  # The CPU kernels' GoogleTests too, so that `run.sh check` runs every native test on this machine.
  cmake -S native -B "$work/native-tests" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMIXATTN_CUDA=OFF -DMIXATTN_TESTS=ON \
    -DORT_INCLUDE_DIR="$root/.ortinc" "${gtest[@]}" > "$logs/cmake-native-tests.log" 2>&1 \
    && cmake --build "$work/native-tests" -j "$(nproc)" > "$logs/build-native-tests.log" 2>&1 \
    || { tail -20 "$logs/cmake-native-tests.log" "$logs/build-native-tests.log"; return 1; }
  wait $kpid || { grep -E "error" -A3 "$logs/build-kbench.log" | head -40; return 1; }
  # After kbench: it shares the kernels' static library (one ninja at a time in that folder builds it).
  for t in kvq_test paged_test prefill_test; do
    if grep -q "$t" "$work/harness/build.ninja" 2>/dev/null; then
      cmake --build "$work/harness" --target $t -j "$(nproc)" > "$logs/build-$t.log" 2>&1 || { grep -E "error" -A3 "$logs/build-$t.log" | head -40; return 1; }
    fi
  done
  # Registers / shared memory of every kernel (also when the build above was incremental and printed nothing).
  cuobjdump -res-usage "$work/native/libmixattention_ops.so" 2>/dev/null | grep -A1 --no-group-separator -E "Function .*(Decode|Prefill|Combine)" \
    | paste - - | sed -E 's/^Function ([^:]*):/\1/' | c++filt | cut -c1-260 > "$logs/resources.txt" || true
  kbench=$work/harness/kbench
  lib=$work/native/libmixattention_ops.so
  harness=$work/harness/harness
  "$harness" plan > "$work/specs.txt" && python3 tools/gpu/make_models.py "$work/specs.txt" "$work/models"
}

check() {
  step "check: native GoogleTests (CPU kernels, ctest) and the CUDA checks as GoogleTests (harness_test)"
  ctest --test-dir "$work/native-tests" --output-on-failure > "$logs/ctest-native.log" 2>&1
  summary+=("native ctest: $(grep -E 'tests passed' "$logs/ctest-native.log" | tail -1)")
  if [ -x "$work/harness/harness_test" ]; then
    "$work/harness/harness_test" "$work/models" "$lib" --gtest_brief=1 > "$logs/gtest-cuda.log" 2>&1
    summary+=("CUDA GoogleTests: $(grep -E '^\[  (PASSED|FAILED)  \]' "$logs/gtest-cuda.log" | tr '\n' ' ')")
  else
    summary+=("CUDA GoogleTests: not built (GoogleTest not found)")
  fi
  tail -3 "$logs/gtest-cuda.log" 2>/dev/null
  # The kernel-level GoogleTests: quantized caches (int8 / fp8 paths vs the fp path on the same quantization), paged
  # caches (vs contiguous caches holding the same rows) and the prefill kernels (vs a CPU reference in double).
  for t in kvq_test paged_test prefill_test; do
    [ -x "$work/harness/$t" ] || continue
    step "check: $t"
    "$work/harness/$t" --gtest_brief=1 > "$logs/gtest-$t.log" 2>&1
    grep -E "Failure|FAILED|error" -A3 "$logs/gtest-$t.log" | head -40
    summary+=("$t GoogleTests: $(grep -E '^\[  (PASSED|FAILED)  \]' "$logs/gtest-$t.log" | tr '\n' ' ')")
  done
  step "check: CUDA op vs CPU op (harness)"
  rm -rf "$work/dump"
  "$harness" check "$work/models" "$lib" "$work/dump" 2>&1 | tee "$logs/check.log"
  summary+=("harness check: $(tail -1 "$logs/check.log")")
  # Split-K decode merges in a thread-block cluster where one fits (sm_90, <= 16 splits); these passes check the two
  # other merges on the same cases.
  step "check: the same with split-K merged by each group's last block (MIXATTN_CUDA_CLUSTER_MERGE=0)"
  MIXATTN_CUDA_CLUSTER_MERGE=0 "$harness" check "$work/models" "$lib" - > "$logs/check-last-block.log" 2>&1
  tail -1 "$logs/check-last-block.log"
  summary+=("harness check, last-block merge: $(tail -1 "$logs/check-last-block.log")")
  step "check: the same with split-K merged by CombineKernel (MIXATTN_CUDA_CLUSTER_MERGE=0 MIXATTN_CUDA_FUSED_COMBINE=0)"
  MIXATTN_CUDA_CLUSTER_MERGE=0 MIXATTN_CUDA_FUSED_COMBINE=0 "$harness" check "$work/models" "$lib" - > "$logs/check-sep.log" 2>&1
  tail -1 "$logs/check-sep.log"
  summary+=("harness check, CombineKernel: $(tail -1 "$logs/check-sep.log")")
  step "check: vs torch float64 reference"
  python3 tools/gpu/torch_check.py "$work/dump" 2>&1 | tee "$logs/torch_check.log"
  summary+=("$(tail -1 "$logs/torch_check.log")")
}

memcheck() {
  step "compute-sanitizer memcheck (quick cases)"
  if command -v compute-sanitizer >/dev/null; then
    timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$harness" check "$work/models" "$lib" - quick \
      > "$logs/memcheck.log" 2>&1
    rc=$?
    tail -5 "$logs/memcheck.log"
    summary+=("memcheck: rc=$rc, $(grep -E 'ERROR SUMMARY' "$logs/memcheck.log" | tail -1)")
    if [ -x "$work/harness/paged_test" ]; then  # every case: ~6 s under the sanitizer on an H200 machine
      timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 "$work/harness/paged_test" --gtest_brief=1 \
        > "$logs/memcheck-paged.log" 2>&1
      summary+=("memcheck paged_test: rc=$?, $(grep -E 'ERROR SUMMARY' "$logs/memcheck-paged.log" | tail -1)")
    fi
    if [ -x "$work/harness/prefill_test" ]; then
      timeout 180 compute-sanitizer --tool memcheck --error-exitcode 9 "$work/harness/prefill_test" --gtest_brief=1 \
        > "$logs/memcheck-prefill.log" 2>&1
      summary+=("memcheck prefill_test: rc=$?, $(grep -E 'ERROR SUMMARY' "$logs/memcheck-prefill.log" | tail -1)")
    fi
  else
    summary+=("memcheck: compute-sanitizer not found")
  fi
}

kbench() {
  step "kbench: decode kernels alone (no ORT), SIMT vs tensor-core, CUDA-graph replay"
  "$kbench" $quick 2> "$logs/kbench.err" | tee "$OUT/kbench.csv"
  tail -5 "$logs/kbench.err"
}

bench() {
  kbench
  step "probe: which GQA kernel runs"
  ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO=1 "$harness" probe "$work/models" "$lib" > "$logs/probe.log" 2>&1
  grep -E "SdpaKernel|probe" "$logs/probe.log" | sort | uniq -c | head
  step "bench: ours vs ORT GQA"
  "$harness" bench "$work/models" "$lib" $quick 2> "$logs/bench.err" | tee "$OUT/bench.csv"
  tail -5 "$logs/bench.err"
  step "bench: torch SDPA"
  python3 tools/gpu/torch_bench.py $quick 2> "$logs/torch_bench.err" | tee "$OUT/torch.csv"
  step "floors: best pure read, empty kernel, pure read of each sliding layer's bytes"
  "$kbench" floors 2> "$logs/floors.err" | tee "$OUT/floors.csv"
  step "summary"
  python3 tools/gpu/plot.py "$OUT/bench.csv" "$OUT/torch.csv" "$OUT/gpu_bandwidth.png" "$OUT/kbench.csv" | tee "$OUT/summary.md"
  step "the issue's kernel goals"
  python3 tools/gpu/goals.py "$OUT/bench.csv" "$OUT/kbench.csv" "$OUT/torch.csv" "$OUT/floors.csv" | tee "$OUT/goals.md"
}

prefill() {
  step "kbench prefill: the prefill kernel alone"
  "$kbench" prefill 2> "$logs/kbench-prefill.err" | tee "$OUT/kbench-prefill.csv"
  tail -3 "$logs/kbench-prefill.err"
  step "torch SDPA prefill (flash / cuDNN / memory-efficient), the same global shapes"
  python3 tools/gpu/torch_prefill_bench.py 2> "$logs/torch-prefill.err" | tee "$OUT/torch-prefill.csv"
  tail -3 "$logs/torch-prefill.err"
}

# One Nsight Compute pass (--set full, cold caches) over the first launch of the kernels matching $2, with kbench
# arguments $3...: headline metrics, the stall reasons per issued instruction, and the per-instruction (SASS) samples
# as CSV for reading offline, all from one report; files are named after $1.
ncu_report() {
  local tag=$1 regex=$2
  shift 2
  timeout 150 "$ncu" --set full --import-source no -k "regex:$regex" -c 1 -f -o "$work/rep-$tag" "$kbench" "$@" > /dev/null 2>&1
  "$ncu" -i "$work/rep-$tag.ncu-rep" > "$OUT/ncu-$tag.txt" 2>&1
  grep -E "^    (Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per Thread|Waves Per SM|Grid Size|Executed Ipc Active|Executed Instructions  )" \
    "$OUT/ncu-$tag.txt" | head -12
  "$ncu" -i "$work/rep-$tag.ncu-rep" --page raw --csv 2>/dev/null | python3 -c "
import csv, sys
rows = list(csv.reader(sys.stdin))
h, v = rows[0], rows[-1]
st = sorted(((float(v[i].replace(',', '') or 0), h[i]) for i in range(len(h))
             if 'warp_latency_issue_stalled' in h[i] or ('issue_stalled' in h[i] and h[i].endswith('.ratio'))), reverse=True)
for x, n in st[:12]: print(f'{x:10.3f} {n}')" | tee "$OUT/stalls-$tag.txt"
  "$ncu" -i "$work/rep-$tag.ncu-rep" --page source --csv --print-source sass > "$OUT/sass-$tag.csv" 2>&1
}

profile() {
  local ncu
  ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  local shapes=${PROFILE_SHAPES:-"sliding 16 32768 64 8 s1 s4;sliding 1 32768 128 8 s8 s32;sliding 8 32768 128 8 s2 s8;global 1 65536 128 8"}
  IFS=';' read -ra list <<< "$shapes"
  for sh in "${list[@]}"; do
    # shellcheck disable=SC2086
    set -- $sh
    if [ "$1" = prefill ]; then  # "prefill B S P D W [mma|wgmmaN]": that prefill kernel (default mma.sync)
      step "kbench $sh"
      export KBENCH_PREFILL_KERNEL=${7:-mma}
      "$kbench" "${@:1:6}" 2>> "$logs/kbench.err" | grep -v "^#" | tee -a "$OUT/kbench-shapes.csv"
      [ -n "$ncu" ] && ncu_report "${sh// /-}" "Prefill(Tc|Wgmma)" "${@:1:6}"
      unset KBENCH_PREFILL_KERNEL
    else  # "KIND B T D [variants]": the decode kernel as planned
      step "kbench shape $sh"
      "$kbench" shape "$@" 2>> "$logs/kbench.err" | grep -v "^#" | tee -a "$OUT/kbench-shapes.csv"
      [ -n "$ncu" ] && ncu_report "$1-$2-$3-$4" DecodeTc shape "$1" "$2" "$3" "$4"
    fi
  done
}

build || { tar czf "$OUT/logs.tgz" -C "$logs" .; exit 1; }
case "$mode" in
  check) check; memcheck ;;
  kbench) grep -E "DecodeTc" "$logs/resources.txt" | head -8; kbench ;;
  dev) check; kbench; memcheck ;;
  bench) bench ;;
  all) check; memcheck; bench ;;
  profile) profile ;;
  build) ;;
  floors) "$kbench" floors | tee "$OUT/floors.csv" ;;
  prefill) grep -E "Prefill" "$logs/resources.txt" | head -8; prefill ;;
  smoke) check; quick=quick; bench; memcheck ;;
  quant)
    check; memcheck
    step "memcheck: kvq_test (D = 128 cases)"
    timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 "$work/harness/kvq_test" --gtest_filter='*D128*' \
      --gtest_brief=1 > "$logs/memcheck-kvq.log" 2>&1
    summary+=("memcheck kvq_test: rc=$?, $(grep -E 'ERROR SUMMARY' "$logs/memcheck-kvq.log" | tail -1)")
    for d in 128 64; do
      step "kbench: fp16 / fp8 / int8 caches, D = $d"
      KBENCH_QUANT=1 KBENCH_D=$d timeout 150 "$kbench" 2>> "$logs/kbench.err" | tee "$OUT/kbench-quant-d$d.csv"
    done
    step "floors"
    timeout 120 "$kbench" floors 2> "$logs/floors.err" | tee "$OUT/floors.csv"
    step "bench: ours vs ORT GQA, both over fp8 caches (per-tensor scales)"
    timeout 200 "$harness" bench-fp8 "$work/models" "$lib" 2> "$logs/bench-fp8.err" | tee "$OUT/bench-fp8.csv"
    tail -5 "$logs/bench-fp8.err" ;;
esac
tar czf "$OUT/logs.tgz" -C "$logs" .
echo "== done"
printf '%s\n' "${summary[@]}"
