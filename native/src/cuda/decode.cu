// Split-K ("flash-decoding") attention for S == 1, and the per-token path for fp32 S > 1.
//
// Grid: x = token z * splits + split, y = KV head * chunks + head chunk; 4 warps per block.
// A block handles the (up to) GC query heads of one KV group that share its K/V rows, so each
// K/V row is read once per group. Threads of a "row group" (TPR lanes) hold one key row with
// 16-byte loads (D = 128, 16-bit: 16 lanes x 8 elements); a warp covers 32/TPR rows at once and
// each thread keeps U rows in flight. Scores are reduced across the row group with shuffles; every
// row group keeps its own online softmax (max, sum, accumulator slice), merged in shared memory at
// the end. With splits > 1 the block writes an unnormalised partial (max, sum, acc) and
// CombineKernel merges the splits; with one split the block writes the output directly.
//
// The visible range of the query at p = P + s is [lo, p] (lo = max(0, p - W + 1), 0 for W = 0).
// Positions < P come from cache slot pos mod C; positions >= P from the chunk (owner) or the
// cache (reader). The split of [lo, p] is computed on the device from the real length, so a
// long-capacity cache holding a short sequence still spreads its keys over the splits.
#include <atomic>

#include "cuda/kernel_common.cuh"
#include "cuda/kernels.cuh"

namespace mixattn::cuda {
namespace {

using dev::Traits;

template <typename T, int D, int GC>
__global__ void __launch_bounds__(kDecodeThreads) DecodeKernel(const __grid_constant__ DecodeParams p) {
  constexpr int VEC = Traits<T>::kVec;
  constexpr int NV = D / VEC;               // 16-byte vectors per row
  constexpr int TPR = NV < 32 ? NV : 32;    // lanes per row
  constexpr int VPT = NV / TPR;             // vectors per lane per row
  constexpr int EPT = VPT * VEC;            // elements per lane per row
  constexpr int RPW = 32 / TPR;             // rows per warp
  constexpr int WARPS = kDecodeThreads / 32;
  constexpr int RG = WARPS * RPW;           // row groups = rows per block step
  constexpr int U = GC <= 4 ? 4 : 2;        // rows in flight per lane
  static_assert(NV % TPR == 0 && 32 % TPR == 0, "head size must be a multiple of 8 * (16 / sizeof(T))");

  const dev::DecodeBlock<T, D> blk(p, GC, RG);
  const int z = blk.z, split = blk.split, kvh = blk.kvh, chunk = blk.chunk, b = blk.b, s = blk.s, P = blk.P;
  const int g_count = blk.g_count, h0 = blk.h0, kb = blk.kb, ke = blk.ke;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rg = warp * RPW + lane / TPR;
  const int tl = lane % TPR;
  const int S = p.seq, splits = p.splits, Hq = p.num_heads, Hkv = p.kv_num_heads, C = p.capacity;
  const T* chunk_k = static_cast<const T*>(p.chunk_key);
  const T* chunk_v = static_cast<const T*>(p.chunk_value);
  const T* cache_k = blk.cache_k;
  const T* cache_v = blk.cache_v;

  // Fused cache write (owner, S == 1; dev::WriteNewRow says why no block reads that slot).
  if (p.write_key != nullptr && blk.active && split == 0 && chunk == 0)
    dev::WriteNewRow<T, D, kDecodeThreads>(chunk_k, chunk_v, p.write_key, p.write_value, z, kvh, Hkv,
                                           dev::CacheRow(p.paged, b, kvh, Hkv, C, P + s), P + s,
                                           RotaryParams{});  // this kernel gets pre-rotated inputs (RotaryPath::kPrepass)

  // Query slices of the GC heads, pre-scaled.
  float q[GC][EPT];
#pragma unroll
  for (int g = 0; g < GC; ++g) {
    const T* qrow = static_cast<const T*>(p.query) + (static_cast<size_t>(z) * Hq + h0 + min(g, g_count - 1)) * D;
#pragma unroll
    for (int v = 0; v < VPT; ++v) {
      float f[VEC];
      Traits<T>::ToFloat(dev::Load16(qrow + (v * TPR + tl) * VEC), f);
#pragma unroll
      for (int i = 0; i < VEC; ++i) q[g][v * VEC + i] = f[i] * p.scale;
    }
  }

  float m[GC], l[GC], acc[GC][EPT];
#pragma unroll
  for (int g = 0; g < GC; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int e = 0; e < EPT; ++e) acc[g][e] = 0.f;
  }

