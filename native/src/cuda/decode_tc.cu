// Decode for fp16 / bf16 on tensor cores (the kernel: decode_tc.cuh): the instantiations for caches of the query type,
// and the entry points that pick the cache type's translation unit (decode_tc_i8.cu, decode_tc_f8.cu).
#include "cuda/decode_tc.cuh"

namespace mixattn::cuda {
namespace tc {
template DecodeLauncher LauncherFor<void>(DType, int);
template unsigned ClusterBitsFor<void>(DType, int);
template int OccupancyFor<void>(DType, int);
extern template DecodeLauncher LauncherFor<int8_t>(DType, int);
extern template unsigned ClusterBitsFor<int8_t>(DType, int);
extern template int OccupancyFor<int8_t>(DType, int);
extern template DecodeLauncher LauncherFor<__nv_fp8_e4m3>(DType, int);
extern template unsigned ClusterBitsFor<__nv_fp8_e4m3>(DType, int);
extern template int OccupancyFor<__nv_fp8_e4m3>(DType, int);
}  // namespace tc

namespace {
int CacheIndex(CacheDType cache) { return cache == CacheDType::kInt8 ? 1 : cache == CacheDType::kFloat8E4M3 ? 2 : 0; }
}  // namespace

DecodeLauncher GetDecodeTcLauncher(DType dtype, int head_dim, CacheDType cache) {
  if (dtype == DType::kFloat32) return nullptr;
  switch (cache) {
    case CacheDType::kInt8: return tc::LauncherFor<int8_t>(dtype, head_dim);
    case CacheDType::kFloat8E4M3: return tc::LauncherFor<__nv_fp8_e4m3>(dtype, head_dim);
    default: return tc::LauncherFor<void>(dtype, head_dim);
  }
}

bool DecodeTcClusterFits(DType dtype, int head_dim, int splits, CacheDType cache) {
  if (dtype == DType::kFloat32 || splits < 2 || splits > kMaxClusterSplits) return false;
  // Per device (up to 64), (type, cache type, head size): the bit mask of cluster sizes that fit, + 1 (0 = not asked).
  static std::atomic<unsigned long long> cache_bits[64][2][3][3] = {};
  const int dev = CurrentDevice() & 63;
  const int t = dtype == DType::kFloat16 ? 0 : 1, c = CacheIndex(cache), d = head_dim == 64 ? 0 : head_dim == 128 ? 1 : 2;
  unsigned long long v = cache_bits[dev][t][c][d].load(std::memory_order_relaxed);
  if (v == 0) {
    const unsigned bits = cache == CacheDType::kInt8         ? tc::ClusterBitsFor<int8_t>(dtype, head_dim)
                          : cache == CacheDType::kFloat8E4M3 ? tc::ClusterBitsFor<__nv_fp8_e4m3>(dtype, head_dim)
                                                             : tc::ClusterBitsFor<void>(dtype, head_dim);
    v = 1ull + bits;
    cache_bits[dev][t][c][d].store(v, std::memory_order_relaxed);
  }
  return (((v - 1) >> splits) & 1) != 0;
}

int DecodeTcBlocksPerSm(DType dtype, int head_dim, CacheDType cache) {
  static std::atomic<int> blocks[2][3][3] = {};
  if (dtype == DType::kFloat32) return 1;
  const int t = dtype == DType::kFloat16 ? 0 : 1, c = CacheIndex(cache), d = head_dim == 64 ? 0 : head_dim == 128 ? 1 : 2;
  if (int v = blocks[t][c][d].load(std::memory_order_relaxed)) return v;
  const int v = cache == CacheDType::kInt8         ? tc::OccupancyFor<int8_t>(dtype, head_dim)
                : cache == CacheDType::kFloat8E4M3 ? tc::OccupancyFor<__nv_fp8_e4m3>(dtype, head_dim)
                                                   : tc::OccupancyFor<void>(dtype, head_dim);
  blocks[t][c][d].store(v, std::memory_order_relaxed);
  return v;
}

}  // namespace mixattn::cuda
