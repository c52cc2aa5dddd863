// Decode-attention micro-benchmark of the CPU kernels (not a test; built with the tests):
// one decode step of 8 layers, each with its own fp32 cache (one sequence, 2 KV heads, D = 128, 4096 past tokens),
// for 1-5 query heads per KV head, on one thread. Prints the best of 15 repetitions and the time per query head
// relative to G = 4 measured in the same run (the AVX2 kernels work on groups of 4 heads, then a 1-3 head tail).
//   usage: mixattn_decode_bench [past_tokens]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <random>
#include <vector>

#include "cpu/attention_isa.h"

using namespace mixattn;

namespace {

double BestMs(int G, int past) {
  AttentionShape sh;
  sh.batch = 1;
  sh.seq = 1;
  sh.kv_num_heads = 2;
  sh.num_heads = 2 * G;
  sh.head_dim = 128;
  sh.capacity = past + 1;
  sh.scale = 0.088f;
  constexpr int kLayers = 8;  // 8 x 8 MiB: more than a last-level cache, as in a model
  const size_t n = static_cast<size_t>(sh.kv_num_heads) * sh.capacity * sh.head_dim;
  std::mt19937 rng(1);
  std::normal_distribution<float> dist;
  std::vector<std::vector<float>> kc(kLayers, std::vector<float>(n)), vc(kLayers, std::vector<float>(n));
  for (auto& v : kc)
    for (auto& x : v) x = dist(rng);
  for (auto& v : vc)
    for (auto& x : v) x = dist(rng);
  std::vector<float> q(static_cast<size_t>(sh.num_heads) * sh.head_dim), k(2 * 128), v(2 * 128), out(q.size());
  for (auto& x : q) x = dist(rng);
  const std::vector<int32_t> past_lengths{past};
  SerialExecutor ex;
  double best = 1e30;
  for (int rep = 0; rep < 15; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int l = 0; l < kLayers; ++l) {
      AttendArgs<float> a;
      a.shape = sh;
      a.query = q.data();
      a.chunk_key = k.data();
      a.chunk_value = v.data();
      a.key_cache = kc[l].data();
      a.value_cache = vc[l].data();
      a.past_lengths = past_lengths.data();
      a.output = out.data();
      a.key_splits = 1;
      Attend(a, ex);
    }
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int past = argc > 1 ? std::atoi(argv[1]) : 4096;
  std::printf("kernel %s, %d past tokens, 8 layers x 2 KV heads, D = 128, one thread\n", CpuKernelIsa(), past);
  const double g4 = BestMs(4, past) / 4;
  for (int G = 1; G <= 5; ++G) {
    const double ms = BestMs(G, past);
    std::printf("G = %d: %.3f ms per step, %.3f ms per query head, %.2fx G = 4's per head\n", G, ms, ms / G, ms / G / g4);
  }
}
