// ort_decode_bench: decode tokens/s of a GenAI-layout decoder through ONNX Runtime's C++ API, for the models the C#
// runtime cannot open (float8e4m3fn cache inputs: ORT's C# API has no element type for them; docs/converter.md,
// "fp8 in .NET"). Built for com.microsoft.GroupQueryAttention models with past_present_share_buffer semantics (the
// GenAI builder's, and `mixattn convert --backend ort-gqa`), which decode in place: each cache is one buffer of
// [batch, kv_heads, rows, head_size] bound as both the past input and the present output.
//
//   ort_decode_bench MODEL.onnx --context C --batch B --steps N [--warmup W] [--rounds R] [--max-length L]
//                    [--ops-lib LIB] [--device cuda|cpu] [--seed S]
//
// One JSON line on stdout (progress on stderr). The caches are not prefilled by running a prompt: they are filled
// with small finite random values (decode time does not depend on them) and every sequence is taken to hold C tokens.
// Step t (counted over warm-up and timed steps) feeds one token per sequence, an all-ones attention_mask of C + t + 1,
// position_ids C + t, past_lengths C + t and new_lengths 1 (whichever of these the model takes). W warm-up steps,
// then R rounds of N timed steps (wall clock, device synchronized before and after each round); ms/step is the median
// over rounds. The logits of the last step are copied to the host and must be finite.
// Cache rows: a cache whose sequence axis is the symbolic `cache_capacity_wN` (a ring of window N, as the converter
// names it) gets N rows; a fixed axis its size; any other symbolic axis L rows (default C + W + R·N + 1).
// --device cpu runs the same loop on ORT's CPU provider with host buffers (a check of the harness itself on small
// models; GQA's CPU kernel takes fp32 and int8 caches).
// Exit codes: 0 ok, 1 run failure (CUDA, ORT run, non-finite logits), 2 bad arguments or a model it cannot drive.
#include <cuda_runtime.h>
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

[[noreturn]] void Fail(int code, const std::string& message) {
  std::fprintf(stderr, "ort_decode_bench: %s\n", message.c_str());
  std::exit(code);
}

void CudaCheck(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) Fail(1, "CUDA error in " + what + ": " + cudaGetErrorString(e));
}

const char* kUsage =
    "usage: ort_decode_bench MODEL.onnx --context C --batch B --steps N [--warmup W (3)] [--rounds R (1)]\n"
    "                        [--max-length L] [--ops-lib LIB] [--device cuda|cpu] [--seed S]\n";

// Why a run may fail on a model that loads: what this program assumes about the caches.
const char* kInPlaceHint =
    "\n(ort_decode_bench binds each present output to its past input's buffer, as GroupQueryAttention's "
    "past_present_share_buffer mode decodes in place; a model whose present caches grow by concatenation cannot run so.)";

struct Args {
  std::string model;
  std::string ops_lib;
  std::string device = "cuda";
  long long context = -1, batch = -1, steps = -1, warmup = 3, rounds = 1, max_length = 0, seed = 1;
};

long long ParseCount(const std::string& flag, const char* text, long long min) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min)
    Fail(2, flag + " must be an integer >= " + std::to_string(min) + ", got '" + text + "'.\n" + kUsage);
  return v;
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i++) {
    std::string f = argv[i];
    if (f == "-h" || f == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (f.rfind("--", 0) != 0) {
      if (!a.model.empty()) Fail(2, "one model only; got '" + a.model + "' and '" + f + "'.\n" + kUsage);
      a.model = f;
      continue;
    }
    if (i + 1 >= argc) Fail(2, f + " needs a value.\n" + kUsage);
    const char* v = argv[++i];
    if (f == "--context") a.context = ParseCount(f, v, 0);
    else if (f == "--batch") a.batch = ParseCount(f, v, 1);
    else if (f == "--steps") a.steps = ParseCount(f, v, 1);
    else if (f == "--warmup") a.warmup = ParseCount(f, v, 0);
    else if (f == "--rounds") a.rounds = ParseCount(f, v, 1);
    else if (f == "--max-length") a.max_length = ParseCount(f, v, 1);
    else if (f == "--seed") a.seed = ParseCount(f, v, 0);
    else if (f == "--ops-lib") a.ops_lib = v;
    else if (f == "--device") {
      a.device = v;
      if (a.device != "cuda" && a.device != "cpu") Fail(2, "--device must be cuda or cpu, got '" + a.device + "'.");
    } else Fail(2, "unknown option " + f + ".\n" + kUsage);
  }
  if (a.model.empty()) Fail(2, std::string("no model given.\n") + kUsage);
  if (a.context < 0 || a.batch < 1 || a.steps < 1) Fail(2, std::string("--context, --batch and --steps are required.\n") + kUsage);
  long long needed = a.context + a.warmup + a.rounds * a.steps + 1;
  if (a.max_length == 0) a.max_length = needed;
  if (a.max_length < needed)
    Fail(2, "--max-length " + std::to_string(a.max_length) + " is shorter than context + warmup + rounds * steps + 1 = " +
                std::to_string(needed) + " (the last step's cache rows).");
  return a;
}

