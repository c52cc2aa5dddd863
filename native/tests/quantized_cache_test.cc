// Quantized (int8 / fp8 E4M3FN) caches: the quantize/dequantize arithmetic (docs/ops.md, "Quantized caches"), and the
// kernels against a float reference of the same quantization: dequantize the cache (q * scale), quantize-dequantize
// the chunk, run the fp32 kernel. Owner steps (ring wrap, prefill longer than the window and the ring, padding rows,
// in place and copying), readers, prefill vs decode, fp16 queries.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>

#include "cpu/quant_convert.h"
#include "isa_paths.h"
#include "reference.h"

namespace mixattn::test {
namespace {

// ---- Scalar arithmetic ----

TEST(QuantizeInt8, RoundsHalfToEvenAndSaturatesFullRange) {
  EXPECT_EQ(quant::Int8FromScaled(2.5f), 2);
  EXPECT_EQ(quant::Int8FromScaled(3.5f), 4);
  EXPECT_EQ(quant::Int8FromScaled(-2.5f), -2);
  EXPECT_EQ(quant::Int8FromScaled(-3.5f), -4);
  EXPECT_EQ(quant::Int8FromScaled(0.49999997f), 0);
  EXPECT_EQ(quant::Int8FromScaled(126.5f), 126);
  EXPECT_EQ(quant::Int8FromScaled(127.4f), 127);
  EXPECT_EQ(quant::Int8FromScaled(127.5f), 127);
  EXPECT_EQ(quant::Int8FromScaled(1e9f), 127);
  EXPECT_EQ(quant::Int8FromScaled(-127.5f), -128);  // half to even: -128, inside the range
  EXPECT_EQ(quant::Int8FromScaled(-128.4f), -128);
  EXPECT_EQ(quant::Int8FromScaled(-1e9f), -128);
  EXPECT_EQ(quant::Int8FromScaled(std::numeric_limits<float>::infinity()), 127);
  EXPECT_EQ(quant::Int8FromScaled(-std::numeric_limits<float>::infinity()), -128);
  EXPECT_EQ(quant::Int8FromScaled(std::numeric_limits<float>::quiet_NaN()), 127);
  for (int q = -128; q <= 127; ++q) EXPECT_EQ(quant::Int8FromScaled(static_cast<float>(q)), q);
}

TEST(QuantizeInt8, MultipliesByTheReciprocalOfTheScale) {
  // x * (1/scale) and x / scale differ for some inputs; ORT multiplies. Find one where rounding flips and check it.
  const float scale = 0.1f, inv = quant::Inverse(scale);
  int found = 0;
  for (int i = -1270; i <= 1270 && found < 3; ++i) {
    const float x = static_cast<float>(i) * 0.005f;
    if (std::nearbyint(x * inv) != std::nearbyint(x / scale)) {
      EXPECT_EQ(quant::Quantize<int8_t>(x, inv), static_cast<int8_t>(std::nearbyint(x * inv))) << x;
      ++found;
    }
  }
  EXPECT_EQ(quant::Dequantize(int8_t{-7}, 0.25f), -1.75f);
}

// The E4M3FN value nearest to v, ties to the even code, by brute force over every finite code.
uint8_t NearestFloat8(float v) {
  if (std::isnan(v)) return 0x7e;
  v = std::max(-448.f, std::min(448.f, v));
  const double a = std::fabs(static_cast<double>(v));
  int best = 0;
  double best_err = std::numeric_limits<double>::infinity();
  for (int m = 0; m < 0x7f; ++m) {  // magnitudes in increasing order; a tie keeps the even code
    const double err = std::fabs(static_cast<double>(quant::Float8E4M3ToFloat(static_cast<uint8_t>(m))) - a);
    if (err < best_err || (err == best_err && (m & 1) == 0)) best = m, best_err = err;
  }
  return static_cast<uint8_t>((std::signbit(v) ? 0x80 : 0) | best);
}

TEST(QuantizeFloat8, EdgeCases) {
  EXPECT_EQ(quant::Float8E4M3FromScaled(448.f), 0x7e);
  EXPECT_EQ(quant::Float8E4M3FromScaled(464.f), 0x7e);  // halfway to 480 (which is NaN's slot): saturates
  EXPECT_EQ(quant::Float8E4M3FromScaled(1e30f), 0x7e);
  EXPECT_EQ(quant::Float8E4M3FromScaled(-1e30f), 0xfe);
  EXPECT_EQ(quant::Float8E4M3FromScaled(std::numeric_limits<float>::infinity()), 0x7e);
  EXPECT_EQ(quant::Float8E4M3FromScaled(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ(quant::Float8E4M3FromScaled(std::numeric_limits<float>::quiet_NaN()), 0x7e);
  EXPECT_EQ(quant::Float8E4M3FromScaled(1.0f), 0x38);
  EXPECT_EQ(quant::Float8E4M3FromScaled(1.0625f), 0x38);   // tie 1.0 / 1.125 -> even mantissa 0
  EXPECT_EQ(quant::Float8E4M3FromScaled(1.1875f), 0x3a);   // tie 1.125 / 1.25 -> even mantissa 2
  EXPECT_EQ(quant::Float8E4M3FromScaled(1.9375f), 0x40);   // tie 1.875 / 2.0 -> carries into the exponent
  EXPECT_EQ(quant::Float8E4M3FromScaled(0x1p-9f), 0x01);   // smallest subnormal
  EXPECT_EQ(quant::Float8E4M3FromScaled(0x1p-10f), 0x00);  // tie 0 / 2^-9 -> 0
  EXPECT_EQ(quant::Float8E4M3FromScaled(3 * 0x1p-10f), 0x02);  // tie 1 / 2 subnormal -> even
  EXPECT_EQ(quant::Float8E4M3FromScaled(0x1p-6f), 0x08);   // smallest normal
  EXPECT_EQ(quant::Float8E4M3FromScaled(15 * 0x1p-10f), 0x08);  // tie 7*2^-9 / 2^-6 -> code 8 (even)
  EXPECT_EQ(quant::Float8E4M3FromScaled(-0.0f), 0x80);
  EXPECT_EQ(quant::Float8E4M3FromScaled(-1e-20f), 0x80);
  EXPECT_TRUE(std::isnan(quant::Float8E4M3ToFloat(0x7f)));
  EXPECT_TRUE(std::isnan(quant::Float8E4M3ToFloat(0xff)));
  EXPECT_EQ(quant::Float8E4M3ToFloat(0x7e), 448.f);
  EXPECT_EQ(quant::Float8E4M3ToFloat(0x01), 0x1p-9f);
}

TEST(QuantizeFloat8, EveryCodeRoundTripsAndRandomValuesMatchBruteForce) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    EXPECT_EQ(quant::Float8E4M3FromScaled(quant::Float8E4M3ToFloat(static_cast<uint8_t>(c))), c) << c;
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> exponent(-12.f, 9.5f);
  for (int i = 0; i < 20000; ++i) {
    const float v = std::exp2(exponent(rng)) * (i % 2 ? -1.f : 1.f);
    ASSERT_EQ(quant::Float8E4M3FromScaled(v), NearestFloat8(v)) << v;
  }
  // Every midpoint between neighbouring codes (ties).
  for (int c = 0; c < 0x7e; ++c) {
    const float mid = 0.5f * (quant::Float8E4M3ToFloat(static_cast<uint8_t>(c)) +
                              quant::Float8E4M3ToFloat(static_cast<uint8_t>(c + 1)));
    ASSERT_EQ(quant::Float8E4M3FromScaled(mid), (c & 1) ? c + 1 : c) << mid;
  }
}

// ---- Kernels against the float reference ----

float ScaleAt(const KvScale& s, int h, int d, int D) { return s.data[s.Index(h, d, D)]; }

// Cache [B, Hkv, C, D] of TC -> fp32 q * scale.
template <typename TC>
std::vector<float> DequantizeCache(const std::vector<TC>& c, const KvScale& s, const AttentionShape& sh) {
  std::vector<float> out(c.size());
  const int D = sh.head_dim;
  for (size_t i = 0; i < c.size(); ++i) {
    const int d = static_cast<int>(i % D);
    const int h = static_cast<int>((i / D / sh.capacity) % sh.kv_num_heads);
    out[i] = quant::Dequantize(c[i], ScaleAt(s, h, d, D));
  }
  return out;
}

// Chunk rows [B, S, Hkv*D] (fp32 values) -> dequantize(quantize(x)).
template <typename TC>
std::vector<float> QdqChunk(const std::vector<float>& x, const KvScale& s, const AttentionShape& sh) {
  std::vector<float> out(x.size());
  const int D = sh.head_dim;
  for (size_t i = 0; i < x.size(); ++i) {
    const int d = static_cast<int>(i % D);
    const int h = static_cast<int>((i / D) % sh.kv_num_heads);
    const float sc = ScaleAt(s, h, d, D);
    out[i] = quant::Dequantize(quant::Quantize<TC>(x[i], quant::Inverse(sc)), sc);
  }
  return out;
}

struct Scales {
  std::vector<float> k, v;
  KvQuant quant;
};

// Scales near max|x| / range for unit-normal data, different per head / channel so a wrong index shows.
template <typename TC>
Scales MakeScales(ScaleGranularity g, const AttentionShape& sh, std::mt19937& rng) {
  const float range = CacheTypeOf<TC>::value == CacheType::kInt8 ? 127.f : 448.f;
  const size_t n = g == ScaleGranularity::kPerTensor ? 1
                   : g == ScaleGranularity::kPerHead ? static_cast<size_t>(sh.kv_num_heads)
                                                     : static_cast<size_t>(sh.kv_num_heads) * sh.head_dim;
  std::uniform_real_distribution<float> u(2.0f, 4.5f);  // some values saturate
  Scales s;
  for (size_t i = 0; i < n; ++i) s.k.push_back(u(rng) / range), s.v.push_back(u(rng) / range);
  s.quant.type = CacheTypeOf<TC>::value;
  s.quant.k = KvScale{s.k.data(), g};
  s.quant.v = KvScale{s.v.data(), g};
  return s;
}

template <typename TC>
std::vector<TC> RandomCache(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<TC> c(n);
  for (auto& x : c) {
    uint8_t b = static_cast<uint8_t>(byte(rng));
    if constexpr (std::is_same_v<TC, Float8E4M3>)
      if ((b & 0x7f) == 0x7f) b = 0x10;  // no NaN codes in the (garbage) cache
    std::memcpy(&x, &b, 1);
  }
  return c;
}

std::string Describe(const AttentionShape& sh, ScaleGranularity g, const std::vector<int32_t>& past,
                     const std::vector<int32_t>& newl) {
  std::ostringstream s;
  s << "S=" << sh.seq << " Hq=" << sh.num_heads << " Hkv=" << sh.kv_num_heads << " D=" << sh.head_dim
    << " C=" << sh.capacity << " W=" << sh.window << " granularity=" << static_cast<int>(g) << " past=[";
  for (auto p : past) s << p << ' ';
  s << "] new=[";
  for (auto n : newl) s << n << ' ';
  return s.str() + "]";
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << what << " i=" << i;
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]) / std::max(1.0, std::fabs(static_cast<double>(want[i])));
    worst = std::max(worst, err);
    ASSERT_LE(err, tol) << what << " i=" << i << " got=" << got[i] << " want=" << want[i];
  }
}

