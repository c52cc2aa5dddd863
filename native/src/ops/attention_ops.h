// The two custom ops, one registration per element type (float, MLFloat16, BFloat16).
#pragma once

#include "mixattention/op_spec.h"
#include "ops/op_common.h"

namespace mixattn::ops {

// Windowed (owner) attention: attends, then writes the chunk's K/V into its cache (in place when
// present_* is bound to the past_* buffer).
template <typename T>
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
// input/output counts and types, the optional new_lengths, and the owner's in-place hint, all from
// op_spec.h by kind. Derived ops add only what differs (the kernel type; GetExecutionProviderType
// for CUDA).
template <typename Derived, typename Kernel, typename T, OpKind K>
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
    return index == past || index == newl ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 : OnnxType<T>::value;
  }
  // new_lengths and the rotary caches after it are optional.
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    const size_t first_optional = kOwner ? spec::owner::kNewLengths : spec::reader::kNewLengths;
    return index >= first_optional ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return kOwner ? spec::owner::kOutputCount : spec::reader::kOutputCount; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return OnnxType<T>::value; }
};

template <typename T>
struct WindowedAttentionOp
    : AttentionOpSchema<WindowedAttentionOp<T>, WindowedAttentionKernel<T>, T, OpKind::kOwner> {};

// Shared-KV (reader) attention: reads another layer's cache, never writes.
template <typename T>
struct SharedKvAttentionKernel {
  explicit SharedKvAttentionKernel(const OpAttributes& attrs) : attrs_(attrs) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  OpAttributes attrs_;
};

template <typename T>
struct SharedKvAttentionOp
    : AttentionOpSchema<SharedKvAttentionOp<T>, SharedKvAttentionKernel<T>, T, OpKind::kReader> {};

// Shared front half of both Compute()s: validated shapes of query and the cache pair.
struct CommonShapes {
  AttentionShape shape;
  std::vector<int64_t> query_shape;  // [B, S, Hq*D]
  std::vector<int64_t> cache_shape;  // [B, Hkv, C, D]
};

CommonShapes CheckCommonInputs(const char* op, const OpAttributes& attrs, const Ort::ConstValue& query,
                               const char* key_cache_name, const Ort::ConstValue& key_cache,
                               const char* value_cache_name, const Ort::ConstValue& value_cache);

// The optional cos_cache / sin_cache inputs [M, R/2] (docs/ops.md, "Rotary"): both or neither, same shape,
// 0 < R <= D. present == false when both are absent.
struct RotaryInputs {
  bool present = false;
  const void* cos = nullptr;
  const void* sin = nullptr;
  int rotary_dim = 0;     // R
  int max_positions = 0;  // M
};
RotaryInputs CheckRotaryInputs(const char* op, const Ort::KernelContext& ctx, int cos_index, int sin_index,
                               int head_dim);

// past_lengths [B] (required) and new_lengths [B] (optional; nullptr when absent).
void CheckLengthInputs(const char* op, const Ort::KernelContext& ctx, int past_index, int new_index, int batch,
                       const int32_t** past_lengths, const int32_t** new_lengths);

}  // namespace mixattn::ops
