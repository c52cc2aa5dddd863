// Scalar reference of the quantized-cache arithmetic (docs/ops.md, "Quantized caches"); ORT GroupQueryAttention's
// convention: q = saturate(round_half_even(x * (1.0f / scale))), x' = float(q) * scale. Host code only; kernels and
// tests use these, so every backend can be checked against the same bytes.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu/float_convert.h"
#include "mixattention/attention_params.h"
#include "mixattention/op_spec.h"

namespace mixattn::quant {

// round(v) half to even, saturated to [-128, 127]; NaN -> 127 (ORT: min(127, NaN) = 127).
inline int8_t Int8FromScaled(float v) {
  if (!(v < spec::kInt8Max)) return 127;  // NaN and >= 127
  if (v <= spec::kInt8Min) return -128;
  return static_cast<int8_t>(static_cast<int>(std::nearbyint(v)));  // default rounding mode: half to even
}

// The E4M3FN code nearest to v (ties to even), v saturated to [-448, 448]; NaN -> 448 (0x7e).
inline uint8_t Float8E4M3FromScaled(float v) {
  if (!(v < spec::kFloat8E4M3Max)) {
    if (v != v) return 0x7e;  // NaN
    return 0x7e;              // >= 448
  }
  if (v <= -spec::kFloat8E4M3Max) return 0xfe;
  const uint32_t bits = cvt::FloatToBits(v);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const float a = std::fabs(v);
  if (a < 0.015625f) {  // below 2^-6: subnormal m * 2^-9, m in [0, 8] (8 = the smallest normal, code 8)
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f)));
  }
  // Normal: keep 3 mantissa bits, round to nearest even on the fp32 bit pattern (a carry bumps the exponent).
  uint32_t ab = bits & 0x7fffffffu;
  ab += 0x7ffffu + ((ab >> 20) & 1u);
  const uint32_t exp = (ab >> 23) - 127 + 7;  // 1 .. 15 (a <= 448 = 1.75 * 2^8 cannot round past 448)
  const uint32_t mant = (ab >> 20) & 7u;
  return static_cast<uint8_t>(sign | (exp << 3) | mant);
}

// The exact value of an E4M3FN code (0x7f / 0xff are NaN).
inline float Float8E4M3ToFloat(uint8_t c) {
  const uint32_t e = (c >> 3) & 15u, m = c & 7u;
  float a;
  if (e == 15 && m == 7) {
    a = std::nanf("");
  } else if (e == 0) {
    a = static_cast<float>(m) * (1.0f / 512.0f);
  } else {
    a = cvt::BitsToFloat(((e - 7 + 127) << 23) | (m << 20));
  }
  return (c & 0x80u) ? -a : a;
}

// 1 / scale, computed once per scale (ORT multiplies by the fp32 reciprocal; it does not divide).
inline float Inverse(float scale) { return 1.0f / scale; }

template <typename TCache>
inline TCache Quantize(float x, float inv_scale);
template <>
inline int8_t Quantize<int8_t>(float x, float inv_scale) {
  return Int8FromScaled(x * inv_scale);
}
template <>
inline Float8E4M3 Quantize<Float8E4M3>(float x, float inv_scale) {
  return Float8E4M3{Float8E4M3FromScaled(x * inv_scale)};
}

inline float Dequantize(int8_t q, float scale) { return static_cast<float>(q) * scale; }
inline float Dequantize(Float8E4M3 q, float scale) { return Float8E4M3ToFloat(q.bits) * scale; }

}  // namespace mixattn::quant
