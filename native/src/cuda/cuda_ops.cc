// CUDA registrations of WindowedAttention / SharedKvAttention (same names, domain, inputs, outputs
// and semantics as the CPU ops; docs/ops.md, docs/gpu.md). Plain C++: the input checks are the CPU ops'
// (ops::ReadCall); every CUDA call sits behind attention_cuda.h.
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

using ops::Fail;
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
void CheckLengthsOnHost(OpKind kind, const char* op, const AttentionShape& sh, const BlockTable& paged,
                        const int32_t* past, const int32_t* newl, int max_positions, void* stream) {
  std::vector<int32_t> hp(sh.batch), hn(newl ? sh.batch : 0);
  if (std::string e = CopyLengthsToHost(past, hp.data(), sh.batch, stream); !e.empty())
    Fail(std::string(op) + ": " + e);
  if (newl)
    if (std::string e = CopyLengthsToHost(newl, hn.data(), sh.batch, stream); !e.empty())
      Fail(std::string(op) + ": " + e);
  // Paged: the capacity rule is the block table's (ValidateBlockTable names the table), as on the CPU.
  AttentionShape lengths_shape = sh;
  if (paged.paged()) lengths_shape.capacity = INT32_MAX;
  if (std::string err = ValidateLengths(kind, lengths_shape, hp.data(), newl ? hn.data() : nullptr); !err.empty())
    Fail(err);
  if (paged.paged()) {
    std::vector<int32_t> table(static_cast<size_t>(sh.batch) * paged.max_blocks);
    if (std::string e = CopyLengthsToHost(paged.table, table.data(), static_cast<int>(table.size()), stream); !e.empty())
      Fail(std::string(op) + ": " + e);
    BlockTable host = paged;
    host.table = table.data();
    if (std::string err = ValidateBlockTable(kind, sh, host, hp.data(), newl ? hn.data() : nullptr); !err.empty())
      Fail(err);
  }
  if (max_positions > 0)
    if (std::string err = ValidateRotaryPositions(kind, sh, hp.data(), newl ? hn.data() : nullptr, max_positions);
        !err.empty())
      Fail(err);
}

// The kernels' cache type for the cache tensor's element type (checked by ops::ReadCall).
CacheDType CacheDTypeOf(const KvQuant& q) {
  return q.type == CacheType::kInt8 ? CacheDType::kInt8
         : q.type == CacheType::kFloat8E4M3 ? CacheDType::kFloat8E4M3
                                            : CacheDType::kSameAsQuery;
}
ScaleMode ScaleModeOf(ScaleGranularity g) {
  return g == ScaleGranularity::kPerHead ? ScaleMode::kPerHead
         : g == ScaleGranularity::kPerChannel ? ScaleMode::kPerChannel
                                              : ScaleMode::kPerTensor;
}

