// The two custom ops, one registration per element type (float, MLFloat16, BFloat16).
#pragma once

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

template <typename T>
struct WindowedAttentionOp : Ort::CustomOpBase<WindowedAttentionOp<T>, WindowedAttentionKernel<T>, true> {
  WindowedAttentionOp();
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const;
  size_t GetInputTypeCount() const;
  ONNXTensorElementDataType GetInputType(size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const;
  size_t GetOutputTypeCount() const;
  ONNXTensorElementDataType GetOutputType(size_t index) const;
};

// Shared-KV (reader) attention: reads another layer's cache, never writes.
template <typename T>
struct SharedKvAttentionKernel {
  explicit SharedKvAttentionKernel(const OpAttributes& attrs) : attrs_(attrs) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  OpAttributes attrs_;
};

template <typename T>
struct SharedKvAttentionOp : Ort::CustomOpBase<SharedKvAttentionOp<T>, SharedKvAttentionKernel<T>, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const;
  size_t GetInputTypeCount() const;
  ONNXTensorElementDataType GetInputType(size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const;
  size_t GetOutputTypeCount() const;
  ONNXTensorElementDataType GetOutputType(size_t index) const;
};

// Shared front half of both Compute()s: validated shapes of query and the cache pair.
struct CommonShapes {
  AttentionShape shape;
  std::vector<int64_t> query_shape;  // [B, S, Hq*D]
  std::vector<int64_t> cache_shape;  // [B, Hkv, C, D]
};

CommonShapes CheckCommonInputs(const char* op, const OpAttributes& attrs, const Ort::ConstValue& query,
                               const char* key_cache_name, const Ort::ConstValue& key_cache,
                               const char* value_cache_name, const Ort::ConstValue& value_cache);

// past_lengths [B] (required) and new_lengths [B] (optional; nullptr when absent).
void CheckLengthInputs(const char* op, const Ort::KernelContext& ctx, int past_index, int new_index, int batch,
                       const int32_t** past_lengths, const int32_t** new_lengths);

}  // namespace mixattn::ops
