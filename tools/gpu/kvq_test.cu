// GoogleTests of the quantized-cache CUDA paths (int8 / fp8 E4M3 caches, docs/ops.md "Quantized caches"), on the
// kernels directly (Plan + Launch from native/src/cuda, no ONNX Runtime), built by tools/gpu/CMakeLists.txt and run
// by tools/gpu/run.sh check:
//
//   kvq_test [gtest flags]
//
// Every case runs one call twice on the same inputs:
//   quantized: caches of codes + k_scale / v_scale, the owner's present bound in place;
//   reference: the fp path of the same query type on the same quantization — caches dequantized on the host
//              (code * scale, rounded to T) and the chunk's K / V as dequantize(quantize(x)) (rotated first on the
//              host when the op rotates), no rotary inside the op.
// Outputs must agree up to T's rounding, and the quantized present caches must hold exactly the host reference's
// codes (native/src/cpu/quant_convert.h, the CPU op's arithmetic) — new rows in their slots, every other byte kept.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/attention_cuda.h"
#include "kernel_test_util.h"

using namespace mixattn;
using namespace mixattn::cuda;
using namespace mixattn::cuda::test;

namespace {

#define CKT(x) ASSERT_EQ((x), cudaSuccess) << #x

struct QCase {
  DType dtype;
  CacheDType cache;
  int D;
  int k_mode, v_mode;  // ScaleMode
  int window;          // 0 global (C = 512), else a ring of C = W
  int S;               // 1 decode, > 1 prefill
  bool reader;         // SharedKvAttention form (no chunk, no present)
  bool rotary;
  int tuning;          // 0 auto, 1 cluster merge off, 2 cluster off + CombineKernel, 3 SIMT kernel
  std::string name() const {
    std::string n = dtype == DType::kFloat16 ? "f16" : dtype == DType::kBFloat16 ? "bf16" : "f32";
    n += cache == CacheDType::kInt8 ? "_i8" : "_f8";
    n += "_D" + std::to_string(D) + "_k" + std::to_string(k_mode) + "v" + std::to_string(v_mode);
    n += window ? "_W" + std::to_string(window) : "_global";
    n += S == 1 ? "_decode" : "_prefill" + std::to_string(S);
    if (reader) n += "_reader";
    if (rotary) n += "_rotary";
    if (tuning) n += "_t" + std::to_string(tuning);
    return n;
  }
};

class Quantized : public ::testing::TestWithParam<QCase> {};

TEST_P(Quantized, MatchesTheFpPathOnTheSameQuantization) {
  const QCase c = GetParam();
  const int B = 2, Hq = 8, Hkv = 2, D = c.D, S = c.S;
  const int C = c.window ? c.window : 512;
  const int P[B] = {c.window ? 300 : 300, 150};
  const int N[B] = {S, std::max(1, S - 5)};
  const DType T = c.dtype;
  std::mt19937 rng(77 + D + S);
  std::uniform_real_distribution<float> u(-1.f, 1.f), us(0.5f, 1.5f);
  const float base = c.cache == CacheDType::kInt8 ? 3.f / 127.f : 3.f / 448.f;

  // Scales per their mode (ScaleMode 0 [1], 1 [Hkv], 2 [Hkv * D]).
  auto scales = [&](int mode) {
    std::vector<float> s(mode == 0 ? 1 : mode == 1 ? Hkv : Hkv * D);
    for (float& x : s) x = base * us(rng);
    return s;
  };
  const std::vector<float> ks = scales(c.k_mode), vs = scales(c.v_mode);
  auto sk = [&](int h, int d) { return ks[c.k_mode == 0 ? 0 : c.k_mode == 1 ? h : h * D + d]; };
  auto sv = [&](int h, int d) { return vs[c.v_mode == 0 ? 0 : c.v_mode == 1 ? h : h * D + d]; };

  const size_t cache_elems = size_t{1} * B * Hkv * C * D, q_elems = size_t{1} * B * S * Hq * D,
               kv_elems = size_t{1} * B * S * Hkv * D;
  std::vector<uint8_t> kc(cache_elems), vc(cache_elems);
  for (size_t i = 0; i < cache_elems; ++i) {
    const int d = static_cast<int>(i % D), h = static_cast<int>((i / D / C) % Hkv);
    kc[i] = Quantize(c.cache, 2.5f * u(rng), sk(h, d));
    vc[i] = Quantize(c.cache, 2.5f * u(rng), sv(h, d));
  }
  std::vector<uint8_t> q(q_elems * Bytes(T)), k(kv_elems * Bytes(T)), v(kv_elems * Bytes(T));
  for (size_t i = 0; i < q_elems; ++i) Store(T, q, i, u(rng));
  for (size_t i = 0; i < kv_elems; ++i) Store(T, k, i, 2.f * u(rng)), Store(T, v, i, 2.f * u(rng));

  // Rotary (R = D, half-split pairs): cos / sin of position x frequency, rounded to T.
  const int M = 512;
  std::vector<uint8_t> cosr, sinr;
  RotaryTables(T, M, D, cosr, sinr);
  // x [rows of D] rotated at position pos (fp32 products, explicit order as the kernels), rounded to T.
  auto rotate = [&](std::vector<uint8_t>& x, size_t row, int pos) {
    std::vector<float> in(D);
    for (int d = 0; d < D; ++d) in[d] = Load(T, x, row * D + d);
    for (int d = 0; d < D; ++d) {
      const bool first = d < D / 2;
      const int i = first ? d : d - D / 2, partner = first ? d + D / 2 : d - D / 2;
      const float cs = Load(T, cosr, size_t(pos) * D / 2 + i), sn = Load(T, sinr, size_t(pos) * D / 2 + i);
      const volatile float a = in[d] * cs, b = in[partner] * sn;
      Store(T, x, row * D + d, first ? a - b : a + b);
    }
  };

  // Reference inputs: rotated query / keys (when rotary), the chunk as the cache will hold it, dequantized caches.
  std::vector<uint8_t> q_ref = q, k_rot = k, k_ref(k.size()), v_ref(v.size());
  if (c.rotary)
    for (int b = 0; b < B; ++b)
      for (int s = 0; s < S; ++s) {
        for (int h = 0; h < Hq; ++h) rotate(q_ref, (size_t(b) * S + s) * Hq + h, P[b] + s);
        if (!c.reader)
          for (int h = 0; h < Hkv; ++h) rotate(k_rot, (size_t(b) * S + s) * Hkv + h, P[b] + s);
      }
  for (size_t i = 0; i < kv_elems; ++i) {
    const int d = static_cast<int>(i % D), h = static_cast<int>((i / D) % Hkv);
    Store(T, k_ref, i, Dequantize(c.cache, Quantize(c.cache, Load(T, k_rot, i), sk(h, d)), sk(h, d)));
    Store(T, v_ref, i, Dequantize(c.cache, Quantize(c.cache, Load(T, v, i), sv(h, d)), sv(h, d)));
  }
  std::vector<uint8_t> kc_ref(cache_elems * Bytes(T)), vc_ref(cache_elems * Bytes(T));
  for (size_t i = 0; i < cache_elems; ++i) {
    const int d = static_cast<int>(i % D), h = static_cast<int>((i / D / C) % Hkv);
    Store(T, kc_ref, i, Dequantize(c.cache, kc[i], sk(h, d)));
    Store(T, vc_ref, i, Dequantize(c.cache, vc[i], sv(h, d)));
  }
  // The reader form reads keys >= P from the cache: it must hold the step's rows (as the owner wrote them).
  std::vector<uint8_t> kc_expect = kc, vc_expect = vc;
  for (int b = 0; b < B; ++b)
    for (int s = 0; s < N[b]; ++s) {
      if (s < N[b] - C) continue;
      const int slot = (P[b] + s) % C;
      for (int h = 0; h < Hkv; ++h)
        for (int d = 0; d < D; ++d) {
          const size_t src = ((size_t(b) * S + s) * Hkv + h) * D + d, dst = ((size_t(b) * Hkv + h) * C + slot) * D + d;
          kc_expect[dst] = Quantize(c.cache, Load(T, k_rot, src), sk(h, d));
          vc_expect[dst] = Quantize(c.cache, Load(T, v, src), sv(h, d));
        }
    }
  if (c.reader) {
    kc = kc_expect;
    vc = vc_expect;
    for (size_t i = 0; i < cache_elems; ++i) {
      const int d = static_cast<int>(i % D), h = static_cast<int>((i / D / C) % Hkv);
      Store(T, kc_ref, i, Dequantize(c.cache, kc[i], sk(h, d)));
      Store(T, vc_ref, i, Dequantize(c.cache, vc[i], sv(h, d)));
    }
  }

  std::vector<int32_t> past(P, P + B), newl(N, N + B);
  Device d_q(q.data(), q.size()), d_qref(q_ref.data(), q_ref.size()), d_k(k.data(), k.size()), d_v(v.data(), v.size()),
      d_kref(k_ref.data(), k_ref.size()), d_vref(v_ref.data(), v_ref.size()), d_kc(kc.data(), kc.size()),
      d_vc(vc.data(), vc.size()), d_kcref(kc_ref.data(), kc_ref.size()), d_vcref(vc_ref.data(), vc_ref.size()),
      d_past(past.data(), B * 4), d_new(newl.data(), B * 4), d_ks(ks.data(), ks.size() * 4),
      d_vs(vs.data(), vs.size() * 4), d_cos(cosr.data(), cosr.size()), d_sin(sinr.data(), sinr.size()),
      d_out(q.size()), d_outref(q.size());
  CKT(cudaMemset(d_out.p, 0, q.size()));
  CKT(cudaMemset(d_outref.p, 0, q.size()));

  CudaAttendArgs a;
  a.shape = Shape(B, S, Hq, Hkv, D, C, c.window);
  a.dtype = T;
  a.past_lengths = static_cast<const int32_t*>(d_past.p);
  a.new_lengths = static_cast<const int32_t*>(d_new.p);

  CudaAttendArgs qa = a;
  qa.query = d_q.p;
  qa.key_cache = d_kc.p;
  qa.value_cache = d_vc.p;
  qa.output = d_out.p;
  qa.cache = c.cache;
  qa.k_scale = static_cast<const float*>(d_ks.p);
  qa.v_scale = static_cast<const float*>(d_vs.p);
  qa.k_scale_mode = static_cast<ScaleMode>(c.k_mode);
  qa.v_scale_mode = static_cast<ScaleMode>(c.v_mode);
  if (!c.reader) {
    qa.chunk_key = d_k.p;
    qa.chunk_value = d_v.p;
    qa.present_key = d_kc.p;
    qa.present_value = d_vc.p;
  }
  if (c.rotary) {
    qa.cos_cache = d_cos.p;
    qa.sin_cache = d_sin.p;
    qa.rotary_dim = D;
    qa.max_positions = M;
  }
  CudaAttendArgs ra = a;  // the reference: no rotary, pre-rotated inputs, over the dequantized caches
  ra.query = d_qref.p;
  ra.key_cache = d_kcref.p;
  ra.value_cache = d_vcref.p;
  ra.output = d_outref.p;
  if (!c.reader) {  // an owner (Launch reads the chunk only with a present to write): its dequantized cache in place
    ra.chunk_key = d_kref.p;
    ra.chunk_value = d_vref.p;
    ra.present_key = d_kcref.p;
    ra.present_value = d_vcref.p;
  }
  cudaStream_t stream;
  CKT(cudaStreamCreate(&stream));
  ASSERT_EQ(RunOnce(qa, c.tuning, stream), "");
  ASSERT_EQ(RunOnce(ra, 0, stream), "");
  CKT(cudaStreamDestroy(stream));

  std::vector<uint8_t> out(q.size()), out_ref(q.size()), kc_got(cache_elems), vc_got(cache_elems);
  CKT(cudaMemcpy(out.data(), d_out.p, out.size(), cudaMemcpyDeviceToHost));
  CKT(cudaMemcpy(out_ref.data(), d_outref.p, out.size(), cudaMemcpyDeviceToHost));
  CKT(cudaMemcpy(kc_got.data(), d_kc.p, cache_elems, cudaMemcpyDeviceToHost));
  CKT(cudaMemcpy(vc_got.data(), d_vc.p, cache_elems, cudaMemcpyDeviceToHost));

  // Outputs: |quantized - reference| within a few units of T's rounding of the output's scale.
  double max_ref = 0, max_diff = 0;
  for (size_t i = 0; i < q_elems; ++i) max_ref = std::max(max_ref, double(std::fabs(Load(T, out_ref, i))));
  for (size_t i = 0; i < q_elems; ++i) {
    const double dd = std::fabs(double(Load(T, out, i)) - double(Load(T, out_ref, i)));
    max_diff = std::isnan(dd) ? INFINITY : std::max(max_diff, dd);
  }
  const double tol = (T == DType::kBFloat16 ? 2e-2 : T == DType::kFloat16 ? 3e-3 : 1e-4) * std::max(max_ref, 1.0);
  EXPECT_LE(max_diff, tol) << c.name() << ": max |quantized - reference| " << max_diff << ", max |reference| " << max_ref;
  EXPECT_GT(max_ref, 0.0);

  // Caches: exactly the expected codes (the owner's writes; a reader leaves them alone).
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < cache_elems; ++i)
    if (kc_got[i] != kc_expect[i] || vc_got[i] != vc_expect[i]) first = bad++ ? first : i;
  EXPECT_EQ(bad, 0u) << c.name() << ": " << bad << " cache codes differ, first at element " << first << " (K "
                     << int(kc_got[first]) << " vs " << int(kc_expect[first]) << ", V " << int(vc_got[first]) << " vs "
                     << int(vc_expect[first]) << ")";
}