const char* TypeName(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FN: return "float8e4m3fn";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    default: return "other";
  }
}

std::string TypeText(ONNXTensorElementDataType t) {
  std::string n = TypeName(t);
  return n == "other" ? "element type " + std::to_string(static_cast<int>(t)) : n;
}

std::string ShapeText(const std::vector<int64_t>& dims, const std::vector<std::string>& symbols) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); i++) {
    if (i) s += ", ";
    s += dims[i] >= 0 ? std::to_string(dims[i]) : (i < symbols.size() && !symbols[i].empty() ? symbols[i] : "?");
  }
  return s + "]";
}

// Cache element types this program fills (uint8: the ops backend's storage of fp8 bytes).
size_t CacheElementBytes(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return 4;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return 2;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FN:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return 1;
    default: return 0;
  }
}

// A block of small finite values of element type t, repeated to fill each cache.
std::vector<uint8_t> RandomBlock(ONNXTensorElementDataType t, size_t bytes, std::mt19937& rng) {
  std::vector<uint8_t> block(bytes);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  size_t n = bytes / CacheElementBytes(t);
  for (size_t i = 0; i < n; i++) {
    switch (t) {
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: {
        float v = unit(rng);
        std::memcpy(&block[i * 4], &v, 4);
        break;
      }
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: {
        Ort::Float16_t v(unit(rng));
        std::memcpy(&block[i * 2], &v, 2);
        break;
      }
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: {
        Ort::BFloat16_t v(unit(rng));
        std::memcpy(&block[i * 2], &v, 2);
        break;
      }
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: block[i] = static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(rng() % 255u) - 127)); break;
      default: {
        // E4M3FN: sign, 4 exponent bits, 3 mantissa bits; exponent field <= 7 keeps |x| < 2 and never reaches the NaN
        // codes 0x7F / 0xFF.
        uint32_t r = rng();
        block[i] = static_cast<uint8_t>((r & 0x80u) | (((r >> 8) % 8u) << 3) | ((r >> 16) & 0x7u));
        break;
      }
    }
  }
  return block;
}

// One allocation of `bytes` on the chosen device (CUDA or host), freed on destruction.
class Buffer {
 public:
  Buffer(bool cuda, size_t bytes, const std::string& what) : cuda_(cuda), bytes_(bytes) {
    if (cuda_) {
      CudaCheck(cudaMalloc(&p_, std::max<size_t>(bytes, 1)), "cudaMalloc of " + std::to_string(bytes) + " bytes for " + what);
    } else {
      p_ = std::malloc(std::max<size_t>(bytes, 1));
      if (!p_) Fail(1, "out of host memory allocating " + std::to_string(bytes) + " bytes for " + what);
    }
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
    if (cuda_) cudaFree(p_);
    else std::free(p_);
  }
  void* data() const { return p_; }
  size_t bytes() const { return bytes_; }

  // Fills with `block` repeated: the block once, then doubling copies of what is already there.
  void FillRepeating(const std::vector<uint8_t>& block) {
    size_t first = std::min(block.size(), bytes_);
    auto* p = static_cast<uint8_t*>(p_);
    if (cuda_) CudaCheck(cudaMemcpy(p, block.data(), first, cudaMemcpyHostToDevice), "cudaMemcpy (cache fill)");
    else std::memcpy(p, block.data(), first);
    for (size_t done = first; done < bytes_;) {
      size_t n = std::min(done, bytes_ - done);
      if (cuda_) CudaCheck(cudaMemcpy(p + done, p, n, cudaMemcpyDeviceToDevice), "cudaMemcpy (cache fill)");
      else std::memcpy(p + done, p, n);
      done += n;
    }
  }

