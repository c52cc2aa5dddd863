// GoogleTests of the CUDA prefill kernels (S > 1) against a CPU reference in double precision, on the kernels directly
// (Plan + Launch from native/src/cuda, no ONNX Runtime), built by tools/gpu/CMakeLists.txt and run by
// tools/gpu/kernels.sh:
//
//   prefill_test [gtest flags]
//
// Every case runs once on the mma.sync kernel and once on each variant of the warpgroup-MMA kernel (sm_90, which the
// test requires there: the plan must name the variant), and compares the output with the reference and a variant's
// with the mma.sync output on the same inputs: keys < P from the cache (slot pos mod C),
// keys >= P from the chunk (owner) or the cache (reader), row s of sequence b at position P_b + s sees keys
// (pos - W, pos], rows s >= new_length are zeros. Shapes: whole prompts, chunks after a past (global and ring
// caches), readers, GQA groups 1 / 4 / 8, padding rows, one and several query tiles, fp16 and bf16, D = 64, 128, 256,
// and split-K (2-8 splits, some of them without keys) merged in the launch.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
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

struct PrefillCase {
  DType dtype;
  int D;
  int S;
  int past;     // P of sequence 0 (sequence 1: past / 2)
  int window;   // 0: global cache
  int group;    // query heads per KV head
  bool reader;  // no chunk: every key from the cache
  int splits = 1;  // key-range splits (PlanTuning::splits), merged in the launch when > 1
  int kernel = 0;  // PlanTuning::prefill_kernel: 0 mma.sync, N wgmma variant N
  std::string shape() const {
    std::string n = dtype == DType::kFloat16 ? "f16" : "bf16";
    n += "_D" + std::to_string(D) + "_S" + std::to_string(S) + "_P" + std::to_string(past);
    if (window) n += "_W" + std::to_string(window);
    n += "_G" + std::to_string(group);
    if (reader) n += "_reader";
    if (splits > 1) n += "_s" + std::to_string(splits);
    return n;
  }
  std::string name() const { return shape() + (kernel == 0 ? "_mma" : "_wgmma" + std::to_string(kernel)); }
};

class Prefill : public ::testing::TestWithParam<PrefillCase> {};

