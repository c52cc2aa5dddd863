// GPU harness for the com.mixattention CUDA ops (docs/gpu.md). Modes:
//   harness plan                          single-node graphs the other modes need (-> make_models.py)
//   harness check MODELS LIB DUMP [quick] every CUDA path vs the CPU op on the same inputs; dumps
//                                         inputs/outputs for torch_check.py; exit 1 on a mismatch
//   harness bench MODELS LIB [quick]      decode: our op vs ORT GroupQueryAttention (CUDA EP, IO binding,
//                                         device buffers), D2D copy peak, empty-kernel launch; CSV to stdout
//   harness bench-fp8 MODELS LIB [quick]  the same over float8e4m3fn caches (per-tensor scales), ORT GQA's quantized cache
//   harness probe MODELS LIB              one GQA run per kind (with ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO=1)
// Built without HARNESS_CUDA, `check` runs the CPU op only (to test the harness itself).
#include <onnxruntime_cxx_api.h>
#include <onnxruntime_run_options_config_keys.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cpu/float_convert.h"
#include "mixattention/attention_params.h"

#if defined(HARNESS_CUDA)
#include <cuda_runtime.h>
void LaunchSpin(cudaStream_t stream, unsigned long long ns);
void LaunchEmpty(cudaStream_t stream);
#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(e_), __FILE__, __LINE__, #x); \
      std::exit(2);                                                                             \
    }                                                                                           \
  } while (0)
#endif

namespace {

using mixattn::BFloat16;
using mixattn::Float16;

// i8 / f8: quantized cache codes (int8, float8e4m3fn), held as raw bytes (no float access).
enum class DT { f32, f16, bf16, i8, f8 };
const char* Name(DT t) {
  return t == DT::f32 ? "f32" : t == DT::f16 ? "f16" : t == DT::bf16 ? "bf16" : t == DT::i8 ? "i8" : "f8";
}
size_t Bytes(DT t) { return t == DT::f32 ? 4 : t == DT::i8 || t == DT::f8 ? 1 : 2; }
ONNXTensorElementDataType Onnx(DT t) {
  switch (t) {
    case DT::f32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DT::f16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case DT::bf16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
    case DT::i8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
    default: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FN;
  }
}

// Host tensor stored in its element type (raw bytes) with float conversions.
struct HostTensor {
  DT dt = DT::f16;
  std::vector<int64_t> shape;
  std::vector<uint8_t> raw;
  size_t count() const {
    size_t n = 1;
    for (auto d : shape) n *= static_cast<size_t>(d);
    return n;
  }
  float get(size_t i) const {
    switch (dt) {
      case DT::f32: return reinterpret_cast<const float*>(raw.data())[i];
      case DT::f16: return mixattn::cvt::ToFloat(reinterpret_cast<const Float16*>(raw.data())[i]);
      default: return mixattn::cvt::ToFloat(reinterpret_cast<const BFloat16*>(raw.data())[i]);
    }
  }
  void set(size_t i, float v) {
    switch (dt) {
      case DT::f32: reinterpret_cast<float*>(raw.data())[i] = v; break;
      case DT::f16: reinterpret_cast<Float16*>(raw.data())[i] = mixattn::cvt::FromFloat<Float16>(v); break;
      default: reinterpret_cast<BFloat16*>(raw.data())[i] = mixattn::cvt::FromFloat<BFloat16>(v); break;
    }
  }
};

HostTensor MakeTensor(DT dt, std::vector<int64_t> shape) {
  HostTensor t;
  t.dt = dt;
  t.shape = std::move(shape);
  t.raw.assign(t.count() * Bytes(dt), 0);
  return t;
}
HostTensor RandomTensor(DT dt, std::vector<int64_t> shape, std::mt19937& rng) {
  HostTensor t = MakeTensor(dt, std::move(shape));
  std::normal_distribution<float> dist(0.f, 1.f);
  for (size_t i = 0; i < t.count(); ++i) t.set(i, dist(rng));
  return t;
}

// Random cache codes: int8 from N(0, 40), fp8 E4M3 codes of N(0, 1) values (any finite code is valid).
HostTensor RandomCodes(DT dt, std::vector<int64_t> shape, std::mt19937& rng) {
  HostTensor t = MakeTensor(dt, std::move(shape));
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : t.raw) {
    do b = static_cast<uint8_t>(byte(rng));
    while (dt == DT::f8 && (b & 0x7f) == 0x7f);  // not NaN
  }
  return t;
}

// rotary > 0: the model has cos_cache / sin_cache inputs (after new_lengths) and rotary_interleaved.
// cache: f32 (= the query type, no scales) or i8 / f8 with k_scale / v_scale of rank k_rank / v_rank (1: [1], 4:
// [1, Hkv, 1, 1] or [1, Hkv, 1, D]).
std::string OursModelName(bool owner, DT dt, int hq, int hkv, int w, float softcap, bool nl, int rotary = 0,
                          bool interleaved = false, DT cache = DT::f32, int k_rank = 0, int v_rank = 0) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "%s_%s_h%d_kv%d_w%d_sc%d_nl%d%s", owner ? "owner" : "reader", Name(dt), hq, hkv, w,
                static_cast<int>(softcap * 100), nl ? 1 : 0,
                rotary > 0 ? (interleaved ? "_rotary_interleaved" : "_rotary") : "");
  std::string n = buf;
  if (cache == DT::i8 || cache == DT::f8) n += std::string("_") + Name(cache) + "_k" + std::to_string(k_rank) + "v" + std::to_string(v_rank);
  return n;
}
// fp8: float8e4m3fn caches with per-tensor k_scale / v_scale (k_quant_type = v_quant_type = PER_TENSOR).
std::string GqaModelName(DT dt, int hq, int hkv, int lw, bool swc, bool fp8 = false) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "gqa_%s_h%d_kv%d_lw%d_swc%d%s", Name(dt), hq, hkv, lw, swc ? 1 : 0, fp8 ? "_f8" : "");
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Correctness cases.
struct Case {
  std::string name;
  bool owner = true;
  DT dt = DT::f16;
  int B = 1, S = 1, Hq = 8, Hkv = 2, D = 128, C = 64, W = 0;
  float softcap = 0.f;
  std::vector<int> past, newl;  // newl empty = input absent
  bool inplace = true;          // owner: bind present to the past buffers (else separate buffers: copy path)
  int rotary = 0;               // > 0: rotary inside the op over R = rotary dims (needs newl: inputs follow it)
  bool interleaved = false;
  DT cache = DT::f32;          // i8 / f8: quantized caches (else the caches have type dt)
  int k_mode = 0, v_mode = 0;  // scale granularity: 0 [1], 1 [1, Hkv, 1, 1], 2 [1, Hkv, 1, D]
  bool quantized() const { return cache == DT::i8 || cache == DT::f8; }
  std::string model() const {
    return OursModelName(owner, dt, Hq, Hkv, W, softcap, !newl.empty(), rotary > 0, interleaved, cache,
                         k_mode == 0 ? 1 : 4, v_mode == 0 ? 1 : 4);
  }
};

