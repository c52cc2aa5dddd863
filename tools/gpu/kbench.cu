// Kernel-only decode (and prefill) benchmark: our CUDA decode (Plan + Launch from native/src/cuda, linked in
// directly, no ONNX Runtime) timed by replaying a CUDA graph, so the numbers hold no ORT per-Run cost
// (the same method torch_bench.py uses for torch SDPA).
//
//   kbench [quick]     > kbench.csv
//   kbench prefill [B S P D W]...    the prefill kernel (reader form, fp16, 32 q / 8 kv heads): a chunk of S tokens
//                                    after P cached ones (global cache when W = 0, else a ring of C = W + S); no
//                                    arguments: the standard shape list. Rows: the mma.sync kernel ("mma") as
//                                    planned for it, unsplit where that plan splits, and each variant N of the wgmma
//                                    kernel ("wgmmaN", unsplit) where it applies (sm_90); column planned = 1 on the
//                                    row the automatic plan runs; where mma.sync splits, the planned wgmma variant at
//                                    2, 4 and 8 splits too. KBENCH_PREFILL_KERNEL=mma|wgmmaN keeps that kernel's rows
//                                    only (for a profiler)
//   kbench floors                    what any kernel needs on this card, for the issue's goals (tools/gpu/goals.py):
//                                    the best pure-read rate of a 2 GiB stream (read_peak_GBps), an empty kernel
//                                    and a pure read of each sliding layer's K / V bytes (B = 1, 8, 32; W = 1024,
//                                    D = 128, 8 kv heads), each the fastest of a sweep of grid shapes, timed like
//                                    the decode rows (graph replay over copies exceeding 4x L2 where they fit)
//   kbench shape KIND B T D [v...]   one shape (KIND sliding|global), the tensor-core kernel as planned and
//                                    in each listed variant: a tc_flags value, sN for N splits, r for rotary
//                                    inside the op (R = D; profiling runs), b for bf16 (the same values
//                                    rounded to bf16; diff against the fp16 output), cN cluster merge off (0) /
//                                    on (1), pN paged caches of block size N (global only: each cache copy read
//                                    as a pool of blocks in a random order through a block table; other values
//                                    than the contiguous rows, so diff is -1), or a word of these (rc0);
//                                    KBENCH_ONLY_LISTED=1 leaves out the planned variant (then the first listed
//                                    variant is the first launch). With KBENCH_QUANT=1 the fp8 / int8 rows are
//                                    also timed at the fp16 plan's split count where theirs differs (the D = 64
//                                    split rule's A/B)
//
// Shapes: decode (S = 1), fp16, 32 q / 8 kv heads, D = 128, past = T - 1, owner bound in place;
// global C = T, sliding ring C = W = 1024. Both kernels ("simt": DecodeKernel, "tc": DecodeTcKernel),
// each with its automatic split count; "tc" also at half and double that count on some shapes.
// diff = max |tc - simt| of the outputs on the same inputs. Caches rotate over enough copies to
// exceed 4x L2.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cuda/attention_cuda.h"
#include "cuda/kernels.cuh"
#include "cuda/mma.cuh"

using namespace mixattn;
using namespace mixattn::cuda;

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(2);                                                                             \
    }                                                                                           \
  } while (0)

namespace {

template <typename T>
__global__ void FillRandom(T* p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    unsigned x = static_cast<unsigned>(i) * 2654435761u ^ seed ^ static_cast<unsigned>(i >> 32) * 40503u;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    p[i] = T((x & 0xffff) / 32768.f - 1.f);
  }
}

// Uniform values in [-1, 1) as fp16, or as bf16 (the "b" variant of `kbench shape`).
void Fill(void* p, size_t n, unsigned seed, bool bf16 = false) {
  if (bf16) FillRandom<<<2048, 256>>>(static_cast<__nv_bfloat16*>(p), n, seed);
  else FillRandom<<<2048, 256>>>(static_cast<__half*>(p), n, seed);
  CK(cudaGetLastError());
}

// Random 1-byte cache codes: any int8; fp8 E4M3 without the NaN codes (exponent field at most 14).
__global__ void FillCodesKernel(uint8_t* p, size_t n, unsigned seed, uint8_t mask) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    unsigned x = static_cast<unsigned>(i) * 2654435761u ^ seed;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    p[i] = static_cast<uint8_t>(x) & mask;
  }
}
void FillCodes(void* p, size_t n, unsigned seed, CacheDType cache) {
  FillCodesKernel<<<2048, 256>>>(static_cast<uint8_t*>(p), n, seed, cache == CacheDType::kFloat8E4M3 ? 0xf7 : 0xff);
  CK(cudaGetLastError());
}

struct Graph {
  cudaGraphExec_t exec = nullptr;
  ~Graph() {
    if (exec) cudaGraphExecDestroy(exec);
  }
};


