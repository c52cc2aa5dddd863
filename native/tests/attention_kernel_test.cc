// Kernel tests: every kernel path (both ISAs, serial and threaded, fp32/fp16/bf16, owner and reader,
// in place and copying) against the double-precision reference in reference.h.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <sstream>
#include <string>

#include "isa_paths.h"
#include "reference.h"

namespace mixattn::test {
namespace {


// One sequence batch plus its caches, kept consistent with the reference histories.
template <typename T>
struct World {
  AttentionShape sh;
  std::vector<History> hist;  // per sequence: every position < past_lengths[b] (or more, for readers)
  std::vector<T> cache_k, cache_v;  // [B, Hkv, C, D]

  World(const AttentionShape& shape, std::mt19937& rng) : sh(shape) {
    for (int b = 0; b < sh.batch; ++b) hist.emplace_back(sh.kv_num_heads, sh.head_dim);
    const size_t n = static_cast<size_t>(sh.batch) * sh.kv_num_heads * sh.capacity * sh.head_dim;
    cache_k = Quantize<T>(RandomVector(rng, n, 3.0f));  // garbage: must never be attended
    cache_v = Quantize<T>(RandomVector(rng, n, 3.0f));
  }

  size_t Slot(int b, int h, int64_t pos) const {
    return ((static_cast<size_t>(b) * sh.kv_num_heads + h) * sh.capacity + static_cast<size_t>(pos % sh.capacity)) *
           sh.head_dim;
  }

  // Appends `count` random tokens to sequence b's history and stores them in the cache as the
  // owner would (slot pos mod C), without running the kernel.
  void Grow(int b, int64_t count, std::mt19937& rng) {
    const int D = sh.head_dim;
    for (int h = 0; h < sh.kv_num_heads; ++h)
      for (int64_t i = 0; i < count; ++i) {
        auto k = Dequantize(Quantize<T>(RandomVector(rng, D)));
        auto v = Dequantize(Quantize<T>(RandomVector(rng, D)));
        hist[b].k[h].push_back(k);
        hist[b].v[h].push_back(v);
      }
    for (int h = 0; h < sh.kv_num_heads; ++h) {
      const int64_t len = hist[b].length();
      for (int64_t p = std::max<int64_t>(0, len - sh.capacity); p < len; ++p)
        for (int d = 0; d < D; ++d) {
          cache_k[Slot(b, h, p) + d] = cvt::FromFloat<T>(hist[b].k[h][p][d]);
          cache_v[Slot(b, h, p) + d] = cvt::FromFloat<T>(hist[b].v[h][p][d]);
        }
    }
  }
};

std::string Describe(const AttentionShape& sh, const std::vector<int32_t>& past, const std::vector<int32_t>& newl) {
  std::ostringstream s;
  s << "B=" << sh.batch << " S=" << sh.seq << " Hq=" << sh.num_heads << " Hkv=" << sh.kv_num_heads
    << " D=" << sh.head_dim << " C=" << sh.capacity << " W=" << sh.window << " softcap=" << sh.softcap << " past=[";
  for (auto p : past) s << p << ' ';
  s << "] new=[";
  for (auto n : newl) s << n << ' ';
  s << ']';
  return s.str();
}

// Runs one owner step (Attend then WriteChunk) and checks output and cache against the reference.
template <typename T>
void OwnerStep(World<T>& w, Isa isa, const Executor& ex, const std::vector<int32_t>& newl, bool with_new_lengths,
               bool in_place, std::mt19937& rng) {
  const AttentionShape& sh = w.sh;
  const int B = sh.batch, S = sh.seq, Hq = sh.num_heads, Hkv = sh.kv_num_heads, D = sh.head_dim;
  std::vector<int32_t> past(B);
  for (int b = 0; b < B; ++b) past[b] = static_cast<int32_t>(w.hist[b].length());
  const std::string what = Describe(sh, past, newl) + " isa=" + IsaName(isa) + (in_place ? " in-place" : " copy");

  auto qf = Dequantize(Quantize<T>(RandomVector(rng, static_cast<size_t>(B) * S * Hq * D)));
  auto kf = Dequantize(Quantize<T>(RandomVector(rng, static_cast<size_t>(B) * S * Hkv * D)));
  auto vf = Dequantize(Quantize<T>(RandomVector(rng, static_cast<size_t>(B) * S * Hkv * D)));
  auto q = Quantize<T>(qf), k = Quantize<T>(kf), v = Quantize<T>(vf);
  std::vector<T> out = Quantize<T>(std::vector<float>(qf.size(), std::numeric_limits<float>::quiet_NaN()));

  const std::vector<T> before_k = w.cache_k, before_v = w.cache_v;
  std::vector<T> present_k, present_v;
  if (!in_place) {
    present_k = Quantize<T>(RandomVector(rng, w.cache_k.size()));
    present_v = Quantize<T>(RandomVector(rng, w.cache_v.size()));
  }

  AttendArgs<T> a;
  a.shape = sh;
  a.query = q.data();
  a.chunk_key = k.data();
  a.chunk_value = v.data();
  a.key_cache = w.cache_k.data();
  a.value_cache = w.cache_v.data();
  a.past_lengths = past.data();
  a.new_lengths = with_new_lengths ? newl.data() : nullptr;
  a.output = out.data();
  ASSERT_EQ(ValidateLengths(OpKind::kOwner, sh, past.data(), a.new_lengths), "") << what;
  RunAttend(isa, a, ex);

  CacheWriteArgs<T> wr;
  wr.shape = sh;
  wr.chunk_key = k.data();
  wr.chunk_value = v.data();
  wr.past_key = w.cache_k.data();
  wr.past_value = w.cache_v.data();
  wr.present_key = in_place ? w.cache_k.data() : present_k.data();
  wr.present_value = in_place ? w.cache_v.data() : present_v.data();
  wr.past_lengths = past.data();
  wr.new_lengths = a.new_lengths;
  RunWrite(isa, wr, ex);

  // Extend the reference histories with the real tokens of the chunk.
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hkv; ++h)
      for (int s = 0; s < newl[b]; ++s) {
        const size_t off = (static_cast<size_t>(b) * S + s) * Hkv * D + static_cast<size_t>(h) * D;
        w.hist[b].k[h].emplace_back(kf.begin() + off, kf.begin() + off + D);
        w.hist[b].v[h].emplace_back(vf.begin() + off, vf.begin() + off + D);
      }