std::vector<Case> CheckCases(bool quick) {
  std::vector<Case> cases;
  auto add = [&](Case c) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s_%s_%s_D%d_G%d_B%d_S%d_C%d_W%d%s%s%s%s", c.owner ? "owner" : "reader",
                  c.S == 1 ? "decode" : "prefill", Name(c.dt), c.D, c.Hq / c.Hkv, c.B, c.S, c.C, c.W,
                  c.newl.empty() ? "" : "_newlen", c.softcap > 0 ? "_softcap" : "", c.inplace ? "" : "_copy",
                  c.rotary > 0 ? (c.interleaved ? "_rotary_il" : "_rotary") : "");
    c.name = buf;
    if (c.quantized()) c.name += std::string("_") + Name(c.cache) + "_k" + std::to_string(c.k_mode) + "v" + std::to_string(c.v_mode);
    cases.push_back(c);
  };
  const std::vector<DT> dts = quick ? std::vector<DT>{DT::f16} : std::vector<DT>{DT::f16, DT::bf16};
  const std::vector<int> dims = quick ? std::vector<int>{128} : std::vector<int>{64, 128, 256};
  for (DT dt : dts)
    for (int D : dims) {
      Case c;
      c.dt = dt;
      c.D = D;
      // owner decode, global cache, mixed lengths (empty, short, nearly full)
      c.owner = true; c.B = 3; c.S = 1; c.Hq = 8; c.Hkv = 2; c.C = 300; c.W = 0; c.past = {0, 17, 250}; c.newl = {};
      add(c);
      // owner decode, sliding ring that has wrapped (P > C), one sequence before the window filled
      c.C = 64; c.W = 64; c.past = {5, 64, 1000};
      add(c);
      // owner prefill S > W on a ring, mixed new_lengths (padding rows), ring wraps inside the chunk
      c.S = 100; c.W = 32; c.C = 48; c.past = {0, 30, 500}; c.newl = {100, 57, 3};
      add(c);
      // owner prefill, global cache
      c.S = 70; c.W = 0; c.C = 200; c.past = {0, 40, 129}; c.newl = {70, 70, 1};
      add(c);
      // reader decode, sliding, MQA (G = 8)
      c.owner = false; c.S = 1; c.Hq = 8; c.Hkv = 1; c.W = 32; c.C = 40; c.past = {3, 100, 777}; c.newl = {};
      add(c);
      // reader prefill, sliding (C = W + S - 1)
      c.S = 9; c.Hkv = 2; c.W = 32; c.C = 40; c.past = {0, 50, 1000};
      add(c);
      // reader decode, global
      c.S = 1; c.W = 0; c.C = 500; c.past = {10, 200, 499}; c.newl = {1, 0, 1};
      add(c);
    }
  // Rotary inside the ops (cos/sin inputs): the fused tensor-core decode (Q at load, the new key in shared memory
  // and in the cache write) and the pre-pass of every other path; half-split, interleaved and partial rotary.
  {
    Case c;
    c.rotary = 128; c.dt = DT::f16; c.D = 128; c.owner = true; c.B = 3; c.S = 1; c.Hq = 8; c.Hkv = 2; c.C = 300; c.W = 0;
    c.past = {0, 17, 250}; c.newl = {1, 1, 1};
    add(c);
    if (!quick) {
      c.dt = DT::bf16; c.D = 64; c.rotary = 32; c.interleaved = true; c.C = 64; c.W = 64; c.past = {5, 64, 1000};
      c.newl = {1, 0, 1};
      add(c);
      c.dt = DT::f16; c.D = 128; c.rotary = 128; c.interleaved = false; c.S = 40; c.W = 32; c.C = 48;
      c.past = {0, 30, 500}; c.newl = {40, 17, 3};
      add(c);
      c.owner = false; c.S = 1; c.W = 32; c.C = 40; c.past = {3, 100, 777}; c.newl = {1, 1, 1};
      add(c);
      c.S = 9; c.past = {0, 50, 1000}; c.newl = {9, 9, 4};
      add(c);
      c.owner = true; c.S = 1; c.C = 64; c.W = 64; c.inplace = false; c.past = {5, 64, 1000}; c.newl = {1, 1, 1};
      add(c);
      c.dt = DT::f32; c.inplace = true; c.rotary = 64; add(c);  // SIMT decode: pre-pass
      c.S = 12; c.C = 80; c.newl = {12, 5, 12}; add(c);      // fp32 per-token path: pre-pass
      // Tensor-core decode with half-split partial rotary (dimensions R..D copied by the staged query rotation):
      // D = 256 with 8 query heads a chunk, and bf16 D = 64 with G = 3 (a partly used chunk).
      c.dt = DT::f16; c.D = 256; c.rotary = 64; c.interleaved = false; c.Hq = 16; c.Hkv = 2; c.S = 1; c.C = 300; c.W = 0;
      c.past = {0, 17, 250}; c.newl = {1, 1, 1};
      add(c);
      c.dt = DT::bf16; c.D = 64; c.rotary = 48; c.Hq = 6; c.Hkv = 2; c.C = 64; c.W = 64; c.past = {5, 64, 1000};
      add(c);
    }
  }
  // Quantized caches (int8 / fp8, docs/ops.md "Quantized caches"): the CUDA op against the CPU op on the same codes
  // and scales — outputs within the fp tolerance (x2), present caches byte-identical. Every path: the tensor-core decode
  // (global, wrapped ring, reader, rotary, copy binding), the prefill and fp32 paths (dequantizing pre-pass), every scale
  // granularity for K and V.
  for (DT cache : {DT::i8, DT::f8})
    for (DT dt : quick ? std::vector<DT>{DT::f16} : std::vector<DT>{DT::f16, DT::bf16})
      for (int D : quick ? std::vector<int>{128} : std::vector<int>{64, 128}) {
        Case c;
        c.cache = cache; c.dt = dt; c.D = D;
        c.owner = true; c.B = 3; c.S = 1; c.Hq = 8; c.Hkv = 2; c.C = 300; c.W = 0; c.past = {0, 17, 250};
        c.k_mode = 2; c.v_mode = 0;
        add(c);
        c.C = 64; c.W = 64; c.past = {5, 64, 1000}; c.k_mode = 1; c.v_mode = 2;
        add(c);
        c.S = 100; c.W = 32; c.C = 48; c.past = {0, 30, 500}; c.newl = {100, 57, 3}; c.k_mode = 0; c.v_mode = 1;
        add(c);
        c.S = 70; c.W = 0; c.C = 200; c.past = {0, 40, 129}; c.newl = {70, 70, 1}; c.k_mode = 2; c.v_mode = 2;
        add(c);
        c.owner = false; c.S = 1; c.Hq = 8; c.Hkv = 1; c.W = 32; c.C = 40; c.past = {3, 100, 777}; c.newl = {};
        c.k_mode = 2; c.v_mode = 1;
        add(c);
        c.S = 9; c.Hkv = 2; c.W = 32; c.C = 40; c.past = {0, 50, 1000}; c.k_mode = 0; c.v_mode = 2;
        add(c);
        if (D == 128) {
          c.owner = true; c.S = 1; c.C = 300; c.W = 0; c.past = {0, 17, 250}; c.newl = {1, 1, 1}; c.rotary = 128;
          c.k_mode = 2; c.v_mode = 2;
          add(c);
          c.C = 64; c.W = 64; c.past = {5, 64, 1000}; c.rotary = 0; c.newl = {}; c.inplace = false; c.k_mode = 1;
          add(c);
        }
      }
  for (DT cache : {DT::i8, DT::f8}) {
    Case c;
    c.cache = cache; c.dt = DT::f32; c.D = 128; c.owner = true; c.B = 2; c.S = 1; c.Hq = 8; c.Hkv = 2; c.C = 64;
    c.W = 64; c.past = {10, 700}; c.k_mode = 2; c.v_mode = 1;
    add(c);
    c.S = 12;
    add(c);
  }
  if (quick) return cases;
  // group sizes: MHA, G = 3 (a partly used head chunk), G = 16 (two chunks); softcap; copy path; fp32
  for (int g : {1, 3, 16}) {
    Case c;
    c.owner = true; c.dt = DT::f16; c.D = 128; c.B = 2; c.S = 1; c.Hkv = 2; c.Hq = 2 * g; c.C = 256; c.W = 0;
    c.past = {100, 255};
    add(c);
    c.S = 33; c.C = 300; c.W = 16; c.past = {0, 400};
    add(c);
  }
  {
    Case c;
    c.owner = true; c.dt = DT::bf16; c.D = 128; c.B = 2; c.S = 1; c.Hq = 8; c.Hkv = 2; c.C = 128; c.W = 128;
    c.softcap = 30.f; c.past = {50, 3000};
    add(c);
    c.S = 40; c.softcap = 30.f;
    add(c);
    c.softcap = 0.f; c.S = 1; c.inplace = false;
    add(c);
    c.S = 20; c.inplace = false;
    add(c);
  }
  for (int S : {1, 12}) {
    Case c;
    c.owner = true; c.dt = DT::f32; c.D = 128; c.B = 2; c.S = S; c.Hq = 8; c.Hkv = 2; c.C = 64; c.W = 64;
    c.past = {10, 700};
    add(c);
    c.owner = false; c.C = 80; c.W = 64; c.past = {10, 700};
    add(c);
  }
  // long contexts: many splits (global, B = 1), a sliding W = 1024 ring at a large position, long prefills
  {
    Case c;
    c.owner = true; c.dt = DT::f16; c.D = 128; c.B = 1; c.S = 1; c.Hq = 32; c.Hkv = 8; c.C = 20000; c.W = 0;
    c.past = {19999};
    add(c);
    c.B = 2; c.C = 1024; c.W = 1024; c.past = {5000, 100};
    add(c);
    c.B = 1; c.S = 300; c.C = 1024; c.W = 1024; c.past = {2000};
    add(c);
    // a long global prefill: many key tiles per query tile, a chunk from scratch next to one late in the cache
    c.B = 2; c.S = 200; c.C = 3000; c.W = 0; c.past = {0, 2700};
    add(c);
    // split-K prefill (few query tiles against a long cache): 2 splits; then 4, where the short sequence leaves
    // three splits without a key
    c.B = 2; c.S = 100; c.C = 12000; c.past = {0, 11800};
    add(c);
    c.S = 64; c.C = 20000; c.past = {0, 19000};
    add(c);
  }
  return cases;
}

