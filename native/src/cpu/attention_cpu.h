// The CPU attention kernel: "attend queries to a cache window, plus (owner) the chunk's own K/V".
//
// Included by one translation unit per instruction set (attention_cpu_v3.cc, attention_cpu_base.cc),
// each defining MIXATTN_ISA_NS, so the same source is compiled for AVX2/FMA/F16C and for baseline
// x86-64 and chosen at run time (attention_cpu.cc). Written for auto-vectorisation at -O3: the hot
// loops are fixed-width, branch-free and over contiguous fp32 rows.
//
// Work split: one task = (sequence b, KV head h, block of kQueryBlock query tokens). A task handles
// all G = Hq/Hkv query heads of its KV head together, so each K/V row is converted/loaded once per
// query token for the whole group. When there are fewer such tasks than threads (decode of a small
// batch), each one's visible keys are also split into ranges (split-K): every range task keeps its own
// running max / sum / output, and a second pass merges them (ChooseKeySplits, MergeOne).
#pragma once

#ifndef MIXATTN_ISA_NS
#error "define MIXATTN_ISA_NS before including attention_cpu.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/float_convert.h"
#include "cpu/key_splits.h"
#include "cpu/quant_convert.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include "mixattention/attention_params.h"

namespace mixattn::MIXATTN_ISA_NS {

inline constexpr int kKeyBlock = 64;    // keys per online-softmax block
inline constexpr int kQueryBlock = 16;  // query tokens per task

// exp(x) for x <= 0 (scores minus the running max), relative error ~2e-7; vectorises (no calls,
// no branches). exp(x) = 2^n * e^r, n = round(x / ln2), |r| <= ln2/2, e^r by a degree-6 polynomial.
inline float ExpNonPositive(float x) {
  x = std::max(x, -87.0f);  // below this the result underflows fp32 normals: treat as ~0
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  const float r = x - n * 0.693145751953125f - n * 1.428606765330187045e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t e = static_cast<int32_t>(n) + 127;
  return p * cvt::BitsToFloat(static_cast<uint32_t>(e) << 23);
}

// Dot product with 32 independent partial sums (4 AVX2 / 2 AVX-512 accumulators).
inline float Dot(const float* a, const float* b, int n) {
  float part[32] = {};
  int d = 0;
  for (; d + 32 <= n; d += 32)
    for (int u = 0; u < 32; ++u) part[u] += a[d + u] * b[d + u];
  float s = 0.f;
  for (; d < n; ++d) s += a[d] * b[d];
  for (int u = 0; u < 32; ++u) s += part[u];
  return s;
}

#if defined(__AVX2__) && defined(__FMA__)
#define MIXATTN_HAVE_AVX2_KERNELS 1
inline float HorizontalSum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

// ExpNonPositive on 8 lanes (same reduction and polynomial). The compiler left the scalar loop over
// a score block unvectorised (perf: ~40% of the decode loop's samples on a 2-vCPU Xeon).
inline __m256 ExpNonPositiveAvx2(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f),
                                    _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x));
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// max(s[0..nb)), nb >= 1.
inline float BlockMaxAvx2(const float* s, int nb) {
  int j = 0;
  float m = s[0];
  if (nb >= 8) {
    __m256 v = _mm256_loadu_ps(s);
    for (j = 8; j + 8 <= nb; j += 8) v = _mm256_max_ps(v, _mm256_loadu_ps(s + j));
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_movehdup_ps(x));
    m = _mm_cvtss_f32(x);
  }
  for (; j < nb; ++j) m = std::max(m, s[j]);
  return m;
}

// s[j] = exp(s[j] - m) for j < nb, returns their sum.
inline float ExpBlockAvx2(float* s, int nb, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= nb; j += 8) {
    const __m256 e = ExpNonPositiveAvx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
    _mm256_storeu_ps(s + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = HorizontalSum(acc);
  for (; j < nb; ++j) {
    s[j] = ExpNonPositive(s[j] - m);
    sum += s[j];
  }
  return sum;
}

// The four horizontal sums of v0..v3 in one register: [sum v0, sum v1, sum v2, sum v3].
inline __m128 HorizontalSum4(__m256 v0, __m256 v1, __m256 v2, __m256 v3) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(v0, v1), _mm256_hadd_ps(v2, v3));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

// Every 64-byte line of one row of D floats into L1.
inline void PrefetchRow(const float* row, int D) {
  for (int c = 0; c < D; c += 16) _mm_prefetch(reinterpret_cast<const char*>(row + c), _MM_HINT_T0);
}