// Median over 5 samples of µs per call of run() (a call = one launch or one graph replay), each sample timing enough
// calls for about budget_ms of GPU work (at least 3, at most max_calls) between two events.
template <typename Run>
double MedianUsPerCall(cudaStream_t stream, cudaEvent_t ea, cudaEvent_t eb, double budget_ms, int max_calls, Run&& run) {
  run();  // warm
  CK(cudaEventRecord(ea, stream));
  run();
  CK(cudaEventRecord(eb, stream));
  CK(cudaEventSynchronize(eb));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, ea, eb));
  const int calls = std::clamp(static_cast<int>(budget_ms / std::max(ms, 1e-3f)), 3, max_calls);
  std::vector<double> samples;
  for (int rep = 0; rep < 5; ++rep) {
    CK(cudaEventRecord(ea, stream));
    for (int i = 0; i < calls; ++i) run();
    CK(cudaEventRecord(eb, stream));
    CK(cudaEventSynchronize(eb));
    CK(cudaEventElapsedTime(&ms, ea, eb));
    samples.push_back(ms * 1e3 / calls);
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

// Prefill: the kernel on one shape (as planned, and unsplit when the plan splits); prints µs, useful TFLOP/s
// (4 D Hq per visible (query, key) pair) and how many output elements are not finite (0 expected).
void BenchPrefill(cudaStream_t stream, cudaEvent_t ea, cudaEvent_t eb, int sms, int B, int S, int P, int D, int W) {
  const int Hq = 32, Hkv = 8;
  const int C = W > 0 ? W + S : P + S;
  const size_t elems = size_t{1} * B * Hkv * C * D;
  void *kc, *vc, *q, *k, *v, *out, *past;
  CK(cudaMalloc(&kc, elems * 2));
  CK(cudaMalloc(&vc, elems * 2));
  CK(cudaMalloc(&q, size_t(B) * S * Hq * D * 2));
  CK(cudaMalloc(&k, size_t(B) * S * Hkv * D * 2));
  CK(cudaMalloc(&v, size_t(B) * S * Hkv * D * 2));
  CK(cudaMalloc(&out, size_t(B) * S * Hq * D * 2));
  CK(cudaMalloc(&past, B * 4));
  Fill(kc, elems, 1);
  Fill(vc, elems, 2);
  Fill(q, size_t(B) * S * Hq * D, 3);
  Fill(k, size_t(B) * S * Hkv * D, 4);
  Fill(v, size_t(B) * S * Hkv * D, 5);
  std::vector<int32_t> hp(B, P);
  CK(cudaMemcpy(past, hp.data(), B * 4, cudaMemcpyHostToDevice));
  double pairs = 0;
  for (int s = 0; s < S; ++s) pairs += W > 0 ? std::min(P + s + 1, W) : P + s + 1;
  const double flops = 4.0 * D * Hq * B * pairs;

  CudaAttendArgs a;
  a.shape.batch = B;
  a.shape.seq = S;
  a.shape.num_heads = Hq;
  a.shape.kv_num_heads = Hkv;
  a.shape.head_dim = D;
  a.shape.capacity = C;
  a.shape.window = W;
  a.shape.scale = 1.f / std::sqrt(static_cast<float>(D));
  a.dtype = DType::kFloat16;
  a.query = q;
  a.chunk_key = k;
  a.chunk_value = v;
  a.key_cache = kc;
  a.value_cache = vc;
  a.past_lengths = static_cast<const int32_t*>(past);
  a.output = out;
  // No present (the reader form: keys >= P come from the cache, which holds C >= P + S rows): the kernel alone, no
  // cache write, and every repetition sees the same inputs.
  // The mma.sync kernel as planned, and unsplit (s1) when that plan splits the key range; each variant of the wgmma
  // kernel where it applies (sm_90, unsplit; the A/B of issue #23). The row the automatic plan runs is marked planned.
  PlanTuning mma;
  mma.prefill_kernel = 0;
  std::vector<LaunchPlan> plans = {Plan(a, sms, mma)};
  if (plans[0].splits > 1) {
    PlanTuning unsplit = mma;
    unsplit.splits = 1;
    plans.push_back(Plan(a, sms, unsplit));
  }
  for (int variant = 1; variant <= kPrefillWgmmaVariants; ++variant) {
    PlanTuning wgmma;
    wgmma.prefill_kernel = variant;
    wgmma.splits = 1;
    const LaunchPlan pw = Plan(a, sms, wgmma);
    if (pw.wgmma_prefill > 0) plans.push_back(pw);
  }
  const LaunchPlan automatic = Plan(a, sms);
  // Where mma.sync splits: the planned wgmma variant at 2, 4 and 8 splits too, and the automatic plan if none of the
  // rows is it.
  if (plans[0].splits > 1)
    for (int splits : {2, 4, 8}) {
      PlanTuning wgmma;
      wgmma.prefill_kernel = automatic.wgmma_prefill > 0 ? automatic.wgmma_prefill : kPrefillWgmmaPlanned;
      wgmma.splits = splits;
      const LaunchPlan pw = Plan(a, sms, wgmma);
      if (pw.wgmma_prefill > 0) plans.push_back(pw);
    }
  if (std::none_of(plans.begin(), plans.end(), [&](const LaunchPlan& pl) {
        return pl.wgmma_prefill == automatic.wgmma_prefill && pl.splits == automatic.splits;
      }))
    plans.push_back(automatic);
  // KBENCH_PREFILL_KERNEL=mma|wgmmaN: that row only (a profiler then sees one kernel).
  const char* only = std::getenv("KBENCH_PREFILL_KERNEL");
  for (const LaunchPlan& pl : plans) {
    const std::string kernel = pl.wgmma_prefill > 0 ? "wgmma" + std::to_string(pl.wgmma_prefill) : "mma";
    if (only != nullptr && kernel != only) continue;
    void* scratch = nullptr;
    if (pl.scratch_bytes) CK(cudaMalloc(&scratch, pl.scratch_bytes));
    auto launch = [&] {
      const std::string e = Launch(a, pl, scratch, stream);
      if (!e.empty()) {
        std::fprintf(stderr, "launch: %s\n", e.c_str());
        std::exit(3);
      }
    };
    // Poisoned output, one launch: every element must be written and finite (correctness is run.sh check's job).
    CK(cudaMemsetAsync(out, 0xff, size_t(B) * S * Hq * D * 2, stream));
    launch();
    CK(cudaStreamSynchronize(stream));
    std::vector<__half> h(size_t(B) * S * Hq * D);
    CK(cudaMemcpy(h.data(), out, h.size() * 2, cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (const __half& x : h) bad += !std::isfinite(__half2float(x));
    const double us = MedianUsPerCall(stream, ea, eb, 50.0, 200, launch);
    const bool planned = pl.wgmma_prefill == automatic.wgmma_prefill && pl.splits == automatic.splits;
    std::printf("prefill,%d,%d,%d,%d,%d,%s,%d,%.2f,%.1f,%zu,%d\n", B, S, P, D, W, kernel.c_str(), pl.splits, us,
                flops / (us * 1e6), bad, planned ? 1 : 0);
    std::fflush(stdout);
    if (scratch) CK(cudaFree(scratch));
  }
  for (void* x : {kc, vc, q, k, v, out, past}) CK(cudaFree(x));
}

// A pure read of n 16-byte words: every thread loads U words (grid-stride apart) before it folds them, so U * 16
// bytes a thread are in flight; the fold is stored only when it equals a value it cannot take by chance, which
// keeps the loads live without a write per block.
template <int U>
__global__ void ReadStream(const uint4* __restrict__ p, size_t n, unsigned* sink) {
  const size_t stride = size_t{gridDim.x} * blockDim.x;
  size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x;
  unsigned x = 0;
  for (; i + (U - 1) * stride < n; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int k = 0; k < U; ++k) v[k] = __ldcs(p + i + k * stride);
#pragma unroll
    for (int k = 0; k < U; ++k) x ^= v[k].x ^ v[k].y ^ v[k].z ^ v[k].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = __ldcs(p + i);
    x ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (x == 0x9e3779b9u) *sink = x;
}

// A pure read through shared memory as the decode kernel streams (cp.async 16-byte copies, L1 bypassed): each thread
// copies U chunks a stage into a ring of NS stages, waits for the oldest stage and folds one word of it. The block
// streams one contiguous region.
template <int U, int NS>
__global__ void ReadCpAsync(const uint4* __restrict__ p, size_t n, unsigned* sink) {
  extern __shared__ __align__(128) uint4 ring[];  // [NS][blockDim.x * U]
  const size_t per_block = n / gridDim.x / (size_t{blockDim.x} * U) * (size_t{blockDim.x} * U);
  const uint4* src = p + blockIdx.x * per_block;
  const int stage = blockDim.x * U, steps = static_cast<int>(per_block / stage);
  auto issue = [&](int t) {
    if (t < steps)
#pragma unroll
      for (int k = 0; k < U; ++k) {
        const int i = k * blockDim.x + threadIdx.x;
        mixattn::cuda::dev::CpAsync16(mixattn::cuda::dev::SmemAddr(ring + (t % NS) * stage + i), src + size_t(t) * stage + i, 16);
      }
    mixattn::cuda::dev::CpAsyncCommit();
  };
  for (int t = 0; t < NS - 1; ++t) issue(t);
  unsigned x = 0;
  for (int t = 0; t < steps; ++t) {
    issue(t + NS - 1);
    mixattn::cuda::dev::CpAsyncWait<NS - 1>();
    const uint4 v = ring[(t % NS) * stage + threadIdx.x];  // the thread's own copy: no barrier needed
    x ^= v.x ^ v.w;
  }
  if (x == 0x9e3779b9u) *sink = x;
}

// A pure read with the Hopper bulk-copy engine (cp.async.bulk, one 1-D copy of kChunk bytes a stage, completion on an
// mbarrier): one thread a block issues, waits and folds one word. Blocks of one warp; the block streams one
// contiguous region through NS stages.
template <int kChunk, int NS>
__global__ void ReadBulk(const uint4* __restrict__ p, size_t n, unsigned* sink) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) uint4 ring[];  // [NS][kChunk / 16]
  __shared__ __align__(8) unsigned long long bar[NS];
  if (threadIdx.x != 0) return;
  constexpr int kWords = kChunk / 16;
  const size_t per_block = n / gridDim.x / kWords * kWords;
  const uint4* src = p + blockIdx.x * per_block;
  const int steps = static_cast<int>(per_block / kWords);
  for (int s = 0; s < NS; ++s)
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(mixattn::cuda::dev::SmemAddr(&bar[s])) : "memory");
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  auto issue = [&](int t) {
    if (t >= steps) return;
    const uint32_t b = mixattn::cuda::dev::SmemAddr(&bar[t % NS]);
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(b), "r"(kChunk) : "memory");
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     mixattn::cuda::dev::SmemAddr(ring + (t % NS) * kWords)),
                 "l"(src + size_t(t) * kWords), "r"(kChunk), "r"(b)
                 : "memory");
  };
  for (int t = 0; t < NS; ++t) issue(t);
  unsigned x = 0;
  for (int t = 0; t < steps; ++t) {
    const uint32_t b = mixattn::cuda::dev::SmemAddr(&bar[t % NS]);
    const uint32_t parity = (t / NS) & 1;
    uint32_t done = 0;
    while (!done)
      asm volatile("{ .reg .pred q; mbarrier.try_wait.parity.shared::cta.b64 q, [%1], %2; selp.u32 %0, 1, 0, q; }"
                   : "=r"(done) : "r"(b), "r"(parity) : "memory");
    const uint4 v = ring[(t % NS) * kWords];
    x ^= v.x ^ v.w;
    issue(t + NS);
  }
  if (x == 0x9e3779b9u) *sink = x;
