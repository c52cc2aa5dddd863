// RegisterCustomOps: the library's only exported symbol. Registers the com.mixattention domain with
// one kernel per (op, element type T, cache type TCache) for the CPU EP. A CUDA build (MIXATTN_CUDA) adds its kernels
// through RegisterCudaOps (native/src/cuda) into the same domain.
#include <memory>
#include <mutex>
#include <vector>

#include "cpu/attention_isa.h"
#include "mixattention/op_spec.h"
#include "ops/attention_ops.h"

#if defined(MIXATTN_WITH_CUDA)
namespace mixattn::cuda {
void RegisterCudaOps(Ort::CustomOpDomain& domain);  // native/src/cuda/register_cuda.cc
}
#endif

namespace {

struct Registry {
  std::mutex mutex;
  std::vector<Ort::CustomOpDomain> domains;  // must outlive every session that uses them
};

Registry& GetRegistry() {
  static Registry* registry = new Registry();  // never destroyed: sessions may outlive static teardown
  return *registry;
}

// Op objects are stateless schema descriptions; one static instance per (op, T, TCache).
using mixattn::BFloat16;
using mixattn::Float16;
using mixattn::Float8E4M3;
#define MIXATTN_DEFINE_OPS(T, TC)                                  \
  mixattn::ops::WindowedAttentionOp<T, TC> g_windowed_##T##_##TC; \
  mixattn::ops::SharedKvAttentionOp<T, TC> g_shared_##T##_##TC;
MIXATTN_FOR_EACH_TYPE_PAIR(MIXATTN_DEFINE_OPS)
#undef MIXATTN_DEFINE_OPS
// fp8 caches declared as uint8 (the same bytes): ORT's C# API cannot create a session with fp8 graph inputs.
#define MIXATTN_DEFINE_FP8_AS_UINT8_OPS(T)                                                                \
  mixattn::ops::WindowedAttentionOp<T, Float8E4M3, mixattn::ops::Float8E4M3AsUint8> g_windowed_##T##_u8; \
  mixattn::ops::SharedKvAttentionOp<T, Float8E4M3, mixattn::ops::Float8E4M3AsUint8> g_shared_##T##_u8;
MIXATTN_DEFINE_FP8_AS_UINT8_OPS(float)
MIXATTN_DEFINE_FP8_AS_UINT8_OPS(Float16)
MIXATTN_DEFINE_FP8_AS_UINT8_OPS(BFloat16)
#undef MIXATTN_DEFINE_FP8_AS_UINT8_OPS

}  // namespace

// The execution providers this build has kernels for, comma-separated: a host that asks for CUDA can refuse a
// CPU-only build up front instead of letting ORT place every attention node on the CPU (with a copy per step).
extern "C" __attribute__((visibility("default"))) const char* MixAttentionOpsExecutionProviders() {
#if defined(MIXATTN_WITH_CUDA)
  return "CPUExecutionProvider,CUDAExecutionProvider";
#else
  return "CPUExecutionProvider";
#endif
}

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {  // ORT older than the headers: report it through the oldest API table
    return api_base->GetApi(1)->CreateStatus(ORT_FAIL, "libmixattention_ops needs ONNX Runtime API version 31 (1.31)");
  }
  Ort::InitApi(api);
  return mixattn::ops::GuardStatus([&] {
    Ort::CustomOpDomain domain{mixattn::spec::kDomain};
#define MIXATTN_ADD_OPS(T, TC)           \
  domain.Add(&g_windowed_##T##_##TC); \
  domain.Add(&g_shared_##T##_##TC);
    MIXATTN_FOR_EACH_TYPE_PAIR(MIXATTN_ADD_OPS)
#undef MIXATTN_ADD_OPS
    domain.Add(&g_windowed_float_u8);
    domain.Add(&g_windowed_Float16_u8);
    domain.Add(&g_windowed_BFloat16_u8);
    domain.Add(&g_shared_float_u8);
    domain.Add(&g_shared_Float16_u8);
    domain.Add(&g_shared_BFloat16_u8);
#if defined(MIXATTN_WITH_CUDA)
    mixattn::cuda::RegisterCudaOps(domain);
#endif
    Ort::UnownedSessionOptions(options).Add(domain);
    Registry& registry = GetRegistry();
    std::lock_guard<std::mutex> lock(registry.mutex);
    registry.domains.push_back(std::move(domain));
  });
}
