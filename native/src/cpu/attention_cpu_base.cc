// Kernel instantiations for baseline x86-64 (SSE2); the fallback on CPUs without AVX2/FMA/F16C.
#define MIXATTN_ISA_NS base
#include "cpu/attention_cpu.h"
#include "cpu/attention_isa.h"

namespace mixattn::base {
template <typename T, typename TCache>
void Attend(const AttendArgs<T, TCache>& a, const Executor& e) { AttendImpl(a, e); }
template <typename T, typename TCache>
void WriteChunk(const CacheWriteArgs<T, TCache>& a, const Executor& e) { WriteChunkImpl(a, e); }
MIXATTN_INSTANTIATE_ISA_KERNELS
}  // namespace mixattn::base
