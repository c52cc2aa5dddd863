// Kernel instantiations for x86-64-v3 (AVX2, FMA, F16C); compiled with -march=x86-64-v3.
#define MIXATTN_ISA_NS v3
#include "cpu/attention_cpu.h"
#include "cpu/attention_isa.h"

namespace mixattn::v3 {
template <typename T, typename TCache>
void Attend(const AttendArgs<T, TCache>& a, const Executor& e) { AttendImpl(a, e); }
template <typename T, typename TCache>
void WriteChunk(const CacheWriteArgs<T, TCache>& a, const Executor& e) { WriteChunkImpl(a, e); }
MIXATTN_INSTANTIATE_ISA_KERNELS
}  // namespace mixattn::v3
