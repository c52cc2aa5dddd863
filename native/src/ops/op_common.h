// ORT glue shared by the two ops: attributes, shape checks, error statuses, the ORT-backed executor.
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <cstdint>
#include <string>
#include <vector>

#include "mixattention/attention_params.h"

namespace mixattn::ops {

template <typename T>
struct OnnxType;
template <>
struct OnnxType<float> {
  static constexpr ONNXTensorElementDataType value = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
};
template <>
struct OnnxType<Float16> {
  static constexpr ONNXTensorElementDataType value = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
};
template <>
struct OnnxType<BFloat16> {
  static constexpr ONNXTensorElementDataType value = ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
};
template <>
struct OnnxType<int8_t> {
  static constexpr ONNXTensorElementDataType value = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
};
template <>
struct OnnxType<Float8E4M3> {
  static constexpr ONNXTensorElementDataType value = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FN;
};
// Schema tag: an fp8 E4M3FN cache declared as uint8 (the same bytes), for runtimes whose API cannot type fp8 tensors
// (ORT's C# API, docs/ops.md "Quantized caches"). The kernel is the Float8E4M3 one.
struct Float8E4M3AsUint8 {};
template <>
struct OnnxType<Float8E4M3AsUint8> {
  static constexpr ONNXTensorElementDataType value = ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
};

// Thrown by the checks below; turned into an ORT_INVALID_ARGUMENT status at the op boundary.
struct InvalidArgument {
  std::string message;
};

[[noreturn]] void Fail(std::string message);

// Attributes of both ops, validated (docs/ops.md).
struct OpAttributes {
  int num_heads = 0;
  int kv_num_heads = 0;
  int window = 0;
  float scale = 0.f;
  float softcap = 0.f;
  bool rotary_interleaved = false;  // with cos/sin cache inputs: rotate pairs (2i, 2i+1) instead of (i, i + R/2)
  bool require_inplace = false;  // session config mixattention.require_inplace = 1
  bool check_lengths = false;    // session config mixattention.check_lengths = 1 (CUDA ops)

  static OpAttributes Read(const char* op, const OrtKernelInfo* info);
};

std::string ShapeToString(const std::vector<int64_t>& shape);

// Shape of a present input; Fail()s naming `name` when it is not a tensor of rank `rank`.
std::vector<int64_t> ShapeOf(const char* op, const char* name, const Ort::ConstValue& value, size_t rank,
                             const char* expected);

// Fails unless `shape` == `expected` (naming input `name` and the symbolic `expected_text`).
void ExpectShape(const char* op, const char* name, const std::vector<int64_t>& shape,
                 const std::vector<int64_t>& expected, const char* expected_text);

// Executor on ORT's intra-op thread pool (KernelContext_ParallelFor, one index per task).
class OrtExecutor final : public Executor {
 public:
  explicit OrtExecutor(OrtKernelContext* context) : context_(context) {}
  void ParallelFor(size_t n, TaskFn fn, void* data) const override;
  // The kernel API does not expose the intra-op pool's size; ORT's default is one thread per core, so the
  // hardware thread count stands in for it (a smaller pool just runs a few more tasks per thread).
  int Concurrency() const override;

 private:
  OrtKernelContext* context_;
};

// Runs `body` and converts exceptions to an OrtStatus* (nullptr on success).
template <typename F>
OrtStatusPtr GuardStatus(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const InvalidArgument& e) {
    return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, e.message.c_str());
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, e.what());
  }
}

}  // namespace mixattn::ops