struct Models {
  std::string dir, lib;
};

// The Env is released at the end of main (ReleaseEnvAtReturn), not by a static destructor: that would run after the
// CUDA runtime's own exit handlers (registered later, run first), so ORT's CUDA provider would free its handles on a
// torn-down runtime — under compute-sanitizer that ended the process with "corrupted double-linked list".
std::unique_ptr<Ort::Env>& EnvSlot() {
  static std::unique_ptr<Ort::Env> env;
  return env;
}
Ort::Env& GetEnv() {
  auto& env = EnvSlot();
  if (!env) env = std::make_unique<Ort::Env>(ORT_LOGGING_LEVEL_WARNING, "mixattn-harness");
  return *env;
}
struct ReleaseEnvAtReturn {
  ~ReleaseEnvAtReturn() { EnvSlot().reset(); }
};

Ort::Session OpenSession(const Models& m, const std::string& model, bool cuda, void* stream = nullptr,
                         bool check_lengths = false) {
  Ort::SessionOptions so;
  so.SetIntraOpNumThreads(2);
  so.RegisterCustomOpsLibrary(m.lib.c_str());
  if (check_lengths) so.AddConfigEntry("mixattention.check_lengths", "1");
#if defined(HARNESS_CUDA)
  if (cuda) {
    Ort::CUDAProviderOptions cuda_options;
    cuda_options.Update({{"device_id", "0"}});
    if (stream) cuda_options.UpdateWithValue("user_compute_stream", stream);
    so.AppendExecutionProvider_CUDA_V2(*cuda_options);
  }
#else
  (void)cuda;
  (void)stream;
#endif
  const std::string path = m.dir + "/" + model + ".onnx";
  return Ort::Session(GetEnv(), path.c_str(), so);
}

Ort::Value HostValue(HostTensor& t) {
  static Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  return Ort::Value::CreateTensor(cpu, t.raw.data(), t.raw.size(), t.shape.data(), t.shape.size(), Onnx(t.dt));
}
Ort::Value HostInt32(std::vector<int32_t>& v, std::vector<int64_t> shape) {
  static Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  return Ort::Value::CreateTensor<int32_t>(cpu, v.data(), v.size(), shape.data(), shape.size());
}

HostTensor FromValue(const Ort::Value& v, DT dt) {
  auto info = v.GetTensorTypeAndShapeInfo();
  HostTensor t = MakeTensor(dt, info.GetShape());
  std::memcpy(t.raw.data(), v.GetTensorRawData(), t.raw.size());
  return t;
}

struct Diff {
  double max_abs = 0, rel_l2 = 0;
  size_t nan = 0;
};
Diff Compare(const HostTensor& a, const HostTensor& ref) {
  Diff d;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.count(); ++i) {
    const double x = a.get(i), y = ref.get(i);
    if (!std::isfinite(x)) {
      ++d.nan;
      continue;
    }
    d.max_abs = std::max(d.max_abs, std::fabs(x - y));
    num += (x - y) * (x - y);
    den += y * y;
  }
  d.rel_l2 = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return d;
}

