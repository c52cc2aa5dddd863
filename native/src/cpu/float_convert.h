// fp16 / bf16 <-> fp32 conversions. Scalar versions are bit-exact IEEE (round to nearest even);
// the row converters use F16C when the translation unit is compiled with it.
#pragma once

#include <cstdint>
#include <cstring>

#include "mixattention/attention_params.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace mixattn::cvt {

inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint32_t FloatToBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return BitsToFloat(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp == 0) {
    if (mant == 0) return BitsToFloat(sign);
    // subnormal: value = mant * 2^-24
    float v = static_cast<float>(mant) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  return BitsToFloat(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline uint16_t FloatToHalf(float f) {
  const uint32_t x = FloatToBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520 -> inf
  if (ax < 0x38800000u) {                                                // subnormal or zero in fp16
    // value / 2^-24, rounded to nearest even by the fp32 adder.
    const float v = BitsToFloat(ax) + 0.5f;  // 0.5 = 2^-1: aligns the fp16 subnormal LSB at bit 0
    return static_cast<uint16_t>(sign | (FloatToBits(v) - 0x3f000000u));
  }
  const uint32_t mant_odd = (ax >> 13) & 1u;
  const uint32_t r = ax + 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round
  return static_cast<uint16_t>(sign | (r >> 13));
}

inline float BF16ToFloat(uint16_t b) { return BitsToFloat(static_cast<uint32_t>(b) << 16); }

inline uint16_t FloatToBF16(float f) {
  const uint32_t x = FloatToBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet nan
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float ToFloat(float v) { return v; }
inline float ToFloat(Float16 v) { return HalfToFloat(v.bits); }
inline float ToFloat(BFloat16 v) { return BF16ToFloat(v.bits); }

template <typename T>
inline T FromFloat(float v);
template <>
inline float FromFloat<float>(float v) {
  return v;
}
template <>
inline Float16 FromFloat<Float16>(float v) {
  return Float16{FloatToHalf(v)};
}
template <>
inline BFloat16 FromFloat<BFloat16>(float v) {
  return BFloat16{FloatToBF16(v)};
}

// dst[i] = float(src[i]), i < n.
inline void RowToFloat(const float* src, float* dst, int n) { std::memcpy(dst, src, sizeof(float) * n); }
inline void RowToFloat(const Float16* src, float* dst, int n) {
  int i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
  for (; i < n; ++i) dst[i] = HalfToFloat(src[i].bits);
}
inline void RowToFloat(const BFloat16* src, float* dst, int n) {
  for (int i = 0; i < n; ++i) dst[i] = BitsToFloat(static_cast<uint32_t>(src[i].bits) << 16);
}

// dst[i] = T(src[i] * mul), i < n.
inline void RowFromFloat(const float* src, float mul, float* dst, int n) {
  for (int i = 0; i < n; ++i) dst[i] = src[i] * mul;
}
inline void RowFromFloat(const float* src, float mul, Float16* dst, int n) {
  int i = 0;
#if defined(__F16C__)
  const __m256 m = _mm256_set1_ps(mul);
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(src + i), m), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; ++i) dst[i].bits = FloatToHalf(src[i] * mul);
}
inline void RowFromFloat(const float* src, float mul, BFloat16* dst, int n) {
  for (int i = 0; i < n; ++i) dst[i].bits = FloatToBF16(src[i] * mul);
}

}  // namespace mixattn::cvt
