// WindowedAttention (owner layer): ORT glue, shape checks, dispatch. Semantics: docs/ops.md.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "mixattention/op_spec.h"
#include "ops/attention_ops.h"

namespace mixattn::ops {

namespace spec_o = spec::owner;
static constexpr const char* kOp = spec::kWindowedAttention;

CommonShapes CheckCommonInputs(const char* op, const OpAttributes& attrs, const Ort::ConstValue& query,
                               const char* key_cache_name, const Ort::ConstValue& key_cache,
                               const char* value_cache_name, const Ort::ConstValue& value_cache) {
  CommonShapes r;
  r.query_shape = ShapeOf(op, "query", query, 3, "[B, S, num_heads*D]");
  const int64_t B = r.query_shape[0], S = r.query_shape[1], qh = r.query_shape[2];
  if (qh == 0 || qh % attrs.num_heads != 0)
    Fail(std::string(op) + ": input 'query' dimension 2 = " + std::to_string(qh) +
         " must be num_heads*D with num_heads = " + std::to_string(attrs.num_heads) + " and D > 0");
  const int64_t D = qh / attrs.num_heads;
  r.cache_shape = ShapeOf(op, key_cache_name, key_cache, 4, "[B, kv_num_heads, C, D]");
  const int64_t C = r.cache_shape[2];
  const std::vector<int64_t> expected{B, attrs.kv_num_heads, C, D};
  ExpectShape(op, key_cache_name, r.cache_shape, expected, "[B, kv_num_heads, C, D]");
  ExpectShape(op, value_cache_name, ShapeOf(op, value_cache_name, value_cache, 4, "[B, kv_num_heads, C, D]"),
              expected, "[B, kv_num_heads, C, D] (same as the key cache)");
  if (static_cast<int64_t>(B) * attrs.kv_num_heads * C * D > (int64_t{1} << 40))
    Fail(std::string(op) + ": cache '" + key_cache_name + "' is too large");

  AttentionShape& sh = r.shape;
  sh.batch = static_cast<int>(B);
  sh.seq = static_cast<int>(S);
  sh.num_heads = attrs.num_heads;
  sh.kv_num_heads = attrs.kv_num_heads;
  sh.head_dim = static_cast<int>(D);
  sh.capacity = static_cast<int>(C);
  sh.window = attrs.window;
  sh.scale = attrs.scale > 0.f ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(D));
  sh.softcap = attrs.softcap;
  return r;
}

void CheckLengthInputs(const char* op, const Ort::KernelContext& ctx, int past_index, int new_index, int batch,
                       const int32_t** past_lengths, const int32_t** new_lengths) {
  Ort::ConstValue past = ctx.GetInput(past_index);
  ExpectShape(op, "past_lengths", ShapeOf(op, "past_lengths", past, 1, "[B]"), {batch}, "[B] (int32)");
  *past_lengths = past.GetTensorData<int32_t>();
  *new_lengths = nullptr;
  if (ctx.GetInputCount() > static_cast<size_t>(new_index)) {
    Ort::ConstValue nl = ctx.GetInput(new_index);
    if (nl != nullptr) {
      ExpectShape(op, "new_lengths", ShapeOf(op, "new_lengths", nl, 1, "[B]"), {batch}, "[B] (int32)");
      *new_lengths = nl.GetTensorData<int32_t>();
    }
  }
}

RotaryInputs CheckRotaryInputs(const char* op, const Ort::KernelContext& ctx, int cos_index, int sin_index,
                               int head_dim) {
  RotaryInputs r;
  const size_t n = ctx.GetInputCount();
  Ort::ConstValue cos = n > static_cast<size_t>(cos_index) ? ctx.GetInput(cos_index) : Ort::ConstValue(nullptr);
  Ort::ConstValue sin = n > static_cast<size_t>(sin_index) ? ctx.GetInput(sin_index) : Ort::ConstValue(nullptr);
  if (cos == nullptr && sin == nullptr) return r;
  if (cos == nullptr || sin == nullptr)
    Fail(std::string(op) + ": inputs 'cos_cache' and 'sin_cache' must be given together (rotary) or both omitted");
  const std::vector<int64_t> shape = ShapeOf(op, "cos_cache", cos, 2, "[max_positions, rotary_dim/2]");
  ExpectShape(op, "sin_cache", ShapeOf(op, "sin_cache", sin, 2, "[max_positions, rotary_dim/2]"), shape,
              "[max_positions, rotary_dim/2] (same as 'cos_cache')");
  if (shape[0] < 1 || shape[0] > INT32_MAX || shape[1] < 1 || 2 * shape[1] > head_dim)
    Fail(std::string(op) + ": input 'cos_cache' has shape " + ShapeToString(shape) +
         ", expected [max_positions >= 1, rotary_dim/2] with 0 < rotary_dim <= head size D = " +
         std::to_string(head_dim));
  r.present = true;
  r.cos = cos.GetTensorRawData();
  r.sin = sin.GetTensorRawData();
  r.rotary_dim = static_cast<int>(2 * shape[1]);
  r.max_positions = static_cast<int>(shape[0]);
  return r;
}