// One owner step with fp32 queries: our Attend<float, TC> + WriteChunk against Attend<float, float> over the
// dequantized cache and the quantize-dequantized chunk; the cache bytes against per-element quant::Quantize.
// Then a reader (own window wr) over the written cache, when the residency rule allows it.
template <typename TC>
void QuantStep(Isa isa, const AttentionShape& sh, int reader_window, std::vector<TC>& ck, std::vector<TC>& cv,
               const Scales& sc, std::vector<int32_t>& past, const std::vector<int32_t>& newl, bool in_place,
               std::mt19937& rng, int* readers_run) {
  const int B = sh.batch, S = sh.seq, Hq = sh.num_heads, Hkv = sh.kv_num_heads, D = sh.head_dim;
  const std::string what = Describe(sh, sc.quant.k.granularity, past, newl) + (isa == Isa::kV3 ? " v3" : " base") +
                           (in_place ? " in-place" : " copy");
  ThreadExecutor ex(3);
  auto q = RandomVector(rng, static_cast<size_t>(B) * S * Hq * D);
  auto k = RandomVector(rng, static_cast<size_t>(B) * S * Hkv * D);
  auto v = RandomVector(rng, static_cast<size_t>(B) * S * Hkv * D);
  const std::vector<TC> before_k = ck, before_v = cv;

  // Reference.
  const std::vector<float> fk = DequantizeCache(ck, sc.quant.k, sh), fv = DequantizeCache(cv, sc.quant.v, sh);
  const std::vector<float> qk = QdqChunk<TC>(k, sc.quant.k, sh), qv = QdqChunk<TC>(v, sc.quant.v, sh);
  std::vector<float> ref(q.size(), -1.f);
  AttendArgs<float> r;
  r.shape = sh;
  r.query = q.data();
  r.chunk_key = qk.data();
  r.chunk_value = qv.data();
  r.key_cache = fk.data();
  r.value_cache = fv.data();
  r.past_lengths = past.data();
  r.new_lengths = newl.data();
  r.output = ref.data();
  ASSERT_EQ(ValidateLengths(OpKind::kOwner, sh, past.data(), newl.data()), "") << what;
  Attend(r, SerialExecutor());

  // Ours.
  std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
  AttendArgs<float, TC> a;
  a.shape = sh;
  a.query = q.data();
  a.chunk_key = k.data();
  a.chunk_value = v.data();
  a.key_cache = ck.data();
  a.value_cache = cv.data();
  a.past_lengths = past.data();
  a.new_lengths = newl.data();
  a.output = out.data();
  a.quant = sc.quant;
  RunAttend(isa, a, ex);
  ExpectClose(out, ref, 2e-6, what + " owner output");
  for (int b = 0; b < B; ++b)  // padding rows: zeros
    for (int s = newl[b]; s < S; ++s)
      for (int i = 0; i < Hq * D; ++i) ASSERT_EQ(out[(static_cast<size_t>(b) * S + s) * Hq * D + i], 0.f) << what;

  std::vector<TC> pk = in_place ? std::vector<TC>() : RandomCache<TC>(ck.size(), rng);
  std::vector<TC> pv = in_place ? std::vector<TC>() : RandomCache<TC>(cv.size(), rng);
  CacheWriteArgs<float, TC> w;
  w.shape = sh;
  w.chunk_key = k.data();
  w.chunk_value = v.data();
  w.past_key = ck.data();
  w.past_value = cv.data();
  w.present_key = in_place ? ck.data() : pk.data();
  w.present_value = in_place ? cv.data() : pv.data();
  w.past_lengths = past.data();
  w.new_lengths = newl.data();
  w.quant = sc.quant;
  RunWrite(isa, w, ex);
  if (!in_place) {
    ASSERT_EQ(0, std::memcmp(ck.data(), before_k.data(), ck.size())) << what << " past_key written";
    ck = pk;
    cv = pv;
  }

  // Expected cache bytes: before, plus the last min(N, C) real rows quantized into slot (P + s) mod C.
  std::vector<TC> ek = before_k, ev = before_v;
  const int64_t C = sh.capacity;
  for (int b = 0; b < B; ++b)
    for (int s = std::max<int>(0, newl[b] - static_cast<int>(C)); s < newl[b]; ++s)
      for (int h = 0; h < Hkv; ++h)
        for (int d = 0; d < D; ++d) {
          const size_t src = (static_cast<size_t>(b) * S + s) * Hkv * D + static_cast<size_t>(h) * D + d;
          const size_t dst = ((static_cast<size_t>(b) * Hkv + h) * C + (past[b] + s) % C) * D + d;
          ek[dst] = quant::Quantize<TC>(k[src], quant::Inverse(ScaleAt(sc.quant.k, h, d, D)));
          ev[dst] = quant::Quantize<TC>(v[src], quant::Inverse(ScaleAt(sc.quant.v, h, d, D)));
        }
  ASSERT_EQ(0, std::memcmp(ck.data(), ek.data(), ck.size())) << what << " key cache bytes";
  ASSERT_EQ(0, std::memcmp(cv.data(), ev.data(), cv.size())) << what << " value cache bytes";

  // Reader over the written cache (the owner's scales).
  AttentionShape rs = sh;
  rs.window = reader_window;
  if (ValidateLengths(OpKind::kReader, rs, past.data(), newl.data()).empty()) {
    const std::vector<float> gk = DequantizeCache(ck, sc.quant.k, sh), gv = DequantizeCache(cv, sc.quant.v, sh);
    std::vector<float> rref(q.size(), -1.f), rout(q.size(), std::numeric_limits<float>::quiet_NaN());
    AttendArgs<float> rr;
    rr.shape = rs;
    rr.query = q.data();
    rr.key_cache = gk.data();
    rr.value_cache = gv.data();
    rr.past_lengths = past.data();
    rr.new_lengths = newl.data();
    rr.output = rref.data();
    Attend(rr, SerialExecutor());
    AttendArgs<float, TC> ra;
    ra.shape = rs;
    ra.query = q.data();
    ra.key_cache = ck.data();
    ra.value_cache = cv.data();
    ra.past_lengths = past.data();
    ra.new_lengths = newl.data();
    ra.output = rout.data();
    ra.quant = sc.quant;
    RunAttend(isa, ra, ex);
    ExpectClose(rout, rref, 2e-6, what + " reader W=" + std::to_string(reader_window));
    ++*readers_run;
  }
  for (int b = 0; b < B; ++b) past[b] += newl[b];
}

