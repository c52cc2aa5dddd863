// The front half of every Compute (both ops, CPU and CUDA): read and check one call's inputs, fetch its outputs.
// Messages name the op, the input and the expected shape (docs/ops.md, "Errors").
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "mixattention/op_spec.h"
#include "ops/attention_ops.h"

namespace mixattn::ops {
namespace {

// Validated shapes of the query and the cache pair.
struct CommonShapes {
  AttentionShape shape;
  std::vector<int64_t> query_shape;  // [B, S, Hq*D]
  std::vector<int64_t> cache_shape;  // [B, Hkv, C, D]
};

CommonShapes CheckCommonInputs(const char* op, const OpAttributes& attrs, const Ort::ConstValue& query,
                               const char* key_cache_name, const Ort::ConstValue& key_cache,
                               const char* value_cache_name, const Ort::ConstValue& value_cache,
                               const Ort::ConstValue& block_table, BlockTable* paged) {
  CommonShapes r;
  r.query_shape = ShapeOf(op, "query", query, 3, "[B, S, num_heads*D]");
  const int64_t B = r.query_shape[0], S = r.query_shape[1], qh = r.query_shape[2];
  if (qh == 0 || qh % attrs.num_heads != 0)
    Fail(std::string(op) + ": input 'query' dimension 2 = " + std::to_string(qh) +
         " must be num_heads*D with num_heads = " + std::to_string(attrs.num_heads) + " and D > 0");
  const int64_t D = qh / attrs.num_heads;
  int64_t C = 0;
  if (block_table == nullptr) {
    r.cache_shape = ShapeOf(op, key_cache_name, key_cache, 4, "[B, kv_num_heads, C, D]");
    C = r.cache_shape[2];
    const std::vector<int64_t> expected{B, attrs.kv_num_heads, C, D};
    ExpectShape(op, key_cache_name, r.cache_shape, expected, "[B, kv_num_heads, C, D]");
    ExpectShape(op, value_cache_name, ShapeOf(op, value_cache_name, value_cache, 4, "[B, kv_num_heads, C, D]"),
                expected, "[B, kv_num_heads, C, D] (same as the key cache)");
  } else {
    // Paged: the caches are a block pool [num_blocks, kv_num_heads, block_size, D] read through block_table.
    if (!block_table.IsTensor() ||
        block_table.GetTensorTypeAndShapeInfo().GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32)
      Fail(std::string(op) + ": input 'block_table' must be an int32 tensor [B, max_blocks_per_seq]");
    const std::vector<int64_t> table = ShapeOf(op, "block_table", block_table, 2, "[B, max_blocks_per_seq]");
    if (table[0] != B || table[1] < 1)
      Fail(std::string(op) + ": input 'block_table' must have shape [B, max_blocks_per_seq >= 1] with B = " +
           std::to_string(B) + " (dimension 0 of 'query'), got " + ShapeToString(table));
    r.cache_shape = ShapeOf(op, key_cache_name, key_cache, 4, "[num_blocks, kv_num_heads, block_size, D]");
    const int64_t blocks = r.cache_shape[0], bs = r.cache_shape[2];
    const std::vector<int64_t> expected{blocks, attrs.kv_num_heads, bs, D};
    ExpectShape(op, key_cache_name, r.cache_shape, expected,
                "[num_blocks, kv_num_heads, block_size, D] (a paged pool: 'block_table' is given)");
    ExpectShape(op, value_cache_name,
                ShapeOf(op, value_cache_name, value_cache, 4, "[num_blocks, kv_num_heads, block_size, D]"), expected,
                "[num_blocks, kv_num_heads, block_size, D] (same as the key pool)");
    if (bs < 1)
      Fail(std::string(op) + ": paged cache '" + key_cache_name + "' has block_size 0 (dimension 2); must be >= 1");
    if (table[1] * bs > INT32_MAX)
      Fail(std::string(op) + ": input 'block_table' maps " + std::to_string(table[1]) + " blocks of " +
           std::to_string(bs) + " positions, more than int32 positions");
    C = table[1] * bs;  // the positions a table row can map
    paged->max_blocks = static_cast<int>(table[1]);
    paged->block_size = static_cast<int>(bs);
    paged->num_blocks = static_cast<int>(blocks);
    paged->table = block_table.GetTensorData<int32_t>();
  }
  const int64_t rows = block_table == nullptr ? static_cast<int64_t>(B) * C : r.cache_shape[0] * r.cache_shape[2];
  if (rows * attrs.kv_num_heads * D > (int64_t{1} << 40))
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

// Granularity of a k_scale / v_scale of shape `shape` against the cache [B, Hkv, C, D]; Fail()s naming the input.
ScaleGranularity ScaleGranularityOf(const char* op, const char* name, const std::vector<int64_t>& shape, int64_t kv_heads,
                                    int64_t head_dim) {
  if (shape == std::vector<int64_t>{1}) return ScaleGranularity::kPerTensor;
  if (shape == std::vector<int64_t>{1, kv_heads, 1, 1}) return ScaleGranularity::kPerHead;
  if (shape == std::vector<int64_t>{1, kv_heads, 1, head_dim}) return ScaleGranularity::kPerChannel;
  Fail(std::string(op) + ": input '" + name + "' has shape " + ShapeToString(shape) +
       "; expected [1] (per tensor), [1, kv_num_heads, 1, 1] = " + ShapeToString({1, kv_heads, 1, 1}) +
       " (per KV head) or [1, kv_num_heads, 1, D] = " + ShapeToString({1, kv_heads, 1, head_dim}) + " (per channel)");
}

// The cache type (from the key cache's element type against the query's) and, for a quantized cache, the checked
// k_scale / v_scale inputs. values_on_host: the scales are host data (CPU EP), so each must be finite and > 0.
KvQuant CheckQuantInputs(const char* op, const Ort::KernelContext& ctx, const Ort::ConstValue& query,
                         const char* key_cache_name, const Ort::ConstValue& key_cache, int k_index, int v_index,
                         const AttentionShape& sh, bool values_on_host) {
  KvQuant q;
  const ONNXTensorElementDataType qt = query.GetTensorTypeAndShapeInfo().GetElementType();
  const ONNXTensorElementDataType ct = key_cache.GetTensorTypeAndShapeInfo().GetElementType();
  if (ct == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8 && qt != ct)
    q.type = CacheType::kInt8;
  else if ((ct == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FN || ct == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8) && qt != ct)
    q.type = CacheType::kFloat8E4M3;  // uint8: fp8 E4M3FN bytes (for APIs that cannot type fp8 tensors)
  const size_t n = ctx.GetInputCount();
  const int indices[2] = {k_index, v_index};
  const char* names[2] = {"k_scale", "v_scale"};
  KvScale* scales[2] = {&q.k, &q.v};
  for (int i = 0; i < 2; ++i) {
    Ort::ConstValue v = n > static_cast<size_t>(indices[i]) ? ctx.GetInput(indices[i]) : Ort::ConstValue(nullptr);
    if (!q.quantized()) {
      if (v != nullptr)
        Fail(std::string(op) + ": input '" + names[i] + "' is given but the cache '" + key_cache_name +
             "' is not quantized (its element type is the query's); scales are only for int8 / float8e4m3fn caches");
      continue;
    }
    if (v == nullptr)
      Fail(std::string(op) + ": input '" + names[i] + "' is required: the cache '" + key_cache_name + "' is " +
           (q.type == CacheType::kInt8 ? "int8" : "float8e4m3fn (or its uint8 alias)") +
           " (give a float tensor [1], [1, kv_num_heads, 1, 1] or [1, kv_num_heads, 1, D])");
    if (!v.IsTensor() || v.GetTensorTypeAndShapeInfo().GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      Fail(std::string(op) + ": input '" + names[i] + "' must be a float tensor");
    const std::vector<int64_t> shape = v.GetTensorTypeAndShapeInfo().GetShape();
    scales[i]->granularity = ScaleGranularityOf(op, names[i], shape, sh.kv_num_heads, sh.head_dim);
    scales[i]->data = v.GetTensorData<float>();
    if (values_on_host) {
      const int64_t count = v.GetTensorTypeAndShapeInfo().GetElementCount();
      for (int64_t j = 0; j < count; ++j) {
        const float x = scales[i]->data[j];
        if (!(x > 0.f && std::isfinite(x)))
          Fail(std::string(op) + ": input '" + names[i] + "'[" + std::to_string(j) + "] = " + std::to_string(x) +
               " must be finite and > 0");
      }
    }
  }
  return q;
}

}  // namespace

AttentionCall ReadCall(OpKind kind, const OpAttributes& attrs, const Ort::KernelContext& ctx, bool lengths_on_host) {
  const bool owner = kind == OpKind::kOwner;
  const char* op = owner ? spec::kWindowedAttention : spec::kSharedKvAttention;
  const char* key_cache_name = owner ? "past_key" : "key_cache";
  const char* value_cache_name = owner ? "past_value" : "value_cache";
  const int past_index = owner ? spec::owner::kPastLengths : spec::reader::kPastLengths;
  const int new_index = owner ? spec::owner::kNewLengths : spec::reader::kNewLengths;
  const int cos_index = owner ? spec::owner::kCosCache : spec::reader::kCosCache;
  const int sin_index = owner ? spec::owner::kSinCache : spec::reader::kSinCache;

  Ort::ConstValue query = ctx.GetInput(owner ? spec::owner::kQuery : spec::reader::kQuery);
  Ort::ConstValue key_cache = ctx.GetInput(owner ? spec::owner::kPastKey : spec::reader::kKeyCache);
  Ort::ConstValue value_cache = ctx.GetInput(owner ? spec::owner::kPastValue : spec::reader::kValueCache);
  const int table_index = owner ? spec::owner::kBlockTable : spec::reader::kBlockTable;
  const Ort::ConstValue block_table =
      ctx.GetInputCount() > static_cast<size_t>(table_index) ? ctx.GetInput(table_index) : Ort::ConstValue(nullptr);
  AttentionCall c;
  const CommonShapes cs = CheckCommonInputs(op, attrs, query, key_cache_name, key_cache, value_cache_name, value_cache,
                                            block_table, &c.paged);
  c.shape = cs.shape;
  const AttentionShape& sh = c.shape;
  c.query = query.GetTensorRawData();
  c.key_cache = key_cache.GetTensorRawData();
  c.value_cache = value_cache.GetTensorRawData();
  if (owner) {
    Ort::ConstValue key = ctx.GetInput(spec::owner::kKey);
    Ort::ConstValue value = ctx.GetInput(spec::owner::kValue);
    const std::vector<int64_t> kv_shape{sh.batch, sh.seq, static_cast<int64_t>(sh.kv_num_heads) * sh.head_dim};
    ExpectShape(op, "key", ShapeOf(op, "key", key, 3, "[B, S, kv_num_heads*D]"), kv_shape, "[B, S, kv_num_heads*D]");
    ExpectShape(op, "value", ShapeOf(op, "value", value, 3, "[B, S, kv_num_heads*D]"), kv_shape,
                "[B, S, kv_num_heads*D]");
    // A ring smaller than its window (the runtime bounds a ring by what the session can reach: MaxLength + chunk)
    // is valid while it never wraps; ValidateLengths refuses the step that would make it wrap.
    c.key = key.GetTensorRawData();
    c.value = value.GetTensorRawData();
  }

  CheckLengthInputs(op, ctx, past_index, new_index, sh.batch, &c.past_lengths, &c.new_lengths);
  if (lengths_on_host) {
    // Paged: the capacity rule is the block table's (ValidateBlockTable names the table), not a ring's.
    AttentionShape lengths_shape = sh;
    if (c.paged.paged()) lengths_shape.capacity = INT32_MAX;
    if (std::string err = ValidateLengths(kind, lengths_shape, c.past_lengths, c.new_lengths); !err.empty()) Fail(err);
    if (c.paged.paged())
      if (std::string err = ValidateBlockTable(kind, sh, c.paged, c.past_lengths, c.new_lengths); !err.empty())
        Fail(err);
  }
  c.rotary = CheckRotaryInputs(op, ctx, cos_index, sin_index, sh.head_dim);
  c.quant = CheckQuantInputs(op, ctx, query, key_cache_name, key_cache, owner ? spec::owner::kKScale : spec::reader::kKScale,
                             owner ? spec::owner::kVScale : spec::reader::kVScale, sh, lengths_on_host);
  if (lengths_on_host && c.rotary.present)
    if (std::string err = ValidateRotaryPositions(kind, sh, c.past_lengths, c.new_lengths, c.rotary.max_positions);
        !err.empty())
      Fail(err);

  c.output = ctx.GetOutput(owner ? spec::owner::kOutput : spec::reader::kOutput, cs.query_shape).GetTensorMutableRawData();
  if (owner) {
    c.present_key = ctx.GetOutput(spec::owner::kPresentKey, cs.cache_shape).GetTensorMutableRawData();
    c.present_value = ctx.GetOutput(spec::owner::kPresentValue, cs.cache_shape).GetTensorMutableRawData();
    if (attrs.require_inplace && (c.present_key != c.key_cache || c.present_value != c.value_cache))
      Fail(std::string(op) + ": 'present_key'/'present_value' are not bound to the 'past_key'/'past_value' buffers "
                             "(session config mixattention.require_inplace=1 forbids the past->present copy)");
  }
  return c;
}

}  // namespace mixattn::ops
