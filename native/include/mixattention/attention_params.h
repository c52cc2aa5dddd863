// Kernel-facing parameter structs. No ONNX Runtime types here: the kernels and their tests
// build without ORT; src/ops/ translates ORT tensors into these.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mixattn {

// Storage types. fp16 / bf16 are raw 16-bit patterns; all arithmetic is fp32.
struct Float16 {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};
// float8e4m3fn cache element (raw byte: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities,
// 0x7f / 0xff are NaN). int8 caches use int8_t. Quantization rules: docs/ops.md, "Quantized caches".
struct Float8E4M3 {
  uint8_t bits;
};

// Element type of the K/V caches (TCache). kSameAsT: the caches have the query's type T and no scales.
enum class CacheType : int32_t { kSameAsT = 0, kInt8 = 1, kFloat8E4M3 = 2 };

template <typename TCache>
struct CacheTypeOf {
  static constexpr CacheType value = CacheType::kSameAsT;
};
template <>
struct CacheTypeOf<int8_t> {
  static constexpr CacheType value = CacheType::kInt8;
};
template <>
struct CacheTypeOf<Float8E4M3> {
  static constexpr CacheType value = CacheType::kFloat8E4M3;
};

// Shape of a k_scale / v_scale input, broadcast against the cache [B, Hkv, C, D].
enum class ScaleGranularity : int32_t {
  kPerTensor = 0,   // [1]
  kPerHead = 1,     // [1, Hkv, 1, 1]
  kPerChannel = 2,  // [1, Hkv, 1, D] (ORT GroupQueryAttention's PER_CHANNEL layout: index h*D + d)
};

// One fp32 scale tensor (host or device memory, as the execution provider gives it).
struct KvScale {
  const float* data = nullptr;
  ScaleGranularity granularity = ScaleGranularity::kPerTensor;

  // Index into data of the scale of KV head h, channel d (head size D).
  int64_t Index(int h, int d, int D) const {
    return granularity == ScaleGranularity::kPerTensor ? 0
           : granularity == ScaleGranularity::kPerHead ? h
                                                        : static_cast<int64_t>(h) * D + d;
  }
};

// Quantization of an op's K/V caches. Dequantize: x' = float(q) * scale (fp32). Quantize (the owner's
// write, and the owner's own chunk as it is attended): q = saturate(round_half_even(x * (1.0f / scale))),
// int8 to [-128, 127], fp8 clamped to [-448, 448] then rounded to nearest even E4M3FN; NaN -> the
// largest positive code (127 / 448). Scales must be finite and > 0. Readers use the owner's scales.
struct KvQuant {
  CacheType type = CacheType::kSameAsT;
  KvScale k;  // k_scale input (unused when type == kSameAsT)
  KvScale v;  // v_scale input
  bool quantized() const { return type != CacheType::kSameAsT; }
};

// Paged global caches (docs/ops.md, "Paged caches"): the cache tensor is a block pool [num_blocks, Hkv, block_size, D]
// shared by the batch, and position p of sequence b lives in pool block table[b * max_blocks + p / block_size], row
// p % block_size. table == nullptr: the cache is the contiguous [B, Hkv, C, D] of every other call. Only the entries
// of the logical blocks a call reads or writes (p < P_b + N_b) are used; later entries may hold anything (e.g. -1).
struct BlockTable {
  const int32_t* table = nullptr;  // block_table input [B, max_blocks] (host memory on the CPU)
  int max_blocks = 0;              // max_blocks_per_seq
  int block_size = 0;              // cache dimension 2 of the pool
  int num_blocks = 0;              // cache dimension 0 of the pool
  bool paged() const { return table != nullptr; }
  // Pool block of sequence b's position p (validated by ValidateBlockTable).
  int64_t BlockOf(int b, int64_t p) const { return table[static_cast<int64_t>(b) * max_blocks + p / block_size]; }
};

// Dimensions and attributes of one call. All counts are validated before a kernel runs
// (ValidateShape / ValidateLengths); kernels assume them.
struct AttentionShape {
  int batch = 0;         // B
  int seq = 0;           // S: tokens in this step (chunk), padded length
  int num_heads = 0;     // Hq
  int kv_num_heads = 0;  // Hkv, divides Hq
  int head_dim = 0;      // D
  int capacity = 0;      // C: cache dimension 2 (paged: max_blocks * block_size, the positions a table can map)
  int window = 0;        // W: 0 = global, > 0 sliding (query at p sees p-W+1 .. p)
  float scale = 0.f;     // already resolved (never 0 here)
  float softcap = 0.f;   // 0 = none

  int group() const { return num_heads / kv_num_heads; }
};