template <typename TC>
void OwnerScenario(Isa isa, ScaleGranularity g, int window, int capacity, int D, uint32_t seed) {
  std::mt19937 rng(seed);
  AttentionShape sh;
  sh.batch = 2;
  sh.num_heads = 4;
  sh.kv_num_heads = 2;
  sh.head_dim = D;
  sh.capacity = capacity;
  sh.window = window;
  sh.scale = 1.0f / std::sqrt(static_cast<float>(D));
  const Scales sc = MakeScales<TC>(g, sh, rng);
  const size_t n = static_cast<size_t>(sh.batch) * sh.kv_num_heads * capacity * D;
  std::vector<TC> ck = RandomCache<TC>(n, rng), cv = RandomCache<TC>(n, rng);
  std::vector<int32_t> past{0, 0};
  int readers = 0;
  const int reader_window = window > 0 ? window - 1 : 0;
  // Prefill: longer than the window (and than a sliding ring), with a padded second sequence.
  const int prefill = window > 0 ? capacity + 5 : capacity / 2;
  sh.seq = prefill;
  QuantStep<TC>(isa, sh, reader_window, ck, cv, sc, past, {prefill, prefill - 3}, true, rng, &readers);
  // Decode steps (past the ring wrap), alternating in place and copying, and one padded decode row.
  sh.seq = 1;
  for (int step = 0; step < (window > 0 ? capacity + 3 : 4); ++step)
    QuantStep<TC>(isa, sh, reader_window, ck, cv, sc, past, {1, step == 2 ? 0 : 1}, step % 2 == 0, rng, &readers);
  // A short chunk with padding.
  sh.seq = 3;
  QuantStep<TC>(isa, sh, reader_window, ck, cv, sc, past, {3, 2}, true, rng, &readers);
  EXPECT_GT(readers, 0);
}

