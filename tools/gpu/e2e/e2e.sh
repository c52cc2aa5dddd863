#!/usr/bin/env bash
# End-to-end decode benchmark (issue 6, part 3) on the GPU machine, through the C# runtime on CUDA:
# a 24-layer 1B-class Llama-style model (GenAI GQA layout, fp16, random weights) as
#   (a) gqa-full: the model with ORT GroupQueryAttention and a full cache per layer (the baseline),
#   cai:          converted with the `cai` layout (W = 1024) to our ops,
#   (b) gqa-mix:  the closest layout ORT's GQA can express (cai's global sharing; sliding layers own rings:
#                 GQA cannot read another layer's windowed cache),
# decode tokens/s and KV memory at 4K and 32K context × batch 1 and 16, measured in one run per shape.
# Needs (carried from the repo root): .ortgpu (ORT's CUDA build, docs/gpu.md), .ortinc (tools/gpu/stage-headers.sh),
# .pub/mixattn.tar.xz (tools/gpu/e2e/publish.sh).   Usage: tools/gpu/e2e/e2e.sh [quick|profile|graph|kernels|prepare|rounds|quant|paged]
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
OUT=${OUT:-$root/out/e2e}; work=${MIXATTN_E2E_WORK:-${TMPDIR:-/tmp}/mixattn-e2e}
# A fresh work folder for the conversions. The base model is built once per version of build_model.py into a folder
# beside it (converted models share its weights file by hard link, so it is never rebuilt in place: onnx's checker
# refuses external data files with several links), and the CUDA ops build is kept beside it too: on a machine that
# stays warm between runs, the next e2e.sh skips both (about two minutes of GPU-machine time).
rm -rf "$work"; mkdir -p "$OUT"
base=${MIXATTN_E2E_BASE:-$work-base-$(sha256sum tools/gpu/e2e/build_model.py | cut -c1-12)}
# shellcheck source=tools/gpu/e2e/setup.sh
source tools/gpu/e2e/setup.sh