// scores[h * kKeyBlock + j] = scale * q_h . k_j for H query heads (rows at q0 + h*D) and nb keys (rows at
// k + j*stride), D % 8 == 0. H heads and two keys at a time: 2H independent FMA chains, so the loop runs at FMA
// throughput instead of FMA latency (one chain per head took ~2x as long), and each loaded Q vector serves two
// keys. With `prefetch`, K rows 8 keys ahead and this block's V rows (v_prefetch) are prefetched.
template <int H>
inline void ScoresHeadsAvx2(const float* q0, int D, const float* k, int64_t stride, int nb, __m128 sc, float* scores,
                            const float* v_prefetch, bool prefetch) {
  static_assert(H >= 1 && H <= 4);
  for (int j = 0; j < nb; j += 2) {
    const float* k0 = k + j * stride;
    const float* k1 = j + 1 < nb ? k0 + stride : k0;  // an odd last key is scored twice, stored once
    if (prefetch) {
      // Software pipeline for the memory stream: K rows 8 keys ahead, and this block's V rows, which
      // AccumulateAvx2 reads next (prefetches never fault, past the end included).
      PrefetchRow(k0 + 8 * stride, D);
      PrefetchRow(k0 + 9 * stride, D);
      if (v_prefetch != nullptr) {
        PrefetchRow(v_prefetch + j * stride, D);
        PrefetchRow(v_prefetch + (j + 1) * stride, D);
      }
    }
    __m256 a[4][2];  // [head][key], kept in registers (the loops below are fully unrolled)
    for (auto& row : a) row[0] = row[1] = _mm256_setzero_ps();
    for (int d = 0; d < D; d += 8) {
      const __m256 kv0 = _mm256_loadu_ps(k0 + d), kv1 = _mm256_loadu_ps(k1 + d);
      for (int h = 0; h < H; ++h) {
        const __m256 qv = _mm256_loadu_ps(q0 + h * D + d);
        a[h][0] = _mm256_fmadd_ps(qv, kv0, a[h][0]);
        a[h][1] = _mm256_fmadd_ps(qv, kv1, a[h][1]);
      }
    }
    alignas(16) float s0[4], s1[4];
    _mm_store_ps(s0, _mm_mul_ps(HorizontalSum4(a[0][0], a[1][0], a[2][0], a[3][0]), sc));
    _mm_store_ps(s1, _mm_mul_ps(HorizontalSum4(a[0][1], a[1][1], a[2][1], a[3][1]), sc));
    for (int h = 0; h < H; ++h) {
      scores[h * kKeyBlock + j] = s0[h];
      if (j + 1 < nb) scores[h * kKeyBlock + j + 1] = s1[h];
    }
  }
}

// scores[g * kKeyBlock + j] for all G heads: groups of four, then the 1-3 left (G = 3, as in a 6 / 2 head model,
// took 2.3x as long per head as G = 4 with one head at a time).
inline void ScoresAvx2(const float* q, int G, int D, const float* k, int64_t stride, int nb, float scale,
                       float* scores, const float* v_prefetch = nullptr) {
  const __m128 sc = _mm_set1_ps(scale);
  int g = 0;
  for (; g + 4 <= G; g += 4)
    ScoresHeadsAvx2<4>(q + g * D, D, k, stride, nb, sc, scores + g * kKeyBlock, v_prefetch, g == 0);
  switch (G - g) {
    case 3: ScoresHeadsAvx2<3>(q + g * D, D, k, stride, nb, sc, scores + g * kKeyBlock, v_prefetch, g == 0); break;
    case 2: ScoresHeadsAvx2<2>(q + g * D, D, k, stride, nb, sc, scores + g * kKeyBlock, v_prefetch, g == 0); break;
    case 1: ScoresHeadsAvx2<1>(q + g * D, D, k, stride, nb, sc, scores + g * kKeyBlock, v_prefetch, g == 0); break;
    default: break;
  }
}

// acc[h][:] += sum_j p[h][j] * v_j for H heads (p rows kKeyBlock apart, acc rows D apart) and nb value rows,
// D % 8 == 0: 16 dimensions at a time, the 2H accumulators in registers across the key loop (2H independent FMA
// chains, as in ScoresHeadsAvx2), then a trailing 8 dimensions.
template <int H>
inline void AccumulateHeadsAvx2(const float* p0, int D, const float* v, int64_t stride, int nb, float* acc) {
  static_assert(H >= 1 && H <= 4);
  int d = 0;
  for (; d + 16 <= D; d += 16) {
    float* c0 = acc + d;
    __m256 a[H][2];  // [head][8 dims], kept in registers (fully unrolled loops)
    for (int h = 0; h < H; ++h) a[h][0] = _mm256_loadu_ps(c0 + h * D), a[h][1] = _mm256_loadu_ps(c0 + h * D + 8);
    for (int j = 0; j < nb; ++j) {
      const float* vr = v + j * stride + d;
      const __m256 v0 = _mm256_loadu_ps(vr), v1 = _mm256_loadu_ps(vr + 8);
      for (int h = 0; h < H; ++h) {
        const __m256 pj = _mm256_broadcast_ss(p0 + h * kKeyBlock + j);
        a[h][0] = _mm256_fmadd_ps(pj, v0, a[h][0]);
        a[h][1] = _mm256_fmadd_ps(pj, v1, a[h][1]);
      }
    }
    for (int h = 0; h < H; ++h) _mm256_storeu_ps(c0 + h * D, a[h][0]), _mm256_storeu_ps(c0 + h * D + 8, a[h][1]);
  }
  for (; d < D; d += 8) {
    __m256 a[H];
    for (int h = 0; h < H; ++h) a[h] = _mm256_loadu_ps(acc + h * D + d);
    for (int j = 0; j < nb; ++j) {
      const __m256 vv = _mm256_loadu_ps(v + j * stride + d);
      for (int h = 0; h < H; ++h) a[h] = _mm256_fmadd_ps(_mm256_set1_ps(p0[h * kKeyBlock + j]), vv, a[h]);
    }
    for (int h = 0; h < H; ++h) _mm256_storeu_ps(acc + h * D + d, a[h]);
  }
}

