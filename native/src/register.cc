// RegisterCustomOps: the library's only exported symbol. Registers the com.mixattention domain with
// one kernel per (op, element type) for the CPU EP. A CUDA build (MIXATTN_CUDA) adds its kernels
// through RegisterCudaOps (native/src/cuda) into the same domain.
#include <memory>
#include <mutex>
#include <vector>

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

// Op objects are stateless schema descriptions; one static instance each.
mixattn::ops::WindowedAttentionOp<float> g_windowed_f32;
mixattn::ops::WindowedAttentionOp<mixattn::Float16> g_windowed_f16;
mixattn::ops::WindowedAttentionOp<mixattn::BFloat16> g_windowed_bf16;
mixattn::ops::SharedKvAttentionOp<float> g_shared_f32;
mixattn::ops::SharedKvAttentionOp<mixattn::Float16> g_shared_f16;
mixattn::ops::SharedKvAttentionOp<mixattn::BFloat16> g_shared_bf16;

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
    domain.Add(&g_windowed_f32);
    domain.Add(&g_windowed_f16);
    domain.Add(&g_windowed_bf16);
    domain.Add(&g_shared_f32);
    domain.Add(&g_shared_f16);
    domain.Add(&g_shared_bf16);
#if defined(MIXATTN_WITH_CUDA)
    mixattn::cuda::RegisterCudaOps(domain);
#endif
    Ort::UnownedSessionOptions(options).Add(domain);
    Registry& registry = GetRegistry();
    std::lock_guard<std::mutex> lock(registry.mutex);
    registry.domains.push_back(std::move(domain));
  });
}
