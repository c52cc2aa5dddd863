// GoogleTests of paged caches on the CUDA kernels (docs/ops.md "Paged caches"), on the kernels directly (Plan + Launch
// from native/src/cuda, no ONNX Runtime), built by tools/gpu/CMakeLists.txt and run by tools/gpu/run.sh check:
//
//   paged_test [gtest flags]
//
// Every case runs one call twice on the same values:
//   contiguous: caches [B, Hkv, C, D], the owner's present bound in place;
//   paged:      the same rows in a pool [num_blocks, Hkv, block_size, D] whose blocks are scattered in a random order
//               (spare blocks between them hold other values), read and written through the block table.
// Outputs must be equal: bit for bit where the tensor-core decode kernel reads the pool through the table (the same
// plan and arithmetic), within the query type's rounding where the pool is staged first (another path for the same
// values: the rotary pre-pass, the dequantized caches). The pool must afterwards hold exactly the contiguous present's
// rows at the table's positions, and its spare blocks must be untouched.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/attention_cuda.h"
#include "cuda/kernels.cuh"
#include "kernel_test_util.h"

using namespace mixattn;
using namespace mixattn::cuda;
using namespace mixattn::cuda::test;

namespace {

#define CKT(x) ASSERT_EQ((x), cudaSuccess) << #x

struct PCase {
  DType dtype;
  CacheDType cache;
  int D;
  int S;               // 1 decode, > 1 prefill
  int block_size;      // a multiple of 16: the decode kernel's block-table tiles; else staged
  bool reader;         // SharedKvAttention form (no chunk, no present)
  bool rotary;
  bool separate_present;  // present not bound to past: the whole pool is copied first
  int tuning;             // RunOnce's
  int window = 0;         // > 0: a sliding reader of a paged owner (staged: its range starts at p - W + 1)
  bool long_past = false;  // pasts of up to 4400 keys: with tuning 4 (one split) a warp streams more than 32 tiles
  std::string name() const {
    std::string n = dtype == DType::kFloat16 ? "f16" : dtype == DType::kBFloat16 ? "bf16" : "f32";
    n += cache == CacheDType::kInt8 ? "_i8" : cache == CacheDType::kFloat8E4M3 ? "_f8" : "";
    n += "_D" + std::to_string(D) + "_bs" + std::to_string(block_size);
    n += S == 1 ? "_decode" : "_prefill" + std::to_string(S);
    if (reader) n += "_reader";
    if (rotary) n += "_rotary";
    if (separate_present) n += "_present";
    if (tuning) n += "_t" + std::to_string(tuning);
    if (window) n += "_W" + std::to_string(window);
    if (long_past) n += "_long";
    return n;
  }
  // The tensor-core decode or the prefill kernel reads the pool in place (LaunchPlan::paged_tiles): bit-identical to
  // the contiguous call. Prefill: float caches and block sizes that hold whole key tiles only.
  bool in_place() const {
    if (dtype == DType::kFloat32 || window != 0) return false;
    if (S > 1) return cache == CacheDType::kSameAsQuery && block_size % (D <= 128 ? 64 : 32) == 0;
    return block_size % 16 == 0 && tuning != 3;
  }
};

class Paged : public ::testing::TestWithParam<PCase> {};

TEST_P(Paged, MatchesContiguousCaches) {
  const PCase c = GetParam();
  const int B = 3, Hq = 8, Hkv = 2, D = c.D, S = c.S, bs = c.block_size;
  const int max_len = c.long_past ? 4608 : 512;
  const int max_blocks = (max_len + bs - 1) / bs, C = max_blocks * bs;
  const int P[B] = {c.long_past ? 4400 : 300, c.long_past ? 2100 : 151, 17};
  const int N[B] = {S, std::max(1, S - 5), S};
  const int spare = 5, num_blocks = B * max_blocks + spare;
  const DType T = c.dtype;
  const bool codes = c.cache != CacheDType::kSameAsQuery;
  const size_t eb = codes ? 1 : Bytes(T);  // bytes of a cache element
  std::mt19937 rng(101 + D + S + bs);
  std::uniform_real_distribution<float> u(-1.f, 1.f), us(0.5f, 1.5f);

  // Per-channel K scales and per-head V scales (quantized caches).
  const float base = c.cache == CacheDType::kInt8 ? 3.f / 127.f : 3.f / 448.f;
  std::vector<float> ks(size_t(Hkv) * D), vs(Hkv);
  for (float& x : ks) x = base * us(rng);
  for (float& x : vs) x = base * us(rng);
  auto cache_value = [&](std::vector<uint8_t>& raw, size_t i, int h, int d, bool is_v) {
    const float x = 2.5f * u(rng);
    if (codes) raw[i] = Quantize(c.cache, x, is_v ? vs[h] : ks[size_t(h) * D + d]);
    else Store(T, raw, i, x);
  };

  // Contiguous caches and the pool: sequence b's logical block i is pool block table[b * max_blocks + i].
  const size_t cache_elems = size_t{1} * B * Hkv * C * D, pool_elems = size_t{1} * num_blocks * Hkv * bs * D;
  std::vector<uint8_t> kc(cache_elems * eb), vc(cache_elems * eb), kp(pool_elems * eb), vp(pool_elems * eb);
  for (size_t i = 0; i < pool_elems; ++i) {  // spare blocks keep these values
    const int d = static_cast<int>(i % D), h = static_cast<int>((i / D / bs) % Hkv);
    cache_value(kp, i, h, d, false);
    cache_value(vp, i, h, d, true);
  }
  std::vector<int32_t> order(num_blocks);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<int32_t> table(order.begin(), order.begin() + B * max_blocks);
  auto pool_at = [&](int b, int h, int pos) {  // element index of (b, h, pos, 0) in the pool
    return ((size_t(table[size_t(b) * max_blocks + pos / bs]) * Hkv + h) * bs + pos % bs) * D;
  };
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hkv; ++h)
      for (int pos = 0; pos < C; ++pos)
        for (int d = 0; d < D; ++d) {
          const size_t ci = ((size_t(b) * Hkv + h) * C + pos) * D + d;
          cache_value(kc, ci, h, d, false);
          cache_value(vc, ci, h, d, true);
          std::memcpy(&kp[(pool_at(b, h, pos) + d) * eb], &kc[ci * eb], eb);
          std::memcpy(&vp[(pool_at(b, h, pos) + d) * eb], &vc[ci * eb], eb);
        }
  const std::vector<uint8_t> kp_before = kp, vp_before = vp;

