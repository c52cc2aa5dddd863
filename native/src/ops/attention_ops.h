// The two custom ops, one registration per element type (float, MLFloat16, BFloat16).
#pragma once

#include <vector>

#include "mixattention/op_spec.h"
#include "ops/op_common.h"

namespace mixattn::ops {

// Windowed (owner) attention: attends, then writes the chunk's K/V into its cache (in place when
// present_* is bound to the past_* buffer).
template <typename T, typename TCache = T>
struct WindowedAttentionKernel {
  explicit WindowedAttentionKernel(const OpAttributes& attrs) : attrs_(attrs) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  OpAttributes attrs_;
};

// past_key -> present_key, past_value -> present_value: ORT's planner hint for intermediate caches
// (OrtCustomOp::GetMayInplace; the arrays are malloc'ed for ORT and freed by ReleaseMayInplace).
size_t OwnerMayInplace(int** input_index, int** output_index);
void ReleaseOwnerMayInplace(int* input_index, int* output_index);

// The schema half of an ORT custom op for either attention op, for any execution provider: name,
// input/output counts and types, the optional new_lengths and rotary caches, and the owner's in-place hint, all from
// op_spec.h by kind. Derived ops add only what differs (the kernel type; GetExecutionProviderType
// for CUDA).
// TCache: the declared element type of the K/V caches (T, int8_t, Float8E4M3 or Float8E4M3AsUint8); k_scale / v_scale
// are float, optional.
template <typename Derived, typename Kernel, typename T, OpKind K, typename TCache = T>
struct AttentionOpSchema : Ort::CustomOpBase<Derived, Kernel, true> {
  static constexpr bool kOwner = K == OpKind::kOwner;

  AttentionOpSchema() {
    if constexpr (kOwner) {
      OrtCustomOp::GetMayInplace = &OwnerMayInplace;
      OrtCustomOp::ReleaseMayInplace = &ReleaseOwnerMayInplace;
    }
  }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    *kernel = nullptr;
    return GuardStatus([&] { *kernel = new Kernel(OpAttributes::Read(GetName(), info)); });
  }
  const char* GetName() const { return kOwner ? spec::kWindowedAttention : spec::kSharedKvAttention; }
  size_t GetInputTypeCount() const { return kOwner ? spec::owner::kInputCount : spec::reader::kInputCount; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    const size_t past = kOwner ? spec::owner::kPastLengths : spec::reader::kPastLengths;
    const size_t newl = kOwner ? spec::owner::kNewLengths : spec::reader::kNewLengths;
    const size_t kc = kOwner ? spec::owner::kPastKey : spec::reader::kKeyCache;
    const size_t vc = kOwner ? spec::owner::kPastValue : spec::reader::kValueCache;
    const size_t ks = kOwner ? spec::owner::kKScale : spec::reader::kKScale;
    const size_t vs = kOwner ? spec::owner::kVScale : spec::reader::kVScale;
    const size_t table = kOwner ? spec::owner::kBlockTable : spec::reader::kBlockTable;
    if (index == past || index == newl || index == table) return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    if (index == ks || index == vs) return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    if (index == kc || index == vc) return OnnxType<TCache>::value;
    return OnnxType<T>::value;
  }
  // new_lengths and everything after it (rotary caches, scales, block_table) are optional.
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    const size_t first_optional = kOwner ? spec::owner::kNewLengths : spec::reader::kNewLengths;
    return index >= first_optional ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return kOwner ? spec::owner::kOutputCount : spec::reader::kOutputCount; }
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return index == spec::owner::kOutput ? OnnxType<T>::value : OnnxType<TCache>::value;  // present_* are TCache
  }
};

// TSchema: the cache type the schema declares (TCache, or Float8E4M3AsUint8 for fp8 bytes typed uint8).
template <typename T, typename TCache = T, typename TSchema = TCache>
struct WindowedAttentionOp : AttentionOpSchema<WindowedAttentionOp<T, TCache, TSchema>, WindowedAttentionKernel<T, TCache>,
                                               T, OpKind::kOwner, TSchema> {};

