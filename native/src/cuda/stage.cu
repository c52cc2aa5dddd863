// Staged caches (LaunchPlan::staged_caches): caches the chosen kernels cannot read in place — quantized caches on the
// paths without quantized tiles (prefill, the fp32 kernels), paged pools on the paths without block-table tiles — as
// contiguous caches of the query type, and a quantized owner's chunk rows as the values its cache write will store
// (dequantize(quantize(x))), so the unchanged kernels see what the quantized / paged decode kernel sees.
#include "cuda/kernel_common.cuh"
#include "cuda/kernels.cuh"

namespace mixattn::cuda {
namespace {

// Row r = (b * Hkv + kvh) * C + slot of the staged [B, Hkv, C, D] caches: where the source holds it (dev::CacheRow: the
// same row of a contiguous cache, or position slot of sequence b in a paged pool).
__device__ __forceinline__ size_t SourceRow(const BlockTable& paged, long long r, int Hkv, int C) {
  const long long bh = r / C;
  return dev::CacheRow(paged, static_cast<int>(bh / Hkv), static_cast<int>(bh % Hkv), Hkv, C, static_cast<int>(r % C));
}

// One thread per 16 codes of [B, Hkv, C, D]: x' = code * scale (fp32), rounded once to T.
template <typename T, typename TC>
__global__ void DequantKernel(const uint4* k_codes, const uint4* v_codes, T* k_out, T* v_out, long long vectors, int Hkv,
                              int C, int D, BlockTable paged, const float* k_scale, int k_mode, const float* v_scale,
                              int v_mode) {
  const int nv = D / 16;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < vectors;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int v = static_cast<int>(i % nv);
    const int kvh = static_cast<int>((i / nv / C) % Hkv);
    const size_t src = SourceRow(paged, i / nv, Hkv, C) * nv + v;
#pragma unroll
    for (int kv = 0; kv < 2; ++kv) {
      const uint4 u = (kv == 0 ? k_codes : v_codes)[src];
      const uint32_t w[4] = {u.x, u.y, u.z, u.w};
      T* out = (kv == 0 ? k_out : v_out) + i * 16;
#pragma unroll
      for (int e = 0; e < 16; ++e)
        out[e] = dev::Traits<T>::From(dev::Codes<TC>::Decode(w[e / 4] >> (8 * (e % 4))) *
                                      dev::ScaleAt(kv == 0 ? k_scale : v_scale, kv == 0 ? k_mode : v_mode, kvh, v * 16 + e, D));
    }
  }
}

// Paged pools of the query type: one thread per 16-byte vector of [B, Hkv, C, D], copied from its pool row.
__global__ void GatherKernel(const uint4* k_pool, const uint4* v_pool, uint4* k_out, uint4* v_out, long long vectors,
                             int Hkv, int C, int nv /* 16-byte vectors per row */, BlockTable paged) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < vectors;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const size_t src = SourceRow(paged, i / nv, Hkv, C) * nv + i % nv;
    k_out[i] = k_pool[src];
    v_out[i] = v_pool[src];
  }
}

// One thread per element of [B, S, Hkv*D]: dequantize(quantize(x)) rounded to T (every row, padding included: the
// kernels never read padding rows).
template <typename T, typename TC>
__global__ void FakeQuantKernel(const T* k, const T* v, T* k_out, T* v_out, long long elems, int Hkv, int D,
                                const float* k_scale, int k_mode, const float* v_scale, int v_mode) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < elems;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(i % D);
    const int kvh = static_cast<int>((i / D) % Hkv);
    const float ks = dev::ScaleAt(k_scale, k_mode, kvh, d, D), vs = dev::ScaleAt(v_scale, v_mode, kvh, d, D);
    k_out[i] = dev::Traits<T>::From(dev::Codes<TC>::Decode(dev::QuantizeCode<TC>(dev::Traits<T>::One(k[i]), ks)) * ks);
    v_out[i] = dev::Traits<T>::From(dev::Codes<TC>::Decode(dev::QuantizeCode<TC>(dev::Traits<T>::One(v[i]), vs)) * vs);
  }
}

unsigned Blocks(long long work, int threads) {
  const long long b = (work + threads - 1) / threads;
  return static_cast<unsigned>(b < 65536 ? (b > 0 ? b : 1) : 65536);
}

template <typename F>
cudaError_t WithTypes(DType dtype, CacheDType cache, F&& f) {
  auto for_cache = [&](auto t) {
    return cache == CacheDType::kInt8 ? f(t, int8_t{}) : f(t, __nv_fp8_e4m3{});
  };
  switch (dtype) {
    case DType::kFloat16: return for_cache(__half{});
    case DType::kBFloat16: return for_cache(__nv_bfloat16{});
    default: return for_cache(float{});
  }
}

}  // namespace

cudaError_t LaunchStageCaches(DType dtype, const CudaAttendArgs& a, void* k_out, void* v_out, cudaStream_t stream) {
  const AttentionShape& sh = a.shape;
  const long long rows = static_cast<long long>(sh.batch) * sh.kv_num_heads * sh.capacity;
  if (rows == 0) return cudaSuccess;
  if (a.cache == CacheDType::kSameAsQuery) {  // paged pool of T: a gather
    const int nv = sh.head_dim * (dtype == DType::kFloat32 ? 4 : 2) / 16;
    GatherKernel<<<Blocks(rows * nv, 256), 256, 0, stream>>>(
        static_cast<const uint4*>(a.key_cache), static_cast<const uint4*>(a.value_cache), static_cast<uint4*>(k_out),
        static_cast<uint4*>(v_out), rows * nv, sh.kv_num_heads, sh.capacity, nv, a.paged);
    return cudaGetLastError();
  }
  const long long vectors = rows * (sh.head_dim / 16);
  return WithTypes(dtype, a.cache, [&](auto t, auto tc) {
    using T = decltype(t);
    DequantKernel<T, decltype(tc)><<<Blocks(vectors, 256), 256, 0, stream>>>(
        static_cast<const uint4*>(a.key_cache), static_cast<const uint4*>(a.value_cache), static_cast<T*>(k_out),
        static_cast<T*>(v_out), vectors, sh.kv_num_heads, sh.capacity, sh.head_dim, a.paged, a.k_scale,
        static_cast<int>(a.k_scale_mode), a.v_scale, static_cast<int>(a.v_scale_mode));
    return cudaGetLastError();
  });
}

cudaError_t LaunchFakeQuantChunk(DType dtype, const CudaAttendArgs& a, void* chunk_k_out, void* chunk_v_out,
                                 cudaStream_t stream) {
  const AttentionShape& sh = a.shape;
  const long long elems = static_cast<long long>(sh.batch) * sh.seq * sh.kv_num_heads * sh.head_dim;
  if (elems == 0 || a.chunk_key == nullptr) return cudaSuccess;
  return WithTypes(dtype, a.cache, [&](auto t, auto tc) {
    using T = decltype(t);
    FakeQuantKernel<T, decltype(tc)><<<Blocks(elems, 256), 256, 0, stream>>>(
        static_cast<const T*>(a.chunk_key), static_cast<const T*>(a.chunk_value), static_cast<T*>(chunk_k_out),
        static_cast<T*>(chunk_v_out), elems, sh.kv_num_heads, sh.head_dim, a.k_scale, static_cast<int>(a.k_scale_mode),
        a.v_scale, static_cast<int>(a.v_scale_mode));
    return cudaGetLastError();
  });
}

}  // namespace mixattn::cuda