  const bool owner = chunk_k != nullptr;
  int slot = kb + rg;  // cache slot of this lane's first key, kept as pos mod C incrementally
  slot = C > 0 ? slot % C : 0;
  for (int base = kb; base < ke; base += RG * U) {
    uint4 kr[U][VPT], vr[U][VPT];
    bool valid[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int j = base + u * RG + rg;
      int su = slot + u * RG;
      while (su >= C) su -= C;
      valid[u] = j < ke;
      if (valid[u]) {
        const T* krow;
        const T* vrow;
        if (owner && j >= P) {
          const size_t off = ((static_cast<size_t>(b) * S + (j - P)) * Hkv + kvh) * D;
          krow = chunk_k + off;
          vrow = chunk_v + off;
        } else {
          krow = cache_k + static_cast<size_t>(su) * D;
          vrow = cache_v + static_cast<size_t>(su) * D;
        }
#pragma unroll
        for (int v = 0; v < VPT; ++v) {
          kr[u][v] = dev::Load16(krow + (v * TPR + tl) * VEC);
          vr[u][v] = dev::Load16(vrow + (v * TPR + tl) * VEC);
        }
      } else {
#pragma unroll
        for (int v = 0; v < VPT; ++v) kr[u][v] = vr[u][v] = make_uint4(0, 0, 0, 0);
      }
    }
    slot += RG * U;
    while (slot >= C) slot -= C;

    // Scores.
    float sc[GC][U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kf[EPT];
#pragma unroll
      for (int v = 0; v < VPT; ++v) Traits<T>::ToFloat(kr[u][v], kf + v * VEC);
#pragma unroll
      for (int g = 0; g < GC; ++g) {
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < EPT; ++e) d = fmaf(q[g][e], kf[e], d);
        sc[g][u] = d;
      }
    }
#pragma unroll
    for (int off = TPR / 2; off > 0; off /= 2)
#pragma unroll
      for (int g = 0; g < GC; ++g)
#pragma unroll
        for (int u = 0; u < U; ++u) sc[g][u] += __shfl_xor_sync(0xffffffffu, sc[g][u], off);

    // Online softmax, one rescale per U rows.
    float pr[GC][U];
#pragma unroll
    for (int g = 0; g < GC; ++g) {
      float mt = -INFINITY;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        sc[g][u] = valid[u] ? dev::Softcap(sc[g][u], p.softcap) : -INFINITY;
        mt = fmaxf(mt, sc[g][u]);
      }
      const float mn = fmaxf(m[g], mt);
      if (mn == -INFINITY) {
#pragma unroll
        for (int u = 0; u < U; ++u) pr[g][u] = 0.f;
        continue;
      }
      const float alpha = __expf(m[g] - mn);
      m[g] = mn;
      float sum = 0.f;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        pr[g][u] = __expf(sc[g][u] - mn);
        sum += pr[g][u];
      }
      l[g] = l[g] * alpha + sum;
#pragma unroll
      for (int e = 0; e < EPT; ++e) acc[g][e] *= alpha;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float vf[EPT];
#pragma unroll
      for (int v = 0; v < VPT; ++v) Traits<T>::ToFloat(vr[u][v], vf + v * VEC);
#pragma unroll
      for (int g = 0; g < GC; ++g)
#pragma unroll
        for (int e = 0; e < EPT; ++e) acc[g][e] = fmaf(pr[g][u], vf[e], acc[g][e]);
    }
  }

  // Merge the row groups of the block.
  __shared__ float sm_m[RG][GC], sm_l[RG][GC];
  __shared__ float sm_acc[RG][GC][D];