// acc[g][:] += sum_j p[g][j] * v_j for all G heads: groups of four, then the 1-3 left.
inline void AccumulateAvx2(const float* p, int G, int D, const float* v, int64_t stride, int nb, float* acc) {
  int g = 0;
  for (; g + 4 <= G; g += 4) AccumulateHeadsAvx2<4>(p + g * kKeyBlock, D, v, stride, nb, acc + g * D);
  switch (G - g) {
    case 3: AccumulateHeadsAvx2<3>(p + g * kKeyBlock, D, v, stride, nb, acc + g * D); break;
    case 2: AccumulateHeadsAvx2<2>(p + g * kKeyBlock, D, v, stride, nb, acc + g * D); break;
    case 1: AccumulateHeadsAvx2<1>(p + g * kKeyBlock, D, v, stride, nb, acc + g * D); break;
    default: break;
  }
}
#endif

// Per-thread scratch, grown on demand and reused across calls.
struct Scratch {
  std::vector<float> q, acc, scores, kbuf, vbuf, m, l;
  std::vector<float> scales;  // quantized caches: [4][D] k scale, v scale, 1/k scale, 1/v scale of one KV head
  void Reserve(int group, int dim) {
    if (scales.size() < 4 * static_cast<size_t>(dim)) scales.resize(4 * static_cast<size_t>(dim));
    const size_t gd = static_cast<size_t>(group) * dim;
    if (q.size() < gd) q.resize(gd), acc.resize(gd);
    if (scores.size() < static_cast<size_t>(group) * kKeyBlock) scores.resize(static_cast<size_t>(group) * kKeyBlock);
    if (kbuf.size() < static_cast<size_t>(kKeyBlock) * dim)
      kbuf.resize(static_cast<size_t>(kKeyBlock) * dim), vbuf.resize(static_cast<size_t>(kKeyBlock) * dim);
    if (m.size() < static_cast<size_t>(group)) m.resize(group), l.resize(group);
  }
};

inline Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// Online-softmax state for the G query heads of one query token.
struct SoftmaxState {
  int group, dim;
  float scale, softcap;
  float* q;       // [G][D] fp32 query rows
  float* acc;     // [G][D] un-normalised output
  float* scores;  // [G][kKeyBlock]
  float* m;       // [G] running max
  float* l;       // [G] running sum
  float* kbuf;    // [kKeyBlock][D] fp32 K block (non-fp32 storage)
  float* vbuf;
};

// Row loaders: fp32 rows for ProcessRun, key rows with value = false, value rows with value = true.
// Rows of the query's type T: converted (fp32 rows are read in place, see ProcessRun).
struct PlainRows {
  template <typename E>
  void operator()(const E* row, float* dst, int D, bool) const {
    cvt::RowToFloat(row, dst, D);
  }
};

// dst[d] = float(src[d]) * scale[d].
inline void DequantizeRow(const int8_t* src, const float* scale, float* dst, int D) {
  int d = 0;
#if defined(__AVX2__)
  for (; d + 8 <= D; d += 8) {
    const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + d))));
    _mm256_storeu_ps(dst + d, _mm256_mul_ps(q, _mm256_loadu_ps(scale + d)));
  }
#endif
  for (; d < D; ++d) dst[d] = static_cast<float>(src[d]) * scale[d];
}

// The 256 E4M3FN values, built once.
inline const float* Float8E4M3Table() {
  static const struct Table {
    float v[256];
    Table() {
      for (int c = 0; c < 256; ++c) v[c] = quant::Float8E4M3ToFloat(static_cast<uint8_t>(c));
    }
  } table;
  return table.v;
}