void Dump(const std::string& dir, const std::string& name, const HostTensor& t) {
  std::ofstream f(dir + "/" + name + ".f32", std::ios::binary);
  for (size_t i = 0; i < t.count(); ++i) {
    const float v = t.get(i);
    f.write(reinterpret_cast<const char*>(&v), 4);
  }
}
void DumpInt(const std::string& dir, const std::string& name, const std::vector<int32_t>& v) {
  std::ofstream f(dir + "/" + name + ".i32", std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
}

#if defined(HARNESS_CUDA)
struct DeviceBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) { CK(cudaMalloc(&p, std::max<size_t>(n, 16))); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};
Ort::MemoryInfo& CudaMem() {
  static Ort::MemoryInfo m("Cuda", OrtDeviceAllocator, 0, OrtMemTypeDefault);
  return m;
}
Ort::Value DeviceValue(DeviceBuffer& b, const std::vector<int64_t>& shape, ONNXTensorElementDataType type) {
  return Ort::Value::CreateTensor(CudaMem(), b.p, b.bytes, shape.data(), shape.size(), type);
}
std::unique_ptr<DeviceBuffer> Upload(const void* data, size_t bytes) {
  auto b = std::make_unique<DeviceBuffer>(bytes);
  CK(cudaMemcpy(b->p, data, bytes, cudaMemcpyHostToDevice));
  return b;
}
#endif

