// fp16 / bf16 conversions against the compiler's _Float16 / exhaustive round trips.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "cpu/float_convert.h"

namespace mixattn::cvt {
namespace {

TEST(FloatConvert, HalfRoundTripIsExactForEveryHalf) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToHalf(f), h) << std::hex << h;
  }
}

TEST(FloatConvert, FloatToHalfRoundsToNearestEven) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    float f = BitsToFloat(bits(rng));
    if (std::isnan(f)) continue;
    if (i % 2) f = std::ldexp(std::fmod(f, 1.0f), static_cast<int>(rng() % 40) - 30);  // mostly in range
    const _Float16 expect = static_cast<_Float16>(f);
    uint16_t eb;
    std::memcpy(&eb, &expect, 2);
    ASSERT_EQ(FloatToHalf(f), eb) << f;
    ASSERT_EQ(HalfToFloat(eb), static_cast<float>(expect));
  }
}

TEST(FloatConvert, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBF16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBF16(BitsToFloat(0x3f808000u)), 0x3f80);  // tie -> even
  EXPECT_EQ(FloatToBF16(BitsToFloat(0x3f818000u)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(FloatToBF16(BitsToFloat(0x3f808001u)), 0x3f81);
  EXPECT_EQ(BF16ToFloat(0xc040), -3.0f);
}

TEST(FloatConvert, RowConvertersMatchScalar) {
  std::vector<Float16> h(37);
  std::vector<float> f(37), back(37);
  for (int i = 0; i < 37; ++i) f[i] = 0.37f * static_cast<float>(i) - 5.0f;
  RowFromFloat(f.data(), 2.0f, h.data(), 37);
  RowToFloat(h.data(), back.data(), 37);
  for (int i = 0; i < 37; ++i) {
    EXPECT_EQ(h[i].bits, FloatToHalf(f[i] * 2.0f));
    EXPECT_EQ(back[i], HalfToFloat(h[i].bits));
  }
}

}  // namespace
}  // namespace mixattn::cvt
