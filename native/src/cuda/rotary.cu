// RotaryPath::kPrepass: this step's queries (and the owner's keys) rotated into the scratch buffer before the
// prefill / SIMT decode kernels run on them; the cache write then stores the rotated keys. One thread per element.
#include "cuda/kernel_common.cuh"
#include "cuda/kernels.cuh"

namespace mixattn::cuda {
namespace {

template <typename T>
__global__ void RotaryKernel(const T* x, T* out, RotaryParams r, const int32_t* past_lengths,
                             const int32_t* new_lengths, int B, int S, int heads, int D) {
  const long long total = static_cast<long long>(B) * S * heads * D;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(i % D);
    const long long bs = i / (static_cast<long long>(heads) * D);  // b * S + s
    const int s = static_cast<int>(bs % S), b = static_cast<int>(bs / S);
    const T* row = x + (i - d);
    out[i] = s < dev::NewLength(new_lengths, b, S)
                 ? dev::Traits<T>::From(dev::RotatedElement(row, d, dev::PastLength(past_lengths, b) + s, r))
                 : row[d];
  }
}

template <typename T>
cudaError_t Launch(const CudaAttendArgs& a, const void* x, void* out, int heads, cudaStream_t stream) {
  const AttentionShape& sh = a.shape;
  const long long total = static_cast<long long>(sh.batch) * sh.seq * heads * sh.head_dim;
  if (total == 0) return cudaSuccess;
  const RotaryParams r{a.cos_cache, a.sin_cache, a.rotary_dim, a.max_positions, a.rotary_interleaved ? 1 : 0};
  const int threads = 256;
  const long long blocks = (total + threads - 1) / threads;
  RotaryKernel<T><<<static_cast<unsigned>(blocks < 65536 ? blocks : 65536), threads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<T*>(out), r, a.past_lengths, a.new_lengths, sh.batch, sh.seq, heads,
      sh.head_dim);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchRotary(DType dtype, const CudaAttendArgs& a, const void* x, void* out, int heads,
                         cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat16: return Launch<__half>(a, x, out, heads, stream);
    case DType::kBFloat16: return Launch<__nv_bfloat16>(a, x, out, heads, stream);
    default: return Launch<float>(a, x, out, heads, stream);
  }
}

}  // namespace mixattn::cuda