inline void DequantizeRow(const Float8E4M3* src, const float* scale, float* dst, int D) {
  const float* lut = Float8E4M3Table();
  const uint8_t* b = reinterpret_cast<const uint8_t*>(src);
  int d = 0;
#if defined(__AVX2__) && defined(__F16C__)
  // E4M3FN code c as the fp16 pattern sign<<15 | (c & 0x7f)<<7 is the same value times 2^-8, subnormals included
  // (both formats have 3 mantissa bits; fp16's exponent bias is 8 more): F16C converts 8 at a time (faster than
  // the table gather). Codes 0x7f / 0xff (NaN) would read as 480 that way, so they are patched back to NaN.
  const __m128i mag_mask = _mm_set1_epi16(0x7f), sign_mask = _mm_set1_epi16(0x80);
  const __m256 two8 = _mm256_set1_ps(256.0f), nan = _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN());
  for (; d + 8 <= D; d += 8) {
    const __m128i c = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + d)));
    const __m128i mag = _mm_and_si128(c, mag_mask);
    const __m128i h = _mm_or_si128(_mm_slli_epi16(mag, 7), _mm_slli_epi16(_mm_and_si128(c, sign_mask), 8));
    __m256 x = _mm256_mul_ps(_mm256_cvtph_ps(h), two8);
    const __m256 is_nan = _mm256_castsi256_ps(_mm256_cvtepi16_epi32(_mm_cmpeq_epi16(mag, mag_mask)));
    x = _mm256_blendv_ps(x, nan, is_nan);
    _mm256_storeu_ps(dst + d, _mm256_mul_ps(x, _mm256_loadu_ps(scale + d)));
  }
#endif
  for (; d < D; ++d) dst[d] = lut[b[d]] * scale[d];
}

// Quantized cache rows: dequantized with the KV head's per-channel scale rows.
struct CacheRows {
  const float* k_scale;  // [D]
  const float* v_scale;
  template <typename TCache>
  void operator()(const TCache* row, float* dst, int D, bool value) const {
    DequantizeRow(row, value ? v_scale : k_scale, dst, D);
  }
};

// scale[0..D) (and, with inv, 1/scale) of KV head h for one scale input, whatever its granularity.
inline void ExpandScale(const KvScale& s, int h, int D, float* scale, float* inv) {
  for (int d = 0; d < D; ++d) {
    scale[d] = s.data[s.Index(h, d, D)];
    if (inv != nullptr) inv[d] = quant::Inverse(scale[d]);
  }
}

// Folds `count` consecutive keys (row r at k + r*stride) into the state; load converts rows to fp32.
template <typename E, typename Load = PlainRows>
void ProcessRun(SoftmaxState& st, const E* k, const E* v, int64_t stride, int count, const Load& load = {}) {
  const int G = st.group, D = st.dim;
  for (int j0 = 0; j0 < count; j0 += kKeyBlock) {
    const int nb = std::min(kKeyBlock, count - j0);
    const float* kr;
    const float* vr;
    int64_t rs;
    if constexpr (std::is_same_v<E, float> && std::is_same_v<Load, PlainRows>) {
      kr = k + j0 * stride;
      vr = v + j0 * stride;
      rs = stride;
    } else {
      for (int j = 0; j < nb; ++j) {
        load(k + (j0 + j) * stride, st.kbuf + static_cast<int64_t>(j) * D, D, false);
        load(v + (j0 + j) * stride, st.vbuf + static_cast<int64_t>(j) * D, D, true);
      }
      kr = st.kbuf;
      vr = st.vbuf;
      rs = D;
    }
    // Scores.
#if defined(MIXATTN_HAVE_AVX2_KERNELS)
    const bool vec = D % 8 == 0;
#else
    const bool vec = false;
#endif
    if (vec) {
#if defined(MIXATTN_HAVE_AVX2_KERNELS)
      ScoresAvx2(st.q, G, D, kr, rs, nb, st.scale, st.scores, vr);
#endif
    } else {
      for (int j = 0; j < nb; ++j) {
        const float* krow = kr + j * rs;
        for (int g = 0; g < G; ++g) st.scores[g * kKeyBlock + j] = Dot(st.q + g * D, krow, D) * st.scale;
      }
    }
    if (st.softcap > 0.f) {
      const float inv = 1.0f / st.softcap;
      for (int i = 0; i < G * kKeyBlock; ++i) st.scores[i] = st.softcap * std::tanh(st.scores[i] * inv);
    }
    // Online softmax: one rescale per block.
    for (int g = 0; g < G; ++g) {
      float* s = st.scores + g * kKeyBlock;
      const float m_old = st.m[g];
      float sum = 0.f, m_new;
#if defined(MIXATTN_HAVE_AVX2_KERNELS)
      m_new = std::max(m_old, BlockMaxAvx2(s, nb));
      sum = ExpBlockAvx2(s, nb, m_new);
#else
      float bmax = s[0];
      for (int j = 1; j < nb; ++j) bmax = std::max(bmax, s[j]);
      m_new = std::max(m_old, bmax);
      for (int j = 0; j < nb; ++j) {
        s[j] = ExpNonPositive(s[j] - m_new);
        sum += s[j];
      }
#endif
      if (m_old != -std::numeric_limits<float>::infinity() && m_old != m_new) {
        const float alpha = ExpNonPositive(m_old - m_new);
        float* a = st.acc + g * D;
        for (int d = 0; d < D; ++d) a[d] *= alpha;
        st.l[g] *= alpha;
      }
      st.l[g] += sum;
      st.m[g] = m_new;
    }
    // acc += p . V
    if (vec) {
#if defined(MIXATTN_HAVE_AVX2_KERNELS)
      AccumulateAvx2(st.scores, G, D, vr, rs, nb, st.acc);
#endif
      continue;
    }
    for (int j = 0; j < nb; ++j) {
      const float* vrow = vr + j * rs;
      for (int g = 0; g < G; ++g) {
        const float p = st.scores[g * kKeyBlock + j];
        float* a = st.acc + g * D;
        for (int d = 0; d < D; ++d) a[d] += p * vrow[d];
      }
    }
  }
}