#endif
}

__global__ void EmptyKernel() {}

// µs per launch of launch(r) over R buffers: a graph of R launches replayed, µs per replay / R (the method of every
// kbench decode row, and of torch_bench.py).
template <typename Launch>
double GraphUsPerLaunch(cudaStream_t stream, cudaEvent_t ea, cudaEvent_t eb, int R, Launch&& launch) {
  cudaGraph_t g;
  CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int r = 0; r < R; ++r) launch(r);
  CK(cudaStreamEndCapture(stream, &g));
  Graph ge;
  CK(cudaGraphInstantiateWithFlags(&ge.exec, g, 0));
  CK(cudaGraphDestroy(g));
  return MedianUsPerCall(stream, ea, eb, 6.0, 400, [&] { CK(cudaGraphLaunch(ge.exec, stream)); }) / R;
}

struct ReadShape {
  int blocks_per_sm, threads, unroll;
  const char* reader = "ld";  // ld: plain 16-byte loads; cp.async: 16-byte copies to shared memory; bulk: cp.async.bulk
};

// The fastest pure read of `bytes` (over R copies) among grid shapes: blocks per SM x threads x loads in flight, for
// each reader (ld: plain 16-byte loads; cp.async: 16-byte copies to shared memory; bulk: cp.async.bulk).
struct BestReads {
  double us = INFINITY;  // the fastest of all
  ReadShape at{};
  double by_reader[3] = {INFINITY, INFINITY, INFINITY};  // ld, cp.async, bulk
};
BestReads BestRead(cudaStream_t stream, cudaEvent_t ea, cudaEvent_t eb, int sms, size_t bytes, int R,
                   const std::vector<void*>& bufs, unsigned* sink) {
  BestReads best;
  auto record = [&](int reader, double us, ReadShape shape) {
    best.by_reader[reader] = std::min(best.by_reader[reader], us);
    if (us < best.us) {
      best.us = us;
      best.at = shape;
    }
  };
  const size_t n = bytes / 16;
  for (int bps : {1, 2, 4, 8, 16})
    for (int threads : {128, 256, 512, 1024})
      for (int unroll : {2, 4, 8}) {
        if (bps * threads > 2048) continue;
        const unsigned grid = static_cast<unsigned>(sms * bps);
        record(0, GraphUsPerLaunch(stream, ea, eb, R, [&](int r) {
                 const uint4* p = static_cast<const uint4*>(bufs[r]);
                 if (unroll == 2) ReadStream<2><<<grid, threads, 0, stream>>>(p, n, sink);
                 else if (unroll == 4) ReadStream<4><<<grid, threads, 0, stream>>>(p, n, sink);
                 else ReadStream<8><<<grid, threads, 0, stream>>>(p, n, sink);
                 CK(cudaGetLastError());
               }),
               {bps, threads, unroll});
      }
  // Through shared memory: cp.async (4 stages of U 16-byte chunks a thread) and the bulk-copy engine (4 stages of
  // 4 / 8 / 16 KB, one-warp blocks). Only where the region a block streams holds at least 8 stages; times are scaled
  // to the whole buffer (a remainder under one stage a block is not read).
  for (int bps : {1, 2, 4})
    for (int unroll : {2, 4, 8}) {
      const int threads = 256;
      const unsigned grid = static_cast<unsigned>(sms * bps);
      const size_t smem = size_t{4} * threads * unroll * 16;
      if (n / grid < size_t{8} * threads * unroll || smem * bps > 200 * 1024) continue;
      auto kernel = unroll == 2 ? ReadCpAsync<2, 4> : unroll == 4 ? ReadCpAsync<4, 4> : ReadCpAsync<8, 4>;
      CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      const size_t read = n / grid / (size_t{threads} * unroll) * (size_t{threads} * unroll) * grid * 16;
      record(1, GraphUsPerLaunch(stream, ea, eb, R, [&](int r) {
               kernel<<<grid, threads, smem, stream>>>(static_cast<const uint4*>(bufs[r]), n, sink);
               CK(cudaGetLastError());
             }) * bytes / read,
             {bps, threads, unroll, "cp.async"});
    }
  for (int bps : {1, 2, 4, 8})
    for (int kb : {4, 8, 16}) {
      const unsigned grid = static_cast<unsigned>(sms * bps);
      const size_t chunk = size_t{1024} * kb, smem = 4 * chunk;
      if (bytes / grid < 8 * chunk || smem * bps > 200 * 1024) continue;
      auto kernel = kb == 4 ? ReadBulk<4096, 4> : kb == 8 ? ReadBulk<8192, 4> : ReadBulk<16384, 4>;
      CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      const size_t read = bytes / grid / chunk * chunk * grid;
      record(2, GraphUsPerLaunch(stream, ea, eb, R, [&](int r) {
               kernel<<<grid, 32, smem, stream>>>(static_cast<const uint4*>(bufs[r]), n, sink);
               CK(cudaGetLastError());
             }) * bytes / read,
             {bps, 32, kb, "bulk"});
    }
  return best;
}