  // Output.
  const double tol = Tolerance<T>::value;
  for (int b = 0; b < B; ++b)
    for (int s = 0; s < S; ++s) {
      const size_t off = (static_cast<size_t>(b) * S + s) * Hq * D;
      if (s >= newl[b]) {
        for (int i = 0; i < Hq * D; ++i) ASSERT_EQ(cvt::ToFloat(out[off + i]), 0.0f) << what << " padding b=" << b;
        continue;
      }
      auto ref = ReferenceAttention(sh, qf.data() + off, w.hist[b], past[b] + s);
      for (int i = 0; i < Hq * D; ++i)
        ASSERT_NEAR(cvt::ToFloat(out[off + i]), ref[i], tol * std::max(1.0, std::fabs(ref[i])))
            << what << " b=" << b << " s=" << s << " i=" << i;
    }

  // Cache: resident positions hold the history; every other slot is unchanged.
  std::vector<T>& ck = in_place ? w.cache_k : present_k;
  std::vector<T>& cv = in_place ? w.cache_v : present_v;
  for (int b = 0; b < B; ++b) {
    const int64_t len = w.hist[b].length();
    const int64_t first_written = std::max<int64_t>(past[b], len - sh.capacity);
    for (int h = 0; h < Hkv; ++h) {
      std::vector<bool> written(sh.capacity, false);
      for (int64_t p = first_written; p < len; ++p) {
        written[p % sh.capacity] = true;
        for (int d = 0; d < D; ++d) {
          ASSERT_TRUE(SameBytes(ck[w.Slot(b, h, p) + d], cvt::FromFloat<T>(w.hist[b].k[h][p][d]))) << what << " p=" << p;
          ASSERT_TRUE(SameBytes(cv[w.Slot(b, h, p) + d], cvt::FromFloat<T>(w.hist[b].v[h][p][d]))) << what << " p=" << p;
        }
      }
      for (int slot = 0; slot < sh.capacity; ++slot) {
        if (written[slot]) continue;
        const size_t o = w.Slot(b, h, slot);
        ASSERT_EQ(0, std::memcmp(&ck[o], &before_k[o], sizeof(T) * D)) << what << " untouched slot " << slot;
        ASSERT_EQ(0, std::memcmp(&cv[o], &before_v[o], sizeof(T) * D)) << what << " untouched slot " << slot;
      }
    }
  }
  if (!in_place) {  // the past buffers are inputs: never written
    ASSERT_EQ(0, std::memcmp(w.cache_k.data(), before_k.data(), sizeof(T) * before_k.size())) << what;
    w.cache_k = present_k;
    w.cache_v = present_v;
  }
}

// A reader query pass over a cache the owner already updated (history = past + new tokens).
template <typename T>
void ReaderStep(World<T>& w, Isa isa, const Executor& ex, int reader_window, const std::vector<int32_t>& past,
                const std::vector<int32_t>& newl, std::mt19937& rng) {
  AttentionShape sh = w.sh;
  sh.window = reader_window;
  const int B = sh.batch, S = sh.seq, Hq = sh.num_heads, D = sh.head_dim;
  const std::string what = "reader " + Describe(sh, past, newl) + " isa=" + IsaName(isa);
  auto qf = Dequantize(Quantize<T>(RandomVector(rng, static_cast<size_t>(B) * S * Hq * D)));
  auto q = Quantize<T>(qf);
  std::vector<T> out = Quantize<T>(std::vector<float>(qf.size(), 7.0f));
  const std::vector<T> before_k = w.cache_k;
  AttendArgs<T> a;
  a.shape = sh;
  a.query = q.data();
  a.key_cache = w.cache_k.data();
  a.value_cache = w.cache_v.data();
  a.past_lengths = past.data();
  a.new_lengths = newl.data();
  a.output = out.data();
  ASSERT_EQ(ValidateLengths(OpKind::kReader, sh, past.data(), newl.data()), "") << what;
  RunAttend(isa, a, ex);
  ASSERT_EQ(0, std::memcmp(w.cache_k.data(), before_k.data(), sizeof(T) * before_k.size())) << what;
  for (int b = 0; b < B; ++b)
    for (int s = 0; s < S; ++s) {
      const size_t off = (static_cast<size_t>(b) * S + s) * Hq * D;
      if (s >= newl[b]) {
        for (int i = 0; i < Hq * D; ++i) ASSERT_EQ(cvt::ToFloat(out[off + i]), 0.0f) << what;
        continue;
      }
      auto ref = ReferenceAttention(sh, qf.data() + off, w.hist[b], past[b] + s);
      for (int i = 0; i < Hq * D; ++i)
        ASSERT_NEAR(cvt::ToFloat(out[off + i]), ref[i], Tolerance<T>::value * std::max(1.0, std::fabs(ref[i])))
            << what << " b=" << b << " s=" << s;
    }
}

struct Config {
  Isa isa;
  int threads;
};

std::vector<Config> Configs() {
  std::vector<Config> c{{Isa::kDispatch, 1}, {Isa::kBase, 1}, {Isa::kBase, 3}};
  if (CpuHasV3()) c.insert(c.end(), {{Isa::kV3, 1}, {Isa::kV3, 3}});
  return c;
}

template <typename T>
class KernelTest : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, Float16, BFloat16>;
TYPED_TEST_SUITE(KernelTest, StorageTypes);

AttentionShape RandomShape(std::mt19937& rng, bool global) {
  auto pick = [&](std::initializer_list<int> v) { return *(v.begin() + rng() % v.size()); };
  AttentionShape sh;
  sh.batch = pick({1, 2, 3});
  sh.kv_num_heads = pick({1, 2, 3});
  sh.num_heads = sh.kv_num_heads * pick({1, 2, 3, 4, 5});  // 3: the 3-head tail of the AVX2 kernels
  sh.head_dim = pick({8, 12, 16, 40, 64, 128});  // 12: the non-multiple-of-8 path
  sh.window = global ? 0 : pick({1, 2, 5, 16, 33, 70});
  sh.capacity = global ? 0 : sh.window + pick({0, 0, 1, 3});
  sh.seq = pick({1, 1, 2, 7, 19, 40, 90});
  sh.scale = rng() % 2 ? 1.0f / std::sqrt(static_cast<float>(sh.head_dim)) : 0.37f;
  sh.softcap = rng() % 3 == 0 ? 4.0f : 0.0f;
  return sh;
}

// Random owner steps: random shapes and windows, S from 1 to > C, different pasts (up to > 3C,
// so the ring has wrapped several times), right padding, in place and copying.
TYPED_TEST(KernelTest, OwnerMatchesReference) {
  using T = TypeParam;
  std::mt19937 rng(1234);
  for (const Config& cfg : Configs()) {
    SerialExecutor serial;
    ThreadExecutor threaded(cfg.threads);
    const Executor& ex = cfg.threads > 1 ? static_cast<const Executor&>(threaded) : serial;
    for (int trial = 0; trial < 14; ++trial) {
      const bool global = trial % 4 == 3;
      AttentionShape sh = RandomShape(rng, global);
      std::vector<int32_t> past_target(sh.batch), newl(sh.batch);
      const int ref_c = global ? 64 : sh.capacity;
      for (int b = 0; b < sh.batch; ++b) {
        past_target[b] = static_cast<int32_t>(rng() % (4 * ref_c + 2));
        newl[b] = trial % 3 == 0 ? static_cast<int32_t>(rng() % (sh.seq + 1)) : sh.seq;
      }
      if (global) sh.capacity = *std::max_element(past_target.begin(), past_target.end()) + sh.seq + 2;
      World<T> w(sh, rng);
      for (int b = 0; b < sh.batch; ++b) w.Grow(b, past_target[b], rng);
      OwnerStep(w, cfg.isa, ex, newl, trial % 3 == 0, trial % 2 == 0, rng);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

// Decode S = 1 for more than 3*C steps after a prefill longer than C, sequences with different
// lengths in one batch, caches updated in place.
TYPED_TEST(KernelTest, DecodeWrapsRingMoreThanThreeTimes) {
  using T = TypeParam;
  std::mt19937 rng(99);
  for (const Config& cfg : Configs()) {
    SerialExecutor serial;
    ThreadExecutor threaded(cfg.threads);
    const Executor& ex = cfg.threads > 1 ? static_cast<const Executor&>(threaded) : serial;
    AttentionShape sh;
    sh.batch = 2;
    sh.kv_num_heads = 2;
    sh.num_heads = 8;
    sh.head_dim = 32;
    sh.window = 6;
    sh.capacity = 7;
    sh.scale = 0.2f;
    // Prefill: S = 17 > C, sequence 1 has 11 real tokens.
    sh.seq = 17;
    World<T> w(sh, rng);
    OwnerStep(w, cfg.isa, ex, {17, 11}, true, true, rng);
    w.sh.seq = 1;
    for (int step = 0; step < 3 * sh.capacity + 5; ++step) {
      OwnerStep(w, cfg.isa, ex, {1, 1}, false, true, rng);
      if (::testing::Test::HasFatalFailure()) return;
    }
    EXPECT_GE(w.hist[1].length(), 3 * sh.capacity);
  }
}

// Same for a global cache.
TYPED_TEST(KernelTest, GlobalPrefillThenDecode) {
  using T = TypeParam;
  std::mt19937 rng(7);
  AttentionShape sh;
  sh.batch = 3;
  sh.kv_num_heads = 1;  // MQA
  sh.num_heads = 4;
  sh.head_dim = 64;
  sh.window = 0;
  sh.capacity = 160;
  sh.scale = 0.125f;
  sh.seq = 70;
  World<T> w(sh, rng);
  ThreadExecutor ex(2);
  OwnerStep(w, Isa::kDispatch, ex, {70, 3, 0}, true, true, rng);
  w.sh.seq = 1;
  for (int step = 0; step < 12; ++step) OwnerStep(w, Isa::kDispatch, ex, {1, 1, 1}, false, step % 2 == 0, rng);
}

// Reader layers over an owner cache: own (smaller or equal) window, sliding and global.
TYPED_TEST(KernelTest, ReaderMatchesReference) {
  using T = TypeParam;
  std::mt19937 rng(4321);
  for (const Config& cfg : Configs()) {
    SerialExecutor serial;
    ThreadExecutor threaded(cfg.threads);
    const Executor& ex = cfg.threads > 1 ? static_cast<const Executor&>(threaded) : serial;
    for (int trial = 0; trial < 10; ++trial) {
      const bool global = trial % 4 == 3;
      AttentionShape sh = RandomShape(rng, global);
      std::vector<int32_t> past(sh.batch), newl(sh.batch);
      for (int b = 0; b < sh.batch; ++b) {
        past[b] = static_cast<int32_t>(rng() % (4 * std::max(sh.window, 16) + 1));
        newl[b] = trial % 2 ? sh.seq : static_cast<int32_t>(rng() % (sh.seq + 1));
      }
      const int reader_window = global ? 0 : 1 + static_cast<int>(rng() % sh.window);  // <= owner's
      // Ring caches with readers are sized W + chunk - 1 (docs/ops.md); global: everything.
      sh.capacity = global ? *std::max_element(past.begin(), past.end()) + sh.seq
                           : std::max(sh.window, reader_window + sh.seq - 1) + static_cast<int>(rng() % 2);
      World<T> w(sh, rng);
      for (int b = 0; b < sh.batch; ++b) w.Grow(b, past[b] + newl[b], rng);  // owner already wrote this step
      ReaderStep(w, cfg.isa, ex, reader_window, past, newl, rng);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

// Scores far apart (stress the online-softmax rescaling) and a softcap.
TEST(KernelNumerics, LargeScoresStayFinite) {
  std::mt19937 rng(5);
  AttentionShape sh;
  sh.batch = 1;
  sh.kv_num_heads = 1;
  sh.num_heads = 2;
  sh.head_dim = 16;
  sh.window = 200;
  sh.capacity = 200;
  sh.seq = 1;
  sh.scale = 8.0f;  // scores in the hundreds
  for (float softcap : {0.0f, 30.0f}) {
    sh.softcap = softcap;
    World<float> w(sh, rng);
    w.Grow(0, 450, rng);
    SerialExecutor ex;
    OwnerStep(w, Isa::kDispatch, ex, {1}, false, true, rng);
  }
}

TEST(KernelDispatch, ReportsIsa) {
  const std::string isa = CpuKernelIsa();
  EXPECT_TRUE(isa == "x86-64-v3" || isa == "x86-64") << isa;
}

}  // namespace
}  // namespace mixattn::test
