// Run-time choice of the kernel instruction set, and the length checks shared by both ops.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "cpu/attention_isa.h"
#include "mixattention/attention_params.h"

namespace mixattn {
namespace {

bool UseV3() {
  static const bool use = [] {
    const char* force = std::getenv("MIXATTN_FORCE_BASELINE_ISA");  // for tests / comparisons
    if (force && std::strcmp(force, "1") == 0) return false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return false;
#endif
  }();
  return use;
}

const char* OpName(OpKind kind) { return kind == OpKind::kOwner ? "WindowedAttention" : "SharedKvAttention"; }

}  // namespace

const char* CpuKernelIsa() { return UseV3() ? "x86-64-v3" : "x86-64"; }

template <typename T>
void Attend(const AttendArgs<T>& args, const Executor& executor) {
  if (UseV3())
    v3::Attend(args, executor);
  else
    base::Attend(args, executor);
}

template <typename T>
void WriteChunk(const CacheWriteArgs<T>& args, const Executor& executor) {
  if (UseV3())
    v3::WriteChunk(args, executor);
  else
    base::WriteChunk(args, executor);
}

template void Attend<float>(const AttendArgs<float>&, const Executor&);
template void Attend<Float16>(const AttendArgs<Float16>&, const Executor&);
template void Attend<BFloat16>(const AttendArgs<BFloat16>&, const Executor&);
template void WriteChunk<float>(const CacheWriteArgs<float>&, const Executor&);
template void WriteChunk<Float16>(const CacheWriteArgs<Float16>&, const Executor&);
template void WriteChunk<BFloat16>(const CacheWriteArgs<BFloat16>&, const Executor&);

std::string ValidateLengths(OpKind kind, const AttentionShape& sh, const int32_t* past_lengths,
                            const int32_t* new_lengths) {
  const char* op = OpName(kind);
  const char* cache = kind == OpKind::kOwner ? "past_key" : "key_cache";
  const int64_t C = sh.capacity, W = sh.window;
  for (int b = 0; b < sh.batch; ++b) {
    const int64_t past = past_lengths[b];
    const int64_t n = new_lengths ? new_lengths[b] : sh.seq;
    std::ostringstream e;
    if (past < 0) {
      e << op << ": input 'past_lengths'[" << b << "] = " << past << " must be >= 0";
      return e.str();
    }
    if (n < 0 || n > sh.seq) {
      e << op << ": input 'new_lengths'[" << b << "] = " << n << " must be in [0, S] with S = " << sh.seq
        << " (dimension 1 of 'query')";
      return e.str();
    }
    if (past + n > INT32_MAX) {
      e << op << ": 'past_lengths'[" << b << "] + new tokens = " << past + n << " overflows int32";
      return e.str();
    }
    if (n == 0) continue;
    if (kind == OpKind::kOwner) {
      if (W == 0 && past + n > C) {
        e << op << ": global cache '" << cache << "' capacity C=" << C << " is too small: past_lengths[" << b
          << "]=" << past << " + new tokens " << n << " > C (a global cache needs past_lengths + new tokens <= C)";
        return e.str();
      }
    } else {
      const int64_t lo = W > 0 ? std::max<int64_t>(0, past - W + 1) : 0;
      if (past + n - lo > C) {
        e << op << ": '" << cache << "' capacity C=" << C << " cannot serve window W=" << W << " with past_lengths["
          << b << "]=" << past << " and " << n << " new tokens: ";
        if (W > 0)
          e << "a sliding reader needs C >= " << past + n - lo
            << " (rule: C >= W + new tokens - 1 once past_lengths >= W - 1; the owner's write overwrote older"
               " positions this step's queries still need)";
        else
          e << "a global reader needs past_lengths + new tokens <= C = " << C;
        return e.str();
      }
    }
  }
  return {};
}

}  // namespace mixattn