if [ "${1:-}" = quant ]; then
  # Built first: a compile error costs seconds, not the model build and conversions.
  step "build ort_decode_bench"
  # ORT's libonnxruntime.so has the SONAME libonnxruntime.so.1: link through an alias folder that also holds the
  # provider libraries (ORT loads them from its own folder), as tools/gpu/CMakeLists.txt does for the harness.
  mkdir -p "$work/ortlib"
  for f in "$ORTGPU_DIR"/*.so; do ln -sf "$f" "$work/ortlib/"; done
  ln -sf "$ORTGPU_DIR/libonnxruntime.so" "$work/ortlib/libonnxruntime.so.1"
  g++ -O2 -std=c++17 -I .ortinc -I /usr/local/cuda/include tools/gpu/e2e/ort_decode_bench.cc -o "$work/ort_decode_bench" \
    -L "$work/ortlib" -lonnxruntime -L /usr/local/cuda/lib64 -lcudart -Wl,-rpath,"$work/ortlib" > "$OUT/ort_decode_bench-build.log" 2>&1 \
    || { tail -30 "$OUT/ort_decode_bench-build.log"; exit 1; }
fi

step "build the 1B model"
if [ -f "$base/model.onnx" ]; then echo "kept from an earlier run: $base"
else rm -rf "$base.tmp" && python3 tools/gpu/e2e/build_model.py "$base.tmp" 2>&1 | tail -2 && [ -f "$base.tmp/model.onnx" ] && mv "$base.tmp" "$base" || exit 1
fi
layers=24
mix=$(python3 -c "print('_'.join(('0' if i % 6 == 0 else f'{i}s') for i in range($layers)))")
step convert
"$M" convert "$base/model.onnx" -o "$work/gqa-full/model.onnx" --layout native --backend ort-gqa --force --check structure --json > "$OUT/convert-gqa-full.json" || exit 1
"$M" convert "$base/model.onnx" -o "$work/cai/model.onnx" --layout cai --window 1024 --force --check structure --json > "$OUT/convert-cai.json" || exit 1
[ "${1:-}" = graph ] || [ "${1:-}" = kernels ] || [ "${1:-}" = quant ] || [ "${1:-}" = paged ] || { "$M" convert "$base/model.onnx" -o "$work/gqa-mix/model.onnx" --layout "$mix" --window 1024 --backend ort-gqa --force --check structure --json > "$OUT/convert-gqa-mix.json" || exit 1; }
# prepare: the models only (then run `mixattn bench` by hand, e.g. in another model order).
[ "${1:-}" = prepare ] && { "$M" convert "$base/model.onnx" -o "$work/full/model.onnx" --layout native --force --check structure --json > "$OUT/convert-full.json"; exit $?; }

if [ "${1:-}" = quant ]; then
  # Issue 18, end to end: fp8 caches. Per shape (SHAPES, default 32768:16 4096:16 32768:1):
  #   (1) `mixattn bench gqa-full cai cai-fp8` in ROUNDS (default 3) interleaved rounds of QUANT_STEPS (32) steps, rotating
  #       order, CUDA graphs for cai and cai-fp8 (gqa-full runs plain), logits left on the device;
  #   (2) ort_decode_bench (ORT's C++ API) on gqa-fp8, the unconverted layout on ORT GQA's own fp8 caches, which the C#
  #       runtime cannot open (float8e4m3fn inputs, docs/converter.md "fp8 in .NET"), and on gqa-full, whose time must
  #       agree with (1)'s gqa-full: the two harnesses cross-checked. Same rounds, steps and cache rows as (1).
  # quant_summary.py prints the table (ratios of cai-fp8 to cai, gqa-fp8 and gqa-full; KV bytes; sequences in 64 GiB).
  step "convert fp8"
  "$M" convert "$base/model.onnx" -o "$work/gqa-fp8/model.onnx" --layout native --backend ort-gqa --kv-dtype fp8 --kv-scale absmax:8 \
    --force --check structure --json > "$OUT/convert-gqa-fp8.json" || exit 1
  "$M" convert "$base/model.onnx" -o "$work/cai-fp8/model.onnx" --layout cai --window 1024 --kv-dtype fp8 --kv-scale absmax:8 \
    --force --check structure --json > "$OUT/convert-cai-fp8.json" || exit 1
  steps=${QUANT_STEPS:-32}; rounds=${ROUNDS:-3}
  for s in ${SHAPES:-32768:16 4096:16 32768:1}; do
    ctx=${s%:*}; b=${s#*:}
    step "bench gqa-full cai cai-fp8, context $ctx batch $b"
    timeout 240 "$M" bench "$work/gqa-full/model.onnx" "$work/cai/model.onnx" "$work/cai-fp8/model.onnx" --device cuda --context "$ctx" \
      --batch "$b" --steps "$steps" --rounds "$rounds" --rotate-order --prefill-chunk "${PREFILL_CHUNK:-256}" --budget-gib 64 --cuda-graph \
      --device-logits --json > "$OUT/quant-$ctx-$b.json" 2> "$OUT/quant-$ctx-$b.err"
    echo "rc=$?"; grep -v "decoding without CUDA graphs\|onnxruntime" "$OUT/quant-$ctx-$b.err" | tail -3
    python3 tools/gpu/e2e/rounds_summary.py "$OUT/quant-$ctx-$b.json" > "$OUT/quant-$ctx-$b.txt" && grep "==\|median" "$OUT/quant-$ctx-$b.txt"
    # The C# bench's cache rows (context + timed steps + 8), so KV bytes per sequence compare exactly.
    maxlen=$((ctx + steps * rounds + 8))
    for m in gqa-full gqa-fp8; do
      step "ort_decode_bench $m, context $ctx batch $b"
      timeout 120 "$work/ort_decode_bench" "$work/$m/model.onnx" --context "$ctx" --batch "$b" --steps "$steps" --rounds "$rounds" \
        --warmup 3 --max-length "$maxlen" > "$OUT/odb-$m-$ctx-$b.json" 2> "$OUT/odb-$m-$ctx-$b.err"
      echo "rc=$?"; grep -v "^ort_decode_bench: round" "$OUT/odb-$m-$ctx-$b.err" | tail -2; cat "$OUT/odb-$m-$ctx-$b.json"
    done
  done
  step summary
  python3 tools/gpu/e2e/quant_summary.py "$OUT" | tee "$OUT/quant-summary.txt"
  exit 0
fi

if [ "${1:-}" = paged ]; then
  # Issue 19 on the GPU: paged global caches through the C# runtime on CUDA. PAGED_PARTS (default: verify workload
  # prefix native):
  #   verify    cai against cai-paged (block size 64) on the same tokens: 4 sequences, 3000-token prompts in 256-token
  #             chunks, 200 decode steps, plain decode and CUDA-graph decode of the paged model;
  #   workload  the issue's workload (256 requests arriving together, prompts spread 512-32K, 256 new tokens each, KV
  #             budget 64 GiB) on cai and cai-paged;
  #   prefix    the same with a 4K shared system prompt;
  #   native    the same workload on the model converted `native` with our ops (a full cache per layer) and its paged
  #             form, swapping preempted requests to host memory: the regime where the budget, not the requests, binds.
  #   batching  whether greedy tokens depend on the batch a request decodes in (small runs; see the code below);
  #   anchor    ORT's PagedAttention (the model converted --backend ort-gqa --paged) against ORT's GQA, then the workload
  #             on it beside ours (native, paged, same block size), the issue's anchor. ANCHOR_FLAGS: extra workload
  #             flags for it; ANCHOR_BLOCK_SIZE (default 256).
  # WORKLOAD_FLAGS: extra `mixattn workload` flags (e.g. a smaller --requests for a quick run).
  parts=${PAGED_PARTS:-verify workload prefix native}
  bs=${BLOCK_SIZE:-64}
  step "convert cai-paged"
  "$M" convert "$base/model.onnx" -o "$work/cai-paged/model.onnx" --layout cai --window 1024 --paged --block-size "$bs" \
    --force --check structure --json > "$OUT/convert-cai-paged.json" || exit 1
  if [[ " $parts " == *" verify "* ]]; then
    for g in plain graph; do
      flags=""; [ $g = graph ] && flags="--cuda-graph"
      step "verify cai cai-paged ($g)"
      # shellcheck disable=SC2086
      timeout 300 "$M" verify "$work/cai/model.onnx" "$work/cai-paged/model.onnx" --device cuda $flags --batch 4 --prompt-len 3000 \
        --prefill-chunk 256 --steps 200 --json > "$OUT/paged-verify-$g.json" 2> "$OUT/paged-verify-$g.err"
      echo "rc=$?"; tail -2 "$OUT/paged-verify-$g.err"
      python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('max |dlogit|', d['max_abs_diff'], 'max KL', d['max_kl'], 'top-1', d['top1_agreement'], 'positions', len(d['steps']))" "$OUT/paged-verify-$g.json"
    done
  fi
  issue=(--requests 256 --prompt 512:32768 --new 256 --budget-gib 64)  # the issue's workload
  wl() {  # name, models..., then -- and flags
    local name=$1; shift; local models=(); while [ "$1" != -- ]; do models+=("$work/$1/model.onnx"); shift; done; shift
    step "workload $name"
    # shellcheck disable=SC2086
    timeout 590 "$M" workload "${models[@]}" --device cuda "$@" ${WORKLOAD_FLAGS:-} \
      --json > "$OUT/paged-workload-$name.json" 2> "$OUT/paged-workload-$name.err"
    echo "rc=$?"; grep -v "requests done" "$OUT/paged-workload-$name.err" | tail -6
    python3 - "$OUT/paged-workload-$name.json" <<'PY' || true
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["results"]:
    print(f'{r["model"].split("/")[-2]:13s} slots {r["slots"]:4d} blocks {r["kv_blocks"]} ran at once {r["max_running"]:4d} (x{r["max_running_vs_first"]:.2f}) '
          f'gen {r["generated_tokens_per_second"]:8.1f} tok/s (x{r["tokens_per_second_vs_first"]:.2f}) {r["seconds"]:6.1f} s '
          f'prefill {r["prefill_seconds"]:6.1f} s decode {r["decode_seconds"]:6.1f} s steps {r["decode_steps"]} preempt {r["preemptions"]} '
          f'swapped {r["swapped_out"]} reused {r["reused_tokens"]} shared blocks {r["max_shared_blocks"]} used blocks {r["max_used_blocks"]} '
          f'same tokens {r["same_tokens_as_first"]}/{d["requests"]} KV {r["kv_bytes_allocated"]/2**30:.1f} GiB')
PY
  }
  [[ " $parts " == *" workload "* ]] && wl cai cai cai-paged -- "${issue[@]}"
  if [[ " $parts " == *" native "* ]] || [[ " $parts " == *" batching "* ]]; then
    step "convert native, native-paged"
    "$M" convert "$base/model.onnx" -o "$work/full/model.onnx" --layout native --force --check structure --json > "$OUT/convert-full.json" || exit 1
    "$M" convert "$base/model.onnx" -o "$work/full-paged/model.onnx" --layout native --paged --block-size "$bs" --force --check structure \
      --json > "$OUT/convert-full-paged.json" || exit 1
  fi
  [[ " $parts " == *" native "* ]] && wl native full full-paged -- "${issue[@]}" --preempt swap
  if [[ " $parts " == *" batching "* ]]; then
    # Do greedy tokens depend on which requests share a decode step? The same contiguous model at two batch widths, and
    # the paged model preempting (swap) in a small pool: per-request token digests compared across the runs.
    for r in "full:8:64" "full:32:64" "full-paged:32:0.5"; do
      IFS=: read -r m mb gib <<< "$r"
      wl "batching-$m-$mb" "$m" -- --requests 32 --prompt 512:2048 --new 96 --max-batch "$mb" --budget-gib "$gib" --preempt swap
    done
    python3 - "$OUT"/paged-workload-batching-full-8.json "$OUT"/paged-workload-batching-full-32.json "$OUT"/paged-workload-batching-full-paged-32.json <<'PY'
import json, sys
runs = [json.load(open(f))["results"][0] for f in sys.argv[1:]]
names = ["contiguous, 8 slots", "contiguous, 32 slots", "paged, 0.5 GiB pool (swap)"]
for i in range(1, 3):
    same = sum(a == b for a, b in zip(runs[0]["token_digests"], runs[i]["token_digests"]))
    print(f"{names[i]} vs {names[0]}: {same}/{len(runs[0]['token_digests'])} requests with the same tokens; ran at once {runs[i]['max_running']} vs {runs[0]['max_running']}, preemptions {runs[i]['preemptions']}, swapped {runs[i]['swapped_out']}")
PY
  fi
  if [[ " $parts " == *" anchor "* ]]; then
    # ORT's own paged attention on the full-attention model (--backend ort-gqa --paged: every layer ORT's PagedAttention
    # over token-major pools), checked against ORT's contiguous GQA, then the issue's workload beside ours on the same
    # layout (our ops, native layout, paged at the same block size).
    # Block size 256 by default (ANCHOR_BLOCK_SIZE, a multiple of 256: ORT's PagedAttention checks it, the converter
    # too); ours runs at the same size for a like-for-like pool.
    abs=${ANCHOR_BLOCK_SIZE:-256}
    step "convert gqa-paged, full-paged-$abs"
    "$M" convert "$base/model.onnx" -o "$work/gqa-paged/model.onnx" --layout native --backend ort-gqa --paged --block-size "$abs" \
      --force --check structure --json > "$OUT/convert-gqa-paged.json" || exit 1
    "$M" convert "$base/model.onnx" -o "$work/full-paged-$abs/model.onnx" --layout native --paged --block-size "$abs" --force \
      --check structure --json > "$OUT/convert-full-paged-$abs.json" || exit 1
    step "verify gqa-full gqa-paged"
    timeout 300 "$M" verify "$work/gqa-full/model.onnx" "$work/gqa-paged/model.onnx" --device cuda --batch 4 --prompt-len 3000 \
      --prefill-chunk 256 --steps 100 --json > "$OUT/paged-verify-anchor.json" 2> "$OUT/paged-verify-anchor.err"
    echo "rc=$?"; tail -2 "$OUT/paged-verify-anchor.err"
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('max |dlogit|', d['max_abs_diff'], 'max KL', d['max_kl'], 'top-1', d['top1_agreement'], 'positions', len(d['steps']))" "$OUT/paged-verify-anchor.json"
    wl anchor gqa-paged "full-paged-$abs" -- "${issue[@]}" ${ANCHOR_FLAGS:-}
  fi
  # A 4K system prompt before user prompts of 512 to 28K tokens (prompts 4608-32768).
  [[ " $parts " == *" prefix "* ]] && wl prefix cai cai-paged -- --requests ${PREFIX_REQUESTS:-256} --prompt 4608:32768 --new 256 --budget-gib 64 --shared-prefix 4096
  exit 0
fi

if [ "${1:-}" = rounds ]; then
  # The issue's table in interleaved rounds: per shape one run of gqa-full, cai (CUDA graph, logits left on the
  # device) and gqa-mix, ROUNDS rounds (default 5) of 64 steps in a rotating order; speedups are medians of per-round
  # ratios. SHAPES (context:batch ...) as below.
  for s in ${SHAPES:-4096:1 4096:16 32768:1 32768:16}; do
    ctx=${s%:*}; b=${s#*:}
    step "rounds context $ctx batch $b"
    # The card's clocks, temperatures, power and clock-event reasons every 100 ms while the rounds run (the H200's
    # unexplained +0.13 ms replay step in some runs: is it the card?). rounds_summary.py --smi lines them up by round.
    smi="$OUT/smi-$ctx-$b.csv"; reasons=clocks_event_reasons.active
    nvidia-smi --query-gpu=$reasons --format=csv > /dev/null 2>&1 || reasons=clocks_throttle_reasons.active
    TZ=UTC nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,temperature.gpu,temperature.memory,power.draw,$reasons \
      --format=csv -lms 100 > "$smi" 2> /dev/null & smi_pid=$!
    timeout 300 "$M" bench "$work/gqa-full/model.onnx" "$work/cai/model.onnx" "$work/gqa-mix/model.onnx" --device cuda --context "$ctx" \
      --batch "$b" --steps 64 --rounds "${ROUNDS:-5}" --rotate-order --prefill-chunk "${PREFILL_CHUNK:-256}" --budget-gib 64 --cuda-graph \
      --device-logits --json > "$OUT/rounds-$ctx-$b.json" 2> "$OUT/rounds-$ctx-$b.err"
    echo "rc=$?"; kill "$smi_pid" 2> /dev/null; wait "$smi_pid" 2> /dev/null
    grep -v "decoding without CUDA graphs\|onnxruntime" "$OUT/rounds-$ctx-$b.err" | tail -3
    python3 tools/gpu/e2e/rounds_summary.py --smi "$smi" "$OUT/rounds-$ctx-$b.json" > "$OUT/rounds-$ctx-$b.txt"
    grep "==\|median" "$OUT/rounds-$ctx-$b.txt"
  done
  exit 0
fi

if [ "${1:-}" = graph ]; then
  # CUDA-graph decode (ModelOptions.CudaGraphDecode): cai and the ops-backend base model with and without graphs, one run
  # each per shape (a bench run's flags apply to all its models); --check-graph compares graph and plain logits first.
  "$M" convert "$base/model.onnx" -o "$work/full/model.onnx" --layout native --force --check structure --json > "$OUT/convert-full.json" || exit 1
  for s in ${GRAPH_SHAPES:-4096:1 4096:16 32768:16}; do
    ctx=${s%:*}; b=${s#*:}
    check=""; [ "$ctx" -le 4096 ] && check="--check-graph ${GRAPH_CHECK_STEPS:-8}"
    for g in plain graph; do
      flags=""; [ $g = graph ] && flags="--cuda-graph $check"
      step "bench $g context $ctx batch $b"
      # shellcheck disable=SC2086
      timeout 200 "$M" bench "$work/full/model.onnx" "$work/cai/model.onnx" --device cuda --context "$ctx" --batch "$b" --steps 32 \
        --budget-gib 64 $flags --json > "$OUT/graph-$g-$ctx-$b.json" 2> "$OUT/graph-$g-$ctx-$b.err"
      echo "rc=$?"; grep -h "check-graph" "$OUT/graph-$g-$ctx-$b.err"; tail -3 "$OUT/graph-$g-$ctx-$b.err" | grep -v check-graph
      python3 - "$OUT/graph-$g-$ctx-$b.json" <<'PY' || true
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["results"]:
    print(f'{r["model"].split("/")[-2]:6s} graph={r["cuda_graph"]!s:5s} ctx {r["context"]:6d} batch {r["batch"]:3d}: {r["decode_ms_per_step"]:7.3f} ms/step {r["tokens_per_second"]:9.1f} tok/s  transfer {r["graph_transfer"]}  max|d| {r["graph_max_abs_diff"]}')
PY
    done
  done
  exit 0
fi

if [ "${1:-}" = kernels ]; then
  # Which kernels take a decode step? Nsight Compute times every kernel of the timed steps only (bench
  # --cuda-profiler-range; graph replays node by node), at the card's own clocks and without cache flushes, so the
  # sums are GPU time per step without launch gaps. KERNEL_RUNS (model:plain|graph:context:batch …), KERNEL_STEPS.
  ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  [ -n "$ncu" ] || { echo "no ncu"; exit 1; }
  "$M" convert "$base/model.onnx" -o "$work/full/model.onnx" --layout native --force --check structure --json > "$OUT/convert-full.json" || exit 1
  # cai-fp8 as in quant mode: how much of cai's step fp8 caches can save is the attention kernels' share.
  "$M" convert "$base/model.onnx" -o "$work/cai-fp8/model.onnx" --layout cai --window 1024 --kv-dtype fp8 --kv-scale absmax:8 \
    --force --check structure --json > "$OUT/convert-cai-fp8.json" || exit 1
  for r in ${KERNEL_RUNS:-cai:graph:4096:1 full:graph:4096:1 cai:graph:4096:16 full:graph:4096:16 gqa-full:plain:4096:16 cai:graph:32768:16}; do
    IFS=: read -r m g ctx b <<< "$r"
    flags=""; [ "$g" = graph ] && flags="--cuda-graph"
    name="$m-$g-$ctx-$b"; step "ncu $name"
    # shellcheck disable=SC2086
    timeout 400 "$ncu" --profile-from-start off --graph-profiling node --metrics gpu__time_duration.sum --cache-control none \
      --clock-control none --csv --log-file "$OUT/ncu-$name.csv" "$M" bench "$work/$m/model.onnx" --device cuda --context "$ctx" \
      --batch "$b" --steps "${KERNEL_STEPS:-2}" $flags --cuda-profiler-range --json > "$OUT/ncu-$name.json" 2> "$OUT/ncu-$name.err"
    echo "rc=$?"; tail -2 "$OUT/ncu-$name.err"
    python3 tools/gpu/e2e/kernel_summary.py "$OUT/ncu-$name.json" "$OUT/ncu-$name.csv" | tee -a "$OUT/kernel-summary.txt"
  done
  exit 0
fi

if [ "${1:-}" = profile ]; then
  # Where does a decode step go? ORT's profile of 8 timed steps per model (host time per node and op type).
  for s in 4096:1 4096:16; do
    ctx=${s%:*}; b=${s#*:}
    step "profile context $ctx batch $b"
    "$M" bench "$work/gqa-full/model.onnx" "$work/cai/model.onnx" --device cuda --context "$ctx" --batch "$b" --steps 8 \
      --ort-profile "$work/prof-$ctx-$b-" --json > "$OUT/profile-bench-$ctx-$b.json" 2> "$OUT/profile-$ctx-$b.err"
    for f in "$work"/prof-"$ctx"-"$b"-*.json; do python3 tools/gpu/e2e/profile_summary.py "$f" | tee -a "$OUT/profile-summary.txt"; done
  done
  exit 0
fi
# Per shape two runs: plain (gqa-full, cai, gqa-mix: the issue's table) and --cuda-graph (gqa-full and gqa-mix cannot
# be captured and run plain again; cai and full, the ops-backend native layout, are graphed). Ratios are against
# gqa-full of the same run. SHAPES overrides the shapes, MODES the runs (plain graph), BENCH_FLAGS extra bench flags, PREFILL_CHUNK the prefill call length
# (default 256; sliding rings that layers share hold W + chunk - 1 rows, so it sets their KV memory).
"$M" convert "$base/model.onnx" -o "$work/full/model.onnx" --layout native --force --check structure --json > "$OUT/convert-full.json" || exit 1
shapes=${SHAPES:-4096:1 4096:16 32768:1 32768:16}
[ "${1:-}" = quick ] && shapes="4096:1 4096:16"
for s in $shapes; do
  ctx=${s%:*}; b=${s#*:}
  for g in ${MODES:-plain graph}; do
    if [ $g = plain ]; then models="gqa-full cai gqa-mix"; flags=""; else models="gqa-full cai full gqa-mix"; flags="--cuda-graph"; fi
    # Graphed models first decode GRAPH_CHECK_STEPS steps with and without graphs and compare the logits (4K shapes).
    [ $g = graph ] && [ "$ctx" -le 4096 ] && flags="$flags --check-graph ${GRAPH_CHECK_STEPS:-8}"
    step "bench $g context $ctx batch $b"
    # shellcheck disable=SC2086
    timeout 500 "$M" bench $(for m in $models; do echo "$work/$m/model.onnx"; done) --device cuda --context "$ctx" --batch "$b" \
      --steps 32 --prefill-chunk "${PREFILL_CHUNK:-256}" --budget-gib 64 $flags ${BENCH_FLAGS:-} --json > "$OUT/bench-$g-$ctx-$b.json" 2> "$OUT/bench-$g-$ctx-$b.err"
    echo "rc=$?"; grep -h "check-graph" "$OUT/bench-$g-$ctx-$b.err"; grep -v "^bench .*without CUDA graphs\|check-graph" "$OUT/bench-$g-$ctx-$b.err" | tail -3
    python3 - "$OUT/bench-$g-$ctx-$b.json" <<'PY' || true
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["results"]:
    print(f'{r["model"].split("/")[-2]:10s} graph={r["cuda_graph"]!s:5s} ctx {r["context"]:6d} batch {r["batch"]:3d}: {r["decode_ms_per_step"]:7.3f} ms/step {r["tokens_per_second"]:9.1f} tok/s  x{r["speedup"]:.2f}  prefill {r["prefill_tokens_per_second"]:8.0f} tok/s  KV/seq {r["kv_bytes_per_sequence"]/2**20:8.1f} MiB  seqs in 64 GiB {r["sequences_in_budget"]}  transfer {r["graph_transfer"]}  max|d| {r["graph_max_abs_diff"]}')
PY
  done
done