#pragma unroll
  for (int g = 0; g < GC; ++g) {
    if (tl == 0) {
      sm_m[rg][g] = m[g];
      sm_l[rg][g] = l[g];
    }
#pragma unroll
    for (int v = 0; v < VPT; ++v)
#pragma unroll
      for (int i = 0; i < VEC; ++i) sm_acc[rg][g][(v * TPR + tl) * VEC + i] = acc[g][v * VEC + i];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < GC * D; idx += kDecodeThreads) {
    const int g = idx / D, d = idx % D;
    if (g >= g_count) continue;
    float mx = -INFINITY;
#pragma unroll
    for (int r = 0; r < RG; ++r) mx = fmaxf(mx, sm_m[r][g]);
    float sum = 0.f, a = 0.f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int r = 0; r < RG; ++r) {
        if (sm_m[r][g] == -INFINITY) continue;
        const float w = __expf(sm_m[r][g] - mx);
        sum += w * sm_l[r][g];
        a += w * sm_acc[r][g][d];
      }
    }
    const int h = h0 + g;
    if (splits == 1) {
      static_cast<T*>(p.output)[(static_cast<size_t>(z) * Hq + h) * D + d] = Traits<T>::From(sum > 0.f ? a / sum : 0.f);
    } else {
      const size_t part = (static_cast<size_t>(z) * Hq + h) * splits + split;
      p.part_acc[part * D + d] = a;
      if (d == 0) p.part_ml[part] = make_float2(mx, sum);
    }
  }
}

// Block-wide max or sum (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
template <bool kMax>
__device__ __forceinline__ float BlockReduce(float v, float* red /* [32] */) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    const float o = __shfl_xor_sync(0xffffffffu, v, off);
    v = kMax ? fmaxf(v, o) : v + o;
  }
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? red[lane] : (kMax ? -INFINITY : 0.f);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) {
      const float o = __shfl_xor_sync(0xffffffffu, v, off);
      v = kMax ? fmaxf(v, o) : v + o;
    }
    if (lane == 0) red[0] = v;
  }
  __syncthreads();
  v = red[0];
  __syncthreads();
  return v;
}

// Merges the split partials: grid x = token * Hq + head, D threads. The split weights are computed
// once into shared memory (in parallel over the splits), so the accumulation loop only streams the
// partial accumulators (independent loads, many in flight) instead of a serial chain per split.
template <typename T>
__global__ void CombineKernel(const __grid_constant__ DecodeParams p) {
  extern __shared__ float weights[];  // [splits]
  __shared__ float red[32];
  const int D = blockDim.x;
  const int d = threadIdx.x;
  const size_t zh = blockIdx.x;  // z * Hq + h
  const int splits = p.splits;
  const float2* ml = p.part_ml + zh * splits;
  float mx = -INFINITY;
  for (int i = d; i < splits; i += D) mx = fmaxf(mx, ml[i].x);
  mx = BlockReduce<true>(mx, red);
  float sum = 0.f;
  for (int i = d; i < splits; i += D) {
    const float2 v = ml[i];
    const float w = (v.x == -INFINITY || mx == -INFINITY) ? 0.f : __expf(v.x - mx);
    weights[i] = w;
    sum += w * v.y;
  }
  sum = BlockReduce<false>(sum, red);  // its barriers also publish weights[]
  const float* acc = p.part_acc + zh * splits * D + d;
  float a = 0.f;
#pragma unroll 8
  for (int i = 0; i < splits; ++i) a = fmaf(weights[i], acc[static_cast<size_t>(i) * D], a);
  static_cast<T*>(p.output)[zh * D + d] = Traits<T>::From(sum > 0.f ? a / sum : 0.f);
}

