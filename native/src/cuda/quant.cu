// Quantized caches on the paths without quantized tiles (prefill, the fp32 kernels; LaunchPlan::dequant_prepass):
// the caches dequantized to the query type, and the owner's chunk rows to the values its cache write will store
// (dequantize(quantize(x))), so the unchanged kernels see what the quantized decode kernel sees.
#include "cuda/kernel_common.cuh"
#include "cuda/kernels.cuh"

namespace mixattn::cuda {
namespace {

// One thread per 16 codes of [B, Hkv, C, D]: x' = code * scale (fp32), rounded once to T.
template <typename T, typename TC>
__global__ void DequantKernel(const uint4* k_codes, const uint4* v_codes, T* k_out, T* v_out, long long vectors, int Hkv,
                              int C, int D, const float* k_scale, int k_mode, const float* v_scale, int v_mode) {
  const int nv = D / 16;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < vectors;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int v = static_cast<int>(i % nv);
    const int kvh = static_cast<int>((i / nv / C) % Hkv);
#pragma unroll
    for (int kv = 0; kv < 2; ++kv) {
      const uint4 u = (kv == 0 ? k_codes : v_codes)[i];
      const uint32_t w[4] = {u.x, u.y, u.z, u.w};
      T* out = (kv == 0 ? k_out : v_out) + i * 16;
#pragma unroll
      for (int e = 0; e < 16; ++e)
        out[e] = dev::Traits<T>::From(dev::Codes<TC>::Decode(w[e / 4] >> (8 * (e % 4))) *
                                      dev::ScaleAt(kv == 0 ? k_scale : v_scale, kv == 0 ? k_mode : v_mode, kvh, v * 16 + e, D));
    }
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

cudaError_t LaunchDequantCaches(DType dtype, const CudaAttendArgs& a, void* k_out, void* v_out, cudaStream_t stream) {
  const AttentionShape& sh = a.shape;
  const long long vectors = static_cast<long long>(sh.batch) * sh.kv_num_heads * sh.capacity * (sh.head_dim / 16);
  if (vectors == 0) return cudaSuccess;
  return WithTypes(dtype, a.cache, [&](auto t, auto tc) {
    using T = decltype(t);
    DequantKernel<T, decltype(tc)><<<Blocks(vectors, 256), 256, 0, stream>>>(
        static_cast<const uint4*>(a.key_cache), static_cast<const uint4*>(a.value_cache), static_cast<T*>(k_out),
        static_cast<T*>(v_out), vectors, sh.kv_num_heads, sh.capacity, sh.head_dim, a.k_scale,
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