std::vector<QCase> Cases() {
  std::vector<QCase> cs;
  for (DType t : {DType::kFloat16, DType::kBFloat16})
    for (CacheDType cache : {CacheDType::kInt8, CacheDType::kFloat8E4M3})
      for (int D : {64, 128, 256})
        for (int window : {0, 128}) {
          const int km = D == 128 ? 2 : D == 64 ? 0 : 1, vm = (km + 1) % 3;
          cs.push_back({t, cache, D, km, vm, window, 1, false, false, 0});
          cs.push_back({t, cache, D, vm, km, window, 1, true, false, 0});
          cs.push_back({t, cache, D, km, vm, window, 37, false, false, 0});
          if (D == 128) {
            cs.push_back({t, cache, D, 2, 2, window, 1, false, true, 0});
            cs.push_back({t, cache, D, 1, 0, window, 1, false, false, 1});
            cs.push_back({t, cache, D, 0, 1, window, 1, false, false, 2});
            cs.push_back({t, cache, D, 2, 1, window, 37, false, true, 0});
          }
        }
  for (CacheDType cache : {CacheDType::kInt8, CacheDType::kFloat8E4M3}) {
    cs.push_back({DType::kFloat16, cache, 128, 2, 0, 0, 1, false, false, 3});  // the SIMT kernel (pre-pass)
    cs.push_back({DType::kFloat32, cache, 128, 2, 1, 0, 1, false, false, 0});
    cs.push_back({DType::kFloat32, cache, 64, 1, 2, 128, 9, false, false, 0});
  }
  return cs;
}

INSTANTIATE_TEST_SUITE_P(Kvq, Quantized, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<QCase>& info) { return info.param.name(); });

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