// TCache: the caches' element type (T, int8_t or Float8E4M3); the scales stay in device memory.
template <typename T, OpKind K, typename TCache = T>
struct CudaAttentionKernel {
  explicit CudaAttentionKernel(const OpAttributes& attrs) : attrs_(attrs) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return ops::GuardStatus([&] { Compute(context); });
  }

 private:
  void Compute(OrtKernelContext* context) {
    const char* op = K == OpKind::kOwner ? spec::kWindowedAttention : spec::kSharedKvAttention;
    Ort::KernelContext ctx(context);
    const ops::AttentionCall c = ops::ReadCall(K, attrs_, ctx, /*lengths_on_host=*/false);
    const AttentionShape& sh = c.shape;
    if (K == OpKind::kOwner && c.paged.paged() && sh.window > 0)
      Fail(std::string(op) + ": input 'block_table' is given but the layer is sliding (attribute 'window' = " +
           std::to_string(sh.window) + "); only global (window 0) owner caches may be paged, sliding rings stay " +
           "contiguous [B, Hkv, C, D]");
    if (sh.batch == 0 || sh.seq == 0) return;
    if (std::string e = CheckSupported(sh, DTypeOf<T>(), CacheDTypeOf(c.quant)); !e.empty())
      Fail(std::string(op) + " (CUDA): " + e);
    void* stream = ctx.GetGPUComputeStream();
    if (attrs_.check_lengths)
      CheckLengthsOnHost(K, op, sh, c.paged, c.past_lengths, c.new_lengths,
                         c.rotary.present ? c.rotary.max_positions : 0, stream);

    CudaAttendArgs args;
    args.shape = sh;
    args.dtype = DTypeOf<T>();
    args.query = c.query;
    args.chunk_key = c.key;  // nullptr for the reader
    args.chunk_value = c.value;
    args.key_cache = c.key_cache;
    args.value_cache = c.value_cache;
    args.past_lengths = c.past_lengths;
    args.new_lengths = c.new_lengths;
    args.output = c.output;
    args.present_key = c.present_key;  // nullptr for the reader
    args.present_value = c.present_value;
    args.cache = CacheDTypeOf(c.quant);
    args.paged = c.paged;  // the block table in device memory, as the lengths
    if (c.quant.quantized()) {
      args.k_scale = c.quant.k.data;
      args.v_scale = c.quant.v.data;
      args.k_scale_mode = ScaleModeOf(c.quant.k.granularity);
      args.v_scale_mode = ScaleModeOf(c.quant.v.granularity);
    }
    if (c.rotary.present) {
      args.cos_cache = c.rotary.cos;
      args.sin_cache = c.rotary.sin;
      args.rotary_dim = c.rotary.rotary_dim;
      args.max_positions = c.rotary.max_positions;
      args.rotary_interleaved = attrs_.rotary_interleaved;
    }
    const LaunchPlan plan = Plan(args, CurrentDeviceSmCount());
    Scratch scratch(context, plan.scratch_bytes);
    if (std::string e = Launch(args, plan, scratch.get(), stream); !e.empty())
      throw Ort::Exception(std::string(op) + " (CUDA): " + e, ORT_EP_FAIL);
  }

  OpAttributes attrs_;
};

// One op description per (element type, op): the shared schema (ops::AttentionOpSchema) on the CUDA
// provider; lengths stay in device memory (OrtMemTypeDefault). TSchema: the cache type the schema declares
// (TCache, or ops::Float8E4M3AsUint8 for fp8 bytes typed uint8; the kernel is the same).
template <typename T, OpKind K, typename TCache = T, typename TSchema = TCache>
struct CudaAttentionOp : ops::AttentionOpSchema<CudaAttentionOp<T, K, TCache, TSchema>, CudaAttentionKernel<T, K, TCache>,
                                                T, K, TSchema> {
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }
};

// One registration per (T, TCache) and op: caches of T, int8 or float8e4m3fn for fp32 / fp16 / bf16 queries, and
// fp8 caches declared uint8 (ORT's C# API cannot type fp8 graph inputs; docs/ops.md "Quantized caches").
template <typename T>
struct OpsOf {
  CudaAttentionOp<T, OpKind::kOwner> owner;
  CudaAttentionOp<T, OpKind::kOwner, int8_t> owner_i8;
  CudaAttentionOp<T, OpKind::kOwner, Float8E4M3> owner_f8;
  CudaAttentionOp<T, OpKind::kOwner, Float8E4M3, ops::Float8E4M3AsUint8> owner_f8_u8;
  CudaAttentionOp<T, OpKind::kReader> reader;
  CudaAttentionOp<T, OpKind::kReader, int8_t> reader_i8;
  CudaAttentionOp<T, OpKind::kReader, Float8E4M3> reader_f8;
  CudaAttentionOp<T, OpKind::kReader, Float8E4M3, ops::Float8E4M3AsUint8> reader_f8_u8;
  void AddTo(Ort::CustomOpDomain& domain) {
    domain.Add(&owner);
    domain.Add(&owner_i8);
    domain.Add(&owner_f8);
    domain.Add(&owner_f8_u8);
    domain.Add(&reader);
    domain.Add(&reader_i8);
    domain.Add(&reader_f8);
    domain.Add(&reader_f8_u8);
  }
};
OpsOf<float> g_f32;
OpsOf<Float16> g_f16;
OpsOf<BFloat16> g_bf16;

}  // namespace

void RegisterCudaOps(Ort::CustomOpDomain& domain) {
  g_f32.AddTo(domain);
  g_f16.AddTo(domain);
  g_bf16.AddTo(domain);
}

}  // namespace mixattn::cuda
