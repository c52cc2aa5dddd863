// The CPU kernels' instruction-set paths as the kernel tests call them: each ISA's entry points directly (both run on
// every machine that can run them, whatever the dispatcher would pick), or the dispatching entry point the op calls.
#pragma once

#include <cstring>
#include <vector>

#include "cpu/attention_isa.h"
#include "mixattention/attention_params.h"

namespace mixattn::test {

enum class Isa { kDispatch, kV3, kBase };

inline const char* IsaName(Isa isa) { return isa == Isa::kV3 ? "v3" : isa == Isa::kBase ? "base" : "dispatch"; }

// Whether this CPU runs the v3 path (x86-64-v3: AVX2, FMA, F16C).
inline bool CpuHasV3() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

// The paths to call directly here: base always, v3 where the CPU has it.
inline std::vector<Isa> DirectIsas() {
  std::vector<Isa> v{Isa::kBase};
  if (CpuHasV3()) v.push_back(Isa::kV3);
  return v;
}

template <typename T, typename TC>
void RunAttend(Isa isa, const AttendArgs<T, TC>& a, const Executor& e) {
  switch (isa) {
    case Isa::kV3: v3::Attend(a, e); break;
    case Isa::kBase: base::Attend(a, e); break;
    default: Attend(a, e); break;
  }
}

template <typename T, typename TC>
void RunWrite(Isa isa, const CacheWriteArgs<T, TC>& a, const Executor& e) {
  switch (isa) {
    case Isa::kV3: v3::WriteChunk(a, e); break;
    case Isa::kBase: base::WriteChunk(a, e); break;
    default: WriteChunk(a, e); break;
  }
}

// Bit-identical values (fp NaNs and signed zeros included; cache codes compared as bytes).
template <typename T>
bool SameBytes(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

}  // namespace mixattn::test
