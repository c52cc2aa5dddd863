// Tiled tensor-core attention for S > 1 (fp16 / bf16), WMMA m16n16k16 with fp32 accumulation.
//
// Grid: x = tile of 64 query tokens, y = query head, z = sequence; 4 warps, each owning 16 query
// rows. The key range of the tile is [max(0, p_first - W + 1), p_last] (p = P + s), walked in
// tiles of BN keys: tiles wholly before the window of the tile's first query are never visited,
// and the window / causal mask is applied per element inside the tiles that are. Keys at
// positions < P come from cache slot pos mod C, keys >= P from the chunk (owner) or the cache
// (reader); rows are staged through shared memory with 16-byte loads.
//
// Per key tile: S = Q K^T (WMMA, to shared memory, fp32), masked online softmax per row (two lanes
// a row), P (as T) to shared memory, O (fp32, shared memory) rescaled by the row factor, then
// O += P V (WMMA with the accumulator loaded from / stored to O). Output = O / l.
#include <mma.h>

#include "cuda/kernel_common.cuh"
#include "cuda/kernels.cuh"

namespace mixattn::cuda {
namespace {

using dev::Traits;
namespace wmma = nvcuda::wmma;

constexpr int kBM = 64;
constexpr int kPrefillThreads = 128;

template <int D, int BN>
struct PrefillLayout {
  static constexpr int LDQ = D + 8;   // 16-bit rows of Q, K, V (padding against bank conflicts)
  static constexpr int LDS = BN + 4;  // fp32 scores
  static constexpr int LDP = BN + 8;  // 16-bit probabilities
  static constexpr int LDO = D + 4;   // fp32 output accumulator
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + size_t{kBM} * LDQ * 2;
  static constexpr size_t kV = kK + size_t{BN} * LDQ * 2;
  static constexpr size_t kS = kV + size_t{BN} * LDQ * 2;
  static constexpr size_t kP = kS + size_t{kBM} * LDS * 4;
  static constexpr size_t kO = kP + size_t{kBM} * LDP * 2;
  static constexpr size_t kStats = kO + size_t{kBM} * LDO * 4;
  static constexpr size_t kBytes = kStats + 3 * kBM * 4;
  static_assert(kK % 128 == 0 && kV % 128 == 0 && kS % 128 == 0 && kP % 128 == 0 && kO % 128 == 0 &&
                    kStats % 128 == 0,
                "shared-memory regions must stay 128-byte aligned for WMMA");
};

template <typename T, int D, int BN>
__global__ void __launch_bounds__(kPrefillThreads) PrefillKernel(const __grid_constant__ PrefillParams p) {
  using L = PrefillLayout<D, BN>;
  constexpr int VEC = 8;
  constexpr int NV = D / VEC;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem + L::kQ);
  T* sK = reinterpret_cast<T*>(smem + L::kK);
  T* sV = reinterpret_cast<T*>(smem + L::kV);
  float* sS = reinterpret_cast<float*>(smem + L::kS);
  T* sP = reinterpret_cast<T*>(smem + L::kP);
  float* sO = reinterpret_cast<float*>(smem + L::kO);
  float* sM = reinterpret_cast<float*>(smem + L::kStats);
  float* sL = sM + kBM;
  float* sA = sL + kBM;

  const int h = blockIdx.y, b = blockIdx.z;
  const int S = p.seq, Hq = p.num_heads, Hkv = p.kv_num_heads, C = p.capacity, W = p.window;
  const int kvh = h / p.group;
  const int P = dev::PastLength(p.past_lengths, b);
  const int N = dev::NewLength(p.new_lengths, b, S);
  const int s0 = blockIdx.x * kBM;
  const int nq = max(0, min(kBM, N - s0));
  const int rows_here = min(kBM, S - s0);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  T* out = static_cast<T*>(p.output);

  if (nq == 0) {  // padding tokens only: zero rows
    for (int idx = tid; idx < rows_here * D; idx += kPrefillThreads) {
      const int r = idx / D, c = idx % D;
      out[((static_cast<size_t>(b) * S + s0 + r) * Hq + h) * D + c] = Traits<T>::From(0.f);
    }
    return;
  }

  const T* query = static_cast<const T*>(p.query);
  const T* chunk_k = static_cast<const T*>(p.chunk_key);
  const T* chunk_v = static_cast<const T*>(p.chunk_value);
  const T* cache_k = static_cast<const T*>(p.key_cache) + (static_cast<size_t>(b) * Hkv + kvh) * C * D;
  const T* cache_v = static_cast<const T*>(p.value_cache) + (static_cast<size_t>(b) * Hkv + kvh) * C * D;
  const bool owner = chunk_k != nullptr;

  for (int idx = tid; idx < kBM * NV; idx += kPrefillThreads) {
    const int r = idx / NV, v = idx % NV;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < nq) val = dev::Load16(query + ((static_cast<size_t>(b) * S + s0 + r) * Hq + h) * D + v * VEC);
    *reinterpret_cast<uint4*>(sQ + r * L::LDQ + v * VEC) = val;
  }
  for (int idx = tid; idx < kBM * L::LDO; idx += kPrefillThreads) sO[idx] = 0.f;
  for (int r = tid; r < kBM; r += kPrefillThreads) {
    sM[r] = -INFINITY;
    sL[r] = 0.f;
    sA[r] = 0.f;
  }

  const int p_first = P + s0, p_last = P + s0 + nq - 1;
  const int kstart = W > 0 ? max(0, p_first - W + 1) : 0;
  const int kend = p_last + 1;
  __syncthreads();

