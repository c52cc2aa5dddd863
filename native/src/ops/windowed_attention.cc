// WindowedAttention (owner layer) on the CPU: attend, then write the chunk into the cache. Semantics: docs/ops.md;
// input checks: attention_call.cc.
#include <cstdlib>
#include <vector>

#include "cpu/attention_isa.h"
#include "mixattention/op_spec.h"
#include "ops/attention_ops.h"

namespace mixattn::ops {

namespace spec_o = spec::owner;

template <typename T, typename TCache>
OrtStatusPtr WindowedAttentionKernel<T, TCache>::ComputeV2(OrtKernelContext* context) {
  return GuardStatus([&] {
    Ort::KernelContext ctx(context);
    const AttentionCall c = ReadCall(OpKind::kOwner, attrs_, ctx, /*lengths_on_host=*/true);
    OrtExecutor executor(context);
    AttendArgs<T, TCache> attend = AttendArgsOf<T, TCache>(c);
    // Rotary inside the op: rotated copies of this step's queries and keys; the rotated keys are cached.
    std::vector<T> rotated_q, rotated_k;
    attend.query = RotatedRows(c, attrs_.rotary_interleaved, c.shape.num_heads, attend.query, rotated_q, executor);
    attend.chunk_key =
        RotatedRows(c, attrs_.rotary_interleaved, c.shape.kv_num_heads, attend.chunk_key, rotated_k, executor);
    Attend(attend, executor);

    CacheWriteArgs<T, TCache> write;
    write.shape = c.shape;
    write.chunk_key = attend.chunk_key;
    write.chunk_value = attend.chunk_value;
    write.past_key = attend.key_cache;
    write.past_value = attend.value_cache;
    write.present_key = static_cast<TCache*>(c.present_key);
    write.present_value = static_cast<TCache*>(c.present_value);
    write.past_lengths = c.past_lengths;
    write.new_lengths = c.new_lengths;
    write.quant = c.quant;  // quantized caches: each row is quantized as it is appended
    write.paged = c.paged;
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

#define MIXATTN_INSTANTIATE_OWNER(T, TC)       \
  template struct WindowedAttentionKernel<T, TC>; \
  template struct WindowedAttentionOp<T, TC>;
MIXATTN_FOR_EACH_TYPE_PAIR(MIXATTN_INSTANTIATE_OWNER)
template struct WindowedAttentionOp<float, Float8E4M3, Float8E4M3AsUint8>;
template struct WindowedAttentionOp<Float16, Float8E4M3, Float8E4M3AsUint8>;
template struct WindowedAttentionOp<BFloat16, Float8E4M3, Float8E4M3AsUint8>;

}  // namespace mixattn::ops