// Runs one case on the CPU op (plain Run) and on the CUDA op (IO binding, device buffers, present
// bound in place or to separate poisoned buffers), compares, dumps. Returns true when it passed.
bool RunCase(const Models& m, const Case& c, const std::string& dump_root, std::mt19937& rng, FILE* log) {
  const int B = c.B, S = c.S, D = c.D;
  HostTensor q = RandomTensor(c.dt, {B, S, int64_t{c.Hq} * D}, rng);
  HostTensor k = RandomTensor(c.dt, {B, S, int64_t{c.Hkv} * D}, rng);
  HostTensor v = RandomTensor(c.dt, {B, S, int64_t{c.Hkv} * D}, rng);
  HostTensor kc = c.quantized() ? RandomCodes(c.cache, {B, c.Hkv, c.C, D}, rng) : RandomTensor(c.dt, {B, c.Hkv, c.C, D}, rng);
  HostTensor vc = c.quantized() ? RandomCodes(c.cache, {B, c.Hkv, c.C, D}, rng) : RandomTensor(c.dt, {B, c.Hkv, c.C, D}, rng);
  const DT cache_dt = c.quantized() ? c.cache : c.dt;
  // Scales of the quantized caches: around what maps N(0, 1) values onto the code range (int8 3/127, fp8 3/448).
  auto scale_tensor = [&](int mode) {
    HostTensor t = MakeTensor(DT::f32, mode == 0 ? std::vector<int64_t>{1}
                                     : std::vector<int64_t>{1, c.Hkv, 1, mode == 1 ? 1 : int64_t{D}});
    std::uniform_real_distribution<float> u(0.5f, 1.5f);
    for (size_t i = 0; i < t.count(); ++i) t.set(i, (c.cache == DT::i8 ? 3.f / 127.f : 3.f / 448.f) * u(rng));
    return t;
  };
  HostTensor ks = scale_tensor(c.k_mode), vs = scale_tensor(c.v_mode);
  std::vector<int32_t> past(c.past.begin(), c.past.end()), newl(c.newl.begin(), c.newl.end());
  // Rotary caches [M, R/2] covering every position of the case (as a model's cos/sin tables, base 10000).
  const int M = *std::max_element(past.begin(), past.end()) + S + 1;
  HostTensor rcos = MakeTensor(c.dt, {M, std::max(c.rotary / 2, 1)}), rsin = rcos;
  for (int pos = 0; c.rotary > 0 && pos < M; ++pos)
    for (int i = 0; i < c.rotary / 2; ++i) {
      const double a = pos * std::pow(10000.0, -2.0 * i / c.rotary);
      rcos.set(static_cast<size_t>(pos) * (c.rotary / 2) + i, static_cast<float>(std::cos(a)));
      rsin.set(static_cast<size_t>(pos) * (c.rotary / 2) + i, static_cast<float>(std::sin(a)));
    }

  // CPU op.
  std::vector<const char*> in_names, out_names;
  std::vector<Ort::Value> ins;
  if (c.owner) {
    in_names = {"query", "key", "value", "past_key", "past_value", "past_lengths"};
    out_names = {"output", "present_key", "present_value"};
    ins.push_back(HostValue(q));
    ins.push_back(HostValue(k));
    ins.push_back(HostValue(v));
    ins.push_back(HostValue(kc));
    ins.push_back(HostValue(vc));
  } else {
    in_names = {"query", "key_cache", "value_cache", "past_lengths"};
    out_names = {"output"};
    ins.push_back(HostValue(q));
    ins.push_back(HostValue(kc));
    ins.push_back(HostValue(vc));
  }
  ins.push_back(HostInt32(past, {B}));
  if (!newl.empty()) {
    in_names.push_back("new_lengths");
    ins.push_back(HostInt32(newl, {B}));
  }
  if (c.rotary > 0) {
    in_names.push_back("cos_cache");
    ins.push_back(HostValue(rcos));
    in_names.push_back("sin_cache");
    ins.push_back(HostValue(rsin));
  }
  if (c.quantized()) {
    in_names.push_back("k_scale");
    ins.push_back(HostValue(ks));
    in_names.push_back("v_scale");
    ins.push_back(HostValue(vs));
  }
  Ort::Session cpu = OpenSession(m, c.model(), false);
  auto cpu_out = cpu.Run(Ort::RunOptions{}, in_names.data(), ins.data(), ins.size(), out_names.data(), out_names.size());
  HostTensor ref_out = FromValue(cpu_out[0], c.dt);
  HostTensor ref_pk, ref_pv;
  if (c.owner) {
    ref_pk = FromValue(cpu_out[1], cache_dt);
    ref_pv = FromValue(cpu_out[2], cache_dt);
  }

  HostTensor gpu_out = ref_out, gpu_pk = ref_pk, gpu_pv = ref_pv;
#if defined(HARNESS_CUDA)
  {
    Ort::Session gpu = OpenSession(m, c.model(), true);
    auto dq = Upload(q.raw.data(), q.raw.size());
    auto dk = Upload(k.raw.data(), k.raw.size());
    auto dv = Upload(v.raw.data(), v.raw.size());
    auto dkc = Upload(kc.raw.data(), kc.raw.size());
    auto dvc = Upload(vc.raw.data(), vc.raw.size());
    auto dpast = Upload(past.data(), past.size() * 4);
    std::unique_ptr<DeviceBuffer> dnew;
    if (!newl.empty()) dnew = Upload(newl.data(), newl.size() * 4);
    DeviceBuffer dout(q.raw.size());
    CK(cudaMemset(dout.p, 0xFF, dout.bytes));  // NaN everywhere: every element must be written
    std::unique_ptr<DeviceBuffer> dpk, dpv;
    const ONNXTensorElementDataType t = Onnx(c.dt);
    Ort::IoBinding bind(gpu);
    const std::vector<int64_t> cache_shape{B, c.Hkv, c.C, D};
    Ort::Value vq = DeviceValue(*dq, q.shape, t), vk = DeviceValue(*dk, k.shape, t), vv = DeviceValue(*dv, v.shape, t);
    const ONNXTensorElementDataType ct = Onnx(cache_dt);
    Ort::Value vkc = DeviceValue(*dkc, cache_shape, ct), vvc = DeviceValue(*dvc, cache_shape, ct);
    Ort::Value vpast = DeviceValue(*dpast, {B}, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32);
    Ort::Value vnew{nullptr};
    Ort::Value vout = DeviceValue(dout, q.shape, t);
    Ort::Value vpk{nullptr}, vpv{nullptr};
    bind.BindInput("query", vq);
    if (c.owner) {
      bind.BindInput("key", vk);
      bind.BindInput("value", vv);
      bind.BindInput("past_key", vkc);
      bind.BindInput("past_value", vvc);
      if (c.inplace) {
        bind.BindOutput("present_key", vkc);
        bind.BindOutput("present_value", vvc);
      } else {
        dpk = std::make_unique<DeviceBuffer>(kc.raw.size());
        dpv = std::make_unique<DeviceBuffer>(vc.raw.size());
        CK(cudaMemset(dpk->p, 0xFF, dpk->bytes));
        CK(cudaMemset(dpv->p, 0xFF, dpv->bytes));
        vpk = DeviceValue(*dpk, cache_shape, ct);
        vpv = DeviceValue(*dpv, cache_shape, ct);
        bind.BindOutput("present_key", vpk);
        bind.BindOutput("present_value", vpv);
      }
    } else {
      bind.BindInput("key_cache", vkc);
      bind.BindInput("value_cache", vvc);
    }
    bind.BindInput("past_lengths", vpast);
    if (dnew) {
      vnew = DeviceValue(*dnew, {B}, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32);
      bind.BindInput("new_lengths", vnew);
    }
    std::unique_ptr<DeviceBuffer> dcos, dsin;
    Ort::Value vcos{nullptr}, vsin{nullptr};
    if (c.rotary > 0) {
      dcos = Upload(rcos.raw.data(), rcos.raw.size());
      dsin = Upload(rsin.raw.data(), rsin.raw.size());
      vcos = DeviceValue(*dcos, rcos.shape, t);
      vsin = DeviceValue(*dsin, rsin.shape, t);
      bind.BindInput("cos_cache", vcos);
      bind.BindInput("sin_cache", vsin);
    }
    std::unique_ptr<DeviceBuffer> dks, dvs;
    Ort::Value vks{nullptr}, vvs{nullptr};
    if (c.quantized()) {  // the scales in device memory, as a converted model keeps them
      dks = Upload(ks.raw.data(), ks.raw.size());
      dvs = Upload(vs.raw.data(), vs.raw.size());
      vks = DeviceValue(*dks, ks.shape, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      vvs = DeviceValue(*dvs, vs.shape, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      bind.BindInput("k_scale", vks);
      bind.BindInput("v_scale", vvs);
    }
    bind.BindOutput("output", vout);
    // The uploads (pageable cudaMemcpy returns before its DMA lands) and the poisoning memsets ran on the legacy
    // stream, which ORT's non-blocking stream does not wait for: without this, a busy GPU let the op read stale inputs.
    CK(cudaDeviceSynchronize());
    gpu.Run(Ort::RunOptions{}, bind);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(gpu_out.raw.data(), dout.p, dout.bytes, cudaMemcpyDeviceToHost));
    if (c.owner) {
      void* srck = c.inplace ? dkc->p : dpk->p;
      void* srcv = c.inplace ? dvc->p : dpv->p;
      CK(cudaMemcpy(gpu_pk.raw.data(), srck, kc.raw.size(), cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(gpu_pv.raw.data(), srcv, vc.raw.size(), cudaMemcpyDeviceToHost));
    }
  }
#endif

  const Diff d = Compare(gpu_out, ref_out);
  // Quantized: the CUDA kernels fold the K scale into the query (rounded to T) where the CPU op dequantizes in fp32.
  const double tol = (c.dt == DT::f32 ? 1e-4 : c.dt == DT::f16 ? 4e-3 : 3e-2) * (c.quantized() ? 2 : 1);
  bool ok = d.nan == 0 && d.max_abs <= tol;
  bool cache_ok = true;
  if (c.owner) cache_ok = gpu_pk.raw == ref_pk.raw && gpu_pv.raw == ref_pv.raw;
  ok = ok && cache_ok;
  std::fprintf(log, "%-60s gpu-vs-cpu max|d|=%.2e relL2=%.2e nan=%zu cache=%s  %s\n", c.name.c_str(), d.max_abs,
               d.rel_l2, d.nan, c.owner ? (cache_ok ? "identical" : "DIFFERENT") : "-", ok ? "PASS" : "FAIL");
  std::fflush(log);

  if (!dump_root.empty() && !c.quantized()) {  // torch_check.py reads fp caches only
    const std::string dir = dump_root + "/" + c.name;
    std::string cmd = "mkdir -p '" + dir + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "cannot create %s\n", dir.c_str());
    std::ofstream meta(dir + "/meta.txt");
    meta << (c.owner ? "owner" : "reader") << ' ' << Name(c.dt) << ' ' << B << ' ' << S << ' ' << c.Hq << ' ' << c.Hkv
         << ' ' << D << ' ' << c.C << ' ' << c.W << ' ' << c.softcap << ' ' << (newl.empty() ? 0 : 1) << ' '
         << c.rotary << ' ' << (c.interleaved ? 1 : 0) << ' ' << M << '\n';
    if (c.rotary > 0) {
      Dump(dir, "cos_cache", rcos);
      Dump(dir, "sin_cache", rsin);
    }
    Dump(dir, "query", q);
    Dump(dir, "key", k);
    Dump(dir, "value", v);
    Dump(dir, "key_cache", kc);
    Dump(dir, "value_cache", vc);
    DumpInt(dir, "past_lengths", past);
    if (!newl.empty()) DumpInt(dir, "new_lengths", newl);
    Dump(dir, "out_cpu", ref_out);
    Dump(dir, "out_gpu", gpu_out);
  }
  return ok;
}

#if defined(HARNESS_CUDA)
// The length-rule guard (mixattention.check_lengths=1): a step past a global cache's capacity is refused on the GPU
// with the CPU op's error message.
bool LengthGuardRejectsOverfullGlobalCache(const Models& m) {
  Ort::Session gpu = OpenSession(m, OursModelName(true, DT::f16, 8, 2, 0, 0.f, false), true, nullptr, true);
  const int B = 1, D = 64, C = 4;
  std::vector<int32_t> past{4};
  HostTensor q = MakeTensor(DT::f16, {B, 1, 8 * D}), k = MakeTensor(DT::f16, {B, 1, 2 * D});
  HostTensor kc = MakeTensor(DT::f16, {B, 2, C, D});
  auto dq = Upload(q.raw.data(), q.raw.size()), dk = Upload(k.raw.data(), k.raw.size());
  auto dkc = Upload(kc.raw.data(), kc.raw.size()), dvc = Upload(kc.raw.data(), kc.raw.size());
  auto dpast = Upload(past.data(), 4);
  DeviceBuffer dout(q.raw.size());
  const auto t = Onnx(DT::f16);
  Ort::IoBinding bind(gpu);
  Ort::Value vq = DeviceValue(*dq, q.shape, t), vk = DeviceValue(*dk, k.shape, t);
  Ort::Value vkc = DeviceValue(*dkc, kc.shape, t), vvc = DeviceValue(*dvc, kc.shape, t);
  Ort::Value vpast = DeviceValue(*dpast, {B}, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32), vout = DeviceValue(dout, q.shape, t);
  bind.BindInput("query", vq);
  bind.BindInput("key", vk);
  bind.BindInput("value", vk);
  bind.BindInput("past_key", vkc);
  bind.BindInput("past_value", vvc);
  bind.BindInput("past_lengths", vpast);
  bind.BindOutput("output", vout);
  bind.BindOutput("present_key", vkc);
  bind.BindOutput("present_value", vvc);
  bool rejected = false;
  try {
    gpu.Run(Ort::RunOptions{}, bind);
  } catch (const Ort::Exception& e) {
    rejected = std::strstr(e.what(), "global cache 'past_key' capacity C=4 is too small") != nullptr;
    std::printf("check_lengths guard message: %s\n", e.what());
  }
  return rejected;
}
#endif

int Check(const Models& m, const std::string& dump, bool quick) {
  std::mt19937 rng(1234);
  int pass = 0, fail = 0;
  for (const Case& c : CheckCases(quick)) {
    bool ok = false;
    try {
      ok = RunCase(m, c, dump, rng, stdout);
    } catch (const Ort::Exception& e) {
      std::printf("%-60s ERROR %s\n", c.name.c_str(), e.what());
    }
    (ok ? pass : fail)++;
  }
#if defined(HARNESS_CUDA)
  {
    const bool rejected = LengthGuardRejectsOverfullGlobalCache(m);
    std::printf("%-60s %s\n", "check_lengths_rejects_overfull_global_cache", rejected ? "PASS" : "FAIL");
    (rejected ? pass : fail)++;
  }
#endif
  std::printf("check: %d passed, %d failed\n", pass, fail);
  return fail == 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// Benchmark (CUDA only).
#if defined(HARNESS_CUDA)

struct Timer {
  cudaStream_t stream;
  cudaEvent_t a, b;
  explicit Timer(cudaStream_t s) : stream(s) {
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  // GPU time per call of `submit(i)`, queued behind a spin kernel so host overhead is hidden.
  template <typename F>
  double PerCallUs(F&& submit, int iters) {
    for (int i = 0; i < 3; ++i) submit(i);
    CK(cudaStreamSynchronize(stream));
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 10; ++i) submit(i);
    auto t1 = std::chrono::steady_clock::now();
    CK(cudaStreamSynchronize(stream));
    const double host_us = std::chrono::duration<double, std::micro>(t1 - t0).count() / 10;
    double spin_ns = std::max(2e6, host_us * iters * 2e3);
    for (int attempt = 0; attempt < 4; ++attempt) {
      LaunchSpin(stream, static_cast<unsigned long long>(spin_ns));
      CK(cudaEventRecord(a, stream));
      for (int i = 0; i < iters; ++i) submit(i);
      CK(cudaEventRecord(b, stream));
      const bool starved = cudaEventQuery(a) == cudaSuccess;  // spin ended before all runs were queued
      CK(cudaStreamSynchronize(stream));
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, a, b));
      if (!starved || attempt == 3) return ms * 1e3 / iters;
      spin_ns *= 4;
    }
    return NAN;
  }
};