  for (int kt = kstart; kt < kend; kt += BN) {
    for (int idx = tid; idx < BN * NV; idx += kPrefillThreads) {
      const int r = idx / NV, v = idx % NV;
      const int j = kt + r;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (j < kend) {
        const T* krow;
        const T* vrow;
        if (owner && j >= P) {
          const size_t off = ((static_cast<size_t>(b) * S + (j - P)) * Hkv + kvh) * D;
          krow = chunk_k + off;
          vrow = chunk_v + off;
        } else {
          const size_t off = static_cast<size_t>(j % C) * D;
          krow = cache_k + off;
          vrow = cache_v + off;
        }
        kv = dev::Load16(krow + v * VEC);
        vv = dev::Load16(vrow + v * VEC);
      }
      *reinterpret_cast<uint4*>(sK + r * L::LDQ + v * VEC) = kv;
      *reinterpret_cast<uint4*>(sV + r * L::LDQ + v * VEC) = vv;
    }
    __syncthreads();

    // S = Q K^T for this warp's 16 rows.
    const int wr = warp * 16;
#pragma unroll
    for (int nb = 0; nb < BN / 16; ++nb) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kb = 0; kb < D / 16; ++kb) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> bk;
        wmma::load_matrix_sync(a, sQ + wr * L::LDQ + kb * 16, L::LDQ);
        wmma::load_matrix_sync(bk, sK + nb * 16 * L::LDQ + kb * 16, L::LDQ);
        wmma::mma_sync(acc, a, bk, acc);
      }
      wmma::store_matrix_sync(sS + wr * L::LDS + nb * 16, acc, L::LDS, wmma::mem_row_major);
    }
    __syncwarp();

    // Masked online softmax: two lanes per row, BN/2 columns each.
    {
      const int r = wr + lane / 2;
      const int c0 = (lane & 1) * (BN / 2);
      const int pq = P + s0 + r;
      const bool row_valid = r < nq;
      float mloc = -INFINITY;
      for (int c = c0; c < c0 + BN / 2; ++c) {
        const int j = kt + c;
        const bool vis = row_valid && j <= pq && (W == 0 || j > pq - W);
        float x = -INFINITY;
        if (vis) x = dev::Softcap(sS[r * L::LDS + c] * p.scale, p.softcap);
        sS[r * L::LDS + c] = x;
        mloc = fmaxf(mloc, x);
      }
      mloc = fmaxf(mloc, __shfl_xor_sync(0xffffffffu, mloc, 1));
      const float mold = sM[r];
      const float mnew = fmaxf(mold, mloc);
      const float alpha = mnew == -INFINITY ? 1.f : __expf(mold - mnew);
      float sum = 0.f;
      for (int c = c0; c < c0 + BN / 2; ++c) {
        const float e = mnew == -INFINITY ? 0.f : __expf(sS[r * L::LDS + c] - mnew);
        sP[r * L::LDP + c] = Traits<T>::From(e);
        sum += e;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      if ((lane & 1) == 0) {
        sM[r] = mnew;
        sL[r] = sL[r] * alpha + sum;
        sA[r] = alpha;
      }
    }
    __syncwarp();

    for (int idx = lane; idx < 16 * D; idx += 32) {
      const int r = wr + idx / D, c = idx % D;
      sO[r * L::LDO + c] *= sA[r];
    }
    __syncwarp();

    // O += P V.
#pragma unroll
    for (int db = 0; db < D / 16; ++db) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
      wmma::load_matrix_sync(o, sO + wr * L::LDO + db * 16, L::LDO, wmma::mem_row_major);
#pragma unroll
      for (int kb = 0; kb < BN / 16; ++kb) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> bv;
        wmma::load_matrix_sync(a, sP + wr * L::LDP + kb * 16, L::LDP);
        wmma::load_matrix_sync(bv, sV + kb * 16 * L::LDQ + db * 16, L::LDQ);
        wmma::mma_sync(o, a, bv, o);
      }
      wmma::store_matrix_sync(sO + wr * L::LDO + db * 16, o, L::LDO, wmma::mem_row_major);
    }
    __syncthreads();  // sK / sV are overwritten by the next tile
  }

  for (int idx = tid; idx < rows_here * D; idx += kPrefillThreads) {
    const int r = idx / D, c = idx % D;
    const float l = sL[r];
    const float val = (r < nq && l > 0.f) ? sO[r * L::LDO + c] / l : 0.f;
    out[((static_cast<size_t>(b) * S + s0 + r) * Hq + h) * D + c] = Traits<T>::From(val);
  }
}

template <typename T, int D, int BN>
cudaError_t LaunchPrefill(const PrefillParams& p, cudaStream_t stream) {
  using L = PrefillLayout<D, BN>;
  // Per device and cheap (no synchronisation), so simply set before every launch.
  const cudaError_t attr = cudaFuncSetAttribute(PrefillKernel<T, D, BN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(L::kBytes));
  if (attr != cudaSuccess) return attr;
  const dim3 grid((p.seq + kBM - 1) / kBM, p.num_heads, p.batch);
  PrefillKernel<T, D, BN><<<grid, kPrefillThreads, L::kBytes, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
PrefillLauncher ForHeadDim(int head_dim) {
  switch (head_dim) {
    case 64: return &LaunchPrefill<T, 64, 64>;
    case 128: return &LaunchPrefill<T, 128, 64>;
    case 256: return &LaunchPrefill<T, 256, 32>;
    default: return nullptr;
  }
}

}  // namespace

PrefillLauncher GetPrefillLauncher(DType dtype, int head_dim) {
  switch (dtype) {
    case DType::kFloat16: return ForHeadDim<__half>(head_dim);
    case DType::kBFloat16: return ForHeadDim<__nv_bfloat16>(head_dim);
    case DType::kFloat32: return nullptr;
  }
  return nullptr;
}

}  // namespace mixattn::cuda