template <typename T>
OrtStatusPtr WindowedAttentionKernel<T>::ComputeV2(OrtKernelContext* context) {
  return GuardStatus([&] {
    Ort::KernelContext ctx(context);
    Ort::ConstValue query = ctx.GetInput(spec_o::kQuery);
    Ort::ConstValue key = ctx.GetInput(spec_o::kKey);
    Ort::ConstValue value = ctx.GetInput(spec_o::kValue);
    Ort::ConstValue past_key = ctx.GetInput(spec_o::kPastKey);
    Ort::ConstValue past_value = ctx.GetInput(spec_o::kPastValue);

    CommonShapes cs = CheckCommonInputs(kOp, attrs_, query, "past_key", past_key, "past_value", past_value);
    AttentionShape& sh = cs.shape;
    const std::vector<int64_t> kv_shape{sh.batch, sh.seq, static_cast<int64_t>(sh.kv_num_heads) * sh.head_dim};
    ExpectShape(kOp, "key", ShapeOf(kOp, "key", key, 3, "[B, S, kv_num_heads*D]"), kv_shape,
                "[B, S, kv_num_heads*D]");
    ExpectShape(kOp, "value", ShapeOf(kOp, "value", value, 3, "[B, S, kv_num_heads*D]"), kv_shape,
                "[B, S, kv_num_heads*D]");
    if (sh.window > 0 && sh.capacity < sh.window)
      Fail(std::string(kOp) + ": input 'past_key' capacity C=" + std::to_string(sh.capacity) +
           " (dimension 2 of [B, kv_num_heads, C, D]) must be >= window W=" + std::to_string(sh.window) +
           " for a sliding cache");

    const int32_t* past_lengths = nullptr;
    const int32_t* new_lengths = nullptr;
    CheckLengthInputs(kOp, ctx, spec_o::kPastLengths, spec_o::kNewLengths, sh.batch, &past_lengths, &new_lengths);
    if (std::string err = ValidateLengths(OpKind::kOwner, sh, past_lengths, new_lengths); !err.empty()) Fail(err);
    const RotaryInputs rotary = CheckRotaryInputs(kOp, ctx, spec_o::kCosCache, spec_o::kSinCache, sh.head_dim);
    if (rotary.present)
      if (std::string err = ValidateRotaryPositions(OpKind::kOwner, sh, past_lengths, new_lengths, rotary.max_positions);
          !err.empty())
        Fail(err);

    Ort::UnownedValue output = ctx.GetOutput(spec_o::kOutput, cs.query_shape);
    Ort::UnownedValue present_key = ctx.GetOutput(spec_o::kPresentKey, cs.cache_shape);
    Ort::UnownedValue present_value = ctx.GetOutput(spec_o::kPresentValue, cs.cache_shape);

    const T* pk = past_key.GetTensorData<T>();
    const T* pv = past_value.GetTensorData<T>();
    T* ok = present_key.GetTensorMutableData<T>();
    T* ov = present_value.GetTensorMutableData<T>();
    if (attrs_.require_inplace && (ok != pk || ov != pv))
      Fail(std::string(kOp) + ": 'present_key'/'present_value' are not bound to the 'past_key'/'past_value' buffers "
                              "(session config mixattention.require_inplace=1 forbids the past->present copy)");

    OrtExecutor executor(context);
    AttendArgs<T> attend;
    attend.shape = sh;
    attend.query = query.GetTensorData<T>();
    attend.chunk_key = key.GetTensorData<T>();
    attend.chunk_value = value.GetTensorData<T>();
    attend.key_cache = pk;  // state before this step's write
    attend.value_cache = pv;
    attend.past_lengths = past_lengths;
    attend.new_lengths = new_lengths;
    attend.output = output.GetTensorMutableData<T>();
    // Rotary inside the op: rotated copies of this step's queries and keys; the rotated keys are cached.
    std::vector<T> rotated_q, rotated_k;
    if (rotary.present) {
      const RotaryArgs<T> ra{static_cast<const T*>(rotary.cos), static_cast<const T*>(rotary.sin), rotary.rotary_dim,
                             rotary.max_positions, attrs_.rotary_interleaved};
      rotated_q.resize(static_cast<size_t>(sh.batch) * sh.seq * sh.num_heads * sh.head_dim);
      rotated_k.resize(static_cast<size_t>(sh.batch) * sh.seq * sh.kv_num_heads * sh.head_dim);
      ApplyRotary(ra, sh, sh.num_heads, attend.query, rotated_q.data(), past_lengths, new_lengths, executor);
      ApplyRotary(ra, sh, sh.kv_num_heads, attend.chunk_key, rotated_k.data(), past_lengths, new_lengths, executor);
      attend.query = rotated_q.data();
      attend.chunk_key = rotated_k.data();
    }
    Attend(attend, executor);

    CacheWriteArgs<T> write;
    write.shape = sh;
    write.chunk_key = attend.chunk_key;
    write.chunk_value = attend.chunk_value;
    write.past_key = pk;
    write.past_value = pv;
    write.present_key = ok;
    write.present_value = ov;
    write.past_lengths = past_lengths;
    write.new_lengths = new_lengths;
    WriteChunk(write, executor);
  });
}

size_t OwnerMayInplace(int** input_index, int** output_index) {
  *input_index = static_cast<int*>(std::malloc(2 * sizeof(int)));
  *output_index = static_cast<int*>(std::malloc(2 * sizeof(int)));
  if (*input_index == nullptr || *output_index == nullptr) {
    std::free(*input_index);
    std::free(*output_index);
    *input_index = *output_index = nullptr;
    return 0;
  }
  (*input_index)[0] = spec_o::kPastKey;
  (*output_index)[0] = spec_o::kPresentKey;
  (*input_index)[1] = spec_o::kPastValue;
  (*output_index)[1] = spec_o::kPresentValue;
  return 2;
}

void ReleaseOwnerMayInplace(int* input_index, int* output_index) {
  std::free(input_index);
  std::free(output_index);
}

template struct WindowedAttentionKernel<float>;
template struct WindowedAttentionKernel<Float16>;
template struct WindowedAttentionKernel<BFloat16>;
template struct WindowedAttentionOp<float>;
template struct WindowedAttentionOp<Float16>;
template struct WindowedAttentionOp<BFloat16>;

}  // namespace mixattn::ops