struct BenchRow {
  std::string kind;
  int B, T, L;
  double bytes, ours_us, gqa_us, gqa_diff;
};

// fp8: both ops over float8e4m3fn caches with per-tensor scales (ours: WindowedAttention<fp16, fp8>; GQA: its quantized
// cache, k_quant_type = v_quant_type = PER_TENSOR, kv_cache_bit_width = 8).
int Bench(const Models& m, bool quick, bool fp8 = false) {
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  Timer timer(stream);
  Ort::RunOptions ro;
  ro.AddConfigEntry(kOrtRunOptionsConfigDisableSynchronizeExecutionProviders, "1");

  // Peak: device-to-device copy of 2 GiB (bytes read + written).
  double peak_gbs = 0;
  {
    const size_t n = size_t{2} << 30;
    DeviceBuffer a(n), b(n);
    CK(cudaMemset(a.p, 1, n));
    const double us = timer.PerCallUs([&](int) { CK(cudaMemcpyAsync(b.p, a.p, n, cudaMemcpyDeviceToDevice, stream)); }, 10);
    peak_gbs = 2.0 * n / (us * 1e3);
  }
  const double empty_us = timer.PerCallUs([&](int) { LaunchEmpty(stream); }, 2000);
  std::printf("# device %s, %d SMs, L2 %d MiB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  std::printf("# d2d_copy_peak_GBps %.1f\n# empty_kernel_us %.3f\n", peak_gbs, empty_us);
  std::fflush(stdout);

  const int Hq = 32, Hkv = 8, D = 128, W = 1024;
  const DT dt = DT::f16;
  const auto t = Onnx(dt);
  const DT cache_dt = fp8 ? DT::f8 : dt;
  const auto ct = Onnx(cache_dt);
  Ort::Session ours_global = OpenSession(m, OursModelName(true, dt, Hq, Hkv, 0, 0.f, false, 0, false, cache_dt, 1, 1), true, stream);
  Ort::Session ours_sliding = OpenSession(m, OursModelName(true, dt, Hq, Hkv, W, 0.f, false, 0, false, cache_dt, 1, 1), true, stream);
  // GQA over fp8 caches depends on the ORT build (and its sliding-window cache on the kernel it picks): a model that
  // does not open leaves its column empty instead of ending the run.
  auto open_gqa = [&](const std::string& name) -> std::unique_ptr<Ort::Session> {
    try {
      return std::make_unique<Ort::Session>(OpenSession(m, name, true, stream));
    } catch (const Ort::Exception& e) {
      std::fprintf(stderr, "gqa model %s: %s\n", name.c_str(), e.what());
      return nullptr;
    }
  };
  std::unique_ptr<Ort::Session> gqa_global = open_gqa(GqaModelName(dt, Hq, Hkv, -1, false, fp8));
  std::unique_ptr<Ort::Session> gqa_sliding = open_gqa(GqaModelName(dt, Hq, Hkv, W, true, fp8));
  // Per-tensor scales (fp8: values of N(0, 1) keys and values map to codes within +-256).
  std::vector<float> unit_scale{1.f / 64.f};
  auto dscale = Upload(unit_scale.data(), 4);

  std::vector<int> Bs = {1, 8, 32}, Ts;
  for (int T = 1024; T <= 131072; T *= 2) Ts.push_back(T);
  if (quick) Ts = {1024, 16384};
  std::mt19937 rng(7);
  std::printf("kind,B,T,L,bytes,ours_us,gqa_us,gqa_max_abs_diff\n");
  std::fflush(stdout);
  for (const char* kind : {"sliding", "global"}) {
    const bool sliding = std::strcmp(kind, "sliding") == 0;
    for (int B : Bs)
      for (int T : Ts) {
        const int C = sliding ? W : T;
        const int L = sliding ? std::min(T, W) : T;
        const size_t cache_bytes = size_t{2} * B * Hkv * C * D * Bytes(cache_dt);  // K + V
        // Rotate over enough cache copies that the set exceeds 4x L2 (at most 32 copies).
        const int R = static_cast<int>(std::clamp<size_t>(4 * size_t(prop.l2CacheSize) / cache_bytes + 1, 1, 32));
        HostTensor q = RandomTensor(dt, {B, 1, Hq * D}, rng), k = RandomTensor(dt, {B, 1, Hkv * D}, rng);
        std::vector<int32_t> past(B, T - 1), total{T};
        auto dq = Upload(q.raw.data(), q.raw.size());
        auto dk = Upload(k.raw.data(), k.raw.size());
        auto dv = Upload(k.raw.data(), k.raw.size());
        auto dpast = Upload(past.data(), past.size() * 4);
        DeviceBuffer dout(q.raw.size()), dout2(q.raw.size());
        std::vector<std::unique_ptr<DeviceBuffer>> kc, vc;
        {
          // Random cache contents: a random block of up to 8 Mi elements tiled over the cache on
          // the device (host RNG over 4 G elements would take minutes), then copies for the rotation.
          const size_t elems = size_t{1} * B * Hkv * C * D;
          const int64_t block_elems = static_cast<int64_t>(std::min<size_t>(elems, size_t{8} << 20));
          HostTensor block = fp8 ? RandomCodes(DT::f8, {block_elems}, rng) : RandomTensor(dt, {block_elems}, rng);
          for (int r = 0; r < R; ++r) {
            kc.push_back(std::make_unique<DeviceBuffer>(elems * Bytes(cache_dt)));
            vc.push_back(std::make_unique<DeviceBuffer>(elems * Bytes(cache_dt)));
          }
          for (size_t off = 0; off < kc[0]->bytes; off += block.raw.size()) {
            const size_t n = std::min(block.raw.size(), kc[0]->bytes - off);
            CK(cudaMemcpy(static_cast<char*>(kc[0]->p) + off, block.raw.data(), n, cudaMemcpyHostToDevice));
          }
          CK(cudaMemcpy(vc[0]->p, kc[0]->p, kc[0]->bytes, cudaMemcpyDeviceToDevice));
          for (int r = 1; r < R; ++r) {
            CK(cudaMemcpy(kc[r]->p, kc[0]->p, kc[0]->bytes, cudaMemcpyDeviceToDevice));
            CK(cudaMemcpy(vc[r]->p, kc[0]->p, kc[0]->bytes, cudaMemcpyDeviceToDevice));
          }
        }
        const std::vector<int64_t> cache_shape{B, Hkv, C, D};
        std::vector<Ort::Value> keep;
        auto dev = [&](DeviceBuffer& b, std::vector<int64_t> shape, ONNXTensorElementDataType ty) -> Ort::Value& {
          keep.push_back(DeviceValue(b, shape, ty));
          return keep.back();
        };
        keep.reserve(16 + 8 * R);
        Ort::Value& vq = dev(*dq, q.shape, t);
        Ort::Value& vk = dev(*dk, k.shape, t);
        Ort::Value& vv = dev(*dv, k.shape, t);
        Ort::Value& vpast = dev(*dpast, {B}, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32);
        Ort::Value& vout = dev(dout, q.shape, t);
        Ort::Value& vout2 = dev(dout2, q.shape, t);
        Ort::Value vtotal = HostInt32(total, {1});
        Ort::Value& vscale = dev(*dscale, {1}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);

        Ort::Session& so = sliding ? ours_sliding : ours_global;
        Ort::Session* sg = (sliding ? gqa_sliding : gqa_global).get();
        std::vector<std::unique_ptr<Ort::IoBinding>> bo, bg;
        for (int r = 0; r < R; ++r) {
          Ort::Value& vkc = dev(*kc[r], cache_shape, ct);
          Ort::Value& vvc = dev(*vc[r], cache_shape, ct);
          for (int which = 0; which < (sg != nullptr ? 2 : 1); ++which) {
            auto b = std::make_unique<Ort::IoBinding>(which == 0 ? so : *sg);
            b->BindInput("query", vq);
            b->BindInput("key", vk);
            b->BindInput("value", vv);
            b->BindInput("past_key", vkc);
            b->BindInput("past_value", vvc);
            if (which == 0) {
              b->BindInput("past_lengths", vpast);
              b->BindOutput("output", vout);
            } else {
              b->BindInput("seqlens_k", vpast);
              b->BindInput("total_sequence_length", vtotal);
              b->BindOutput("output", vout2);
            }
            if (fp8) {
              b->BindInput("k_scale", vscale);
              b->BindInput("v_scale", vscale);
            }
            b->BindOutput("present_key", vkc);
            b->BindOutput("present_value", vvc);
            (which == 0 ? bo : bg).push_back(std::move(b));
          }
        }
        const double bytes = 2.0 * B * Hkv * L * D * Bytes(cache_dt);
        const int iters = std::clamp(static_cast<int>(2e5 / (bytes / 3e3 + 5)), 20, 400);  // ~ 0.2 s of GPU each
        double ours_us = NAN, gqa_us = NAN, diff = NAN;
        try {
          ours_us = timer.PerCallUs([&](int i) { so.Run(ro, *bo[i % R]); }, iters);
        } catch (const Ort::Exception& e) {
          std::fprintf(stderr, "ours %s B=%d T=%d: %s\n", kind, B, T, e.what());
        }
        if (sg != nullptr) try {
          gqa_us = timer.PerCallUs([&](int i) { sg->Run(ro, *bg[i % R]); }, iters);
        } catch (const Ort::Exception& e) {
          std::fprintf(stderr, "gqa %s B=%d T=%d: %s\n", kind, B, T, e.what());
        }
        if (!sliding && std::isfinite(ours_us) && std::isfinite(gqa_us)) {
          // Same cache (C = T, slot = position, new row written at T - 1 by both): outputs must agree.
          CK(cudaStreamSynchronize(stream));
          HostTensor a = MakeTensor(dt, q.shape), g = MakeTensor(dt, q.shape);
          CK(cudaMemcpy(a.raw.data(), dout.p, a.raw.size(), cudaMemcpyDeviceToHost));
          CK(cudaMemcpy(g.raw.data(), dout2.p, g.raw.size(), cudaMemcpyDeviceToHost));
          diff = Compare(a, g).max_abs;
        }
        std::printf("%s,%d,%d,%d,%.0f,%.3f,%.3f,%.2e\n", kind, B, T, L, bytes, ours_us, gqa_us, diff);
        std::fflush(stdout);
        bo.clear();
        bg.clear();
      }
  }
  cudaStreamDestroy(stream);
  return 0;
}

int Probe(const Models& m) {
  const int Hq = 32, Hkv = 8, D = 128, W = 1024, B = 1, T = 4096;
  for (bool sliding : {false, true}) {
    Ort::Session s = OpenSession(m, GqaModelName(DT::f16, Hq, Hkv, sliding ? W : -1, sliding), true);
    const int C = sliding ? W : T;
    std::mt19937 rng(3);
    HostTensor q = RandomTensor(DT::f16, {B, 1, Hq * D}, rng), k = RandomTensor(DT::f16, {B, 1, Hkv * D}, rng);
    HostTensor kc = RandomTensor(DT::f16, {B, Hkv, C, D}, rng);
    std::vector<int32_t> past{T - 1}, total{T};
    auto dq = Upload(q.raw.data(), q.raw.size()), dk = Upload(k.raw.data(), k.raw.size());
    auto dkc = Upload(kc.raw.data(), kc.raw.size()), dvc = Upload(kc.raw.data(), kc.raw.size());
    auto dpast = Upload(past.data(), 4);
    DeviceBuffer dout(q.raw.size());
    const auto t = Onnx(DT::f16);
    Ort::Value vq = DeviceValue(*dq, q.shape, t), vk = DeviceValue(*dk, k.shape, t);
    Ort::Value vkc = DeviceValue(*dkc, kc.shape, t), vvc = DeviceValue(*dvc, kc.shape, t);
    Ort::Value vpast = DeviceValue(*dpast, {B}, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32), vout = DeviceValue(dout, q.shape, t);
    Ort::Value vtotal = HostInt32(total, {1});
    Ort::IoBinding b(s);
    b.BindInput("query", vq);
    b.BindInput("key", vk);
    b.BindInput("value", vk);
    b.BindInput("past_key", vkc);
    b.BindInput("past_value", vvc);
    b.BindInput("seqlens_k", vpast);
    b.BindInput("total_sequence_length", vtotal);
    b.BindOutput("output", vout);
    b.BindOutput("present_key", vkc);
    b.BindOutput("present_value", vvc);
    s.Run(Ort::RunOptions{}, b);
    CK(cudaDeviceSynchronize());
    std::printf("probe: GQA %s ran\n", sliding ? "sliding (sliding_window_cache=1, C=W)" : "global");
  }
  return 0;
}
#endif

void Plan() {
  std::map<std::string, std::string> specs;
  for (bool quick : {false, true})
    for (const Case& c : CheckCases(quick)) {
      char buf[256];
      std::snprintf(buf, sizeof buf, "%s %s %s %d %d %d %g %d %d %d", c.model().c_str(), c.owner ? "owner" : "reader",
                    Name(c.dt), c.Hq, c.Hkv, c.W, c.softcap, c.newl.empty() ? 0 : 1, c.rotary > 0 ? 1 : 0,
                    c.interleaved ? 1 : 0);
      if (c.quantized())
        std::snprintf(buf + std::strlen(buf), sizeof buf - std::strlen(buf), " %s %d %d", Name(c.cache),
                      c.k_mode == 0 ? 1 : 4, c.v_mode == 0 ? 1 : 4);
      specs[c.model()] = buf;
    }
  specs[OursModelName(true, DT::f16, 8, 2, 0, 0.f, false)] =
      OursModelName(true, DT::f16, 8, 2, 0, 0.f, false) + " owner f16 8 2 0 0 0";
  for (int w : {0, 1024}) {
    const std::string n = OursModelName(true, DT::f16, 32, 8, w, 0.f, false);
    specs[n] = n + " owner f16 32 8 " + std::to_string(w) + " 0 0";
  }
  specs[GqaModelName(DT::f16, 32, 8, -1, false)] = GqaModelName(DT::f16, 32, 8, -1, false) + " gqa f16 32 8 -1 0";
  specs[GqaModelName(DT::f16, 32, 8, 1024, true)] = GqaModelName(DT::f16, 32, 8, 1024, true) + " gqa f16 32 8 1024 1";
  // bench fp8: both ops over float8e4m3fn caches, per-tensor scales.
  for (int w : {0, 1024}) {
    const std::string n = OursModelName(true, DT::f16, 32, 8, w, 0.f, false, 0, false, DT::f8, 1, 1);
    specs[n] = n + " owner f16 32 8 " + std::to_string(w) + " 0 0 0 0 f8 1 1";
  }
  specs[GqaModelName(DT::f16, 32, 8, -1, false, true)] = GqaModelName(DT::f16, 32, 8, -1, false, true) + " gqa f16 32 8 -1 0 f8";
  specs[GqaModelName(DT::f16, 32, 8, 1024, true, true)] =
      GqaModelName(DT::f16, 32, 8, 1024, true, true) + " gqa f16 32 8 1024 1 f8";
  for (auto& [name, line] : specs) std::printf("%s\n", line.c_str());
}

}  // namespace