  const size_t q_elems = size_t{1} * B * S * Hq * D, kv_elems = size_t{1} * B * S * Hkv * D;
  std::vector<uint8_t> q(q_elems * Bytes(T)), k(kv_elems * Bytes(T)), v(kv_elems * Bytes(T));
  for (size_t i = 0; i < q_elems; ++i) Store(T, q, i, u(rng));
  for (size_t i = 0; i < kv_elems; ++i) Store(T, k, i, 2.f * u(rng)), Store(T, v, i, 2.f * u(rng));
  const int M = max_len + 64;  // rotary tables (R = D, half-split) past every position, rounded to T
  std::vector<uint8_t> cosr, sinr;
  RotaryTables(T, M, D, cosr, sinr);

  std::vector<int32_t> past(P, P + B), newl(N, N + B);
  Device d_q(q.data(), q.size()), d_k(k.data(), k.size()), d_v(v.data(), v.size()), d_kc(kc.data(), kc.size()),
      d_vc(vc.data(), vc.size()), d_kp(kp.data(), kp.size()), d_vp(vp.data(), vp.size()), d_kp2(kp.size()),
      d_vp2(vp.size()), d_table(table.data(), table.size() * 4), d_past(past.data(), B * 4),
      d_new(newl.data(), B * 4), d_ks(ks.data(), ks.size() * 4), d_vs(vs.data(), vs.size() * 4),
      d_cos(cosr.data(), cosr.size()), d_sin(sinr.data(), sinr.size()), d_out(q.size()), d_outp(q.size());
  CKT(cudaMemset(d_out.p, 0, q.size()));
  CKT(cudaMemset(d_outp.p, 0xff, q.size()));
  CKT(cudaMemset(d_kp2.p, 0x3c, kp.size()));  // a separate present: other bytes until the pool is copied in
  CKT(cudaMemset(d_vp2.p, 0x3c, vp.size()));

  CudaAttendArgs a;
  a.shape = Shape(B, S, Hq, Hkv, D, C, c.window);
  a.dtype = T;
  a.query = d_q.p;
  a.past_lengths = static_cast<const int32_t*>(d_past.p);
  a.new_lengths = static_cast<const int32_t*>(d_new.p);
  a.cache = c.cache;
  if (codes) {
    a.k_scale = static_cast<const float*>(d_ks.p);
    a.v_scale = static_cast<const float*>(d_vs.p);
    a.k_scale_mode = ScaleMode::kPerChannel;
    a.v_scale_mode = ScaleMode::kPerHead;
  }
  if (!c.reader) {
    a.chunk_key = d_k.p;
    a.chunk_value = d_v.p;
  }
  if (c.rotary) {
    a.cos_cache = d_cos.p;
    a.sin_cache = d_sin.p;
    a.rotary_dim = D;
    a.max_positions = M;
  }
  CudaAttendArgs ca = a;  // contiguous
  ca.key_cache = d_kc.p;
  ca.value_cache = d_vc.p;
  ca.output = d_out.p;
  CudaAttendArgs pa = a;  // paged
  pa.key_cache = d_kp.p;
  pa.value_cache = d_vp.p;
  pa.output = d_outp.p;
  pa.paged.table = static_cast<const int32_t*>(d_table.p);
  pa.paged.max_blocks = max_blocks;
  pa.paged.block_size = bs;
  pa.paged.num_blocks = num_blocks;
  void* pk = c.separate_present ? d_kp2.p : d_kp.p;
  void* pv = c.separate_present ? d_vp2.p : d_vp.p;
  if (!c.reader) {
    ca.present_key = d_kc.p;
    ca.present_value = d_vc.p;
    pa.present_key = pk;
    pa.present_value = pv;
  }
  PlanTuning planned;  // RunOnce's tuning 3: the SIMT kernel, which reads staged caches
  if (c.tuning == 3) planned.decode_kernel = 0;
  if (c.tuning == 4) planned.splits = 1;
  const LaunchPlan plan = Plan(pa, CurrentDeviceSmCount(), planned);
  EXPECT_EQ(plan.paged_tiles, c.in_place()) << c.name();
  EXPECT_EQ(plan.staged_caches, !c.in_place()) << c.name();

