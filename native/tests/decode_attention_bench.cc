// Decode-attention micro-benchmark of the CPU kernels (not a test; built with the tests):
// one decode step of 8 layers, each with its own fp32 cache (one sequence, 2 KV heads, D = 128, 4096 past tokens),
// for 1-5 query heads per KV head, on one thread. Prints the best of 15 repetitions and the time per query head
// relative to G = 4 measured in the same run (the AVX2 kernels work on groups of 4 heads, then a 1-3 head tail).
// `paged`: G = 4 over contiguous caches and over paged pools holding the same rows (blocks of block_size positions in
// a shuffled order, docs/ops.md "Paged caches"), repetitions interleaved; prints both and paged / contiguous speed.
//   usage: mixattn_decode_bench [past_tokens]
//          mixattn_decode_bench paged [past_tokens] [block_size]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "cpu/attention_isa.h"

using namespace mixattn;

namespace {

// block_size > 0: each layer's cache as a pool of blocks in a shuffled order, read through a block table.
double BestMs(int G, int past, int block_size = 0, double* paged_ms = nullptr) {
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
  // Paged copies: pool [blocks, Hkv, bs, D], sequence 0's logical block i at table[i] (a shuffled order).
  const int bs = block_size > 0 ? block_size : 1, blocks = (sh.capacity + bs - 1) / bs;
  std::vector<int32_t> table(blocks);
  for (int i = 0; i < blocks; ++i) table[i] = i;
  std::shuffle(table.begin(), table.end(), rng);
  std::vector<std::vector<float>> kp, vp;
  if (block_size > 0) {
    const size_t pool = static_cast<size_t>(blocks) * sh.kv_num_heads * bs * sh.head_dim;
    for (int l = 0; l < kLayers; ++l) {
      kp.emplace_back(pool);
      vp.emplace_back(pool);
      for (int h = 0; h < sh.kv_num_heads; ++h)
        for (int pos = 0; pos < sh.capacity; ++pos) {
          const size_t from = (static_cast<size_t>(h) * sh.capacity + pos) * sh.head_dim;
          const size_t to = ((static_cast<size_t>(table[pos / bs]) * sh.kv_num_heads + h) * bs + pos % bs) * sh.head_dim;
          std::copy_n(kc[l].begin() + from, sh.head_dim, kp[l].begin() + to);
          std::copy_n(vc[l].begin() + from, sh.head_dim, vp[l].begin() + to);
        }
    }
  }
  SerialExecutor ex;
  double best = 1e30, best_paged = 1e30;
  for (int rep = 0; rep < 15; ++rep) {
    for (int paged = 0; paged <= (block_size > 0 ? 1 : 0); ++paged) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int l = 0; l < kLayers; ++l) {
        AttendArgs<float> a;
        a.shape = sh;
        a.query = q.data();
        a.chunk_key = k.data();
        a.chunk_value = v.data();
        a.key_cache = paged ? kp[l].data() : kc[l].data();
        a.value_cache = paged ? vp[l].data() : vc[l].data();
        if (paged) a.paged = BlockTable{table.data(), blocks, bs, blocks};
        a.past_lengths = past_lengths.data();
        a.output = out.data();
        a.key_splits = 1;
        Attend(a, ex);
      }
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      (paged ? best_paged : best) = std::min(paged ? best_paged : best, ms);
    }
  }
  if (paged_ms != nullptr) *paged_ms = best_paged;
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "paged") {
    const int past = argc > 2 ? std::atoi(argv[2]) : 32768, bs = argc > 3 ? std::atoi(argv[3]) : 64;
    double paged = 0;
    const double contiguous = BestMs(4, past, bs, &paged);
    std::printf("kernel %s, %d past tokens, 8 layers x 2 KV heads, G = 4, D = 128, one thread, blocks of %d: contiguous "
                "%.3f ms, paged %.3f ms per step, paged speed %.2fx\n",
                CpuKernelIsa(), past, bs, contiguous, paged, contiguous / paged);
    return 0;
  }
  const int past = argc > 1 ? std::atoi(argv[1]) : 4096;
  std::printf("kernel %s, %d past tokens, 8 layers x 2 KV heads, D = 128, one thread\n", CpuKernelIsa(), past);
  const double g4 = BestMs(4, past) / 4;
  for (int G = 1; G <= 5; ++G) {
    const double ms = BestMs(G, past);
    std::printf("G = %d: %.3f ms per step, %.3f ms per query head, %.2fx G = 4's per head\n", G, ms, ms / G, ms / G / g4);
  }
}