template <typename T, int D, int GC>
cudaError_t LaunchDecode(const DecodeParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.batch) * p.seq * p.splits, static_cast<unsigned>(p.kv_num_heads) * p.chunks);
  DecodeKernel<T, D, GC><<<grid, kDecodeThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchCombine(const DecodeParams& p, int head_dim, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(p.batch) * p.seq * p.num_heads;
  CombineKernel<T><<<blocks, head_dim, p.splits * sizeof(float), stream>>>(p);
  return cudaGetLastError();
}

template <typename T, int D>
DecodeLauncher ForChunk(int head_chunk) {
  switch (head_chunk) {
    case 1: return &LaunchDecode<T, D, 1>;
    case 2: return &LaunchDecode<T, D, 2>;
    case 4: return &LaunchDecode<T, D, 4>;
    case 8: return &LaunchDecode<T, D, 8>;
    default: return nullptr;
  }
}

template <typename T>
DecodeLauncher ForHeadDim(int head_dim, int head_chunk) {
  switch (head_dim) {
    case 64: return ForChunk<T, 64>(head_chunk);
    case 128: return ForChunk<T, 128>(head_chunk);
    case 256: return ForChunk<T, 256>(head_chunk);
    default: return nullptr;
  }
}

template <typename T, int D, int GC>
int Occupancy() {
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, DecodeKernel<T, D, GC>, kDecodeThreads, 0) != cudaSuccess)
    return 1;
  return blocks > 0 ? blocks : 1;
}

template <typename T, int D>
int OccupancyForChunk(int head_chunk) {
  switch (head_chunk) {
    case 1: return Occupancy<T, D, 1>();
    case 2: return Occupancy<T, D, 2>();
    case 4: return Occupancy<T, D, 4>();
    default: return Occupancy<T, D, 8>();
  }
}

template <typename T>
int OccupancyForHeadDim(int head_dim, int head_chunk) {
  switch (head_dim) {
    case 64: return OccupancyForChunk<T, 64>(head_chunk);
    case 128: return OccupancyForChunk<T, 128>(head_chunk);
    default: return OccupancyForChunk<T, 256>(head_chunk);
  }
}

}  // namespace

int DecodeBlocksPerSm(DType dtype, int head_dim, int head_chunk) {
  // Cached per (type, head size, chunk); the value is a property of the kernel and the architecture.
  static std::atomic<int> cache[3][3][4] = {};
  const int t = static_cast<int>(dtype), d = head_dim == 64 ? 0 : head_dim == 128 ? 1 : 2;
  const int c = head_chunk == 1 ? 0 : head_chunk == 2 ? 1 : head_chunk == 4 ? 2 : 3;
  if (int v = cache[t][d][c].load(std::memory_order_relaxed)) return v;
  int v = 1;
  switch (dtype) {
    case DType::kFloat32: v = OccupancyForHeadDim<float>(head_dim, head_chunk); break;
    case DType::kFloat16: v = OccupancyForHeadDim<__half>(head_dim, head_chunk); break;
    case DType::kBFloat16: v = OccupancyForHeadDim<__nv_bfloat16>(head_dim, head_chunk); break;
  }
  cache[t][d][c].store(v, std::memory_order_relaxed);
  return v;
}

DecodeLauncher GetDecodeLauncher(DType dtype, int head_dim, int head_chunk) {
  switch (dtype) {
    case DType::kFloat32: return ForHeadDim<float>(head_dim, head_chunk);
    case DType::kFloat16: return ForHeadDim<__half>(head_dim, head_chunk);
    case DType::kBFloat16: return ForHeadDim<__nv_bfloat16>(head_dim, head_chunk);
  }
  return nullptr;
}

CombineLauncher GetCombineLauncher(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return &LaunchCombine<float>;
    case DType::kFloat16: return &LaunchCombine<__half>;
    case DType::kBFloat16: return &LaunchCombine<__nv_bfloat16>;
  }
  return nullptr;
}

}  // namespace mixattn::cuda
