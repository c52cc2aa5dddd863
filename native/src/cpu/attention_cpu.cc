// Run-time choice of the kernel instruction set, and the length checks shared by both ops.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

#include "cpu/attention_isa.h"
#include "cpu/float_convert.h"
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

// Tuning builds only (-DMIXATTN_TUNING=ON): MIXATTN_CPU_KEY_SPLITS=N (N >= 1) forces N key ranges per task where the
// caller left the choice to the kernel (AttendArgs::key_splits == 0); 1 turns split-K off (for comparisons and
// profiles). Release builds always choose per call.
int ForcedKeySplits() {
#ifdef MIXATTN_TUNING
  static const int splits = [] {
    const char* s = std::getenv("MIXATTN_CPU_KEY_SPLITS");
    return s ? std::max(0, std::atoi(s)) : 0;
  }();
  return splits;
#else
  return 0;
#endif
}

const char* OpName(OpKind kind) { return kind == OpKind::kOwner ? "WindowedAttention" : "SharedKvAttention"; }

}  // namespace

const char* CpuKernelIsa() { return UseV3() ? "x86-64-v3" : "x86-64"; }

template <typename T, typename TCache>
void Attend(const AttendArgs<T, TCache>& args, const Executor& executor) {
  if (args.key_splits == 0 && ForcedKeySplits() > 0) {
    AttendArgs<T, TCache> forced = args;
    forced.key_splits = ForcedKeySplits();
    Attend(forced, executor);
    return;
  }
  if (UseV3())
    v3::Attend(args, executor);
  else
    base::Attend(args, executor);
}

template <typename T, typename TCache>
void WriteChunk(const CacheWriteArgs<T, TCache>& args, const Executor& executor) {
  if (UseV3())
    v3::WriteChunk(args, executor);
  else
    base::WriteChunk(args, executor);
}

#define MIXATTN_INSTANTIATE_DISPATCH(T, TC)                                         \
  template void Attend<T, TC>(const AttendArgs<T, TC>&, const Executor&);         \
  template void WriteChunk<T, TC>(const CacheWriteArgs<T, TC>&, const Executor&);
MIXATTN_FOR_EACH_TYPE_PAIR(MIXATTN_INSTANTIATE_DISPATCH)
#undef MIXATTN_INSTANTIATE_DISPATCH

template <typename T>
void ApplyRotary(const RotaryArgs<T>& r, const AttentionShape& sh, int heads, const T* x, T* out,
                 const int32_t* past_lengths, const int32_t* new_lengths, const Executor& executor) {
  struct Job {
    const RotaryArgs<T>* r;
    const AttentionShape* sh;
    int heads;
    const T* x;
    T* out;
    const int32_t* past;
    const int32_t* newl;
  } job{&r, &sh, heads, x, out, past_lengths, new_lengths};
  // One task per (sequence, token): heads * D elements.
  executor.ParallelFor(static_cast<size_t>(sh.batch) * sh.seq, [](void* data, size_t index) {
    const Job& j = *static_cast<const Job*>(data);
    const int D = j.sh->head_dim, S = j.sh->seq, half = j.r->rotary_dim / 2;
    const int b = static_cast<int>(index / S), s = static_cast<int>(index % S);
    const size_t row = index * static_cast<size_t>(j.heads) * D;
    std::memcpy(j.out + row, j.x + row, sizeof(T) * j.heads * D);
    const int n = j.newl ? j.newl[b] : S;
    if (s >= n) return;
    const size_t pos = static_cast<size_t>(j.past[b]) + s;
    const T* cs = j.r->cos + pos * half;
    const T* sn = j.r->sin + pos * half;
    for (int h = 0; h < j.heads; ++h) {
      const T* xi = j.x + row + static_cast<size_t>(h) * D;
      T* o = j.out + row + static_cast<size_t>(h) * D;
      for (int i = 0; i < half; ++i) {
        const int a = j.r->interleaved ? 2 * i : i, c = j.r->interleaved ? 2 * i + 1 : i + half;
        const float x0 = cvt::ToFloat(xi[a]), x1 = cvt::ToFloat(xi[c]), cv = cvt::ToFloat(cs[i]), sv = cvt::ToFloat(sn[i]);
        o[a] = cvt::FromFloat<T>(x0 * cv - x1 * sv);
        o[c] = cvt::FromFloat<T>(x1 * cv + x0 * sv);
      }
    }
  }, &job);
}

template void ApplyRotary<float>(const RotaryArgs<float>&, const AttentionShape&, int, const float*, float*,
                                 const int32_t*, const int32_t*, const Executor&);
template void ApplyRotary<Float16>(const RotaryArgs<Float16>&, const AttentionShape&, int, const Float16*, Float16*,
                                   const int32_t*, const int32_t*, const Executor&);
template void ApplyRotary<BFloat16>(const RotaryArgs<BFloat16>&, const AttentionShape&, int, const BFloat16*,
                                    BFloat16*, const int32_t*, const int32_t*, const Executor&);

std::string ValidateRotaryPositions(OpKind kind, const AttentionShape& sh, const int32_t* past_lengths,
                                    const int32_t* new_lengths, int max_positions) {
  for (int b = 0; b < sh.batch; ++b) {
    const int64_t n = new_lengths ? new_lengths[b] : sh.seq;
    const int64_t last = static_cast<int64_t>(past_lengths[b]) + n - 1;
    if (n > 0 && last >= max_positions) {
      std::ostringstream e;
      e << OpName(kind) << ": inputs 'cos_cache'/'sin_cache' have " << max_positions
        << " rows (dimension 0 of [max_positions, rotary_dim/2]) but sequence " << b << " reaches position " << last
        << " (past_lengths[" << b << "]=" << past_lengths[b] << " + " << n << " new tokens - 1)";
      return e.str();
    }
  }
  return {};
}