struct ScenarioParam {
  ScaleGranularity granularity;
  int window, capacity, dim;
};

class QuantizedOwner : public ::testing::TestWithParam<ScenarioParam> {};

TEST_P(QuantizedOwner, Int8MatchesFloatReferenceOfTheSameQuantization) {
  const ScenarioParam p = GetParam();
  for (Isa isa : {Isa::kV3, Isa::kBase}) {
    if (isa == Isa::kV3 && !CpuHasV3()) continue;
    OwnerScenario<int8_t>(isa, p.granularity, p.window, p.capacity, p.dim, 11);
  }
}

TEST_P(QuantizedOwner, Float8MatchesFloatReferenceOfTheSameQuantization) {
  const ScenarioParam p = GetParam();
  for (Isa isa : {Isa::kV3, Isa::kBase}) {
    if (isa == Isa::kV3 && !CpuHasV3()) continue;
    OwnerScenario<Float8E4M3>(isa, p.granularity, p.window, p.capacity, p.dim, 12);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, QuantizedOwner,
    ::testing::Values(ScenarioParam{ScaleGranularity::kPerTensor, 8, 10, 16},   // sliding ring, C > W
                      ScenarioParam{ScaleGranularity::kPerHead, 8, 8, 32},      // ring C == W
                      ScenarioParam{ScaleGranularity::kPerChannel, 6, 9, 12},   // D % 8 != 0 (scalar paths)
                      ScenarioParam{ScaleGranularity::kPerChannel, 0, 40, 64},  // global
                      ScenarioParam{ScaleGranularity::kPerTensor, 0, 24, 8}));

// Prefill of N tokens in one chunk and N decode steps of the same tokens: the same cache bytes, and outputs equal
// up to fp32 rounding (the chunk is attended as dequantize(quantize(x)), the values decode reads from the cache).
TEST(QuantizedCache, PrefillAndDecodeSeeTheSameNumbers) {
  std::mt19937 rng(5);
  AttentionShape sh;
  sh.batch = 1;
  sh.num_heads = 2;
  sh.kv_num_heads = 1;
  sh.head_dim = 16;
  sh.capacity = 32;
  sh.window = 0;
  sh.scale = 0.25f;
  const Scales sc = MakeScales<int8_t>(ScaleGranularity::kPerChannel, sh, rng);
  const int N = 20, Hq = sh.num_heads, D = sh.head_dim;
  auto q = RandomVector(rng, static_cast<size_t>(N) * Hq * D), k = RandomVector(rng, static_cast<size_t>(N) * D),
       v = RandomVector(rng, static_cast<size_t>(N) * D);
  const size_t n = static_cast<size_t>(sh.capacity) * D;
  std::vector<int8_t> pk(n, 0), pv(n, 0), dk(n, 0), dv(n, 0);
  std::vector<float> pout(q.size()), dout(q.size());
  const std::vector<int32_t> zero{0};
  {
    AttentionShape s = sh;
    s.seq = N;
    AttendArgs<float, int8_t> a{s, q.data(), k.data(), v.data(), pk.data(), pv.data(), zero.data(), nullptr, pout.data(),
                                sc.quant, 0, {}};
    Attend(a, SerialExecutor());
    CacheWriteArgs<float, int8_t> w{s, k.data(), v.data(), pk.data(), pv.data(), pk.data(), pv.data(), zero.data(),
                                    nullptr, sc.quant, {}};
    WriteChunk(w, SerialExecutor());
  }
  AttentionShape s = sh;
  s.seq = 1;
  for (int t = 0; t < N; ++t) {
    const std::vector<int32_t> past{t};
    AttendArgs<float, int8_t> a{s, q.data() + t * Hq * D, k.data() + t * D, v.data() + t * D, dk.data(), dv.data(),
                                past.data(), nullptr, dout.data() + t * Hq * D, sc.quant, 0, {}};
    Attend(a, SerialExecutor());
    CacheWriteArgs<float, int8_t> w{s, k.data() + t * D, v.data() + t * D, dk.data(), dv.data(), dk.data(), dv.data(),
                                    past.data(), nullptr, sc.quant, {}};
    WriteChunk(w, SerialExecutor());
  }
  EXPECT_EQ(0, std::memcmp(pk.data(), dk.data(), n));
  EXPECT_EQ(0, std::memcmp(pv.data(), dv.data(), n));
  ExpectClose(pout, dout, 2e-6, "prefill vs decode");
}

// fp16 / bf16 queries over an int8 / fp8 cache: against the fp32 kernel on the same (T-representable) inputs; the
// only difference is T's rounding of the output. The write quantizes the T value of each key/value.
template <typename T, typename TC>
void HalfQueries(double tol) {
  std::mt19937 rng(9);
  AttentionShape sh;
  sh.batch = 1;
  sh.seq = 5;
  sh.num_heads = 8;
  sh.kv_num_heads = 2;
  sh.head_dim = 32;
  sh.capacity = 12;
  sh.window = 7;
  sh.scale = 0.2f;
  const Scales sc = MakeScales<TC>(ScaleGranularity::kPerChannel, sh, rng);
  const size_t n = static_cast<size_t>(sh.kv_num_heads) * sh.capacity * sh.head_dim;
  std::vector<TC> ck = RandomCache<TC>(n, rng), cv = RandomCache<TC>(n, rng);
  const std::vector<int32_t> past{9}, newl{4};
  auto qf = Dequantize(Quantize<T>(RandomVector(rng, static_cast<size_t>(sh.seq) * sh.num_heads * sh.head_dim)));
  auto kf = Dequantize(Quantize<T>(RandomVector(rng, static_cast<size_t>(sh.seq) * sh.kv_num_heads * sh.head_dim)));
  auto vf = Dequantize(Quantize<T>(RandomVector(rng, static_cast<size_t>(sh.seq) * sh.kv_num_heads * sh.head_dim)));
  auto q = Quantize<T>(qf), k = Quantize<T>(kf), v = Quantize<T>(vf);
  std::vector<float> ref(qf.size());
  const std::vector<float> fk = DequantizeCache(ck, sc.quant.k, sh), fv = DequantizeCache(cv, sc.quant.v, sh);
  const std::vector<float> qk = QdqChunk<TC>(kf, sc.quant.k, sh), qv = QdqChunk<TC>(vf, sc.quant.v, sh);
  Attend(AttendArgs<float>{sh, qf.data(), qk.data(), qv.data(), fk.data(), fv.data(), past.data(), newl.data(),
                           ref.data(), {}, 0, {}},
         SerialExecutor());
  std::vector<T> out(q.size());
  Attend(AttendArgs<T, TC>{sh, q.data(), k.data(), v.data(), ck.data(), cv.data(), past.data(), newl.data(), out.data(),
                           sc.quant, 0, {}},
         ThreadExecutor(2));
  ExpectClose(Dequantize(out), ref, tol, "half queries");
  CacheWriteArgs<T, TC> w{sh, k.data(), v.data(), ck.data(), cv.data(), ck.data(), cv.data(), past.data(), newl.data(),
                          sc.quant, {}};
  WriteChunk(w, SerialExecutor());
  for (int s = 0; s < newl[0]; ++s)
    for (int h = 0; h < sh.kv_num_heads; ++h)
      for (int d = 0; d < sh.head_dim; ++d) {
        const size_t src = (static_cast<size_t>(s) * sh.kv_num_heads + h) * sh.head_dim + d;
        const size_t dst = (static_cast<size_t>(h) * sh.capacity + (past[0] + s) % sh.capacity) * sh.head_dim + d;
        const TC want = quant::Quantize<TC>(kf[src], quant::Inverse(ScaleAt(sc.quant.k, h, d, sh.head_dim)));
        ASSERT_EQ(0, std::memcmp(&ck[dst], &want, 1)) << s << ' ' << h << ' ' << d;
      }
}

TEST(QuantizedCache, Float16QueriesInt8Cache) { HalfQueries<Float16, int8_t>(1e-3); }
TEST(QuantizedCache, Float16QueriesFloat8Cache) { HalfQueries<Float16, Float8E4M3>(1e-3); }
TEST(QuantizedCache, BFloat16QueriesInt8Cache) { HalfQueries<BFloat16, int8_t>(8e-3); }
TEST(QuantizedCache, BFloat16QueriesFloat8Cache) { HalfQueries<BFloat16, Float8E4M3>(8e-3); }

}  // namespace
}  // namespace mixattn::test

