// Plain reference attention (double accumulation) and test fixtures shared by the kernel tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "cpu/float_convert.h"
#include "mixattention/attention_params.h"

namespace mixattn::test {

// Executor with real threads, to exercise the kernels concurrently.
class ThreadExecutor final : public Executor {
 public:
  explicit ThreadExecutor(int threads) : threads_(threads) {}
  void ParallelFor(size_t n, TaskFn fn, void* data) const override {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads_; ++t)
      pool.emplace_back([=] {
        for (size_t i = static_cast<size_t>(t); i < n; i += static_cast<size_t>(threads_)) fn(data, i);
      });
    for (auto& th : pool) th.join();
  }
  int Concurrency() const override { return threads_; }

 private:
  int threads_;
};

template <typename T>
std::vector<T> Quantize(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = cvt::FromFloat<T>(v[i]);
  return out;
}

template <typename T>
std::vector<float> Dequantize(const std::vector<T>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = cvt::ToFloat(v[i]);
  return out;
}

inline std::vector<float> RandomVector(std::mt19937& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Keys/values of one sequence by absolute position: hist[h][pos][d].
struct History {
  int kv_heads = 0, dim = 0;
  std::vector<std::vector<std::vector<float>>> k, v;
  History(int hkv, int d) : kv_heads(hkv), dim(d), k(hkv), v(hkv) {}
  int64_t length() const { return k.empty() ? 0 : static_cast<int64_t>(k[0].size()); }
};

// out[g*D + d] for the G query heads of KV head h, query at absolute position p (keys 0..p in hist).
inline std::vector<double> ReferenceAttention(const AttentionShape& sh, const float* q_token /* [Hq*D] */,
                                              const History& hist, int64_t p) {
  const int D = sh.head_dim, Hq = sh.num_heads, G = sh.group();
  std::vector<double> out(static_cast<size_t>(Hq) * D, 0.0);
  const int64_t lo = sh.window > 0 ? std::max<int64_t>(0, p - sh.window + 1) : 0;
  for (int hq = 0; hq < Hq; ++hq) {
    const int h = hq / G;
    std::vector<double> s;
    for (int64_t j = lo; j <= p; ++j) {
      double dot = 0;
      for (int d = 0; d < D; ++d) dot += static_cast<double>(q_token[hq * D + d]) * hist.k[h][j][d];
      dot *= sh.scale;
      if (sh.softcap > 0) dot = sh.softcap * std::tanh(dot / sh.softcap);
      s.push_back(dot);
    }
    const double mx = *std::max_element(s.begin(), s.end());
    double sum = 0;
    for (auto& x : s) sum += (x = std::exp(x - mx));
    for (int64_t j = lo; j <= p; ++j)
      for (int d = 0; d < D; ++d) out[hq * D + d] += s[j - lo] / sum * hist.v[h][j][d];
  }
  return out;
}

template <typename T>
struct Tolerance;
template <>
struct Tolerance<float> {
  static constexpr double value = 2e-5;
};
template <>
struct Tolerance<Float16> {
  static constexpr double value = 2e-3;
};
template <>
struct Tolerance<BFloat16> {
  static constexpr double value = 1.6e-2;
};

}  // namespace mixattn::test
