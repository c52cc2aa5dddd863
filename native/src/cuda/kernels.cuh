// Parameter structs and launcher tables of the CUDA kernels (decode.cu, decode_tc.cu, prefill.cu, cache_write.cu).
// Launchers are plain function pointers chosen by small switch functions (no dispatch macros):
// each kernel template is instantiated once per (storage type, head size[, head chunk]).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention_cuda.h"

namespace mixattn::cuda {

// Rotary applied inside a kernel (RotaryPath::kFused); dim == 0: none.
struct RotaryParams {
  const void* cos;  // [max_positions, dim/2]
  const void* sin;
  int dim, max_positions, interleaved;
};

// Split-K decode: block (token z, split, KV head, head chunk); 4 warps.
struct DecodeParams {
  const void* query;        // [B, S, Hq*D]
  const void* chunk_key;    // [B, S, Hkv*D] or nullptr (reader)
  const void* chunk_value;
  const void* key_cache;    // [B, Hkv, C, D]
  const void* value_cache;
  const int32_t* past_lengths;
  const int32_t* new_lengths;  // or nullptr
  void* output;             // [B, S, Hq*D]; written when splits == 1
  void* write_key;          // fused cache write (S == 1 owner) target, or nullptr
  void* write_value;
  float2* part_ml;          // [B*S, Hq, splits] (max, sum) when splits > 1
  float* part_acc;          // [B*S, Hq, splits, D]
  int* counters;            // tensor-core kernel, splits > 1: per (token, KV head, head chunk) split-completion
                            // counters, zero before and after a launch (the last block of a group merges the splits
                            // and resets its counter); nullptr: CombineKernel merges them in a second launch
  int batch, seq, num_heads, kv_num_heads, capacity, window, group, chunks, splits, min_per_split;
  int head_chunk;           // query heads per block (the last chunk may hold fewer)
  int tc_flags;             // tensor-core kernel: bit 0 interleaved warp tiles (decode_tc.cu)
  int cluster_merge;        // tensor-core kernel, 1 < splits <= kMaxClusterSplits, sm_90: the splits of a group are one
                            // thread-block cluster and merge through distributed shared memory (no counters, no partials)
  float scale, softcap;
  RotaryParams rotary;      // tensor-core kernel only (the SIMT kernel gets pre-rotated inputs)
  // Quantized caches (tensor-core kernel instantiated for 1-byte codes): fp32 scales, ScaleMode as int.
  const float* k_scale;
  const float* v_scale;
  int k_scale_mode, v_scale_mode;
  // Paged caches read through the block table (tensor-core kernel only, LaunchPlan::paged_tiles): key_cache /
  // value_cache / write_* are then pools [num_blocks, Hkv, block_size, D] and capacity is max_blocks * block_size.
  BlockTable paged;
};

// Tiled tensor-core prefill: block (64 query tokens x splits, query head, sequence).
struct PrefillParams {
  const void* query;
  const void* chunk_key;  // or nullptr (reader)
  const void* chunk_value;
  const void* key_cache;
  const void* value_cache;
  const int32_t* past_lengths;
  const int32_t* new_lengths;
  void* output;
  float* part_o;    // splits > 1: [B*S, Hq, splits, D] unnormalised partial outputs
  float2* part_ml;  // [B*S, Hq, splits] (max in base-2 units, sum)
  int* counters;    // splits > 1: per (sequence, query tile, head) split-completion counters, zero between launches
  int batch, seq, num_heads, kv_num_heads, capacity, window, group;
  int splits;       // key-range splits per query tile (1: the block writes the output)
  float scale, softcap;
  BlockTable paged;  // table set: the caches are pools read through it in place (LaunchPlan::paged_tiles)
};

using DecodeLauncher = cudaError_t (*)(const DecodeParams& p, cudaStream_t stream);
using CombineLauncher = cudaError_t (*)(const DecodeParams& p, int head_dim, cudaStream_t stream);
using PrefillLauncher = cudaError_t (*)(const PrefillParams& p, cudaStream_t stream);

// nullptr when (dtype, head_dim, head_chunk) has no instantiation.
DecodeLauncher GetDecodeLauncher(DType dtype, int head_dim, int head_chunk);
CombineLauncher GetCombineLauncher(DType dtype);
// Resident decode blocks per multiprocessor (cudaOccupancyMaxActiveBlocksPerMultiprocessor, cached).
int DecodeBlocksPerSm(DType dtype, int head_dim, int head_chunk);
// mma.sync, flash-attention-2 style (prefill.cu): fp16 / bf16 only.
PrefillLauncher GetPrefillLauncher(DType dtype, int head_dim);
// Warpgroup MMA (prefill_wgmma.cu): sm_90 devices, fp16 / bf16, D = 64 / 128 (256: variants 1 and 6), no softcap;
// nullptr elsewhere. PrefillWgmmaAvailable: the current device is sm_90 (cached per device). variant: 1 two
// stages, each product waited for in turn; 2 three stages; 3 three stages with the softmax of a tile under the
// previous tile's P V; 4 as 3, whole tiles loaded by TMA; 5 as 4, the two computing warpgroups taking turns at the
// tensor cores; 6 as 5 with K and V on barriers of their own (K refilled once QK^T has read it; at D = 256 two
// stages). Plan runs kPrefillWgmmaPlanned (1 where it does not exist).
bool PrefillWgmmaAvailable();
constexpr int kPrefillWgmmaVariants = 6, kPrefillWgmmaPlanned = 5;
constexpr bool PrefillWgmmaHasVariant(int head_dim, int variant) {
  return head_dim <= 128 ? variant >= 1 && variant <= kPrefillWgmmaVariants : variant == 1 || variant == 6;
}
PrefillLauncher GetPrefillWgmmaLauncher(DType dtype, int head_dim, int variant);
constexpr int kPrefillWgmmaKeysPerTile = 128;
constexpr int kPrefillWgmmaRows = 128;  // query tokens per block (two warpgroups of 64)
// Tensor-core, cp.async-pipelined decode (decode_tc.cu): fp16 / bf16, head chunks of up to 8 heads;
// nullptr for fp32. Same DecodeParams, grid and split-K partials as the SIMT kernel.
// cache: the caches' element type (1-byte codes dequantized in registers / shared memory, docs/gpu.md).
DecodeLauncher GetDecodeTcLauncher(DType dtype, int head_dim, CacheDType cache = CacheDType::kSameAsQuery);
int DecodeTcBlocksPerSm(DType dtype, int head_dim, CacheDType cache = CacheDType::kSameAsQuery);
constexpr int kPrefillRows = 64;  // query tokens per prefill block
// Keys per prefill K / V tile (D = 256: registers bound the S tile).
constexpr int PrefillKeysPerTile(int head_dim) { return head_dim <= 128 ? 64 : 32; }
constexpr int kDecodeTcThreads = 128;
// Largest split count merged in a thread-block cluster (16: the non-portable cluster size Hopper allows).
constexpr int kMaxClusterSplits = 16;
// Whether a cluster of `splits` tensor-core decode blocks (this element type and head size) can run on the current
// device: sm_90 or later, and cudaOccupancyMaxActiveClusters >= 1. Cached per device.
bool DecodeTcClusterFits(DType dtype, int head_dim, int splits, CacheDType cache = CacheDType::kSameAsQuery);
constexpr int kDecodeTcKeysPerTile = 16;                                        // keys per warp tile
constexpr int kDecodeTcMinPerSplit = (kDecodeTcThreads / 32) * kDecodeTcKeysPerTile;  // one tile per warp

// Decode block geometry, shared by Plan and the kernel: key rows processed per block step.
constexpr int kDecodeThreads = 128;
inline int DecodeRowsPerStep(DType dtype, int head_dim) {
  const int vec = dtype == DType::kFloat32 ? 4 : 8;
  const int nv = head_dim / vec;
  const int tpr = nv < 32 ? nv : 32;
  return (kDecodeThreads / 32) * (32 / tpr);
}
inline int DecodeUnroll(int head_chunk) { return head_chunk <= 4 ? 4 : 2; }

// Zeroed split-completion counters for `count` groups on `stream` (one buffer per device and stream, kept for
// the process: graphs captured on the stream keep its address); nullptr when it would have to be allocated
// while the stream is being captured or the allocation fails (the caller then launches CombineKernel).
int* SplitCounters(cudaStream_t stream, size_t count);

// RotaryPath::kPrepass: x [B, S, heads*D] -> out, rows s < N_b rotated at position P_b + s (clamped to the caches),
// padding rows copied.
cudaError_t LaunchRotary(DType dtype, const CudaAttendArgs& args, const void* x, void* out, int heads,
                         cudaStream_t stream);

// Cache write for S > 1 (owner): chunk rows s < N_b with s >= N_b - C go to slot (P_b + s) mod C, or (paged) to
// position P_b + s through the block table; quantized (same kernel) when args.cache is a 1-byte type.
cudaError_t LaunchCacheWrite(DType dtype, const CudaAttendArgs& args, cudaStream_t stream);

// LaunchPlan::staged_caches (stage.cu): the whole K / V caches as contiguous caches of the query type in k_out / v_out
// ([B, Hkv, C, D]) — dequantized (x' = code * scale, rounded once) when args.cache is a 1-byte type, read through the
// block table when args.paged is set — and a quantized owner's chunk rows as dequantize(quantize(x)) in chunk_k_out /
// chunk_v_out ([B, S, Hkv*D]; skipped when args.chunk_key is null).
cudaError_t LaunchStageCaches(DType dtype, const CudaAttendArgs& args, void* k_out, void* v_out, cudaStream_t stream);
cudaError_t LaunchFakeQuantChunk(DType dtype, const CudaAttendArgs& args, void* chunk_k_out, void* chunk_v_out,
                                 cudaStream_t stream);

}  // namespace mixattn::cuda
