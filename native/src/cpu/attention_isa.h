// Declarations of the per-ISA kernel entry points (namespaces mixattn::v3, mixattn::base).
#pragma once

#include "mixattention/attention_params.h"

#define MIXATTN_INSTANTIATE_ISA_KERNELS                                                  \
  template void Attend<float>(const AttendArgs<float>&, const Executor&);                \
  template void Attend<Float16>(const AttendArgs<Float16>&, const Executor&);            \
  template void Attend<BFloat16>(const AttendArgs<BFloat16>&, const Executor&);          \
  template void WriteChunk<float>(const CacheWriteArgs<float>&, const Executor&);        \
  template void WriteChunk<Float16>(const CacheWriteArgs<Float16>&, const Executor&);    \
  template void WriteChunk<BFloat16>(const CacheWriteArgs<BFloat16>&, const Executor&);

namespace mixattn {
namespace v3 {
template <typename T>
void Attend(const AttendArgs<T>& args, const Executor& executor);
template <typename T>
void WriteChunk(const CacheWriteArgs<T>& args, const Executor& executor);
}  // namespace v3
namespace base {
template <typename T>
void Attend(const AttendArgs<T>& args, const Executor& executor);
template <typename T>
void WriteChunk(const CacheWriteArgs<T>& args, const Executor& executor);
}  // namespace base
}  // namespace mixattn
