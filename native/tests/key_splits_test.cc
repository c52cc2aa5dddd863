// Split-K (key ranges attended by separate tasks, then merged) against the unsplit kernel: decode and prefill,
// owner and reader, ring caches that wrap, softcap, fp32 / fp16 queries and int8 / fp8 caches, many split counts
// (including more ranges than key blocks, so some are empty), serial and threaded, both ISAs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>

#include "isa_paths.h"
#include "cpu/key_splits.h"
#include "reference.h"

namespace mixattn::test {
namespace {

// Random cache elements: fp values for T caches, codes for quantized ones (no fp8 NaN codes 0x7f / 0xff).
template <typename TC>
std::vector<TC> RandomCache(std::mt19937& rng, size_t n) {
  if constexpr (std::is_same_v<TC, int8_t>) {
    std::vector<TC> c(n);
    for (auto& x : c) x = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
    return c;
  } else if constexpr (std::is_same_v<TC, Float8E4M3>) {
    std::vector<TC> c(n);
    for (auto& x : c) {
      uint8_t b = static_cast<uint8_t>(rng() % 256);
      if ((b & 0x7f) == 0x7f) b ^= 1;
      x.bits = b;
    }
    return c;
  } else {
    return Quantize<TC>(RandomVector(rng, n));
  }
}

struct Case {
  AttentionShape sh;
  bool owner;
  std::vector<int32_t> past, newl;
};

std::string Describe(const Case& c, int splits, Isa isa, int threads) {
  std::ostringstream s;
  s << (c.owner ? "owner" : "reader") << " B=" << c.sh.batch << " S=" << c.sh.seq << " Hq=" << c.sh.num_heads
    << " Hkv=" << c.sh.kv_num_heads << " D=" << c.sh.head_dim << " C=" << c.sh.capacity << " W=" << c.sh.window
    << " softcap=" << c.sh.softcap << " past0=" << c.past[0] << " splits=" << splits
    << " isa=" << (isa == Isa::kV3 ? "v3" : "base") << " threads=" << threads;
  return s.str();
}

// Runs c unsplit and with each split count; every output equals the unsplit one within tol (relative, >= 1).
template <typename T, typename TC>
void ExpectSplitsMatchUnsplit(const Case& c, std::initializer_list<int> splits, double tol, uint32_t seed) {
  std::mt19937 rng(seed);
  const AttentionShape& sh = c.sh;
  const int B = sh.batch, S = sh.seq, Hq = sh.num_heads, Hkv = sh.kv_num_heads, D = sh.head_dim;
  const size_t cache_n = static_cast<size_t>(B) * Hkv * sh.capacity * D;
  const auto ck = RandomCache<TC>(rng, cache_n), cv = RandomCache<TC>(rng, cache_n);
  const auto q = Quantize<T>(RandomVector(rng, static_cast<size_t>(B) * S * Hq * D, 1.5f));
  const auto k = Quantize<T>(RandomVector(rng, static_cast<size_t>(B) * S * Hkv * D));
  const auto v = Quantize<T>(RandomVector(rng, static_cast<size_t>(B) * S * Hkv * D));
  std::vector<float> k_scale(static_cast<size_t>(Hkv) * D), v_scale(k_scale.size());
  for (auto& x : k_scale) x = 0.01f + 0.02f * static_cast<float>(rng() % 100) / 100.f;
  for (auto& x : v_scale) x = 0.01f + 0.02f * static_cast<float>(rng() % 100) / 100.f;

  AttendArgs<T, TC> a;
  a.shape = sh;
  a.query = q.data();
  if (c.owner) a.chunk_key = k.data(), a.chunk_value = v.data();
  a.key_cache = ck.data();
  a.value_cache = cv.data();
  a.past_lengths = c.past.data();
  a.new_lengths = c.newl.data();
  a.quant.type = CacheTypeOf<TC>::value;
  a.quant.k = {k_scale.data(), ScaleGranularity::kPerChannel};
  a.quant.v = {v_scale.data(), ScaleGranularity::kPerChannel};
  ASSERT_EQ(ValidateLengths(c.owner ? OpKind::kOwner : OpKind::kReader, sh, c.past.data(), c.newl.data()), "");

  const T nan = cvt::FromFloat<T>(std::numeric_limits<float>::quiet_NaN());
  for (Isa isa : DirectIsas()) {
    std::vector<T> want(q.size(), nan);
    a.output = want.data();
    a.key_splits = 1;
    SerialExecutor serial;
    RunAttend(isa, a, serial);
    for (int threads : {1, 3}) {
      ThreadExecutor threaded(threads);
      const Executor& ex = threads > 1 ? static_cast<const Executor&>(threaded) : serial;
      for (int n : splits) {
        const std::string what = Describe(c, n, isa, threads);
        std::vector<T> got(q.size(), nan);
        a.output = got.data();
        a.key_splits = n;
        RunAttend(isa, a, ex);
        for (int b = 0; b < B; ++b)
          for (int s = 0; s < S; ++s)
            for (int i = 0; i < Hq * D; ++i) {
              const size_t o = (static_cast<size_t>(b) * S + s) * Hq * D + i;
              const double w = cvt::ToFloat(want[o]), g = cvt::ToFloat(got[o]);
              if (s >= c.newl[b]) {
                ASSERT_EQ(g, 0.0) << what << " padding b=" << b << " s=" << s;
                continue;
              }
              ASSERT_TRUE(std::isfinite(w)) << what << " b=" << b << " s=" << s << " i=" << i;
              ASSERT_NEAR(g, w, tol * std::max(1.0, std::fabs(w))) << what << " b=" << b << " s=" << s << " i=" << i;
            }
      }
    }
  }
}

AttentionShape Shape(int B, int S, int Hq, int Hkv, int D, int C, int W, float softcap = 0.f) {
  AttentionShape sh;
  sh.batch = B;
  sh.seq = S;
  sh.num_heads = Hq;
  sh.kv_num_heads = Hkv;
  sh.head_dim = D;
  sh.capacity = C;
  sh.window = W;
  sh.scale = 1.0f / std::sqrt(static_cast<float>(D));
  sh.softcap = softcap;
  return sh;
}

constexpr double kFp32Tol = 2e-5;

// The case split-K is for: one sequence, 2 KV heads, a long global cache, one new token.
TEST(KeySplits, GlobalDecode) {
  Case c{Shape(1, 1, 6, 2, 128, 1100, 0), true, {1000}, {1}};
  ExpectSplitsMatchUnsplit<float, float>(c, {1, 2, 3, 5, 8, 16, 40}, kFp32Tol, 1);
}

// A sliding window over a ring that has wrapped several times: a range may straddle the wrap.
TEST(KeySplits, RingWrapDecode) {
  Case c{Shape(2, 1, 8, 2, 64, 307, 300), true, {1234, 650}, {1, 1}};
  ExpectSplitsMatchUnsplit<float, float>(c, {2, 4, 7, 16, 64}, kFp32Tol, 2);
}

// Prefill chunks: several query blocks, right padding, keys from cache and chunk; padded rows are zero.
TEST(KeySplits, PrefillWithPadding) {
  Case c{Shape(2, 40, 4, 1, 32, 600, 0), true, {500, 37}, {40, 23}};
  ExpectSplitsMatchUnsplit<float, float>(c, {2, 3, 9}, kFp32Tol, 3);
  Case ring{Shape(1, 20, 4, 2, 16, 90, 71), true, {333}, {17}};
  ExpectSplitsMatchUnsplit<float, float>(ring, {2, 5}, kFp32Tol, 4);
}

// Readers (everything from the cache, their own window) and a head size that is not a multiple of 8.
TEST(KeySplits, ReadersAndOddHeadSize) {
  Case global{Shape(1, 1, 6, 2, 128, 2048, 0), false, {1999}, {1}};
  ExpectSplitsMatchUnsplit<float, float>(global, {2, 8, 16}, kFp32Tol, 5);
  Case ring{Shape(3, 2, 5, 1, 12, 520, 515), false, {4000, 10, 700}, {2, 1, 0}};
  ExpectSplitsMatchUnsplit<float, float>(ring, {2, 3, 8}, kFp32Tol, 6);
}

// Softcap and scores in the hundreds: the partial maxima differ widely, so the merge's rescale matters.
TEST(KeySplits, SoftcapAndLargeScores) {
  Case capped{Shape(1, 1, 4, 2, 64, 900, 0, 30.0f), true, {850}, {1}};
  ExpectSplitsMatchUnsplit<float, float>(capped, {2, 6, 13}, kFp32Tol, 7);
  Case large{Shape(1, 1, 2, 1, 16, 700, 0), true, {650}, {1}};
  large.sh.scale = 8.0f;
  ExpectSplitsMatchUnsplit<float, float>(large, {2, 5, 11}, kFp32Tol, 8);
}

// Quantized caches: cache rows dequantized, the owner's chunk attended as dequantize(quantize(x)).
TEST(KeySplits, QuantizedCaches) {
  Case owner{Shape(1, 1, 6, 2, 128, 1300, 0), true, {1200}, {1}};
  ExpectSplitsMatchUnsplit<float, int8_t>(owner, {2, 8, 16}, kFp32Tol, 9);
  ExpectSplitsMatchUnsplit<float, Float8E4M3>(owner, {2, 8, 16}, kFp32Tol, 10);
  Case reader{Shape(1, 1, 4, 2, 64, 520, 512), false, {2000}, {1}};
  ExpectSplitsMatchUnsplit<float, int8_t>(reader, {3, 8}, kFp32Tol, 11);
  ExpectSplitsMatchUnsplit<float, Float8E4M3>(reader, {3, 8}, kFp32Tol, 12);
  Case prefill{Shape(1, 9, 4, 2, 32, 400, 0), true, {300}, {9}};
  ExpectSplitsMatchUnsplit<float, int8_t>(prefill, {2, 4}, kFp32Tol, 13);
}

// Half-precision queries/outputs: equal up to one rounding of the output.
TEST(KeySplits, HalfPrecision) {
  Case c{Shape(1, 1, 6, 2, 64, 800, 0), true, {777}, {1}};
  ExpectSplitsMatchUnsplit<Float16, Float16>(c, {2, 8}, 2e-3, 14);
  ExpectSplitsMatchUnsplit<BFloat16, BFloat16>(c, {2, 8}, 1.6e-2, 15);
  ExpectSplitsMatchUnsplit<Float16, Float8E4M3>(c, {4}, 2e-3, 16);
}

// The automatic choice (key_splits = 0) on a many-thread executor matches the unsplit result.
TEST(KeySplits, AutomaticChoiceMatchesUnsplit) {
  std::mt19937 rng(17);
  const AttentionShape sh = Shape(1, 1, 6, 2, 128, 4200, 0);
  const std::vector<int32_t> past{4095}, newl{1};
  const auto ck = RandomCache<float>(rng, static_cast<size_t>(2) * 4200 * 128), cv = ck;
  const auto q = RandomVector(rng, 6 * 128), k = RandomVector(rng, 2 * 128), v = RandomVector(rng, 2 * 128);
  AttendArgs<float> a;
  a.shape = sh;
  a.query = q.data();
  a.chunk_key = k.data();
  a.chunk_value = v.data();
  a.key_cache = ck.data();
  a.value_cache = cv.data();
  a.past_lengths = past.data();
  a.new_lengths = newl.data();
  std::vector<float> want(q.size()), got(q.size());
  a.output = want.data();
  a.key_splits = 1;
  Attend(a, SerialExecutor{});
  a.output = got.data();
  a.key_splits = 0;
  Attend(a, ThreadExecutor(16));
  for (size_t i = 0; i < q.size(); ++i) ASSERT_NEAR(got[i], want[i], kFp32Tol * std::max(1.0f, std::fabs(want[i])));
}

TEST(KeySplits, ChoiceSpreadsFewTasksOverIdleThreads) {
  EXPECT_EQ(ChooseKeySplits(2, 16, 4096), 8);   // batch 1, 2 KV heads: every thread one range
  EXPECT_EQ(ChooseKeySplits(1, 16, 4096), 16);
  EXPECT_EQ(ChooseKeySplits(3, 16, 4096), 5);
  EXPECT_EQ(ChooseKeySplits(16, 16, 4096), 1);  // batch 8: already one task per thread
  EXPECT_EQ(ChooseKeySplits(9, 16, 4096), 1);
  EXPECT_EQ(ChooseKeySplits(2, 16, 1000), 3);   // ranges of at least kMinKeysPerSplit keys
  EXPECT_EQ(ChooseKeySplits(2, 16, 300), 1);
  EXPECT_EQ(ChooseKeySplits(2, 1, 4096), 1);    // one thread: nothing to spread
  EXPECT_EQ(ChooseKeySplits(1, 2, 4096), 2);
  EXPECT_EQ(ChooseKeySplits(0, 16, 4096), 1);
}

}  // namespace
}  // namespace mixattn::test