 private:
  bool cuda_;
  size_t bytes_;
  void* p_ = nullptr;
};

enum class Role { InputIds, AttentionMask, PositionIds, PastLengths, NewLengths, Cache };

struct InputSpec {
  std::string name;
  Role role;
  ONNXTensorElementDataType type;
  std::vector<int64_t> dims;
  std::vector<std::string> symbols;
};

struct Cache {
  std::string past, present;  // present empty when the model has no matching output
  ONNXTensorElementDataType type;
  std::vector<int64_t> shape;  // [B, Hkv, rows, D]
  std::unique_ptr<Buffer> buffer;
};

std::string ExpectedInputs() {
  return "ort_decode_bench feeds input_ids [B, S] and, if the model takes them, attention_mask [B, total], position_ids "
         "[B, S] (int64 or int32), past_lengths and new_lengths [B] (int32 or int64), and caches named past* of rank 4 "
         "[B, kv_heads, rows, head_size]";
}

bool IsIntType(ONNXTensorElementDataType t) {
  return t == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 || t == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
}

InputSpec Classify(const std::string& name, ONNXTensorElementDataType type, const std::vector<int64_t>& dims,
                   const std::vector<std::string>& symbols) {
  InputSpec s{name, Role::InputIds, type, dims, symbols};
  std::string where = "input '" + name + "' (" + TypeText(type) + " " + ShapeText(dims, symbols) + ")";
  auto need = [&](bool ok, const std::string& rule) {
    if (!ok) Fail(2, where + ": " + rule);
  };
  if (name == "block_table")
    Fail(2, where + ": paged caches (convert --paged) are not supported; ort_decode_bench binds one contiguous buffer per cache.");
  if (name == "input_ids") {
    s.role = Role::InputIds;
    need(IsIntType(type) && dims.size() == 2, "input_ids must be int64 or int32 of rank 2 [batch, sequence].");
  } else if (name == "attention_mask") {
    s.role = Role::AttentionMask;
    need(IsIntType(type) && dims.size() == 2, "attention_mask must be int64 or int32 of rank 2 [batch, total_sequence_length].");
  } else if (name == "position_ids") {
    s.role = Role::PositionIds;
    need(IsIntType(type) && dims.size() == 2, "position_ids must be int64 or int32 of rank 2 [batch, sequence].");
  } else if (name == "past_lengths" || name == "new_lengths") {
    s.role = name == "past_lengths" ? Role::PastLengths : Role::NewLengths;
    need(IsIntType(type) && dims.size() == 1, name + " must be int32 or int64 of rank 1 [batch].");
  } else if (name.rfind("past", 0) == 0) {
    s.role = Role::Cache;
    need(dims.size() == 4, "a cache must have rank 4 [batch, kv_heads, rows, head_size] (BNSH, as GroupQueryAttention's past).");
    need(CacheElementBytes(type) != 0, "a cache must be float32, float16, bfloat16, float8e4m3fn, int8 or uint8.");
    need(dims[1] > 0 && dims[3] > 0, "the kv_heads and head_size axes of a cache must be fixed numbers.");
    need(!(symbols.size() > 0 && symbols[0] == "num_kv_blocks"), "paged caches (convert --paged) are not supported.");
  } else {
    Fail(2, where + ": not an input ort_decode_bench can feed. " + ExpectedInputs() + ".");
  }
  return s;
}

// The present output paired with a past input: past_key_values.N.key -> present.N.key, pastX -> presentX.
std::string PresentName(const std::string& past, const std::map<std::string, size_t>& outputs) {
  const std::string genai = "past_key_values.";
  if (past.rfind(genai, 0) == 0) {
    std::string n = "present." + past.substr(genai.size());
    if (outputs.count(n)) return n;
  }
  std::string n = "present" + past.substr(4);
  return outputs.count(n) ? n : std::string();
}

long long CacheRows(const InputSpec& s, long long max_length) {
  int64_t fixed = s.dims[2];
  if (fixed > 0) return fixed;
  const std::string ring = "cache_capacity_w";
  std::string sym = s.symbols.size() > 2 ? s.symbols[2] : "";
  if (sym.rfind(ring, 0) == 0) {
    char* end = nullptr;
    long long w = std::strtoll(sym.c_str() + ring.size(), &end, 10);
    if (end && *end == '\0' && w > 0) return w;
  }
  return max_length;
}

