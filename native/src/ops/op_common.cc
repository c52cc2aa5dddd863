#include "ops/op_common.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <thread>

#include "mixattention/op_spec.h"

namespace mixattn::ops {

void Fail(std::string message) { throw InvalidArgument{std::move(message)}; }

namespace {

bool TryGetInt(const OrtKernelInfo* info, const char* name, int64_t* out) {
  OrtStatus* status = Ort::GetApi().KernelInfoGetAttribute_int64(info, name, out);
  if (status == nullptr) return true;
  Ort::GetApi().ReleaseStatus(status);
  return false;
}

bool TryGetFloat(const OrtKernelInfo* info, const char* name, float* out) {
  OrtStatus* status = Ort::GetApi().KernelInfoGetAttribute_float(info, name, out);
  if (status == nullptr) return true;
  Ort::GetApi().ReleaseStatus(status);
  return false;
}

int RequiredPositiveInt(const char* op, const OrtKernelInfo* info, const char* name) {
  int64_t v = 0;
  if (!TryGetInt(info, name, &v)) Fail(std::string(op) + ": required int attribute '" + name + "' is missing");
  if (v <= 0 || v > (1 << 20))
    Fail(std::string(op) + ": attribute '" + name + "' = " + std::to_string(v) + " must be a positive head count");
  return static_cast<int>(v);
}

}  // namespace

OpAttributes OpAttributes::Read(const char* op, const OrtKernelInfo* info) {
  OpAttributes a;
  a.num_heads = RequiredPositiveInt(op, info, spec::kAttrNumHeads);
  a.kv_num_heads = RequiredPositiveInt(op, info, spec::kAttrKvNumHeads);
  if (a.num_heads % a.kv_num_heads != 0)
    Fail(std::string(op) + ": attribute 'num_heads' = " + std::to_string(a.num_heads) +
         " must be a multiple of 'kv_num_heads' = " + std::to_string(a.kv_num_heads));
  int64_t window = 0;
  if (TryGetInt(info, spec::kAttrWindow, &window) && (window < 0 || window > INT32_MAX))
    Fail(std::string(op) + ": attribute 'window' = " + std::to_string(window) + " must be >= 0 (0 = global)");
  a.window = static_cast<int>(window);
  if (TryGetFloat(info, spec::kAttrScale, &a.scale) && !(a.scale >= 0.f && std::isfinite(a.scale)))
    Fail(std::string(op) + ": attribute 'scale' must be a finite value >= 0 (0 = 1/sqrt(head size))");
  if (TryGetFloat(info, spec::kAttrSoftcap, &a.softcap) && !(a.softcap >= 0.f && std::isfinite(a.softcap)))
    Fail(std::string(op) + ": attribute 'softcap' must be a finite value >= 0 (0 = none)");

  int64_t interleaved = 0;
  if (TryGetInt(info, spec::kAttrRotaryInterleaved, &interleaved) && interleaved != 0 && interleaved != 1)
    Fail(std::string(op) + ": attribute 'rotary_interleaved' = " + std::to_string(interleaved) + " must be 0 or 1");
  a.rotary_interleaved = interleaved == 1;

  // Session config entries (ORT >= 1.24).
  OrtKeyValuePairs* entries = nullptr;
  if (OrtStatus* st = Ort::GetApi().KernelInfo_GetConfigEntries(info, &entries)) {
    Ort::GetApi().ReleaseStatus(st);
  } else if (entries != nullptr) {
    const char* v = Ort::GetApi().GetKeyValue(entries, spec::kConfigRequireInPlace);
    a.require_inplace = v != nullptr && std::strcmp(v, "1") == 0;
    const char* c = Ort::GetApi().GetKeyValue(entries, spec::kConfigCheckLengths);
    a.check_lengths = c != nullptr && std::strcmp(c, "1") == 0;
    Ort::GetApi().ReleaseKeyValuePairs(entries);
  }
  return a;
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << ']';
  return s.str();
}

std::vector<int64_t> ShapeOf(const char* op, const char* name, const Ort::ConstValue& value, size_t rank,
                             const char* expected) {
  if (value == nullptr || !value.IsTensor())
    Fail(std::string(op) + ": input '" + name + "' is missing; expected a tensor of shape " + expected);
  std::vector<int64_t> shape = value.GetTensorTypeAndShapeInfo().GetShape();
  if (shape.size() != rank)
    Fail(std::string(op) + ": input '" + name + "' must have rank " + std::to_string(rank) + " with shape " + expected +
         ", got " + ShapeToString(shape));
  for (int64_t d : shape)
    if (d < 0 || d > INT32_MAX)
      Fail(std::string(op) + ": input '" + name + "' has an unsupported dimension in " + ShapeToString(shape));
  return shape;
}

void ExpectShape(const char* op, const char* name, const std::vector<int64_t>& shape,
                 const std::vector<int64_t>& expected, const char* expected_text) {
  if (shape != expected)
    Fail(std::string(op) + ": input '" + name + "' must have shape " + expected_text + " = " +
         ShapeToString(expected) + ", got " + ShapeToString(shape));
}

namespace {
struct Trampoline {
  Executor::TaskFn fn;
  void* data;
};
void RunTrampoline(void* t, size_t i) {
  auto* tr = static_cast<Trampoline*>(t);
  tr->fn(tr->data, i);
}
}  // namespace

void OrtExecutor::ParallelFor(size_t n, TaskFn fn, void* data) const {
  if (n == 0) return;
  if (n == 1) {
    fn(data, 0);
    return;
  }
  Trampoline t{fn, data};
  Ort::ThrowOnError(Ort::GetApi().KernelContext_ParallelFor(context_, &RunTrampoline, n, 0, &t));
}

int OrtExecutor::Concurrency() const {
  static const int threads = std::max(1u, std::thread::hardware_concurrency());
  return threads;
}

}  // namespace mixattn::ops