  cudaStream_t stream;
  CKT(cudaStreamCreate(&stream));
  // The cluster merge is never planned for paged tiles: the contiguous call without it has the same arithmetic. The
  // same prefill kernel for both: the wgmma kernel where block sizes hold its 128-key tiles (sm_90; the planned variant,
  // whose tensor maps read the pool in place), else mma.sync.
  const int tuning = std::max(c.tuning, 1);
  const bool wgmma = S > 1 && c.in_place() && bs % kPrefillWgmmaKeysPerTile == 0;
  const int prefill_kernel = wgmma ? kPrefillWgmmaPlanned : 0;
  if (wgmma && PrefillWgmmaAvailable()) {  // the wgmma kernel runs unless the mma.sync plan splits the key range
    PlanTuning w = planned, m = planned;
    w.prefill_kernel = prefill_kernel;
    m.prefill_kernel = 0;
    EXPECT_TRUE(Plan(pa, CurrentDeviceSmCount(), w).wgmma_prefill > 0 || Plan(pa, CurrentDeviceSmCount(), m).splits > 1)
        << c.name();
  }
  ASSERT_EQ(RunOnce(ca, tuning, stream, prefill_kernel), "");
  ASSERT_EQ(RunOnce(pa, tuning, stream, prefill_kernel), "");
  CKT(cudaStreamDestroy(stream));

  std::vector<uint8_t> out(q.size()), outp(q.size()), kc_got(kc.size()), vc_got(vc.size()), kp_got(kp.size()),
      vp_got(vp.size());
  CKT(cudaMemcpy(out.data(), d_out.p, out.size(), cudaMemcpyDeviceToHost));
  CKT(cudaMemcpy(outp.data(), d_outp.p, outp.size(), cudaMemcpyDeviceToHost));
  CKT(cudaMemcpy(kc_got.data(), d_kc.p, kc.size(), cudaMemcpyDeviceToHost));
  CKT(cudaMemcpy(vc_got.data(), d_vc.p, vc.size(), cudaMemcpyDeviceToHost));
  CKT(cudaMemcpy(kp_got.data(), pk, kp.size(), cudaMemcpyDeviceToHost));
  CKT(cudaMemcpy(vp_got.data(), pv, vp.size(), cudaMemcpyDeviceToHost));

  // Outputs.
  double max_ref = 0, max_diff = 0;
  for (size_t i = 0; i < q_elems; ++i) {
    max_ref = std::max(max_ref, double(std::fabs(Load(T, out, i))));
    const double dd = std::fabs(double(Load(T, outp, i)) - double(Load(T, out, i)));
    max_diff = std::isnan(dd) ? INFINITY : std::max(max_diff, dd);
  }
  EXPECT_GT(max_ref, 0.0) << c.name();
  if (c.in_place()) {
    EXPECT_EQ(std::memcmp(out.data(), outp.data(), out.size()), 0)
        << c.name() << ": paged output differs from the contiguous one (max |diff| " << max_diff << ")";
  } else {
    const double tol = (T == DType::kBFloat16 ? 2e-2 : T == DType::kFloat16 ? 3e-3 : 1e-5) * std::max(max_ref, 1.0);
    EXPECT_LE(max_diff, tol) << c.name() << ": max |paged - contiguous| " << max_diff << ", max |output| " << max_ref;
  }

