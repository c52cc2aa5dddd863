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

// Dimensions and attributes of one call. All counts are validated before a kernel runs
// (ValidateShape / ValidateLengths); kernels assume them.
struct AttentionShape {
  int batch = 0;         // B
  int seq = 0;           // S: tokens in this step (chunk), padded length
  int num_heads = 0;     // Hq
  int kv_num_heads = 0;  // Hkv, divides Hq
  int head_dim = 0;      // D
  int capacity = 0;      // C: cache dimension 2
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
template <typename T>
struct AttendArgs {
  AttentionShape shape;
  const T* query = nullptr;
  const T* chunk_key = nullptr;
  const T* chunk_value = nullptr;
  const T* key_cache = nullptr;
  const T* value_cache = nullptr;
  const int32_t* past_lengths = nullptr;
  const int32_t* new_lengths = nullptr;
  T* output = nullptr;
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
template <typename T>
struct CacheWriteArgs {
  AttentionShape shape;
  const T* chunk_key = nullptr;
  const T* chunk_value = nullptr;
  const T* past_key = nullptr;
  const T* past_value = nullptr;
  T* present_key = nullptr;
  T* present_value = nullptr;
  const int32_t* past_lengths = nullptr;
  const int32_t* new_lengths = nullptr;
};

// Runs fn(i) for i in [0, n), possibly in parallel; returns when all calls have finished.
class Executor {
 public:
  using TaskFn = void (*)(void* data, size_t index);
  virtual ~Executor() = default;
  virtual void ParallelFor(size_t n, TaskFn fn, void* data) const = 0;
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

// With rotary inputs: every real token's position P_b + s must have a row in the cos/sin caches
// (P_b + N_b <= max_positions). Empty when valid, else the error message.
std::string ValidateRotaryPositions(OpKind kind, const AttentionShape& shape, const int32_t* past_lengths,
                                    const int32_t* new_lengths, int max_positions);

// Kernels (src/cpu). T is float, Float16 or BFloat16.
template <typename T>
void Attend(const AttendArgs<T>& args, const Executor& executor);
template <typename T>
void WriteChunk(const CacheWriteArgs<T>& args, const Executor& executor);

// x [B, S, heads*D] -> out (same shape, may not alias x): rows s < N_b rotated at position P_b + s,
// padding rows copied unchanged. Lengths must have passed ValidateLengths / ValidateRotaryPositions.
template <typename T>
void ApplyRotary(const RotaryArgs<T>& rotary, const AttentionShape& shape, int heads, const T* x, T* out,
                 const int32_t* past_lengths, const int32_t* new_lengths, const Executor& executor);

// Which instruction set the CPU kernels were dispatched to ("x86-64-v3" or "x86-64").
const char* CpuKernelIsa();

}  // namespace mixattn