#if !defined(HARNESS_GTEST)
int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: harness plan | check MODELS LIB DUMP [quick] | bench[-fp8] MODELS LIB [quick] | probe MODELS LIB\n");
    return 2;
  }
  const std::string mode = argv[1];
  const ReleaseEnvAtReturn release_env;  // declared before any ORT object of main, so destroyed after them
  try {
    GetEnv();  // before any other ORT object (ORT's default logger lives in the Env)
    if (mode == "plan") {
      Plan();
      return 0;
    }
    if (argc < 4) return 2;
    Models m{argv[2], argv[3]};
    if (mode == "check") {
      const std::string dump = argc > 4 ? argv[4] : "";
      const bool quick = argc > 5 && std::string(argv[5]) == "quick";
      return Check(m, dump == "-" ? "" : dump, quick);
    }
#if defined(HARNESS_CUDA)
    if (mode == "bench") return Bench(m, argc > 4 && std::string(argv[4]) == "quick");
    if (mode == "bench-fp8") return Bench(m, argc > 4 && std::string(argv[4]) == "quick", true);
    if (mode == "probe") return Probe(m);
#endif
  } catch (const Ort::Exception& e) {
    std::fprintf(stderr, "ORT error: %s\n", e.what());
    return 3;
  }
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 2;
}
#endif  // !HARNESS_GTEST