// `kbench floors`: see the header.
int Floors(cudaStream_t stream, cudaEvent_t ea, cudaEvent_t eb, const cudaDeviceProp& prop) {
  unsigned* sink;
  CK(cudaMalloc(&sink, 4));
  const int sms = prop.multiProcessorCount;
  {
    const size_t bytes = size_t{2} << 30;
    void* buf;
    CK(cudaMalloc(&buf, bytes));
    Fill(buf, bytes / 2, 41);
    CK(cudaDeviceSynchronize());
    const BestReads r = BestRead(stream, ea, eb, sms, bytes, 1, {buf}, sink);
    std::printf("# read_peak_by_reader_GBps ld %.1f cp.async %.1f bulk %.1f\n", bytes / (r.by_reader[0] * 1e3),
                bytes / (r.by_reader[1] * 1e3), bytes / (r.by_reader[2] * 1e3));
    std::printf("# read_peak_GBps %.1f\n# read_peak_shape %s, %d blocks/SM x %d threads x %d (loads a thread | KB a stage)\n",
                bytes / (r.us * 1e3), r.at.reader, r.at.blocks_per_sm, r.at.threads, r.at.unroll);
    CK(cudaFree(buf));
  }
  const double empty = GraphUsPerLaunch(stream, ea, eb, 32, [&](int) { EmptyKernel<<<1, 32, 0, stream>>>(); });
  std::printf("# empty_kernel_graph_us %.3f\n", empty);
  std::printf("floor,B,bytes,read_us,read_over_empty,reader,blocks_per_sm,threads,unroll\n");
  std::fflush(stdout);
  // fp16 caches (2 bytes an element), then 1-byte caches (int8 / fp8: "sliding_read_1b").
  for (int elem_bytes : {2, 1})
  for (int B : {1, 8, 32}) {
    const size_t bytes = size_t{2} * B * 8 * 1024 * 128 * elem_bytes;  // K and V of a W = 1024 ring, 8 kv heads, D = 128
    const int R = static_cast<int>(std::clamp<size_t>(4 * size_t(prop.l2CacheSize) / bytes + 1, 1, 32));
    std::vector<void*> bufs(R);
    for (void*& b : bufs) {
      CK(cudaMalloc(&b, bytes));
      Fill(b, bytes / 2, 43);
    }
    CK(cudaDeviceSynchronize());
    const BestReads r = BestRead(stream, ea, eb, sms, bytes, R, bufs, sink);
    std::printf("%s,%d,%zu,%.2f,%.2f,%s,%d,%d,%d\n", elem_bytes == 2 ? "sliding_read" : "sliding_read_1b", B, bytes, r.us, r.us / empty, r.at.reader, r.at.blocks_per_sm,
                r.at.threads, r.at.unroll);
    std::fflush(stdout);
    for (void* b : bufs) CK(cudaFree(b));
  }
  CK(cudaFree(sink));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "quick") == 0;
  const bool one = argc > 5 && std::strcmp(argv[1], "shape") == 0;
  // Extra variants: "sN" forces N splits, "r" adds rotary inside the op (R = D, half-split), a number is a tc_flags value.
  struct Extra {
    int splits = 0, flags = -1, cluster = -1, paged = 0;
    bool rotary = false, bf16 = false;
  };
  std::vector<Extra> one_extra;
  // A variant is a word of parts: sN (N splits), r (rotary), b (bf16), cN (cluster merge off / on), a number (tc_flags);
  // e.g. "rc0" is rotary with the cluster merge off.
  for (int i = 6; one && i < argc; ++i) {
    Extra e;
    for (const char* c = argv[i]; *c != 0;) {
      char* end = nullptr;
      if (*c == 's') e.splits = static_cast<int>(std::strtol(c + 1, &end, 10));
      else if (*c == 'c') e.cluster = static_cast<int>(std::strtol(c + 1, &end, 10));
      else if (*c == 'p') e.paged = static_cast<int>(std::strtol(c + 1, &end, 10));
      else if (*c == 'r') e.rotary = true, end = const_cast<char*>(c + 1);
      else if (*c == 'b') e.bf16 = true, end = const_cast<char*>(c + 1);
      else e.flags = static_cast<int>(std::strtol(c, &end, 10));
      if (end == c) {
        std::fprintf(stderr, "kbench: cannot read variant '%s'\n", argv[i]);
        return 2;
      }
      c = end;
    }
    one_extra.push_back(e);
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t ea, eb;
  CK(cudaEventCreate(&ea));
  CK(cudaEventCreate(&eb));

  double peak = 0;
  {
    const size_t n = size_t{2} << 30;
    void *a, *b;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMemsetAsync(a, 1, n, stream));
    CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, stream));
    CK(cudaEventRecord(ea, stream));
    for (int i = 0; i < 10; ++i) CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, stream));
    CK(cudaEventRecord(eb, stream));
    CK(cudaEventSynchronize(eb));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, ea, eb));
    peak = 2.0 * n * 10 / (ms * 1e6);
    CK(cudaFree(a));
    CK(cudaFree(b));
  }
  std::printf("# device %s, %d SMs, L2 %d MiB\n# d2d_copy_peak_GBps %.1f\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20, peak);
  if (argc > 1 && std::strcmp(argv[1], "floors") == 0) return Floors(stream, ea, eb, prop);
  if (argc > 1 && std::strcmp(argv[1], "prefill") == 0) {
    std::printf("kind,B,S,P,D,W,kernel,splits,us,tflops,nonfinite,planned\n");
    std::vector<std::vector<int>> shapes;
    for (int i = 2; i + 4 < argc; i += 5)
      shapes.push_back({std::atoi(argv[i]), std::atoi(argv[i + 1]), std::atoi(argv[i + 2]), std::atoi(argv[i + 3]),
                        std::atoi(argv[i + 4])});
    if (shapes.empty())  // chunked prefill as the e2e benchmark runs it (256-token chunks), whole prompts, a window
      shapes = {{1, 256, 0, 128, 0},    {1, 256, 4096, 128, 0},   {1, 256, 32512, 128, 0}, {1, 256, 16128, 64, 0},
                {1, 64, 32704, 128, 0},  {16, 256, 32512, 128, 0},
                {16, 256, 32512, 64, 0}, {16, 256, 32512, 64, 1024}, {1, 4096, 0, 128, 0},  {1, 16384, 0, 128, 0},
                {1, 16384, 0, 64, 0},   {1, 16384, 0, 128, 1024}, {4, 4096, 0, 256, 0}};
    for (const auto& sh : shapes) BenchPrefill(stream, ea, eb, prop.multiProcessorCount, sh[0], sh[1], sh[2], sh[3], sh[4]);
    return 0;
  }
  std::printf("kind,B,T,L,bytes,kernel,splits,us,pct_peak,diff\n");
  std::fflush(stdout);

  const int Hq = 32, Hkv = 8, W = 1024;
  const int D = one ? std::atoi(argv[5]) : std::getenv("KBENCH_D") ? std::atoi(std::getenv("KBENCH_D")) : 128;
  // KBENCH_QUANT=1: only the tensor-core kernel over fp16, fp8 and int8 caches (the issue #18 table), no sweeps.
  const bool quant_only = std::getenv("KBENCH_QUANT") != nullptr && std::atoi(std::getenv("KBENCH_QUANT")) != 0;
  std::vector<int> Ts, Bs = {1, 8, 32};
  for (int T = 1024; T <= 131072; T *= 2) Ts.push_back(T);
  if (quick) Ts = {1024, 16384, 131072};
  std::vector<const char*> kinds = {"sliding", "global"};
  if (one) {
    kinds = {std::strcmp(argv[2], "sliding") == 0 ? "sliding" : "global"};
    Bs = {std::atoi(argv[3])};
    Ts = {std::atoi(argv[4])};
  }
  for (const char* kind : kinds) {
    const bool sliding = std::strcmp(kind, "sliding") == 0;
    for (int B : Bs)
      for (int T : Ts) {
        if (!one && sliding && T != 1024 && T != 131072) continue;  // a ring of W: the time does not depend on T
        const int C = sliding ? W : T;
        const int L = sliding ? std::min(T, W) : T;
        const size_t elems = size_t{1} * B * Hkv * C * D;
        const size_t cache_bytes = 2 * elems * 2;
        const double bytes = 2.0 * B * Hkv * L * D * 2;
        const int R = static_cast<int>(std::clamp<size_t>(4 * size_t(prop.l2CacheSize) / cache_bytes + 1, 1, 32));
        std::vector<void*> kc(R), vc(R);
        for (int r = 0; r < R; ++r) {
          CK(cudaMalloc(&kc[r], elems * 2));
          CK(cudaMalloc(&vc[r], elems * 2));
          Fill(kc[r], elems, 17 + 2 * r);
          Fill(vc[r], elems, 18 + 2 * r);
        }
        void *q, *k, *v, *out, *past;
        CK(cudaMalloc(&q, size_t(B) * Hq * D * 2));
        CK(cudaMalloc(&k, size_t(B) * Hkv * D * 2));
        CK(cudaMalloc(&v, size_t(B) * Hkv * D * 2));
        CK(cudaMalloc(&out, size_t(B) * Hq * D * 2));
        CK(cudaMalloc(&past, B * 4));
        Fill(q, size_t(B) * Hq * D, 5);
        Fill(k, size_t(B) * Hkv * D, 6);
        Fill(v, size_t(B) * Hkv * D, 7);
        std::vector<int32_t> hp(B, T - 1);
        CK(cudaMemcpy(past, hp.data(), B * 4, cudaMemcpyHostToDevice));

        CudaAttendArgs a;
        a.shape.batch = B;
        a.shape.seq = 1;
        a.shape.num_heads = Hq;
        a.shape.kv_num_heads = Hkv;
        a.shape.head_dim = D;
        a.shape.capacity = C;
        a.shape.window = sliding ? W : 0;
        a.shape.scale = 1.f / std::sqrt(static_cast<float>(D));
        a.dtype = DType::kFloat16;
        a.query = q;
        a.chunk_key = k;
        a.chunk_value = v;
        a.past_lengths = static_cast<const int32_t*>(past);
        a.output = out;

        std::vector<__half> ref;
        void *rot_cos = nullptr, *rot_sin = nullptr;
        struct Variant {
          int kernel, splits, flags, fused = -1;
          bool rotary = false, bf16 = false;
          int cluster = -1;
          CacheDType cache = CacheDType::kSameAsQuery;
          int paged = 0;  // block size of a paged variant
        };
        // SIMT, tensor-core (splits merged as planned: in a cluster where one fits, else by the group's last block),
        // tensor-core with the separate CombineKernel ("tc_sep"), and with the cluster merge off ("tc_c0": the last
        // block merges; the same as "tc" where the plan has one split or no cluster fits).
        std::vector<Variant> variants = {{0, 0, -1}, {1, 0, -1}, {1, 0, -1, 0, false, false, 0}, {1, 0, -1, -1, false, false, 0}};
        if (one) {
          // KBENCH_ONLY_LISTED=1: only the listed variants (a profiler's first launch is then the first listed one).
          const char* only = std::getenv("KBENCH_ONLY_LISTED");
          variants.clear();
          if (only == nullptr || std::atoi(only) == 0 || one_extra.empty()) variants.push_back({1, 0, -1});
          for (const Extra& e : one_extra) {
            if (e.paged > 0 && (sliding || e.paged % 16 != 0 || C % e.paged != 0)) {
              std::fprintf(stderr, "kbench: paged variant p%d needs a global cache and a block size that is a multiple "
                                   "of 16 dividing T = %d\n", e.paged, T);
              return 2;
            }
            Variant var{1, e.splits, e.flags, -1, e.rotary, e.bf16, e.cluster};
            var.paged = e.paged;
            variants.push_back(var);
          }
        }
        // Tuning rows on shapes of B*T = 16K..1M: the tensor-core kernel's variant flags
        // (decode_tc.cu) and half / double the automatic split count.
        if (quant_only) {
          variants = {{1, 0, -1}};
          Variant f8{1, 0, -1}, i8{1, 0, -1};
          f8.cache = CacheDType::kFloat8E4M3;
          i8.cache = CacheDType::kInt8;
          variants.push_back(f8);
          variants.push_back(i8);
          // The quantized kernels at the fp16 plan's split count where their own plan differs.
          CudaAttendArgs qa = a;
          PlanTuning qt;
          qt.decode_kernel = 1;
          const int fp_splits = Plan(a, prop.multiProcessorCount, qt).splits;
          for (Variant qv : {f8, i8}) {
            qa.cache = qv.cache;
            if (Plan(qa, prop.multiProcessorCount, qt).splits == fp_splits) continue;
            qv.splits = fp_splits;
            variants.push_back(qv);
          }
        }
        // Per-channel K and V scales (1/64: values of fp8 codes stay small), for the quantized variants.
        float* scales = nullptr;
        {
          std::vector<float> hs(size_t(Hkv) * D, 1.f / 64.f);
          CK(cudaMalloc(&scales, hs.size() * 4));
          CK(cudaMemcpy(scales, hs.data(), hs.size() * 4, cudaMemcpyHostToDevice));
        }
        const bool sweep = !one && !quant_only && (sliding ? (T == 1024 && B != 8)
                                   : ((B == 1 && (T == 16384 || T == 65536 || T == 131072)) ||
                                      (B == 8 && (T == 8192 || T == 131072)) || (B == 32 && (T == 2048 || T == 16384))));
        if (sweep) {
          PlanTuning tt;
          tt.decode_kernel = 1;
          const int s = Plan(a, prop.multiProcessorCount, tt).splits;
          for (int f : {0, 1}) variants.push_back({1, 0, f});
          if (s / 2 >= 1) variants.push_back({1, s / 2, -1});
          variants.push_back({1, s * 2, -1});
        }
        for (const Variant& var : variants) {
          PlanTuning tune;
          tune.decode_kernel = var.kernel;
          tune.splits = var.splits;
          tune.tc_flags = var.flags;
          tune.fused_combine = var.fused;
          tune.cluster_merge = var.cluster;
          CudaAttendArgs av = a;
          // bf16: the same buffers refilled with bf16 values for this variant, fp16 again after it.
          auto refill = [&](bool bf16) {
            for (int r = 0; r < R; ++r) {
              Fill(kc[r], elems, 17 + 2 * r, bf16);
              Fill(vc[r], elems, 18 + 2 * r, bf16);
            }
            Fill(q, size_t(B) * Hq * D, 5, bf16);
            Fill(k, size_t(B) * Hkv * D, 6, bf16);
            Fill(v, size_t(B) * Hkv * D, 7, bf16);
          };
          if (var.bf16) {
            refill(true);
            av.dtype = DType::kBFloat16;
          }
          const bool codes = var.cache != CacheDType::kSameAsQuery;
          if (codes) {  // the first half of each cache buffer as codes; refilled as fp16 after this variant
            for (int r = 0; r < R; ++r) {
              FillCodes(kc[r], elems, 17 + 2 * r, var.cache);
              FillCodes(vc[r], elems, 18 + 2 * r, var.cache);
            }
            CK(cudaDeviceSynchronize());  // the fills ran on the legacy stream, the launches use a non-blocking one
            av.cache = var.cache;
            av.k_scale = av.v_scale = scales;
            av.k_scale_mode = av.v_scale_mode = ScaleMode::kPerChannel;
          }
          if (var.rotary) {  // cos/sin caches covering positions 0..T (values only need to be finite)
            const size_t n = size_t(T + 1) * (D / 2);
            if (rot_cos == nullptr) {
              CK(cudaMalloc(&rot_cos, n * 2));
              CK(cudaMalloc(&rot_sin, n * 2));
              Fill(rot_cos, n, 31);
              Fill(rot_sin, n, 32);
            }
            av.cos_cache = rot_cos;
            av.sin_cache = rot_sin;
            av.rotary_dim = D;
            av.max_positions = T + 1;
          }
          // Paged: each cache copy read as a pool of B * T / block_size blocks in a random order (one table for all).
          int32_t* table = nullptr;
          if (var.paged > 0) {
            const int bsz = var.paged, per_seq = C / bsz, blocks = B * per_seq;
            std::vector<int32_t> ht(blocks);
            for (int i = 0; i < blocks; ++i) ht[i] = i;
            uint32_t state = 12345u;
            for (int i = blocks - 1; i > 0; --i) {
              state = state * 1664525u + 1013904223u;
              std::swap(ht[i], ht[static_cast<int>(state % static_cast<uint32_t>(i + 1))]);
            }
            CK(cudaMalloc(&table, ht.size() * 4));
            CK(cudaMemcpy(table, ht.data(), ht.size() * 4, cudaMemcpyHostToDevice));
            av.paged.table = table;
            av.paged.max_blocks = per_seq;
            av.paged.block_size = bsz;
            av.paged.num_blocks = blocks;
          }
          const LaunchPlan pl = Plan(av, prop.multiProcessorCount, tune);
          void* scratch = nullptr;
          if (pl.scratch_bytes) CK(cudaMalloc(&scratch, pl.scratch_bytes));
          auto launch = [&](int r) {
            CudaAttendArgs x = av;
            x.key_cache = kc[r];
            x.value_cache = vc[r];
            x.present_key = kc[r];
            x.present_value = vc[r];
            const std::string e = Launch(x, pl, scratch, stream);
            if (!e.empty()) {
              std::fprintf(stderr, "launch: %s\n", e.c_str());
              std::exit(3);
            }
          };
          // Correctness: poisoned output, one launch, compare with the SIMT kernel's output.
          CK(cudaMemsetAsync(out, 0xff, size_t(B) * Hq * D * 2, stream));
          launch(0);
          CK(cudaStreamSynchronize(stream));
          std::vector<__half> h(size_t(B) * Hq * D);
          CK(cudaMemcpy(h.data(), out, h.size() * 2, cudaMemcpyDeviceToHost));
          double diff = 0;
          // A bf16 variant reads the same values rounded to bf16: its output is compared with the fp16 one (~1e-2).
          auto value = [&](size_t i) {
            if (!var.bf16) return double(__half2float(h[i]));
            __nv_bfloat16 x;
            std::memcpy(&x, &h[i], 2);
            return double(__bfloat162float(x));
          };
          if (codes) {  // other values than the fp16 rows: count what is not finite instead
            for (const __half& x : h) diff += !std::isfinite(__half2float(x));
          } else if (var.paged > 0) {  // other rows than the contiguous caches: no reference
            diff = -1;
          } else if (ref.empty()) {
            ref = h;
          } else {
            for (size_t i = 0; i < h.size(); ++i) {
              const double d = std::fabs(value(i) - double(__half2float(ref[i])));
              diff = std::isnan(d) ? INFINITY : std::max(diff, d);
            }
          }
          // Timing: a graph of R launches over the R cache copies, replayed.
          const double us = GraphUsPerLaunch(stream, ea, eb, R, launch);
          if (var.bf16 || codes) {
            refill(false);
            CK(cudaDeviceSynchronize());
          }
          const std::string name = var.paged > 0 ? "tc_paged" + std::to_string(var.paged) + (var.rotary ? "_rotary" : "")
                                 : codes ? std::string(var.cache == CacheDType::kInt8 ? "tc_int8" : "tc_fp8") : std::string(var.bf16 ? (var.rotary ? "tc_bf16_rotary" : "tc_bf16")
                                 : var.rotary ? "tc_rotary"
                                 : !var.kernel       ? "simt"
                                 : var.fused == 0 ? "tc_sep"
                                 : var.flags >= 0 ? "tc_f" + std::to_string(var.flags)
                                 : var.splits > 0 ? "tc_s"
                                                  : "tc") +
                                   (var.cluster >= 0 && var.fused != 0 ? "_c" + std::to_string(var.cluster) : "");
          std::fprintf(stderr, "%s B=%d T=%d D=%d %s: splits %d, merge %s\n", kind, B, T, D, name.c_str(), pl.splits,
                       pl.splits == 1 ? "none" : pl.cluster_merge ? "cluster" : pl.fused_combine ? "last block" : "CombineKernel");
          const double vbytes = codes ? bytes / 2 : bytes;
          std::printf("%s,%d,%d,%d,%.0f,%s,%d,%.2f,%.1f,%.3g\n", kind, B, T, L, vbytes, name.c_str(),
                      pl.splits, us, 100.0 * vbytes / (us * 1e3) / peak, diff);
          std::fflush(stdout);
          if (scratch) CK(cudaFree(scratch));
          if (table) CK(cudaFree(table));
        }
        for (int r = 0; r < R; ++r) {
          CK(cudaFree(kc[r]));
          CK(cudaFree(vc[r]));
        }
        CK(cudaFree(q));
        CK(cudaFree(k));
        CK(cudaFree(v));
        CK(cudaFree(out));
        CK(cudaFree(past));
        if (rot_cos) CK(cudaFree(rot_cos));
        CK(cudaFree(scales));
        if (rot_sin) CK(cudaFree(rot_sin));
      }
  }
  return 0;
}
