// ApplyRotary and ValidateRotaryPositions: the op's own rotary (docs/ops.md, "Rotary") against a
// float64 reference written from the formula, for both pair layouts, partial rotary and padding rows.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "../src/cpu/float_convert.h"
#include "mixattention/attention_params.h"

namespace mixattn {
namespace {

struct Case {
  int heads = 3, D = 16, R = 16, M = 40, B = 2, S = 3;
  bool interleaved = false;
};

template <typename T>
void Check(const Case& c) {
  AttentionShape sh;
  sh.batch = c.B;
  sh.seq = c.S;
  sh.num_heads = c.heads;
  sh.kv_num_heads = c.heads;
  sh.head_dim = c.D;
  sh.capacity = 64;
  sh.scale = 1.f;
  const int half = c.R / 2;
  std::vector<T> cos(static_cast<size_t>(c.M) * half), sin(cos.size());
  for (int p = 0; p < c.M; ++p)
    for (int i = 0; i < half; ++i) {
      const double a = p * std::pow(10000.0, -2.0 * i / c.R);
      cos[p * half + i] = cvt::FromFloat<T>(static_cast<float>(std::cos(a)));
      sin[p * half + i] = cvt::FromFloat<T>(static_cast<float>(std::sin(a)));
    }
  const size_t n = static_cast<size_t>(c.B) * c.S * c.heads * c.D;
  std::vector<T> x(n), out(n);
  for (size_t i = 0; i < n; ++i) x[i] = cvt::FromFloat<T>(static_cast<float>(std::sin(0.37 * i + 1.0)));
  const int32_t past[2] = {5, 30};
  const int32_t newl[2] = {c.S, 1};  // sequence 1: one real token, the rest padding (copied unchanged)
  RotaryArgs<T> r{cos.data(), sin.data(), c.R, c.M, c.interleaved};
  ApplyRotary(r, sh, c.heads, x.data(), out.data(), past, newl, SerialExecutor());

  const double tol = sizeof(T) == 4 ? 1e-6 : 1e-2;
  for (int b = 0; b < c.B; ++b)
    for (int s = 0; s < c.S; ++s)
      for (int h = 0; h < c.heads; ++h)
        for (int d = 0; d < c.D; ++d) {
          const size_t base = ((static_cast<size_t>(b) * c.S + s) * c.heads + h) * c.D;
          double want = cvt::ToFloat(x[base + d]);
          if (s < newl[b] && d < c.R) {
            const int pos = past[b] + s;
            const int i = c.interleaved ? d / 2 : d % half;
            const int partner = c.interleaved ? (d ^ 1) : (d < half ? d + half : d - half);
            const bool first = c.interleaved ? d % 2 == 0 : d < half;
            const double cv = cvt::ToFloat(cos[pos * half + i]), sv = cvt::ToFloat(sin[pos * half + i]);
            const double xp = cvt::ToFloat(x[base + partner]);
            want = first ? want * cv - xp * sv : want * cv + xp * sv;
          }
          ASSERT_NEAR(cvt::ToFloat(out[base + d]), want, tol)
              << "b=" << b << " s=" << s << " h=" << h << " d=" << d << " R=" << c.R << " interleaved=" << c.interleaved;
        }
}

TEST(Rotary, HalfSplitPairsMatchFormula) { Check<float>(Case{}); }
TEST(Rotary, InterleavedPairsMatchFormula) { Check<float>(Case{.interleaved = true}); }
TEST(Rotary, PartialRotaryLeavesUpperDimensions) {
  Check<float>(Case{.R = 8});
  Check<float>(Case{.R = 8, .interleaved = true});
}
TEST(Rotary, HalfPrecisionTypes) {
  Check<Float16>(Case{});
  Check<BFloat16>(Case{.interleaved = true});
}

TEST(Rotary, PositionsBeyondTheCachesAreRejected) {
  AttentionShape sh;
  sh.batch = 2;
  sh.seq = 4;
  const int32_t past[2] = {0, 37};
  EXPECT_EQ(ValidateRotaryPositions(OpKind::kOwner, sh, past, nullptr, 41), "");
  const std::string e = ValidateRotaryPositions(OpKind::kReader, sh, past, nullptr, 40);
  EXPECT_NE(e.find("SharedKvAttention"), std::string::npos) << e;
  EXPECT_NE(e.find("sequence 1 reaches position 40"), std::string::npos) << e;
  EXPECT_NE(e.find("'cos_cache'"), std::string::npos) << e;
  const int32_t newl[2] = {4, 3};  // the real tokens of sequence 1 stop at position 39
  EXPECT_EQ(ValidateRotaryPositions(OpKind::kOwner, sh, past, newl, 40), "");
}

}  // namespace
}  // namespace mixattn
