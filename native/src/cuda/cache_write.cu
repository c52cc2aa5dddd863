// Cache write for S > 1 (owner), after attention read the pre-step cache (same stream, so ordered):
// chunk row s < N_b goes to slot (P_b + s) mod C (a paged pool: position P_b + s through the block table), only the
// last min(N_b, C) rows (earlier ones would be overwritten in the same step). One thread per 16-byte vector.
#include "cuda/kernel_common.cuh"
#include "cuda/kernels.cuh"

namespace mixattn::cuda {
namespace {

// Cache row (in units of a row) that chunk row `row` = (b * S + s) * Hkv + kvh goes to, or -1 when the row is padding
// (s >= N_b) or would be overwritten later in the same step (s < N_b - C).
__device__ __forceinline__ long long DestinationRow(long long row, const int32_t* past_lengths, const int32_t* new_lengths,
                                                   int S, int Hkv, int C, const BlockTable& paged) {
  const int kvh = static_cast<int>(row % Hkv);
  const long long bs = row / Hkv;
  const int s = static_cast<int>(bs % S);
  const int b = static_cast<int>(bs / S);
  const int P = dev::PastLength(past_lengths, b);
  const int N = dev::NewLength(new_lengths, b, S);
  if (s >= N || s < N - C) return -1;
  return static_cast<long long>(dev::CacheRow(paged, b, kvh, Hkv, C, static_cast<int>((static_cast<long long>(P) + s) % C)));
}

__global__ void CacheWriteKernel(const uint4* chunk_k, const uint4* chunk_v, uint4* cache_k, uint4* cache_v,
                                 const int32_t* past_lengths, const int32_t* new_lengths, int B, int S, int Hkv,
                                 int C, int nv /* 16-byte vectors per row */, BlockTable paged) {
  const long long total = static_cast<long long>(B) * S * Hkv * nv;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int v = static_cast<int>(i % nv);
    const long long to = DestinationRow(i / nv, past_lengths, new_lengths, S, Hkv, C, paged);
    if (to < 0) continue;
    const size_t dst = static_cast<size_t>(to) * nv + v;
    cache_k[dst] = chunk_k[i];
    cache_v[dst] = chunk_v[i];
  }
}

// The same for a quantized cache: one thread per 16 codes (16 elements of T read, quantized with their scales, one
// 16-byte store).
template <typename T, typename TC>
__global__ void CacheWriteQuantizedKernel(const T* chunk_k, const T* chunk_v, uint4* cache_k, uint4* cache_v,
                                          const int32_t* past_lengths, const int32_t* new_lengths, int B, int S, int Hkv,
                                          int C, int D, BlockTable paged, const float* k_scale, int k_mode,
                                          const float* v_scale, int v_mode) {
  const int nv = D / 16;
  const long long total = static_cast<long long>(B) * S * Hkv * nv;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int v = static_cast<int>(i % nv);
    const long long row = i / nv;  // (b * S + s) * Hkv + kvh
    const int kvh = static_cast<int>(row % Hkv);
    const long long to = DestinationRow(row, past_lengths, new_lengths, S, Hkv, C, paged);
    if (to < 0) continue;
    const size_t dst = static_cast<size_t>(to) * nv + v;
    const size_t src = static_cast<size_t>(row) * D + v * 16;
#pragma unroll
    for (int kv = 0; kv < 2; ++kv) {
      const T* x = (kv == 0 ? chunk_k : chunk_v) + src;
      const float* sc = kv == 0 ? k_scale : v_scale;
      const int mode = kv == 0 ? k_mode : v_mode;
      uint32_t w[4] = {0u, 0u, 0u, 0u};
#pragma unroll
      for (int e = 0; e < 16; ++e)
        w[e / 4] |= dev::QuantizeCode<TC>(dev::Traits<T>::One(x[e]), dev::ScaleAt(sc, mode, kvh, v * 16 + e, D)) << (8 * (e % 4));
      (kv == 0 ? cache_k : cache_v)[dst] = make_uint4(w[0], w[1], w[2], w[3]);
    }
  }
}

template <typename T, typename TC>
cudaError_t LaunchQuantizedWrite(const CudaAttendArgs& a, cudaStream_t stream) {
  const AttentionShape& sh = a.shape;
  const long long total = static_cast<long long>(sh.batch) * sh.seq * sh.kv_num_heads * (sh.head_dim / 16);
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const long long blocks = (total + threads - 1) / threads;
  CacheWriteQuantizedKernel<T, TC><<<static_cast<unsigned>(blocks < 65536 ? blocks : 65536), threads, 0, stream>>>(
      static_cast<const T*>(a.chunk_key), static_cast<const T*>(a.chunk_value), static_cast<uint4*>(a.present_key),
      static_cast<uint4*>(a.present_value), a.past_lengths, a.new_lengths, sh.batch, sh.seq, sh.kv_num_heads,
      sh.capacity, sh.head_dim, a.paged, a.k_scale, static_cast<int>(a.k_scale_mode), a.v_scale,
      static_cast<int>(a.v_scale_mode));
  return cudaGetLastError();
}

template <typename TC>
cudaError_t LaunchQuantizedWriteFor(DType dtype, const CudaAttendArgs& a, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat16: return LaunchQuantizedWrite<__half, TC>(a, stream);
    case DType::kBFloat16: return LaunchQuantizedWrite<__nv_bfloat16, TC>(a, stream);
    default: return LaunchQuantizedWrite<float, TC>(a, stream);
  }
}

}  // namespace

cudaError_t LaunchCacheWrite(DType dtype, const CudaAttendArgs& a, cudaStream_t stream) {
  if (a.cache == CacheDType::kInt8) return LaunchQuantizedWriteFor<int8_t>(dtype, a, stream);
  if (a.cache == CacheDType::kFloat8E4M3) return LaunchQuantizedWriteFor<__nv_fp8_e4m3>(dtype, a, stream);
  const AttentionShape& sh = a.shape;
  const int elem = dtype == DType::kFloat32 ? 4 : 2;
  const int nv = sh.head_dim * elem / 16;
  const long long total = static_cast<long long>(sh.batch) * sh.seq * sh.kv_num_heads * nv;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const long long blocks = (total + threads - 1) / threads;
  CacheWriteKernel<<<static_cast<unsigned>(blocks < 65536 ? blocks : 65536), threads, 0, stream>>>(
      static_cast<const uint4*>(a.chunk_key), static_cast<const uint4*>(a.chunk_value),
      static_cast<uint4*>(a.present_key), static_cast<uint4*>(a.present_value), a.past_lengths, a.new_lengths,
      sh.batch, sh.seq, sh.kv_num_heads, sh.capacity, nv, a.paged);
  return cudaGetLastError();
}

}  // namespace mixattn::cuda
