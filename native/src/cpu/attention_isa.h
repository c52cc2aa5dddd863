// Declarations of the per-ISA kernel entry points (namespaces mixattn::v3, mixattn::base).
#pragma once

#include <cstdint>

#include "mixattention/attention_params.h"

// Every (T, TCache) pair: T in {float, Float16, BFloat16}, TCache in {T, int8_t, Float8E4M3}.
#define MIXATTN_FOR_EACH_TYPE_PAIR(X) \
  X(float, float)                     \
  X(float, int8_t)                    \
  X(float, Float8E4M3)                \
  X(Float16, Float16)                 \
  X(Float16, int8_t)                  \
  X(Float16, Float8E4M3)              \
  X(BFloat16, BFloat16)               \
  X(BFloat16, int8_t)                 \
  X(BFloat16, Float8E4M3)

#define MIXATTN_INSTANTIATE_ISA_PAIR(T, TC)                                                  \
  template void Attend<T, TC>(const AttendArgs<T, TC>&, const Executor&);                  \
  template void WriteChunk<T, TC>(const CacheWriteArgs<T, TC>&, const Executor&);
#define MIXATTN_INSTANTIATE_ISA_KERNELS MIXATTN_FOR_EACH_TYPE_PAIR(MIXATTN_INSTANTIATE_ISA_PAIR)

namespace mixattn {
namespace v3 {
template <typename T, typename TCache>
void Attend(const AttendArgs<T, TCache>& args, const Executor& executor);
template <typename T, typename TCache>
void WriteChunk(const CacheWriteArgs<T, TCache>& args, const Executor& executor);
}  // namespace v3
namespace base {
template <typename T, typename TCache>
void Attend(const AttendArgs<T, TCache>& args, const Executor& executor);
template <typename T, typename TCache>
void WriteChunk(const CacheWriteArgs<T, TCache>& args, const Executor& executor);
}  // namespace base
}  // namespace mixattn