TEST_P(Prefill, MatchesReference) {
  const PrefillCase c = GetParam();
  const int B = 2, Hkv = 2, Hq = Hkv * c.group, D = c.D, S = c.S, W = c.window;
  const int P[B] = {c.past, c.past / 2};
  const int N[B] = {S, std::max(1, S - 37)};  // sequence 1 ends in padding rows
  // Global: every position has its own slot. Ring: the window plus the chunk (a reader's keys are all in the cache).
  const int C = W == 0 ? c.past + S : W + S;
  const DType T = c.dtype;
  std::mt19937 rng(7 + D + S + c.past + W + c.group);
  std::uniform_real_distribution<float> u(-1.f, 1.f);

  const size_t q_elems = size_t{1} * B * S * Hq * D, kv_elems = size_t{1} * B * S * Hkv * D;
  const size_t cache_elems = size_t{1} * B * Hkv * C * D;
  std::vector<uint8_t> q(q_elems * 2), k(kv_elems * 2), v(kv_elems * 2), kc(cache_elems * 2), vc(cache_elems * 2);
  for (size_t i = 0; i < q_elems; ++i) Store(T, q, i, 1.5f * u(rng));
  for (size_t i = 0; i < kv_elems; ++i) Store(T, k, i, 1.5f * u(rng)), Store(T, v, i, 2.f * u(rng));
  for (size_t i = 0; i < cache_elems; ++i) Store(T, kc, i, 1.5f * u(rng)), Store(T, vc, i, 2.f * u(rng));

  // Reference (double), from the rounded inputs (the same for every kernel of a shape: computed once).
  static std::map<std::string, std::vector<double>> references;
  std::vector<double>& ref = references[c.shape()];
  const bool computed = !ref.empty();
  if (!computed) ref.assign(q_elems, 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  auto key_at = [&](int b, int kvh, int j) -> size_t {  // element index of key j's row in the chunk or the cache
    if (!c.reader && j >= P[b]) return ((size_t(b) * S + (j - P[b])) * Hkv + kvh) * D;
    return ((size_t(b) * Hkv + kvh) * C + j % C) * D;
  };
  for (int b = 0; b < B && !computed; ++b)
    for (int s = 0; s < N[b]; ++s)
      for (int h = 0; h < Hq; ++h) {
        const int kvh = h / c.group, pos = P[b] + s;
        const int lo = W > 0 ? std::max(0, pos - W + 1) : 0;
        const size_t qi = ((size_t(b) * S + s) * Hq + h) * D;
        std::vector<double> w(pos - lo + 1);
        double mx = -INFINITY;
        for (int j = lo; j <= pos; ++j) {
          const bool chunk = !c.reader && j >= P[b];
          const std::vector<uint8_t>& kb = chunk ? k : kc;
          const size_t ki = key_at(b, kvh, j);
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += double(Load(T, q, qi + d)) * double(Load(T, kb, ki + d));
          w[j - lo] = dot * scale;
          mx = std::max(mx, w[j - lo]);
        }
        double sum = 0;
        for (double& x : w) sum += (x = std::exp(x - mx));
        for (int j = lo; j <= pos; ++j) {
          const bool chunk = !c.reader && j >= P[b];
          const std::vector<uint8_t>& vb = chunk ? v : vc;
          const size_t vi = key_at(b, kvh, j);
          for (int d = 0; d < D; ++d) ref[qi + d] += w[j - lo] / sum * double(Load(T, vb, vi + d));
        }
      }

  std::vector<int32_t> past(P, P + B), newl(N, N + B);
  Device d_q(q.data(), q.size()), d_k(k.data(), k.size()), d_v(v.data(), v.size()), d_kc(kc.data(), kc.size()),
      d_vc(vc.data(), vc.size()), d_past(past.data(), B * 4), d_new(newl.data(), B * 4), d_out(q.size());
  CudaAttendArgs a;
  a.shape = Shape(B, S, Hq, Hkv, D, C, W);
  a.dtype = T;
  a.query = d_q.p;
  a.key_cache = d_kc.p;
  a.value_cache = d_vc.p;
  a.past_lengths = static_cast<const int32_t*>(d_past.p);
  a.new_lengths = static_cast<const int32_t*>(d_new.p);
  a.output = d_out.p;
  if (!c.reader) {  // an owner reads its chunk only with a present to write: the caches, in place
    a.chunk_key = d_k.p;
    a.chunk_value = d_v.p;
    a.present_key = d_kc.p;
    a.present_value = d_vc.p;
  }
  ASSERT_EQ(Plan(a, CurrentDeviceSmCount()).path, Path::kPrefill);

  cudaStream_t stream;
  CKT(cudaStreamCreate(&stream));
  const double tol = (T == DType::kBFloat16 ? 1.6e-2 : 2e-3);
  // The case's kernel, then (for a wgmma variant) the mma.sync kernel on the same inputs.
  std::vector<std::vector<uint8_t>> outs;
  for (int kernel : {c.kernel, 0}) {
    if (!outs.empty() && c.kernel == 0) break;
    PlanTuning tuning;
    tuning.prefill_kernel = kernel;
    tuning.splits = c.splits;
    const LaunchPlan plan = Plan(a, CurrentDeviceSmCount(), tuning);
    ASSERT_EQ(plan.splits, c.splits) << c.name();
    if (kernel > 0 && PrefillWgmmaAvailable())
      ASSERT_EQ(plan.wgmma_prefill, kernel) << c.name() << ": not on wgmma variant " << kernel;
    CKT(cudaMemcpy(d_kc.p, kc.data(), kc.size(), cudaMemcpyHostToDevice));  // the previous call wrote its chunk
    CKT(cudaMemcpy(d_vc.p, vc.data(), vc.size(), cudaMemcpyHostToDevice));
    CKT(cudaMemset(d_out.p, 0xff, q.size()));  // NaN: every element must be written
    ASSERT_EQ(RunOnce(a, 0, stream, kernel, c.splits), "") << c.name();
    std::vector<uint8_t> out(q.size());
    CKT(cudaMemcpy(out.data(), d_out.p, out.size(), cudaMemcpyDeviceToHost));
    outs.push_back(out);
    double max_diff = 0, max_ref = 0;
    size_t worst = 0;
    for (size_t i = 0; i < q_elems; ++i) {
      max_ref = std::max(max_ref, std::fabs(ref[i]));
      const double dd = std::fabs(double(Load(T, out, i)) - ref[i]);
      if (std::isnan(dd) || dd > max_diff) {
        max_diff = std::isnan(dd) ? INFINITY : dd;
        worst = i;
      }
    }
    EXPECT_GT(max_ref, 0.1) << c.name();
    EXPECT_LE(max_diff, tol * std::max(1.0, max_ref))
        << c.name() << (kernel == 0 ? " (mma.sync)" : "") << ": max |out - reference| " << max_diff << " at element "
        << worst << " (token " << worst / D / Hq % S << ", head " << worst / D % Hq << ", sequence "
        << worst / D / Hq / S << ")";
  }
  CKT(cudaStreamDestroy(stream));
  if (outs.size() == 2) {  // the two kernels against each other: fp32 accumulation in both, P rounded alike
    double between = 0;
    for (size_t i = 0; i < q_elems; ++i)
      between = std::max(between, std::fabs(double(Load(T, outs[0], i)) - double(Load(T, outs[1], i))));
    EXPECT_LE(between, tol) << c.name() << ": max |wgmma - mma.sync| " << between;
  }
}

std::vector<PrefillCase> Cases() {
  std::vector<PrefillCase> cs;
  for (DType t : {DType::kFloat16, DType::kBFloat16})
    for (int D : {64, 128}) {
      cs.push_back({t, D, 300, 0, 0, 4, false});      // whole prompt, three query tiles
      cs.push_back({t, D, 200, 1000, 0, 4, false});   // chunk after a past, global cache
      cs.push_back({t, D, 200, 1000, 256, 4, false}); // chunk after a past, ring of W + S
      cs.push_back({t, D, 130, 600, 0, 8, true});     // reader: every key from the cache
    }
  cs.push_back({DType::kFloat16, 128, 257, 0, 100, 1, false});  // whole prompt, sliding window, no GQA
  cs.push_back({DType::kFloat16, 64, 64, 77, 0, 8, false});     // one query tile, a past not a multiple of the tile
  cs.push_back({DType::kBFloat16, 128, 2, 3000, 0, 4, false});  // two tokens after a long past
  cs.push_back({DType::kFloat16, 256, 300, 0, 0, 4, false});    // D = 256: whole prompt (64-key tiles)
  cs.push_back({DType::kBFloat16, 256, 200, 1000, 0, 2, false}); // D = 256: chunk after a past
  // Split-K, merged by each group's last block: a short chunk after a long past (3 splits of 8 key tiles of 128; a
  // fourth split would get none), a window's ring, a reader, and more splits than key tiles (empty blocks).
  cs.push_back({DType::kFloat16, 128, 64, 3000, 0, 4, false, 3});
  cs.push_back({DType::kBFloat16, 64, 100, 2000, 300, 4, false, 2});
  cs.push_back({DType::kFloat16, 64, 130, 600, 0, 8, true, 4});
  cs.push_back({DType::kFloat16, 128, 40, 100, 0, 4, false, 8});
  // Every case on the mma.sync kernel, then on each wgmma variant that exists for its head size, variant by variant
  // (a variant that hangs is then the last one run: kernels.sh's timeout names it).
  std::vector<PrefillCase> all;
  for (int kernel = 0; kernel <= kPrefillWgmmaVariants; ++kernel)
    for (PrefillCase c : cs) {
      if (kernel > 0 && !PrefillWgmmaHasVariant(c.D, kernel)) continue;  // D = 256: variants 1 and 6 (kernels.cuh)
      c.kernel = kernel;
      all.push_back(c);
    }
  return all;
}

INSTANTIATE_TEST_SUITE_P(Prefill, Prefill, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<PrefillCase>& info) { return info.param.name(); });

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
