// Host helpers of the kernel-level GoogleTests (kvq_test.cu, paged_test.cu): values of a query / cache type in raw
// byte buffers, the CPU op's quantization, device buffers and one planned call of Plan + Launch.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/float_convert.h"
#include "cpu/quant_convert.h"
#include "cuda/attention_cuda.h"

namespace mixattn::cuda::test {

inline size_t Bytes(DType t) { return t == DType::kFloat32 ? 4 : 2; }

// Round to T and back (host), and store.
inline float RoundTo(DType t, float x) {
  if (t == DType::kFloat16) return cvt::HalfToFloat(cvt::FloatToHalf(x));
  if (t == DType::kBFloat16) return cvt::BF16ToFloat(cvt::FloatToBF16(x));
  return x;
}
inline void Store(DType t, std::vector<uint8_t>& raw, size_t i, float x) {
  if (t == DType::kFloat16) {
    const uint16_t h = cvt::FloatToHalf(x);
    std::memcpy(raw.data() + 2 * i, &h, 2);
  } else if (t == DType::kBFloat16) {
    const uint16_t h = cvt::FloatToBF16(x);
    std::memcpy(raw.data() + 2 * i, &h, 2);
  } else {
    std::memcpy(raw.data() + 4 * i, &x, 4);
  }
}
inline float Load(DType t, const std::vector<uint8_t>& raw, size_t i) {
  if (t == DType::kFloat32) {
    float x;
    std::memcpy(&x, raw.data() + 4 * i, 4);
    return x;
  }
  uint16_t h;
  std::memcpy(&h, raw.data() + 2 * i, 2);
  return t == DType::kFloat16 ? cvt::HalfToFloat(h) : cvt::BF16ToFloat(h);
}

inline uint8_t Quantize(CacheDType c, float x, float scale) {
  const float inv = quant::Inverse(scale);
  if (c == CacheDType::kInt8) return static_cast<uint8_t>(quant::Quantize<int8_t>(x, inv));
  return quant::Quantize<Float8E4M3>(x, inv).bits;
}
inline float Dequantize(CacheDType c, uint8_t code, float scale) {
  if (c == CacheDType::kInt8) return quant::Dequantize(static_cast<int8_t>(code), scale);
  return quant::Dequantize(Float8E4M3{code}, scale);
}

// One call's dimensions (scale 1/sqrt(D), no softcap).
inline AttentionShape Shape(int B, int S, int Hq, int Hkv, int D, int C, int window) {
  AttentionShape sh;
  sh.batch = B;
  sh.seq = S;
  sh.num_heads = Hq;
  sh.kv_num_heads = Hkv;
  sh.head_dim = D;
  sh.capacity = C;
  sh.window = window;
  sh.scale = 1.f / std::sqrt(static_cast<float>(D));
  return sh;
}

// Rotary tables cos / sin [M, D/2] (R = D, frequencies 10000^(-2i/D)), rounded to T.
inline void RotaryTables(DType t, int M, int D, std::vector<uint8_t>& cos_out, std::vector<uint8_t>& sin_out) {
  cos_out.assign(size_t{1} * M * D / 2 * Bytes(t), 0);
  sin_out.assign(cos_out.size(), 0);
  for (int pos = 0; pos < M; ++pos)
    for (int i = 0; i < D / 2; ++i) {
      const double ang = pos * std::pow(10000.0, -2.0 * i / D);
      Store(t, cos_out, size_t(pos) * D / 2 + i, static_cast<float>(std::cos(ang)));
      Store(t, sin_out, size_t(pos) * D / 2 + i, static_cast<float>(std::sin(ang)));
    }
}

struct Device {
  void* p = nullptr;
  explicit Device(size_t bytes) { cudaMalloc(&p, bytes > 0 ? bytes : 16); }
  Device(const void* host, size_t bytes) : Device(bytes) { cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice); }
  ~Device() { cudaFree(p); }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
};

// One planned call, synchronised. tuning: 0 automatic, 1 cluster merge off, 2 also CombineKernel instead of the last
// block's merge, 3 the SIMT decode kernel, 4 one split (tuning 2's merges; a decode block streams every key).
// prefill_kernel: PlanTuning's (-1 automatic, 0 the mma.sync kernel); splits > 0: PlanTuning's too.
inline std::string RunOnce(const CudaAttendArgs& a, int tuning, void* stream, int prefill_kernel = -1, int splits = 0) {
  PlanTuning t;
  t.prefill_kernel = prefill_kernel;
  if (splits > 0) t.splits = splits;
  if (tuning >= 1) t.cluster_merge = 0;
  if (tuning >= 2) t.fused_combine = 0;
  if (tuning == 3) t.decode_kernel = 0;
  if (tuning == 4) t.splits = 1;
  const LaunchPlan pl = Plan(a, CurrentDeviceSmCount(), t);
  Device scratch(pl.scratch_bytes);
  std::string e = Launch(a, pl, scratch.p, stream);
  if (e.empty() && cudaStreamSynchronize(static_cast<cudaStream_t>(stream)) != cudaSuccess) e = "sync failed";
  return e;
}

}  // namespace mixattn::cuda::test
