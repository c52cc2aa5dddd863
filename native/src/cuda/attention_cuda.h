// Host-facing API of the CUDA kernels (native/src/cuda). No CUDA or ORT headers here: the ORT glue
// (cuda_ops.cc) is plain C++; everything that touches the CUDA runtime lives in the .cu files.
//
// Host code validates shapes and chooses a path and a kernel instantiation (Plan); device code only
// computes (Launch). Lengths (past_lengths / new_lengths) stay in device memory: kernels read them
// and clamp them so that no access leaves the tensors, but cannot report a broken cache rule
// (docs/ops.md); the session option mixattention.check_lengths=1 validates them on the host (one
// device->host copy and stream sync per call) for tests and debugging.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "mixattention/attention_params.h"

namespace mixattn::cuda {

enum class DType { kFloat32, kFloat16, kBFloat16 };

// Element type of the K/V caches (docs/ops.md, "Quantized caches"): the query's type, or int8 / float8e4m3fn codes
// with fp32 scales (x' = code * scale; the owner's write quantizes q = saturate(round_half_even(x * (1 / scale)))).
enum class CacheDType { kSameAsQuery, kInt8, kFloat8E4M3 };

// Shape of a k_scale / v_scale input: [1], [1, Hkv, 1, 1] or [1, Hkv, 1, D] (index h * D + d).
enum class ScaleMode { kPerTensor = 0, kPerHead = 1, kPerChannel = 2 };

// One call of either op. Every pointer is device memory.
struct CudaAttendArgs {
  AttentionShape shape;
  DType dtype = DType::kFloat16;
  const void* query = nullptr;        // [B, S, Hq*D]
  const void* chunk_key = nullptr;    // [B, S, Hkv*D] owner; nullptr for the reader
  const void* chunk_value = nullptr;  // [B, S, Hkv*D]
  const void* key_cache = nullptr;    // [B, Hkv, C, D]: owner = past (before this step's write), reader = owner's present
  const void* value_cache = nullptr;
  const int32_t* past_lengths = nullptr;  // [B], device
  const int32_t* new_lengths = nullptr;   // [B], device, or nullptr (= S)
  void* output = nullptr;                 // [B, S, Hq*D]
  void* present_key = nullptr;  // owner: cache that receives the chunk (== key_cache when bound in place); reader: nullptr
  void* present_value = nullptr;
  // Rotary inside the op (cos_cache / sin_cache inputs; docs/ops.md): off when rotary_dim == 0.
  const void* cos_cache = nullptr;  // [max_positions, rotary_dim/2], same element type
  const void* sin_cache = nullptr;
  int rotary_dim = 0;
  int max_positions = 0;
  bool rotary_interleaved = false;
  // Quantized caches: key_cache / value_cache / present_* hold 1-byte codes; the scales are fp32 device memory
  // (readers pass their owner's).
  CacheDType cache = CacheDType::kSameAsQuery;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
  ScaleMode k_scale_mode = ScaleMode::kPerTensor;
  ScaleMode v_scale_mode = ScaleMode::kPerTensor;
  // Paged caches (docs/ops.md, "Paged caches"; global layers only): with paged.table set (device memory,
  // [B, max_blocks]) key_cache / value_cache / present_* are block pools [num_blocks, Hkv, block_size, D], position p
  // of sequence b is row p % block_size of pool block table[b, p / block_size], and shape.capacity is
  // max_blocks * block_size (the positions a table row maps).
  BlockTable paged;
};

// How a call with rotary inputs rotates this step's queries and keys.
enum class RotaryPath {
  kNone,     // no rotary inputs
  kFused,    // tensor-core decode: Q rotated as it is loaded, the new key in shared memory and as it is cached
  kPrepass,  // every other path: a rotary kernel writes rotated copies into the scratch buffer first
};

enum class Path {
  kDecode,      // S == 1: split-K flash-decoding kernel (splits merged in-kernel or by a combine launch), cache write fused
  kPrefill,     // S > 1, fp16/bf16: tiled tensor-core kernel, then the cache-write kernel
  kPerToken,    // S > 1, fp32: the decode kernel once per query token, then the cache-write kernel
};

// What host code decided for one call; a function of the shapes only (never of device data).
struct LaunchPlan {
  Path path = Path::kDecode;
  int splits = 1;         // key-range splits per (token, KV head, head chunk); prefill: per (query tile, head)
  int head_chunk = 1;     // query heads per decode block (compile-time GC: 1, 2, 4 or 8)
  int chunks = 1;         // ceil(G / head_chunk)
  bool tensor_core = false;  // decode: the tensor-core cp.async kernel (fp16/bf16) instead of the SIMT one
  int tc_flags = 0;          // its variant flags
  bool fused_combine = false;  // tensor-core decode with splits > 1: the last block of each group merges the splits
  bool cluster_merge = false;  // tensor-core decode, 1 < splits <= 16, sm_90: each group's splits form a thread-block
                               // cluster and merge through distributed shared memory (then no fused_combine)
  bool copy_cache = false;  // owner, present != past: copy past -> present first (a paged pool: the whole pool)
  bool paged_tiles = false;  // paged caches read through the block table by the tensor-core decode or the prefill kernel
  int wgmma_prefill = 0;  // > 0: prefill on this variant of the warpgroup-MMA kernel (sm_90; prefill_wgmma.cu) instead
                         // of mma.sync: only when PlanTuning asks (it is not yet faster, docs/benchmarks.md)
  RotaryPath rotary = RotaryPath::kNone;
  // Caches the chosen kernels cannot read in place — quantized caches on a path without quantized tiles (prefill, the
  // fp32 kernels), paged pools on a path without block-table tiles (all but the tensor-core decode with block_size a
  // multiple of its 16-key tiles): a pre-pass stages them into the scratch buffer as contiguous caches of the query
  // type (at staged_offset: K then V, [B, Hkv, C, D]; dequantized, gathered through the block table, or both), and a
  // quantized owner's chunk as dequantize(quantize(x)) (at fake_chunk_offset: K then V, [B, S, Hkv*D]). The kernels
  // then run unchanged on those, and the cache-write kernel (quantizing, through the block table) follows.
  bool staged_caches = false;
  size_t staged_offset = 0;
  size_t fake_chunk_offset = 0;
  // Scratch layout (device memory from ORT's allocator; byte offsets, each 256-byte aligned): split-K partials
  // (max, sum) at 0 and their accumulators at partials_acc_offset; kPrepass: rotated queries at rotary_offset, the
  // owner's rotated keys at rotary_key_offset.
  size_t partials_acc_offset = 0;
  size_t split_groups = 0;  // splits > 1: groups whose splits are merged (one split-completion counter each)
  size_t rotary_offset = 0;
  size_t rotary_key_offset = 0;
  size_t scratch_bytes = 0;
};

// Empty when the kernels support this shape / type; else why not (head size, SM count, ...).
std::string CheckSupported(const AttentionShape& shape, DType dtype, CacheDType cache = CacheDType::kSameAsQuery);

#ifdef MIXATTN_TUNING
// Overrides for tuning and benchmarks, only in the tuning build (CMake option MIXATTN_TUNING; the release library
// plans automatically). Defaults: the environment (MIXATTN_CUDA_DECODE_KERNEL=simt|tc, MIXATTN_CUDA_DECODE_SPLITS=n,
// MIXATTN_CUDA_DECODE_WAVES=n and the fields' variables below), else automatic.
struct PlanTuning {
  int decode_kernel = -1;  // -1 auto (tc for fp16/bf16), 0 SIMT, 1 tensor-core
  int splits = 0;          // > 0: force this split count (decode: clamped to [1, 256]; prefill: [1, 8])
  int tc_flags = -1;       // >= 0: tensor-core kernel variant flags (decode_tc.cu; env MIXATTN_CUDA_DECODE_TC_FLAGS)
  int fused_combine = -1;  // -1 auto (on; env MIXATTN_CUDA_FUSED_COMBINE=0 turns it off), 0 CombineKernel, 1 fused
  int cluster_merge = -1;  // -1 auto (where a cluster fits; env MIXATTN_CUDA_CLUSTER_MERGE=0 turns it off), 0 off, 1 on
                           // where it fits
  int prefill_kernel = -1;  // -1 auto (the wgmma kernel on sm_90 where it applies, else mma.sync: Plan), 0 mma.sync,
                            // 1..5 that variant of the wgmma kernel where it applies (sm_90; kernels.cuh)
};

// num_sms: multiprocessors of the current device (CurrentDeviceSmCount()).
LaunchPlan Plan(const CudaAttendArgs& args, int num_sms, const PlanTuning& tuning = {});
#else
// num_sms: multiprocessors of the current device (CurrentDeviceSmCount()).
LaunchPlan Plan(const CudaAttendArgs& args, int num_sms);
#endif  // MIXATTN_TUNING

// Enqueues the whole call on `stream` (a cudaStream_t; nullptr = legacy default stream). No
// allocation, no synchronisation. scratch: plan.scratch_bytes of device memory (or nullptr when 0).
// Returns an empty string or the CUDA error.
std::string Launch(const CudaAttendArgs& args, const LaunchPlan& plan, void* scratch, void* stream);

// Device of the calling thread (cudaGetDevice) and its multiprocessor count (cached per device).
int CurrentDevice();
int CurrentDeviceSmCount();

// For mixattention.check_lengths=1: copies n int32 from the device and synchronises `stream`.
std::string CopyLengthsToHost(const int32_t* device, int32_t* host, int n, void* stream);

}  // namespace mixattn::cuda