std::string JsonString(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += c;
    }
  }
  return o + "\"";
}

float LogitToFloat(ONNXTensorElementDataType t, const uint8_t* p, size_t i) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: {
      float v;
      std::memcpy(&v, p + i * 4, 4);
      return v;
    }
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: {
      uint16_t b;
      std::memcpy(&b, p + i * 2, 2);
      return Ort::Float16_t::FromBits(b).ToFloat();
    }
    default: {
      uint16_t b;
      std::memcpy(&b, p + i * 2, 2);
      return Ort::BFloat16_t::FromBits(b).ToFloat();
    }
  }
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int Run(const Args& a) {
  const bool cuda = a.device == "cuda";
  const long long B = a.batch;
  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "ort_decode_bench");
  Ort::SessionOptions so;
  if (cuda) {
    auto providers = Ort::GetAvailableProviders();
    if (std::find(providers.begin(), providers.end(), "CUDAExecutionProvider") == providers.end())
      Fail(2, "this ONNX Runtime library has no CUDA execution provider; put ORT's CUDA build first on LD_LIBRARY_PATH "
              "(tools/gpu/e2e/setup.sh does), or pass --device cpu.");
    Ort::CUDAProviderOptions cuda_options;  // OrtCUDAProviderOptionsV2 defaults, device 0
    so.AppendExecutionProvider_CUDA_V2(*cuda_options);
  }
  if (!a.ops_lib.empty()) {
    try {
      so.RegisterCustomOpsLibrary(a.ops_lib.c_str());
    } catch (const Ort::Exception& e) {
      Fail(2, "--ops-lib " + a.ops_lib + ": ONNX Runtime cannot register this custom-op library: " + e.what());
    }
  }

  std::fprintf(stderr, "ort_decode_bench: loading %s on %s\n", a.model.c_str(), a.device.c_str());
  std::unique_ptr<Ort::Session> session;
  try {
    session = std::make_unique<Ort::Session>(env, a.model.c_str(), so);
  } catch (const Ort::Exception& e) {
    std::string why = e.what();
    std::string hint = why.find("com.mixattention") != std::string::npos && a.ops_lib.empty()
                           ? " (the model uses the com.mixattention ops: pass --ops-lib with libmixattention_ops.so)"
                           : "";
    Fail(2, a.model + ": ONNX Runtime cannot load this model: " + why + hint);
  }
  Ort::AllocatorWithDefaultOptions alloc;

  // Outputs: names, the logits (named "logits", else the first output).
  std::map<std::string, size_t> outputs;
  std::vector<std::string> output_names;
  for (size_t i = 0; i < session->GetOutputCount(); i++) {
    output_names.push_back(session->GetOutputNameAllocated(i, alloc).get());
    outputs[output_names.back()] = i;
  }
  if (output_names.empty()) Fail(2, a.model + ": the model has no outputs.");
  const std::string logits_name = outputs.count("logits") ? "logits" : output_names[0];
  auto logits_type_info = session->GetOutputTypeInfo(outputs[logits_name]);  // owns what logits_info reads
  auto logits_info = logits_type_info.GetTensorTypeAndShapeInfo();
  const auto logits_type = logits_info.GetElementType();
  const auto logits_dims = logits_info.GetShape();
  if (logits_type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && logits_type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 &&
      logits_type != ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16)
    Fail(2, "output '" + logits_name + "' (the logits) is " + TypeText(logits_type) + "; ort_decode_bench reads float32, float16 or bfloat16 logits.");
  const int64_t vocab = !logits_dims.empty() && logits_dims.back() > 0 ? logits_dims.back() : -1;

  // Inputs.
  std::vector<InputSpec> inputs;
  bool have_ids = false;
  for (size_t i = 0; i < session->GetInputCount(); i++) {
    std::string name = session->GetInputNameAllocated(i, alloc).get();
    auto info = session->GetInputTypeInfo(i);
    if (info.GetONNXType() != ONNX_TYPE_TENSOR) Fail(2, "input '" + name + "' is not a tensor. " + ExpectedInputs() + ".");
    auto t = info.GetTensorTypeAndShapeInfo();
    auto dims = t.GetShape();
    std::vector<const char*> sym(dims.size(), nullptr);
    t.GetSymbolicDimensions(sym.data(), sym.size());
    std::vector<std::string> symbols;
    for (auto* p : sym) symbols.emplace_back(p ? p : "");
    inputs.push_back(Classify(name, t.GetElementType(), dims, symbols));
    have_ids |= inputs.back().role == Role::InputIds;
    if (dims.size() > 0 && dims[0] > 0 && dims[0] != B && inputs.back().role != Role::Cache)
      Fail(2, "input '" + name + "' has a fixed batch axis of " + std::to_string(dims[0]) + "; --batch is " + std::to_string(B) + ".");
  }
  if (!have_ids) Fail(2, a.model + ": the model has no input_ids input. " + ExpectedInputs() + ".");

  // Caches: one buffer each, bound as past and (when the model has it) present.
  Ort::MemoryInfo device_mem = cuda ? Ort::MemoryInfo("Cuda", OrtDeviceAllocator, 0, OrtMemTypeDefault)
                                    : Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault);
  std::vector<Cache> caches;
  size_t cache_bytes = 0;
  for (const auto& s : inputs) {
    if (s.role != Role::Cache) continue;
    if (s.dims[0] > 0 && s.dims[0] != B)
      Fail(2, "cache '" + s.name + "' has a fixed batch axis of " + std::to_string(s.dims[0]) + "; --batch is " + std::to_string(B) + ".");
    Cache c;
    c.past = s.name;
    c.type = s.type;
    c.shape = {B, s.dims[1], CacheRows(s, a.max_length), s.dims[3]};
    c.present = PresentName(s.name, outputs);
    if (!c.present.empty()) {
      auto present_info = session->GetOutputTypeInfo(outputs[c.present]);
      auto p = present_info.GetTensorTypeAndShapeInfo();
      if (p.GetElementType() != s.type || p.GetShape().size() != 4)
        Fail(2, "output '" + c.present + "' (" + TypeText(p.GetElementType()) + ", rank " + std::to_string(p.GetShape().size()) +
                    ") cannot share the buffer of input '" + s.name + "' (" + TypeText(s.type) + ", rank 4): a present cache must "
                    "have its past's element type and rank (GroupQueryAttention's past_present_share_buffer).");
    }
    cache_bytes += static_cast<size_t>(c.shape[0] * c.shape[1] * c.shape[2] * c.shape[3]) * CacheElementBytes(s.type);
    caches.push_back(std::move(c));
  }
  if (caches.empty()) Fail(2, a.model + ": the model has no cache inputs (past*); nothing to decode in place.");
  if (cuda) {
    size_t free_bytes = 0, total_bytes = 0;
    CudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    if (cache_bytes > free_bytes)
      Fail(1, std::to_string(caches.size()) + " caches need " + std::to_string(cache_bytes / (1 << 20)) + " MiB; the device has " +
                  std::to_string(free_bytes / (1 << 20)) + " MiB free. Lower --context, --batch or --max-length.");
  }
  std::mt19937 rng(static_cast<uint32_t>(a.seed));
  std::map<ONNXTensorElementDataType, std::vector<uint8_t>> blocks;
  std::map<std::string, size_t> bytes_by_dtype;
  Ort::IoBinding binding(*session);
  std::vector<Ort::Value> cache_values;  // alive as long as the binding
  for (auto& c : caches) {
    size_t bytes = static_cast<size_t>(c.shape[0] * c.shape[1] * c.shape[2] * c.shape[3]) * CacheElementBytes(c.type);
    c.buffer = std::make_unique<Buffer>(cuda, bytes, "cache '" + c.past + "'");
    if (!blocks.count(c.type)) blocks[c.type] = RandomBlock(c.type, 1 << 22, rng);
    c.buffer->FillRepeating(blocks[c.type]);
    bytes_by_dtype[TypeName(c.type)] += bytes;
    cache_values.push_back(Ort::Value::CreateTensor(device_mem, c.buffer->data(), bytes, c.shape.data(), c.shape.size(), c.type));
    binding.BindInput(c.past.c_str(), cache_values.back());
    if (!c.present.empty()) binding.BindOutput(c.present.c_str(), cache_values.back());
  }
  const std::string cache_dtype = bytes_by_dtype.size() == 1 ? bytes_by_dtype.begin()->first : "mixed";

  // Logits: a preallocated [B, 1, V] buffer when V is fixed, else ORT allocates them on the device each step.
  std::unique_ptr<Buffer> logits_buffer;
  std::vector<int64_t> logits_shape = {B, 1, vocab};
  const size_t logits_elem = logits_type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ? 4 : 2;
  if (vocab > 0 && logits_dims.size() == 3) {
    logits_buffer = std::make_unique<Buffer>(cuda, static_cast<size_t>(B * vocab) * logits_elem, "logits");
    cache_values.push_back(Ort::Value::CreateTensor(device_mem, logits_buffer->data(), logits_buffer->bytes(), logits_shape.data(),
                                                    logits_shape.size(), logits_type));
    binding.BindOutput(logits_name.c_str(), cache_values.back());
  } else {
    binding.BindOutput(logits_name.c_str(), device_mem);
  }
  for (const auto& n : output_names) {
    bool bound = n == logits_name;
    for (const auto& c : caches) bound |= c.present == n;
    if (!bound) binding.BindOutput(n.c_str(), device_mem);
  }
  if (cuda) CudaCheck(cudaDeviceSynchronize(), "cudaDeviceSynchronize after the cache fill");
  std::fprintf(stderr, "ort_decode_bench: %zu caches (%s), %.1f MiB, rows %lld; context %lld, batch %lld\n", caches.size(),
               cache_dtype.c_str(), cache_bytes / 1048576.0, a.max_length, a.context, B);

  // Step inputs on the host (ORT copies them as its kernels need, as the C# runtime's steps do).
  Ort::MemoryInfo host_mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  const long long total_steps = a.warmup + a.rounds * a.steps;
  std::vector<int64_t> ids64(B), ones64(static_cast<size_t>(B * (a.context + total_steps))), pos64(B), len64(B), new64(B, 1);
  std::vector<int32_t> ids32(B), ones32(ones64.size()), pos32(B), len32(B), new32(B, 1);
  std::fill(ones64.begin(), ones64.end(), 1);
  std::fill(ones32.begin(), ones32.end(), 1);
  std::uniform_int_distribution<int> token(0, static_cast<int>(std::max<int64_t>(2, std::min<int64_t>(vocab > 0 ? vocab : 1000, 1000)) - 1));
  for (long long b = 0; b < B; b++) ids32[b] = static_cast<int32_t>(ids64[b] = token(rng));
  auto IntTensor = [&](ONNXTensorElementDataType t, std::vector<int64_t>& v64, std::vector<int32_t>& v32, const std::vector<int64_t>& shape) {
    size_t n = 1;
    for (auto d : shape) n *= static_cast<size_t>(d);
    return t == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64
               ? Ort::Value::CreateTensor<int64_t>(host_mem, v64.data(), n, shape.data(), shape.size())
               : Ort::Value::CreateTensor<int32_t>(host_mem, v32.data(), n, shape.data(), shape.size());
  };
  Ort::RunOptions run_options;
  std::vector<Ort::Value> step_values;
  auto Step = [&](long long t) {
    const long long past = a.context + t;
    for (long long b = 0; b < B; b++) {
      pos32[b] = static_cast<int32_t>(pos64[b] = past);
      len32[b] = static_cast<int32_t>(len64[b] = past);
    }
    step_values.clear();
    for (const auto& s : inputs) {
      switch (s.role) {
        case Role::InputIds: step_values.push_back(IntTensor(s.type, ids64, ids32, {B, 1})); break;
        case Role::AttentionMask: step_values.push_back(IntTensor(s.type, ones64, ones32, {B, past + 1})); break;
        case Role::PositionIds: step_values.push_back(IntTensor(s.type, pos64, pos32, {B, 1})); break;
        case Role::PastLengths: step_values.push_back(IntTensor(s.type, len64, len32, {B})); break;
        case Role::NewLengths: step_values.push_back(IntTensor(s.type, new64, new32, {B})); break;
        case Role::Cache: continue;
      }
      binding.BindInput(s.name.c_str(), step_values.back());
    }
    session->Run(run_options, binding);
  };

  long long t = 0;
  try {
    for (; t < a.warmup; t++) Step(t);
  } catch (const Ort::Exception& e) {
    Fail(1, "decode step " + std::to_string(t) + " (warm-up) failed: " + e.what() + kInPlaceHint);
  }
  std::vector<double> round_ms;
  for (long long r = 0; r < a.rounds; r++) {
    if (cuda) CudaCheck(cudaDeviceSynchronize(), "cudaDeviceSynchronize before a timed round");
    auto start = std::chrono::steady_clock::now();
    try {
      for (long long i = 0; i < a.steps; i++, t++) Step(t);
    } catch (const Ort::Exception& e) {
      Fail(1, "decode step " + std::to_string(t) + " failed: " + e.what() + kInPlaceHint);
    }
    if (cuda) CudaCheck(cudaDeviceSynchronize(), "cudaDeviceSynchronize after a timed round");
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / a.steps;
    round_ms.push_back(ms);
    std::fprintf(stderr, "ort_decode_bench: round %lld: %.4f ms/step\n", r + 1, ms);
  }

  // The last step's logits must be finite.
  const void* logits_ptr = logits_buffer ? logits_buffer->data() : nullptr;
  size_t logits_count = logits_buffer ? static_cast<size_t>(B * vocab) : 0;
  std::vector<Ort::Value> produced;
  if (!logits_buffer) {
    produced = binding.GetOutputValues();
    auto names = binding.GetOutputNames();
    for (size_t i = 0; i < names.size(); i++)
      if (names[i] == logits_name) {
        logits_ptr = produced[i].GetTensorRawData();
        logits_count = produced[i].GetTensorTypeAndShapeInfo().GetElementCount();
      }
    if (!logits_ptr) Fail(1, "the model produced no '" + logits_name + "' output.");
  }
  std::vector<uint8_t> host_logits(logits_count * logits_elem);
  if (cuda) CudaCheck(cudaMemcpy(host_logits.data(), logits_ptr, host_logits.size(), cudaMemcpyDeviceToHost), "cudaMemcpy (logits to the host)");
  else std::memcpy(host_logits.data(), logits_ptr, host_logits.size());
  size_t bad = 0, first_bad = 0;
  double max_abs = 0;
  for (size_t i = 0; i < logits_count; i++) {
    float v = LogitToFloat(logits_type, host_logits.data(), i);
    if (!std::isfinite(v)) {
      if (bad++ == 0) first_bad = i;
    } else {
      max_abs = std::max(max_abs, static_cast<double>(std::fabs(v)));
    }
  }
  if (logits_count == 0) Fail(1, "the last step's logits are empty.");
  if (bad)
    Fail(1, "the last step's logits (" + logits_name + ", " + TypeText(logits_type) + ") hold " + std::to_string(bad) + " of " +
                std::to_string(logits_count) + " values that are not finite (first at flat index " + std::to_string(first_bad) +
                "); the timing is not reported.");

  double ms = Median(round_ms);
  std::ostringstream j;
  j.precision(6);
  j << "{\"model\":" << JsonString(a.model) << ",\"device\":" << JsonString(a.device) << ",\"context\":" << a.context
    << ",\"batch\":" << B << ",\"steps\":" << a.steps << ",\"warmup\":" << a.warmup << ",\"rounds\":" << a.rounds
    << ",\"decode_ms_per_step\":" << ms << ",\"decode_ms_per_step_rounds\":[";
  for (size_t i = 0; i < round_ms.size(); i++) j << (i ? "," : "") << round_ms[i];
  j << "],\"tokens_per_second\":" << B * 1000.0 / ms << ",\"kv_bytes_allocated\":" << cache_bytes
    << ",\"kv_bytes_per_sequence\":" << cache_bytes / static_cast<size_t>(B) << ",\"kv_bytes_allocated_by_dtype\":{";
  bool first = true;
  for (const auto& [k, v] : bytes_by_dtype) {
    j << (first ? "" : ",") << JsonString(k) << ":" << v;
    first = false;
  }
  j << "},\"cache_dtype\":" << JsonString(cache_dtype) << ",\"caches\":" << caches.size() << ",\"max_length\":" << a.max_length
    << ",\"max_abs_logit\":" << max_abs << "}";
  std::printf("%s\n", j.str().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = ParseArgs(argc, argv);
  try {
    return Run(a);
  } catch (const Ort::Exception& e) {
    Fail(1, std::string("ONNX Runtime: ") + e.what());
  }
}