  // Caches: every (b, h, position) of the pool equals the contiguous present's; spare blocks are untouched.
  size_t bad = 0;
  std::string first;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hkv; ++h)
      for (int pos = 0; pos < C; ++pos) {
        const size_t ci = ((size_t(b) * Hkv + h) * C + pos) * D * eb, pi = pool_at(b, h, pos) * eb;
        if (std::memcmp(&kc_got[ci], &kp_got[pi], D * eb) != 0 || std::memcmp(&vc_got[ci], &vp_got[pi], D * eb) != 0)
          if (bad++ == 0)
            first = "b " + std::to_string(b) + " head " + std::to_string(h) + " position " + std::to_string(pos);
      }
  EXPECT_EQ(bad, 0u) << c.name() << ": " << bad << " pool rows differ from the contiguous present, first at " << first;
  const size_t block_bytes = size_t{1} * Hkv * bs * D * eb;
  for (int i = B * max_blocks; i < num_blocks; ++i) {
    const size_t at = size_t(order[i]) * block_bytes;
    EXPECT_EQ(std::memcmp(&kp_got[at], &kp_before[at], block_bytes), 0) << c.name() << ": spare block " << order[i];
    EXPECT_EQ(std::memcmp(&vp_got[at], &vp_before[at], block_bytes), 0) << c.name() << ": spare block " << order[i];
  }
  // The contiguous call wrote its new rows (else the comparison above would prove little).
  if (!c.reader) EXPECT_NE(std::memcmp(kc_got.data(), kc.data(), kc.size()), 0) << c.name();
}

std::vector<PCase> Cases() {
  std::vector<PCase> cs;
  for (DType t : {DType::kFloat16, DType::kBFloat16})
    for (CacheDType cache : {CacheDType::kSameAsQuery, CacheDType::kInt8, CacheDType::kFloat8E4M3})
      for (int D : {64, 128}) {
        for (int bs : {16, 64, 24}) cs.push_back({t, cache, D, 1, bs, false, false, false, 0});
        cs.push_back({t, cache, D, 1, 64, true, false, false, 0});
        cs.push_back({t, cache, D, 37, 64, false, false, false, 0});
        cs.push_back({t, cache, D, 37, 24, false, false, false, 0});
        if (D == 128) {
          cs.push_back({t, cache, D, 1, 32, false, true, false, 0});
          cs.push_back({t, cache, D, 37, 32, false, true, false, 0});
          cs.push_back({t, cache, D, 1, 64, false, false, true, 0});
          cs.push_back({t, cache, D, 1, 128, false, false, false, 2});
        }
      }
  cs.push_back({DType::kFloat16, CacheDType::kSameAsQuery, 256, 1, 64, false, true, false, 0});
  cs.push_back({DType::kFloat16, CacheDType::kSameAsQuery, 128, 1, 64, false, false, false, 3});  // SIMT: staged
  for (CacheDType cache : {CacheDType::kSameAsQuery, CacheDType::kFloat8E4M3}) {  // sliding readers of a paged owner
    cs.push_back({DType::kFloat16, cache, 128, 1, 64, true, false, false, 0, 128});
    cs.push_back({DType::kBFloat16, cache, 64, 37, 32, true, false, false, 0, 100});
  }
  // Long pasts in one split: the block indices of more than one 32-tile batch per warp (decode_tc.cuh, kPaged).
  for (CacheDType cache : {CacheDType::kSameAsQuery, CacheDType::kFloat8E4M3})
    for (int bs : {16, 64}) {
      PCase lc{DType::kFloat16, cache, 128, 1, bs, false, false, false, 4};
      lc.long_past = true;
      cs.push_back(lc);
    }
  {
    PCase lc{DType::kBFloat16, CacheDType::kSameAsQuery, 64, 1, 32, true, false, false, 4};
    lc.long_past = true;
    cs.push_back(lc);
  }
  // Prefill in place: a reader, a long past (split-K over the key range), and D = 256 with its 32-key tiles.
  cs.push_back({DType::kFloat16, CacheDType::kSameAsQuery, 128, 37, 64, true, false, false, 0});
  {
    PCase lc{DType::kBFloat16, CacheDType::kSameAsQuery, 128, 37, 128, false, true, false, 0};
    lc.long_past = true;
    cs.push_back(lc);
  }
  cs.push_back({DType::kFloat16, CacheDType::kSameAsQuery, 256, 37, 32, false, false, false, 0});
  // Prefill in place on the wgmma kernel (sm_90): block sizes that hold its 128-key tiles, two query tiles.
  cs.push_back({DType::kFloat16, CacheDType::kSameAsQuery, 128, 150, 128, false, false, false, 0});
  cs.push_back({DType::kBFloat16, CacheDType::kSameAsQuery, 64, 150, 256, true, false, false, 0});
  for (CacheDType cache : {CacheDType::kSameAsQuery, CacheDType::kInt8}) {
    cs.push_back({DType::kFloat32, cache, 128, 1, 32, false, false, false, 0});
    cs.push_back({DType::kFloat32, cache, 64, 9, 48, false, true, true, 0});
  }
  return cs;
}

INSTANTIATE_TEST_SUITE_P(Paged, Paged, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<PCase>& info) { return info.param.name(); });

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
