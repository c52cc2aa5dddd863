// CUDA registrations of WindowedAttention / SharedKvAttention (same names, domain, inputs, outputs
// and semantics as the CPU ops; docs/ops.md, docs/gpu.md). Plain C++: shape checks are shared with
// the CPU ops (ops/attention_ops.h); every CUDA call sits behind attention_cuda.h.
//
// Per call: validate shapes on the host, pick a plan (attention_cuda.h), take the split-K scratch
// from ORT's allocator (KernelContext_GetScratchBuffer, stream-ordered), launch on ORT's compute
// stream (KernelContext_GetGPUComputeStream). past_lengths / new_lengths stay device inputs; no
// cudaMalloc and no synchronisation unless mixattention.check_lengths=1.
#include <cstdlib>
#include <vector>

#include "cuda/attention_cuda.h"
#include "mixattention/op_spec.h"
#include "ops/attention_ops.h"

namespace mixattn::cuda {
namespace {

using ops::CommonShapes;
using ops::Fail;
using ops::OnnxType;
using ops::OpAttributes;

template <typename T>
constexpr DType DTypeOf();
template <>
constexpr DType DTypeOf<float>() {
  return DType::kFloat32;
}
template <>
constexpr DType DTypeOf<Float16>() {
  return DType::kFloat16;
}
template <>
constexpr DType DTypeOf<BFloat16>() {
  return DType::kBFloat16;
}

// Scratch from ORT's CUDA allocator for this kernel call; returned to the allocator on scope exit
// (the allocator is stream-aware, so the memory is not reused before the launches that use it ran).
class Scratch {
 public:
  Scratch(OrtKernelContext* context, size_t bytes) {
    if (bytes == 0) return;
    info_ = Ort::MemoryInfo("Cuda", OrtDeviceAllocator, CurrentDevice(), OrtMemTypeDefault);
    Ort::ThrowOnError(Ort::GetApi().KernelContext_GetScratchBuffer(context, info_, bytes, &ptr_));
    allocator_ = Ort::KernelContext(context).GetAllocator(*info_);
  }
  ~Scratch() {
    if (ptr_ != nullptr && allocator_ != nullptr) allocator_.Free(ptr_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* get() const { return ptr_; }

 private:
  Ort::MemoryInfo info_{nullptr};
  Ort::Allocator allocator_{nullptr};
  void* ptr_ = nullptr;
};

// max_positions > 0: the rotary caches' rows, checked too.
void CheckLengthsOnHost(OpKind kind, const char* op, const AttentionShape& sh, const int32_t* past,
                        const int32_t* newl, int max_positions, void* stream) {
  std::vector<int32_t> hp(sh.batch), hn(newl ? sh.batch : 0);
  if (std::string e = CopyLengthsToHost(past, hp.data(), sh.batch, stream); !e.empty())
    Fail(std::string(op) + ": " + e);
  if (newl)
    if (std::string e = CopyLengthsToHost(newl, hn.data(), sh.batch, stream); !e.empty())
      Fail(std::string(op) + ": " + e);
  if (std::string err = ValidateLengths(kind, sh, hp.data(), newl ? hn.data() : nullptr); !err.empty()) Fail(err);
  if (max_positions > 0)
    if (std::string err = ValidateRotaryPositions(kind, sh, hp.data(), newl ? hn.data() : nullptr, max_positions);
        !err.empty())
      Fail(err);
}

void Run(OrtKernelContext* context, const char* op, OpKind kind, const OpAttributes& attrs, CudaAttendArgs& args,
         const AttentionShape& sh, int cos_index, int sin_index) {
  Ort::KernelContext ctx(context);
  void* stream = ctx.GetGPUComputeStream();
  const ops::RotaryInputs rotary = ops::CheckRotaryInputs(op, ctx, cos_index, sin_index, sh.head_dim);
  if (attrs.check_lengths)
    CheckLengthsOnHost(kind, op, sh, args.past_lengths, args.new_lengths, rotary.present ? rotary.max_positions : 0,
                       stream);
  if (rotary.present) {
    args.cos_cache = rotary.cos;
    args.sin_cache = rotary.sin;
    args.rotary_dim = rotary.rotary_dim;
    args.max_positions = rotary.max_positions;
    args.rotary_interleaved = attrs.rotary_interleaved;
  }
  args.shape = sh;
  const LaunchPlan plan = Plan(args, CurrentDeviceSmCount());
  Scratch scratch(context, plan.scratch_bytes);
  if (std::string e = Launch(args, plan, scratch.get(), stream); !e.empty())
    throw Ort::Exception(std::string(op) + " (CUDA): " + e, ORT_EP_FAIL);
}

template <typename T, OpKind K>
struct CudaAttentionKernel {
  explicit CudaAttentionKernel(const OpAttributes& attrs) : attrs_(attrs) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return ops::GuardStatus([&] { K == OpKind::kOwner ? ComputeOwner(context) : ComputeReader(context); });
  }

 private:
  void ComputeOwner(OrtKernelContext* context) {
    namespace so = spec::owner;
    const char* op = spec::kWindowedAttention;
    Ort::KernelContext ctx(context);
    Ort::ConstValue query = ctx.GetInput(so::kQuery);
    Ort::ConstValue key = ctx.GetInput(so::kKey);
    Ort::ConstValue value = ctx.GetInput(so::kValue);
    Ort::ConstValue past_key = ctx.GetInput(so::kPastKey);
    Ort::ConstValue past_value = ctx.GetInput(so::kPastValue);
    CommonShapes cs = ops::CheckCommonInputs(op, attrs_, query, "past_key", past_key, "past_value", past_value);
    AttentionShape& sh = cs.shape;
    const std::vector<int64_t> kv_shape{sh.batch, sh.seq, static_cast<int64_t>(sh.kv_num_heads) * sh.head_dim};
    ops::ExpectShape(op, "key", ops::ShapeOf(op, "key", key, 3, "[B, S, kv_num_heads*D]"), kv_shape,
                     "[B, S, kv_num_heads*D]");
    ops::ExpectShape(op, "value", ops::ShapeOf(op, "value", value, 3, "[B, S, kv_num_heads*D]"), kv_shape,
                     "[B, S, kv_num_heads*D]");
    if (sh.window > 0 && sh.capacity < sh.window)
      Fail(std::string(op) + ": input 'past_key' capacity C=" + std::to_string(sh.capacity) +
           " (dimension 2 of [B, kv_num_heads, C, D]) must be >= window W=" + std::to_string(sh.window) +
           " for a sliding cache");
    const int32_t* past_lengths = nullptr;
    const int32_t* new_lengths = nullptr;
    ops::CheckLengthInputs(op, ctx, so::kPastLengths, so::kNewLengths, sh.batch, &past_lengths, &new_lengths);

    Ort::UnownedValue output = ctx.GetOutput(so::kOutput, cs.query_shape);
    Ort::UnownedValue present_key = ctx.GetOutput(so::kPresentKey, cs.cache_shape);
    Ort::UnownedValue present_value = ctx.GetOutput(so::kPresentValue, cs.cache_shape);
    if (sh.batch == 0 || sh.seq == 0) return;
    if (std::string e = CheckSupported(sh, DTypeOf<T>()); !e.empty()) Fail(std::string(op) + " (CUDA): " + e);

    CudaAttendArgs args;
    args.dtype = DTypeOf<T>();
    args.query = query.GetTensorRawData();
    args.chunk_key = key.GetTensorRawData();
    args.chunk_value = value.GetTensorRawData();
    args.key_cache = past_key.GetTensorRawData();
    args.value_cache = past_value.GetTensorRawData();
    args.past_lengths = past_lengths;
    args.new_lengths = new_lengths;
    args.output = output.GetTensorMutableRawData();
    args.present_key = present_key.GetTensorMutableRawData();
    args.present_value = present_value.GetTensorMutableRawData();
    if (attrs_.require_inplace && (args.present_key != args.key_cache || args.present_value != args.value_cache))
      Fail(std::string(op) + ": 'present_key'/'present_value' are not bound to the 'past_key'/'past_value' buffers "
                             "(session config mixattention.require_inplace=1 forbids the past->present copy)");
    Run(context, op, OpKind::kOwner, attrs_, args, sh, so::kCosCache, so::kSinCache);
  }

  void ComputeReader(OrtKernelContext* context) {
    namespace sr = spec::reader;
    const char* op = spec::kSharedKvAttention;
    Ort::KernelContext ctx(context);
    Ort::ConstValue query = ctx.GetInput(sr::kQuery);
    Ort::ConstValue key_cache = ctx.GetInput(sr::kKeyCache);
    Ort::ConstValue value_cache = ctx.GetInput(sr::kValueCache);
    CommonShapes cs = ops::CheckCommonInputs(op, attrs_, query, "key_cache", key_cache, "value_cache", value_cache);
    AttentionShape& sh = cs.shape;
    const int32_t* past_lengths = nullptr;
    const int32_t* new_lengths = nullptr;
    ops::CheckLengthInputs(op, ctx, sr::kPastLengths, sr::kNewLengths, sh.batch, &past_lengths, &new_lengths);
    Ort::UnownedValue output = ctx.GetOutput(sr::kOutput, cs.query_shape);
    if (sh.batch == 0 || sh.seq == 0) return;
    if (std::string e = CheckSupported(sh, DTypeOf<T>()); !e.empty()) Fail(std::string(op) + " (CUDA): " + e);

    CudaAttendArgs args;
    args.dtype = DTypeOf<T>();
    args.query = query.GetTensorRawData();
    args.key_cache = key_cache.GetTensorRawData();
    args.value_cache = value_cache.GetTensorRawData();
    args.past_lengths = past_lengths;
    args.new_lengths = new_lengths;
    args.output = output.GetTensorMutableRawData();
    Run(context, op, OpKind::kReader, attrs_, args, sh, sr::kCosCache, sr::kSinCache);
  }

  OpAttributes attrs_;
};

// One op description per (element type, op): the shared schema (ops::AttentionOpSchema) on the CUDA
// provider; lengths stay in device memory (OrtMemTypeDefault).
template <typename T, OpKind K>
struct CudaAttentionOp : ops::AttentionOpSchema<CudaAttentionOp<T, K>, CudaAttentionKernel<T, K>, T, K> {
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }
};

CudaAttentionOp<float, OpKind::kOwner> g_owner_f32;
CudaAttentionOp<Float16, OpKind::kOwner> g_owner_f16;
CudaAttentionOp<BFloat16, OpKind::kOwner> g_owner_bf16;
CudaAttentionOp<float, OpKind::kReader> g_reader_f32;
CudaAttentionOp<Float16, OpKind::kReader> g_reader_f16;
CudaAttentionOp<BFloat16, OpKind::kReader> g_reader_bf16;

}  // namespace

void RegisterCudaOps(Ort::CustomOpDomain& domain) {
  domain.Add(&g_owner_f32);
  domain.Add(&g_owner_f16);
  domain.Add(&g_owner_bf16);
  domain.Add(&g_reader_f32);
  domain.Add(&g_reader_f16);
  domain.Add(&g_reader_bf16);
}

}  // namespace mixattn::cuda