template <typename T, typename TCache>
struct AttendTask {
  const AttendArgs<T, TCache>* args;
  int query_blocks;    // ceil(S / kQueryBlock)
  int block_rows;      // min(S, kQueryBlock): query tokens per block
  int key_splits = 1;  // key ranges per (b, h, query block); > 1: partial states go to `partial`, MergeOne merges
  // key_splits > 1: [B][Hkv][query_blocks][key_splits][block_rows] records of kRecord(G, D) floats:
  // un-normalised output [G][D], running max [G], running sum [G].
  float* partial = nullptr;
  // Quantized caches: the owner's chunk K/V [B, S, Hkv*D] quantized once per call (real rows), attended like cache
  // rows, so a chunk row and the same row read back from the cache dequantize to identical fp32 values.
  const TCache* chunk_key = nullptr;
  const TCache* chunk_value = nullptr;

  static size_t Record(int G, int D) { return static_cast<size_t>(G) * (D + 2); }
};

// Key range `split` of `splits` over [lo, hi): equal parts rounded up to whole key blocks (later ones may be empty).
inline void SplitRange(int64_t lo, int64_t hi, int split, int splits, int64_t* r_lo, int64_t* r_hi) {
  const int64_t per = ((hi - lo + splits - 1) / splits + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
  *r_lo = std::min(hi, lo + per * split);
  *r_hi = std::min(hi, *r_lo + per);
}

template <typename T, typename TCache>
void AttendOne(void* data, size_t index) {
  constexpr bool kQuantized = !std::is_same_v<T, TCache>;
  const auto& task = *static_cast<const AttendTask<T, TCache>*>(data);
  const AttendArgs<T, TCache>& a = *task.args;
  const AttentionShape& sh = a.shape;
  const int G = sh.group(), D = sh.head_dim, Hq = sh.num_heads, Hkv = sh.kv_num_heads, S = sh.seq;
  const int64_t C = sh.capacity;
  const int splits = task.key_splits;
  const int split = static_cast<int>(index % splits);
  const size_t unit = index / splits;  // (b, h, qb)
  const int qb = static_cast<int>(unit % task.query_blocks);
  const int h = static_cast<int>((unit / task.query_blocks) % Hkv);
  const int b = static_cast<int>(unit / task.query_blocks / Hkv);
  const int64_t past = a.past_lengths[b];
  const int n_new = a.new_lengths ? a.new_lengths[b] : S;

  Scratch& scratch = ThreadScratch();
  scratch.Reserve(G, D);
  SoftmaxState st{G, D, sh.scale, sh.softcap, scratch.q.data(), scratch.acc.data(), scratch.scores.data(),
                  scratch.m.data(), scratch.l.data(), scratch.kbuf.data(), scratch.vbuf.data()};

  const int64_t cache_row0 = a.paged.paged() ? 0 : (static_cast<int64_t>(b) * Hkv + h) * C * D;  // [b, h, 0, 0]
  const TCache* kc = a.key_cache + cache_row0;
  const TCache* vc = a.value_cache + cache_row0;
  // Quantized caches: this KV head's scales, expanded to one per channel.
  float* const ks = scratch.scales.data();
  float* const vs = ks + D;
  if constexpr (kQuantized) {
    ExpandScale(a.quant.k, h, D, ks, nullptr);
    ExpandScale(a.quant.v, h, D, vs, nullptr);
  }
  const auto cache_rows = [&] {
    if constexpr (kQuantized) return CacheRows{ks, vs};
    else return PlainRows{};
  }();

  const bool has_chunk = a.chunk_key != nullptr;
  const size_t record = AttendTask<T, TCache>::Record(G, D);

  const int s_end = std::min(S, (qb + 1) * kQueryBlock);
  for (int s = qb * kQueryBlock; s < s_end; ++s) {
    T* out = a.output + (static_cast<int64_t>(b) * S + s) * Hq * D + static_cast<int64_t>(h) * G * D;
    if (s >= n_new) {  // right padding: zeros (written by MergeOne when split)
      if (splits == 1) std::memset(static_cast<void*>(out), 0, sizeof(T) * G * D);
      continue;
    }
    const int64_t p = past + s;
    const int64_t lo = sh.window > 0 ? std::max<int64_t>(0, p - sh.window + 1) : 0;
    const int64_t hi = p + 1;  // exclusive
    // This task's part of the visible positions [lo, hi).
    int64_t r_lo = lo, r_hi = hi;
    if (splits > 1) SplitRange(lo, hi, split, splits, &r_lo, &r_hi);

    std::fill(st.acc, st.acc + G * D, 0.f);
    std::fill(st.m, st.m + G, -std::numeric_limits<float>::infinity());
    std::fill(st.l, st.l + G, 0.f);
    if (r_hi > r_lo) {
      const T* q = a.query + (static_cast<int64_t>(b) * S + s) * Hq * D + static_cast<int64_t>(h) * G * D;
      for (int g = 0; g < G; ++g) cvt::RowToFloat(q + g * D, st.q + g * D, D);
      // Cache part: positions [r_lo, cache_hi), slot = pos mod C; wraps at most once (length <= C).
      const int64_t cache_hi = has_chunk ? std::min(r_hi, past) : r_hi;
      if (a.paged.paged()) {
        // Paged pool [num_blocks, Hkv, bs, D]: one run per block, rows contiguous inside a block.
        const int64_t bs = a.paged.block_size;
        for (int64_t p0 = r_lo; p0 < cache_hi;) {
          const int64_t row = p0 % bs;
          const int64_t n = std::min(bs - row, cache_hi - p0);
          const int64_t off = ((a.paged.BlockOf(b, p0) * Hkv + h) * bs + row) * D;
          ProcessRun(st, a.key_cache + off, a.value_cache + off, D, static_cast<int>(n), cache_rows);
          p0 += n;
        }
      } else if (cache_hi > r_lo) {
        const int64_t len = cache_hi - r_lo;
        const int64_t slot = r_lo % C;
        const int64_t n1 = std::min(len, C - slot);
        ProcessRun(st, kc + slot * D, vc + slot * D, D, static_cast<int>(n1), cache_rows);
        if (len > n1) ProcessRun(st, kc, vc, D, static_cast<int>(len - n1), cache_rows);
      }
      // Chunk part: positions [max(r_lo, past), r_hi) = chunk rows [.. - past].
      if (has_chunk) {
        const int64_t c0 = std::max(r_lo, past) - past;
        const int64_t c1 = r_hi - past;
        if (c1 > c0) {
          const int64_t row_stride = static_cast<int64_t>(Hkv) * D;
          const int64_t off = (static_cast<int64_t>(b) * S + c0) * row_stride + static_cast<int64_t>(h) * D;
          if constexpr (kQuantized)
            ProcessRun(st, task.chunk_key + off, task.chunk_value + off, row_stride, static_cast<int>(c1 - c0),
                       cache_rows);
          else
            ProcessRun(st, a.chunk_key + off, a.chunk_value + off, row_stride, static_cast<int>(c1 - c0));
        }
      }
    }
    if (splits == 1) {
      for (int g = 0; g < G; ++g) cvt::RowFromFloat(st.acc + g * D, 1.0f / st.l[g], out + g * D, D);
    } else {
      float* rec = task.partial + ((unit * splits + split) * task.block_rows + (s - qb * kQueryBlock)) * record;
      std::memcpy(rec, st.acc, sizeof(float) * G * D);
      std::memcpy(rec + G * D, st.m, sizeof(float) * G);
      std::memcpy(rec + G * D + G, st.l, sizeof(float) * G);
    }
  }
}

// key_splits > 1: merges the partial states of unit (b, h, query block) = index into the output:
// out = sum_k e^(m_k - M) acc_k / sum_k e^(m_k - M) l_k, M = max_k m_k over the non-empty ranges.
template <typename T, typename TCache>
void MergeOne(void* data, size_t unit) {
  const auto& task = *static_cast<const AttendTask<T, TCache>*>(data);
  const AttendArgs<T, TCache>& a = *task.args;
  const AttentionShape& sh = a.shape;
  const int G = sh.group(), D = sh.head_dim, Hq = sh.num_heads, Hkv = sh.kv_num_heads, S = sh.seq;
  const int splits = task.key_splits;
  const int qb = static_cast<int>(unit % task.query_blocks);
  const int h = static_cast<int>((unit / task.query_blocks) % Hkv);
  const int b = static_cast<int>(unit / task.query_blocks / Hkv);
  const int n_new = a.new_lengths ? a.new_lengths[b] : S;
  const size_t record = AttendTask<T, TCache>::Record(G, D);
  Scratch& scratch = ThreadScratch();
  scratch.Reserve(G, D);
  float* const acc = scratch.acc.data();

  const int s_end = std::min(S, (qb + 1) * kQueryBlock);
  for (int s = qb * kQueryBlock; s < s_end; ++s) {
    T* out = a.output + (static_cast<int64_t>(b) * S + s) * Hq * D + static_cast<int64_t>(h) * G * D;
    if (s >= n_new) {
      std::memset(static_cast<void*>(out), 0, sizeof(T) * G * D);
      continue;
    }
    const float* first = task.partial + (unit * splits * task.block_rows + (s - qb * kQueryBlock)) * record;
    const size_t split_stride = static_cast<size_t>(task.block_rows) * record;
    for (int g = 0; g < G; ++g) {
      float m_max = -std::numeric_limits<float>::infinity();
      for (int k = 0; k < splits; ++k) {
        const float* rec = first + k * split_stride;
        if (rec[G * D + G + g] > 0.f) m_max = std::max(m_max, rec[G * D + g]);
      }
      float* o = acc + g * D;
      std::fill(o, o + D, 0.f);
      float l = 0.f;
      for (int k = 0; k < splits; ++k) {
        const float* rec = first + k * split_stride;
        const float l_k = rec[G * D + G + g];
        if (!(l_k > 0.f)) continue;  // empty range
        const float w = ExpNonPositive(rec[G * D + g] - m_max);
        const float* acc_k = rec + g * D;
        for (int d = 0; d < D; ++d) o[d] += w * acc_k[d];
        l += w * l_k;
      }
      cvt::RowFromFloat(o, 1.0f / l, out + g * D, D);
    }
  }
}

// Quantizes the real rows s < N_b of (sequence b, KV head h) = index of the chunk K/V into task.chunk_key/value.
template <typename T, typename TCache>
void QuantizeChunkOne(void* data, size_t index) {
  auto& task = *static_cast<AttendTask<T, TCache>*>(data);
  const AttendArgs<T, TCache>& a = *task.args;
  const AttentionShape& sh = a.shape;
  const int Hkv = sh.kv_num_heads, D = sh.head_dim, S = sh.seq;
  const int h = static_cast<int>(index % Hkv), b = static_cast<int>(index / Hkv);
  const int n_new = a.new_lengths ? a.new_lengths[b] : S;
  Scratch& scratch = ThreadScratch();
  scratch.Reserve(1, D);
  float* const unused = scratch.scales.data();
  float* const kinv = unused + D;
  float* const vinv = kinv + D;
  float* const x = vinv + D;
  ExpandScale(a.quant.k, h, D, unused, kinv);
  ExpandScale(a.quant.v, h, D, unused, vinv);
  TCache* qk = const_cast<TCache*>(task.chunk_key);
  TCache* qv = const_cast<TCache*>(task.chunk_value);
  for (int s = 0; s < n_new; ++s) {
    const int64_t off = (static_cast<int64_t>(b) * S + s) * Hkv * D + static_cast<int64_t>(h) * D;
    cvt::RowToFloat(a.chunk_key + off, x, D);
    for (int d = 0; d < D; ++d) qk[off + d] = quant::Quantize<TCache>(x[d], kinv[d]);
    cvt::RowToFloat(a.chunk_value + off, x, D);
    for (int d = 0; d < D; ++d) qv[off + d] = quant::Quantize<TCache>(x[d], vinv[d]);
  }
}

template <typename T, typename TCache>
void AttendImpl(const AttendArgs<T, TCache>& args, const Executor& executor) {
  const AttentionShape& sh = args.shape;
  AttendTask<T, TCache> task{&args, (sh.seq + kQueryBlock - 1) / kQueryBlock, std::min(sh.seq, kQueryBlock)};
  std::vector<TCache> chunk_k, chunk_v;
  if constexpr (!std::is_same_v<T, TCache>) {
    if (args.chunk_key != nullptr) {
      const size_t n = static_cast<size_t>(sh.batch) * sh.seq * sh.kv_num_heads * sh.head_dim;
      chunk_k.resize(n);
      chunk_v.resize(n);
      task.chunk_key = chunk_k.data();
      task.chunk_value = chunk_v.data();
      executor.ParallelFor(static_cast<size_t>(sh.batch) * sh.kv_num_heads, &QuantizeChunkOne<T, TCache>, &task);
    }
  }
  const size_t units = static_cast<size_t>(sh.batch) * sh.kv_num_heads * task.query_blocks;
  task.key_splits = args.key_splits;
  if (task.key_splits <= 0) {
    int64_t keys = 0;  // the longest visible range of a last real token
    for (int b = 0; b < sh.batch; ++b) {
      const int64_t n = args.new_lengths ? args.new_lengths[b] : sh.seq;
      const int64_t visible = args.past_lengths[b] + n;
      keys = std::max(keys, sh.window > 0 ? std::min<int64_t>(visible, sh.window) : visible);
    }
    task.key_splits = ChooseKeySplits(units, executor.Concurrency(), keys);
  }
  if (task.key_splits == 1) {
    executor.ParallelFor(units, &AttendOne<T, TCache>, &task);
    return;
  }
  // Partial states, reused across calls on this thread (the op's calling thread).
  thread_local std::vector<float> partial;
  const size_t need = units * task.key_splits * task.block_rows * AttendTask<T, TCache>::Record(sh.group(), sh.head_dim);
  if (partial.size() < need) partial.resize(need);
  task.partial = partial.data();
  executor.ParallelFor(units * task.key_splits, &AttendOne<T, TCache>, &task);
  executor.ParallelFor(units, &MergeOne<T, TCache>, &task);
}

template <typename T, typename TCache>
void WriteOne(void* data, size_t index) {
  constexpr bool kQuantized = !std::is_same_v<T, TCache>;
  const CacheWriteArgs<T, TCache>& a = *static_cast<const CacheWriteArgs<T, TCache>*>(data);
  const AttentionShape& sh = a.shape;
  const int Hkv = sh.kv_num_heads, D = sh.head_dim, S = sh.seq;
  const int64_t C = sh.capacity;
  const int h = static_cast<int>(index % Hkv);
  const int b = static_cast<int>(index / Hkv);
  const bool paged = a.paged.paged();
  const int64_t row0 = paged ? 0 : (static_cast<int64_t>(b) * Hkv + h) * C * D;
  if (!paged) {  // paged: the whole pool was copied first (CopyPoolBlock)
    if (a.present_key != a.past_key) std::memcpy(a.present_key + row0, a.past_key + row0, sizeof(TCache) * C * D);
    if (a.present_value != a.past_value)
      std::memcpy(a.present_value + row0, a.past_value + row0, sizeof(TCache) * C * D);
  }
  const int64_t past = a.past_lengths[b];
  const int n_new = a.new_lengths ? a.new_lengths[b] : S;
  const int first = static_cast<int>(std::max<int64_t>(0, n_new - C));  // earlier ones would be overwritten
  const int64_t row_stride = static_cast<int64_t>(Hkv) * D;
  float* kinv = nullptr;
  float* vinv = nullptr;
  float* xrow = nullptr;
  if constexpr (kQuantized) {
    Scratch& scratch = ThreadScratch();
    scratch.Reserve(1, D);
    kinv = scratch.scales.data();
    vinv = kinv + D;
    xrow = vinv + D;  // one fp32 row
    float* unused = xrow + D;
    ExpandScale(a.quant.k, h, D, unused, kinv);
    ExpandScale(a.quant.v, h, D, unused, vinv);
  }
  const int64_t bs = a.paged.block_size;
  for (int s = first; s < n_new; ++s) {
    const int64_t src = (static_cast<int64_t>(b) * S + s) * row_stride + static_cast<int64_t>(h) * D;
    int64_t dst;
    if (paged) {  // global: position past + s in block table[b, pos / bs], row pos % bs (first == 0: no wrap)
      const int64_t pos = past + s;
      dst = ((a.paged.BlockOf(b, pos) * Hkv + h) * bs + pos % bs) * D;
    } else {
      dst = row0 + ((past + s) % C) * D;
    }
    TCache* kd = a.present_key + dst;
    TCache* vd = a.present_value + dst;
    if constexpr (kQuantized) {  // quantize while appending
      cvt::RowToFloat(a.chunk_key + src, xrow, D);
      for (int d = 0; d < D; ++d) kd[d] = quant::Quantize<TCache>(xrow[d], kinv[d]);
      cvt::RowToFloat(a.chunk_value + src, xrow, D);
      for (int d = 0; d < D; ++d) vd[d] = quant::Quantize<TCache>(xrow[d], vinv[d]);
    } else {
      std::memcpy(kd, a.chunk_key + src, sizeof(T) * D);
      std::memcpy(vd, a.chunk_value + src, sizeof(T) * D);
    }
  }
}

// Paged, present != past: copies pool block `index` (all KV heads) before any row is appended.
template <typename T, typename TCache>
void CopyPoolBlock(void* data, size_t index) {
  const CacheWriteArgs<T, TCache>& a = *static_cast<const CacheWriteArgs<T, TCache>*>(data);
  const size_t n = static_cast<size_t>(a.shape.kv_num_heads) * a.paged.block_size * a.shape.head_dim;
  const size_t off = index * n;
  if (a.present_key != a.past_key) std::memcpy(a.present_key + off, a.past_key + off, sizeof(TCache) * n);
  if (a.present_value != a.past_value) std::memcpy(a.present_value + off, a.past_value + off, sizeof(TCache) * n);
}

template <typename T, typename TCache>
void WriteChunkImpl(const CacheWriteArgs<T, TCache>& args, const Executor& executor) {
  if (args.paged.paged() && (args.present_key != args.past_key || args.present_value != args.past_value))
    executor.ParallelFor(static_cast<size_t>(args.paged.num_blocks), &CopyPoolBlock<T, TCache>,
                         const_cast<CacheWriteArgs<T, TCache>*>(&args));
  const size_t tasks = static_cast<size_t>(args.shape.batch) * args.shape.kv_num_heads;
  executor.ParallelFor(tasks, &WriteOne<T, TCache>, const_cast<CacheWriteArgs<T, TCache>*>(&args));
}

}  // namespace mixattn::MIXATTN_ISA_NS