// Attend every real query token to its visible keys.
//   query       [B, S, Hq*D]
//   chunk_key   [B, S, Hkv*D] or nullptr: when set (owner), positions >= past_lengths[b] are read
//   chunk_value [B, S, Hkv*D]   from the chunk; when null (reader) everything comes from the cache.
//   key_cache   [B, Hkv, C, D]  position p lives in slot p mod C (owner: state before this step's write)
//   value_cache [B, Hkv, C, D]
//   past_lengths [B], new_lengths [B] or nullptr (= S)
//   output      [B, S, Hq*D]    rows of padding tokens are zeroed
// TCache (int8_t / Float8E4M3, or T): element type of the caches. With a quantized cache, quant holds the
// scales; cache rows are dequantized (x' = q * scale) and the chunk's own K/V rows are attended as
// dequantize(quantize(x)), the values the owner writes, so prefill and decode see the same numbers.
template <typename T, typename TCache = T>
struct AttendArgs {
  AttentionShape shape;
  const T* query = nullptr;
  const T* chunk_key = nullptr;
  const T* chunk_value = nullptr;
  const TCache* key_cache = nullptr;
  const TCache* value_cache = nullptr;
  const int32_t* past_lengths = nullptr;
  const int32_t* new_lengths = nullptr;
  T* output = nullptr;
  KvQuant quant;  // type == CacheTypeOf<TCache>::value; scales when quantized
  // CPU: how many key ranges each (sequence, KV head, query block) is split into (split-K: partial softmax
  // states merged after). 0: chosen from the task count, the executor's concurrency and the longest visible
  // key range; > 0 forces it (tests). Results equal the unsplit ones up to fp32 rounding.
  int key_splits = 0;
  BlockTable paged;  // paged caches: key_cache / value_cache are block pools read through the table
};

// Rotary position embedding applied by the op itself (optional cos_cache / sin_cache inputs, docs/ops.md):
// token s of sequence b sits at position P_b + s; for i < R/2 the pair (i, i + R/2) (or (2i, 2i+1) when
// interleaved) of every head is rotated by the angle whose cos / sin are cos[pos, i] / sin[pos, i];
// dimensions >= R pass unchanged. Computed in fp32, rounded to T.
template <typename T>
struct RotaryArgs {
  const T* cos = nullptr;  // [max_positions, R/2]
  const T* sin = nullptr;
  int rotary_dim = 0;      // R: even, <= D
  int max_positions = 0;   // M
  bool interleaved = false;
};

// Write the chunk's K/V into the owner's cache: slot (past + s) mod C for the last min(N, C)
// real tokens. When present_* != past_*, past_* is first copied into present_* (whole cache).
// With a quantized TCache each row is quantized with quant's scales as it is written (same pass).
template <typename T, typename TCache = T>
struct CacheWriteArgs {
  AttentionShape shape;
  const T* chunk_key = nullptr;
  const T* chunk_value = nullptr;
  const TCache* past_key = nullptr;
  const TCache* past_value = nullptr;
  TCache* present_key = nullptr;
  TCache* present_value = nullptr;
  const int32_t* past_lengths = nullptr;
  const int32_t* new_lengths = nullptr;
  KvQuant quant;
  BlockTable paged;  // paged caches: rows are written to pool block table[b, p / block_size], row p % block_size
};

// Runs fn(i) for i in [0, n), possibly in parallel; returns when all calls have finished.
class Executor {
 public:
  using TaskFn = void (*)(void* data, size_t index);
  virtual ~Executor() = default;
  virtual void ParallelFor(size_t n, TaskFn fn, void* data) const = 0;
  // Threads ParallelFor may use at once (a hint for how finely kernels split their work).
  virtual int Concurrency() const { return 1; }
};

// Runs everything on the calling thread.
class SerialExecutor final : public Executor {
 public:
  void ParallelFor(size_t n, TaskFn fn, void* data) const override {
    for (size_t i = 0; i < n; ++i) fn(data, i);
  }
};

enum class OpKind { kOwner, kReader };

// Per-sequence checks of past_lengths / new_lengths against the cache rules of docs/ops.md.
// Returns an empty string when valid, else the error message (op name, input names, rule).
std::string ValidateLengths(OpKind kind, const AttentionShape& shape, const int32_t* past_lengths,
                            const int32_t* new_lengths);

// Paged caches: checks of the block table against this call (docs/ops.md, "Paged caches"): the owner must be global
// (window 0); every sequence's P_b + N_b fits its table (<= max_blocks * block_size); every entry of a logical block
// the call reads or writes is in [0, num_blocks); and (owner) a pool block written by one sequence is used by no other
// sequence of the batch (the writes would race and corrupt the other's keys). Empty when valid, else the error.
// Lengths must have passed ValidateLengths.
std::string ValidateBlockTable(OpKind kind, const AttentionShape& shape, const BlockTable& table,
                               const int32_t* past_lengths, const int32_t* new_lengths);

// With rotary inputs: every real token's position P_b + s must have a row in the cos/sin caches
// (P_b + N_b <= max_positions). Empty when valid, else the error message.
std::string ValidateRotaryPositions(OpKind kind, const AttentionShape& shape, const int32_t* past_lengths,
                                    const int32_t* new_lengths, int max_positions);

// Kernels (src/cpu). T is float, Float16 or BFloat16; TCache is T, int8_t or Float8E4M3.
template <typename T, typename TCache>
void Attend(const AttendArgs<T, TCache>& args, const Executor& executor);
template <typename T, typename TCache>
void WriteChunk(const CacheWriteArgs<T, TCache>& args, const Executor& executor);

// x [B, S, heads*D] -> out (same shape, may not alias x): rows s < N_b rotated at position P_b + s,
// padding rows copied unchanged. Lengths must have passed ValidateLengths / ValidateRotaryPositions.
template <typename T>
void ApplyRotary(const RotaryArgs<T>& rotary, const AttentionShape& shape, int heads, const T* x, T* out,
                 const int32_t* past_lengths, const int32_t* new_lengths, const Executor& executor);

// Which instruction set the CPU kernels were dispatched to ("x86-64-v3" or "x86-64").
const char* CpuKernelIsa();

}  // namespace mixattn