std::string ValidateBlockTable(OpKind kind, const AttentionShape& sh, const BlockTable& t, const int32_t* past_lengths,
                               const int32_t* new_lengths) {
  const char* op = OpName(kind);
  const char* cache = kind == OpKind::kOwner ? "past_key" : "key_cache";
  std::ostringstream e;
  if (kind == OpKind::kOwner && sh.window != 0) {
    e << op << ": input 'block_table' is given but the layer is sliding (attribute 'window' = " << sh.window
      << "); only global (window 0) owner caches may be paged, sliding rings stay contiguous [B, Hkv, C, D]";
    return e.str();
  }
  const int64_t bs = t.block_size;
  // writer[block]: the sequence that appends to it this step (-1: none); user[block]: the last sequence using it.
  // Per-thread scratch stamped with a call number, so a call costs O(blocks it uses), not O(pool size).
  struct Marks {
    std::vector<uint64_t> stamp;
    std::vector<int32_t> writer, user;
    uint64_t call = 0;
  };
  thread_local Marks marks;
  if (marks.stamp.size() < static_cast<size_t>(t.num_blocks)) {
    marks.stamp.resize(static_cast<size_t>(t.num_blocks), 0);
    marks.writer.resize(static_cast<size_t>(t.num_blocks));
    marks.user.resize(static_cast<size_t>(t.num_blocks));
  }
  const uint64_t call = ++marks.call;
  const auto touch = [&](int32_t blk) {
    if (marks.stamp[static_cast<size_t>(blk)] != call) {
      marks.stamp[static_cast<size_t>(blk)] = call;
      marks.writer[static_cast<size_t>(blk)] = marks.user[static_cast<size_t>(blk)] = -1;
    }
  };
  std::vector<int32_t>& writer = marks.writer;
  std::vector<int32_t>& user = marks.user;
  for (int b = 0; b < sh.batch; ++b) {
    const int64_t past = past_lengths[b];
    const int64_t n = new_lengths ? new_lengths[b] : sh.seq;
    const int64_t end = past + n;
    if (end > static_cast<int64_t>(t.max_blocks) * bs) {
      e << op << ": input 'block_table' maps " << t.max_blocks << " blocks of " << bs << " positions (dimension 1 of"
        << " [B, max_blocks_per_seq] times dimension 2 of '" << cache << "') but sequence " << b << " needs "
        << (end + bs - 1) / bs << " blocks: past_lengths[" << b << "]=" << past << " + new tokens " << n << " = "
        << end << " positions";
      return e.str();
    }
    const int64_t used_blocks = (end + bs - 1) / bs;
    const int64_t first_written = n > 0 ? past / bs : used_blocks;
    for (int64_t i = 0; i < used_blocks; ++i) {
      const int32_t blk = t.table[static_cast<int64_t>(b) * t.max_blocks + i];
      if (blk < 0 || blk >= t.num_blocks) {
        e << op << ": input 'block_table'[" << b << ", " << i << "] = " << blk << " is not a block of '" << cache
          << "' (pool of num_blocks=" << t.num_blocks << ", dimension 0); sequence " << b << " uses logical blocks 0.."
          << used_blocks - 1 << " for its " << end << " positions";
        return e.str();
      }
      touch(blk);
      if (user[static_cast<size_t>(blk)] == b) {
        e << op << ": input 'block_table' row " << b << " maps two logical blocks (the second is " << i
          << ") to pool block " << blk << "; each position of a sequence needs its own row";
        return e.str();
      }
      if (kind != OpKind::kOwner) {
        user[static_cast<size_t>(blk)] = b;
        continue;
      }
      const bool writes = i >= first_written;
      // A block written by b must not be read or written by another sequence; a block read by b must not be written
      // by another one. Reading the same block from several sequences (a shared prefix) is fine.
      const int32_t other_writer = writer[static_cast<size_t>(blk)];
      if (other_writer >= 0 && other_writer != b) {
        e << op << ": input 'block_table': pool block " << blk << " is written by sequence " << other_writer
          << " in this step and also used by sequence " << b << " (logical block " << i
          << "); a block being appended to must belong to one sequence (copy a shared block before writing to it)";
        return e.str();
      }
      if (writes) {
        const int32_t other_user = user[static_cast<size_t>(blk)];
        if (other_user >= 0 && other_user != b) {
          e << op << ": input 'block_table': pool block " << blk << " is written by sequence " << b << " (logical block "
            << i << ") in this step and also used by sequence " << other_user
            << "; a block being appended to must belong to one sequence (copy a shared block before writing to it)";
          return e.str();
        }
        writer[static_cast<size_t>(blk)] = b;
      }
      user[static_cast<size_t>(blk)] = b;
    }
  }
  return {};
}

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
      if (W > 0 && C < W && past + n > C) {
        e << op << ": sliding cache '" << cache << "' capacity C=" << C << " is smaller than its window W=" << W
          << " and would wrap: past_lengths[" << b << "]=" << past << " + new tokens " << n
          << " > C (a ring smaller than its window holds at most C positions)";
        return e.str();
      }
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
