// Cache write for S > 1 (owner), after attention read the pre-step cache (same stream, so ordered):
// chunk row s < N_b goes to slot (P_b + s) mod C, only the last min(N_b, C) rows (earlier ones
// would be overwritten in the same step). One thread per 16-byte vector.
#include "cuda/kernel_common.cuh"
#include "cuda/kernels.cuh"

namespace mixattn::cuda {
namespace {

__global__ void CacheWriteKernel(const uint4* chunk_k, const uint4* chunk_v, uint4* cache_k, uint4* cache_v,
                                 const int32_t* past_lengths, const int32_t* new_lengths, int B, int S, int Hkv,
                                 int C, int nv /* 16-byte vectors per row */) {
  const long long total = static_cast<long long>(B) * S * Hkv * nv;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int v = static_cast<int>(i % nv);
    const long long row = i / nv;  // (b * S + s) * Hkv + kvh
    const int kvh = static_cast<int>(row % Hkv);
    const long long bs = row / Hkv;
    const int s = static_cast<int>(bs % S);
    const int b = static_cast<int>(bs / S);
    const int P = dev::PastLength(past_lengths, b);
    const int N = dev::NewLength(new_lengths, b, S);
    if (s >= N || s < N - C) continue;
    const int slot = static_cast<int>((static_cast<long long>(P) + s) % C);
    const size_t dst = ((static_cast<size_t>(b) * Hkv + kvh) * C + slot) * nv + v;
    cache_k[dst] = chunk_k[i];
    cache_v[dst] = chunk_v[i];
  }
}

}  // namespace

cudaError_t LaunchCacheWrite(DType dtype, const CudaAttendArgs& a, cudaStream_t stream) {
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
      sh.batch, sh.seq, sh.kv_num_heads, sh.capacity, nv);
  return cudaGetLastError();
}

}  // namespace mixattn::cuda