namespace mixattn::test {
namespace {

// A NaN code (0x7f / 0xff) in a visible fp8 cache row reads as NaN on both ISAs (the v3 row converter goes through
// F16C and patches those codes), so it poisons exactly the heads that attend it.
TEST(QuantizedCache, Float8NanCodesReadAsNan) {
  AttentionShape sh;
  sh.batch = 1;
  sh.seq = 1;
  sh.num_heads = 2;
  sh.kv_num_heads = 2;
  sh.head_dim = 16;
  sh.capacity = 4;
  sh.window = 0;
  sh.scale = 0.25f;
  std::vector<Float8E4M3> ck(2 * 4 * 16, Float8E4M3{0x30}), cv(2 * 4 * 16, Float8E4M3{0x30});
  cv[(0 * 4 + 1) * 16 + 9].bits = 0xff;  // head 0, position 1, channel 9
  std::vector<float> scale{0.5f};
  KvQuant quant{CacheType::kFloat8E4M3, KvScale{scale.data(), ScaleGranularity::kPerTensor},
                KvScale{scale.data(), ScaleGranularity::kPerTensor}};
  std::vector<float> q(2 * 16, 0.1f), out(2 * 16);
  const std::vector<int32_t> past{3};
  for (Isa isa : {Isa::kV3, Isa::kBase}) {
    if (isa == Isa::kV3 && !CpuHasV3()) continue;
    AttendArgs<float, Float8E4M3> a{sh, q.data(), nullptr, nullptr, ck.data(), cv.data(), past.data(), nullptr, out.data(),
                                    quant, 0, {}};
    RunAttend(isa, a, SerialExecutor());
    EXPECT_TRUE(std::isnan(out[9])) << (isa == Isa::kV3 ? "v3" : "base");
    EXPECT_FALSE(std::isnan(out[8]));
    for (int i = 16; i < 32; ++i) EXPECT_FLOAT_EQ(out[i], quant::Float8E4M3ToFloat(0x30) * 0.5f) << i;
  }
}

}  // namespace
}  // namespace mixattn::test
