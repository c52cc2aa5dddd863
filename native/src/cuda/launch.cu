// Host side of the CUDA kernels: support check, plan (path, splits, head chunks, scratch), and the
// launch sequence on ORT's stream. No allocation and no synchronisation here.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "cuda/kernels.cuh"

namespace mixattn::cuda {
namespace {

std::string CudaError(const char* what, cudaError_t e) {
  return std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

int ElementBytes(DType t) { return t == DType::kFloat32 ? 4 : 2; }

// Waves of resident decode blocks that the split heuristic aims for (MIXATTN_CUDA_DECODE_WAVES
// overrides, for tuning runs).
int TargetWaves() {
  static const int v = [] {
    const char* e = std::getenv("MIXATTN_CUDA_DECODE_WAVES");
    const int x = e ? std::atoi(e) : 0;
    return x > 0 ? x : 2;
  }();
  return v;
}

constexpr size_t kScratchAlign = 256;

}  // namespace

std::string CheckSupported(const AttentionShape& sh, DType dtype) {
  if (sh.head_dim != 64 && sh.head_dim != 128 && sh.head_dim != 256)
    return "the CUDA kernels support head size D = 64, 128 or 256, got D = " + std::to_string(sh.head_dim);
  if (sh.capacity <= 0) return "the CUDA kernels need a cache capacity C > 0";
  (void)dtype;
  return {};
}

LaunchPlan Plan(const CudaAttendArgs& a, int num_sms) {
  const AttentionShape& sh = a.shape;
  LaunchPlan pl;
  pl.copy_cache = a.present_key != nullptr && (a.present_key != a.key_cache || a.present_value != a.value_cache);
  if (sh.seq == 1)
    pl.path = Path::kDecode;
  else
    pl.path = a.dtype == DType::kFloat32 ? Path::kPerToken : Path::kPrefill;
  if (pl.path == Path::kPrefill) return pl;

  const int G = sh.group();
  pl.head_chunk = G <= 1 ? 1 : G <= 2 ? 2 : G <= 4 ? 4 : 8;
  pl.chunks = (G + pl.head_chunk - 1) / pl.head_chunk;
  // Split count from (B, heads, the longest possible visible length): enough blocks to fill the
  // GPU, but at least min_per_split keys per split. The kernel re-splits by the real length.
  const long long base = static_cast<long long>(sh.batch) * sh.seq * sh.kv_num_heads * pl.chunks;
  const long long target = static_cast<long long>(std::max(num_sms, 1)) *
                           DecodeBlocksPerSm(a.dtype, sh.head_dim, pl.head_chunk) * TargetWaves();
  const long long longest = sh.window > 0 ? std::min(sh.window, sh.capacity + sh.seq) : sh.capacity;
  const int min_per = DecodeRowsPerStep(a.dtype, sh.head_dim) * DecodeUnroll(pl.head_chunk) * 2;
  const long long max_splits = std::clamp<long long>((longest + min_per - 1) / min_per, 1, 256);
  const long long want = base > 0 ? (target + base - 1) / base : 1;
  pl.splits = static_cast<int>(std::clamp<long long>(want, 1, max_splits));
  if (pl.splits > 1) {
    const size_t parts = static_cast<size_t>(sh.batch) * sh.seq * sh.num_heads * pl.splits;
    const size_t ml = (parts * sizeof(float2) + kScratchAlign - 1) / kScratchAlign * kScratchAlign;
    pl.scratch_bytes = ml + parts * sh.head_dim * sizeof(float);
  }
  return pl;
}

std::string Launch(const CudaAttendArgs& a, const LaunchPlan& pl, void* scratch, void* stream_ptr) {
  const AttentionShape& sh = a.shape;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (sh.batch == 0 || sh.seq == 0) return {};
  const bool owner = a.present_key != nullptr;

  if (pl.copy_cache) {  // present not bound to past: whole-cache copy, then write the new rows into present
    const size_t bytes = static_cast<size_t>(sh.batch) * sh.kv_num_heads * sh.capacity * sh.head_dim *
                         ElementBytes(a.dtype);
    if (a.present_key != a.key_cache)
      if (cudaError_t e = cudaMemcpyAsync(a.present_key, a.key_cache, bytes, cudaMemcpyDeviceToDevice, stream))
        return CudaError("copy past_key -> present_key", e);
    if (a.present_value != a.value_cache)
      if (cudaError_t e = cudaMemcpyAsync(a.present_value, a.value_cache, bytes, cudaMemcpyDeviceToDevice, stream))
        return CudaError("copy past_value -> present_value", e);
  }

  if (pl.path == Path::kPrefill) {
    PrefillLauncher launch = GetPrefillLauncher(a.dtype, sh.head_dim);
    if (launch == nullptr) return "no prefill kernel for this head size / element type";
    PrefillParams p{};
    p.query = a.query;
    p.chunk_key = owner ? a.chunk_key : nullptr;
    p.chunk_value = owner ? a.chunk_value : nullptr;
    p.key_cache = a.key_cache;
    p.value_cache = a.value_cache;
    p.past_lengths = a.past_lengths;
    p.new_lengths = a.new_lengths;
    p.output = a.output;
    p.batch = sh.batch;
    p.seq = sh.seq;
    p.num_heads = sh.num_heads;
    p.kv_num_heads = sh.kv_num_heads;
    p.capacity = sh.capacity;
    p.window = sh.window;
    p.group = sh.group();
    p.scale = sh.scale;
    p.softcap = sh.softcap;
    if (cudaError_t e = launch(p, stream)) return CudaError("prefill kernel launch", e);
  } else {
    DecodeLauncher launch = GetDecodeLauncher(a.dtype, sh.head_dim, pl.head_chunk);
    if (launch == nullptr) return "no decode kernel for this head size / element type";
    DecodeParams p{};
    p.query = a.query;
    p.chunk_key = owner ? a.chunk_key : nullptr;
    p.chunk_value = owner ? a.chunk_value : nullptr;
    p.key_cache = a.key_cache;
    p.value_cache = a.value_cache;
    p.past_lengths = a.past_lengths;
    p.new_lengths = a.new_lengths;
    p.output = a.output;
    const bool fused_write = owner && pl.path == Path::kDecode;
    p.write_key = fused_write ? a.present_key : nullptr;
    p.write_value = fused_write ? a.present_value : nullptr;
    if (pl.splits > 1) {
      if (scratch == nullptr) return "split-K decode needs a scratch buffer";
      const size_t parts = static_cast<size_t>(sh.batch) * sh.seq * sh.num_heads * pl.splits;
      const size_t ml = (parts * sizeof(float2) + kScratchAlign - 1) / kScratchAlign * kScratchAlign;
      p.part_ml = static_cast<float2*>(scratch);
      p.part_acc = reinterpret_cast<float*>(static_cast<char*>(scratch) + ml);
    }
    p.batch = sh.batch;
    p.seq = sh.seq;
    p.num_heads = sh.num_heads;
    p.kv_num_heads = sh.kv_num_heads;
    p.capacity = sh.capacity;
    p.window = sh.window;
    p.group = sh.group();
    p.chunks = pl.chunks;
    p.splits = pl.splits;
    p.min_per_split = DecodeRowsPerStep(a.dtype, sh.head_dim) * DecodeUnroll(pl.head_chunk) * 2;
    p.scale = sh.scale;
    p.softcap = sh.softcap;
    if (cudaError_t e = launch(p, stream)) return CudaError("decode kernel launch", e);
    if (pl.splits > 1)
      if (cudaError_t e = GetCombineLauncher(a.dtype)(p, sh.head_dim, stream))
        return CudaError("split-K combine kernel launch", e);
  }

  if (owner && pl.path != Path::kDecode)
    if (cudaError_t e = LaunchCacheWrite(a.dtype, a, stream)) return CudaError("cache write kernel launch", e);
  return {};
}

int CurrentDevice() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  return device;
}

int CurrentDeviceSmCount() {
  static std::atomic<int> cache[64] = {};
  const int device = CurrentDevice();
  if (device >= 0 && device < 64) {
    if (int v = cache[device].load(std::memory_order_relaxed)) return v;
  }
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0) sms = 1;
  if (device >= 0 && device < 64) cache[device].store(sms, std::memory_order_relaxed);
  return sms;
}

std::string CopyLengthsToHost(const int32_t* device, int32_t* host, int n, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (cudaError_t e = cudaMemcpyAsync(host, device, static_cast<size_t>(n) * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                      stream))
    return CudaError("copy lengths to host", e);
  if (cudaError_t e = cudaStreamSynchronize(stream)) return CudaError("synchronise for lengths", e);
  return {};
}

}  // namespace mixattn::cuda