// Shared-KV (reader) attention: reads another layer's cache, never writes.
template <typename T, typename TCache = T>
struct SharedKvAttentionKernel {
  explicit SharedKvAttentionKernel(const OpAttributes& attrs) : attrs_(attrs) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  OpAttributes attrs_;
};

template <typename T, typename TCache = T, typename TSchema = TCache>
struct SharedKvAttentionOp : AttentionOpSchema<SharedKvAttentionOp<T, TCache, TSchema>, SharedKvAttentionKernel<T, TCache>,
                                               T, OpKind::kReader, TSchema> {};

// The optional cos_cache / sin_cache inputs [M, R/2] (docs/ops.md, "Rotary"): both or neither, same shape,
// 0 < R <= D. present == false when both are absent.
struct RotaryInputs {
  bool present = false;
  const void* cos = nullptr;
  const void* sin = nullptr;
  int rotary_dim = 0;     // R
  int max_positions = 0;  // M
};

// One call of either op, checked (attention_call.cc): the shape, every input's data (host or device memory, as the
// execution provider gives it) and the outputs, fetched with their shapes. Owner only: key, value, present_*.
struct AttentionCall {
  AttentionShape shape;
  const void* query = nullptr;
  const void* key = nullptr;
  const void* value = nullptr;
  const void* key_cache = nullptr;    // owner: past_key; reader: key_cache
  const void* value_cache = nullptr;
  const int32_t* past_lengths = nullptr;
  const int32_t* new_lengths = nullptr;  // nullptr when absent
  RotaryInputs rotary;
  KvQuant quant;  // cache type (from the cache tensor's element type) and k_scale / v_scale when quantized
  BlockTable paged;  // block_table given: the caches are block pools (contents checked only with lengths_on_host)
  void* output = nullptr;
  void* present_key = nullptr;
  void* present_value = nullptr;
};

// Reads and checks the inputs of one WindowedAttention / SharedKvAttention call (shapes, attributes' consequences,
// require_inplace) and fetches its outputs. lengths_on_host: the lengths are host data (CPU EP), so the cache
// rules and the rotary positions are checked too; otherwise (CUDA) they stay on the device unread.
AttentionCall ReadCall(OpKind kind, const OpAttributes& attrs, const Ort::KernelContext& ctx, bool lengths_on_host);

// The CPU kernel's arguments for a checked call (host data; the owner's chunk included).
template <typename T, typename TCache = T>
AttendArgs<T, TCache> AttendArgsOf(const AttentionCall& c) {
  AttendArgs<T, TCache> a;
  a.shape = c.shape;
  a.query = static_cast<const T*>(c.query);
  a.chunk_key = static_cast<const T*>(c.key);
  a.chunk_value = static_cast<const T*>(c.value);
  a.key_cache = static_cast<const TCache*>(c.key_cache);  // owner: the state before this step's write
  a.value_cache = static_cast<const TCache*>(c.value_cache);
  a.past_lengths = c.past_lengths;
  a.new_lengths = c.new_lengths;
  a.output = static_cast<T*>(c.output);
  a.quant = c.quant;
  a.paged = c.paged;
  return a;
}

// Rotary inside the op on the CPU: x [B, S, heads*D] rotated into `buffer` (returned), or x itself when the call has
// no cos/sin caches.
template <typename T>
const T* RotatedRows(const AttentionCall& c, bool interleaved, int heads, const T* x, std::vector<T>& buffer,
                     const Executor& executor) {
  if (!c.rotary.present) return x;
  const AttentionShape& sh = c.shape;
  const RotaryArgs<T> r{static_cast<const T*>(c.rotary.cos), static_cast<const T*>(c.rotary.sin), c.rotary.rotary_dim,
                        c.rotary.max_positions, interleaved};
  buffer.resize(static_cast<size_t>(sh.batch) * sh.seq * heads * sh.head_dim);
  ApplyRotary(r, sh, heads, x, buffer.data(), c.past_lengths, c.new_lengths, executor);
  return buffer.data();
}

}  // namespace mixattn::ops
