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

}  // namespace

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
#if defined(MIXATTN_WITH_CUDA)
    mixattn::cuda::RegisterCudaOps(domain);
#endif
    Ort::UnownedSessionOptions(options).Add(domain);
    Registry& registry = GetRegistry();
    std::lock_guard<std::mutex> lock(registry.mutex);
    registry.domains.push_back(std::move(domain));
  });
}
