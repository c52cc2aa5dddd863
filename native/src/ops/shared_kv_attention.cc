// SharedKvAttention (reader layer): ORT glue, shape checks, dispatch. Semantics: docs/ops.md.
#include <vector>

#include "mixattention/op_spec.h"
#include "ops/attention_ops.h"

namespace mixattn::ops {

namespace spec_r = spec::reader;
static constexpr const char* kOp = spec::kSharedKvAttention;

template <typename T>
OrtStatusPtr SharedKvAttentionKernel<T>::ComputeV2(OrtKernelContext* context) {
  return GuardStatus([&] {
    Ort::KernelContext ctx(context);
    Ort::ConstValue query = ctx.GetInput(spec_r::kQuery);
    Ort::ConstValue key_cache = ctx.GetInput(spec_r::kKeyCache);
    Ort::ConstValue value_cache = ctx.GetInput(spec_r::kValueCache);
    CommonShapes cs = CheckCommonInputs(kOp, attrs_, query, "key_cache", key_cache, "value_cache", value_cache);

    const int32_t* past_lengths = nullptr;
    const int32_t* new_lengths = nullptr;
    CheckLengthInputs(kOp, ctx, spec_r::kPastLengths, spec_r::kNewLengths, cs.shape.batch, &past_lengths,
                      &new_lengths);
    if (std::string err = ValidateLengths(OpKind::kReader, cs.shape, past_lengths, new_lengths); !err.empty())
      Fail(err);
    const RotaryInputs rotary = CheckRotaryInputs(kOp, ctx, spec_r::kCosCache, spec_r::kSinCache, cs.shape.head_dim);
    if (rotary.present)
      if (std::string err =
              ValidateRotaryPositions(OpKind::kReader, cs.shape, past_lengths, new_lengths, rotary.max_positions);
          !err.empty())
        Fail(err);

    Ort::UnownedValue output = ctx.GetOutput(spec_r::kOutput, cs.query_shape);
    AttendArgs<T> attend;
    attend.shape = cs.shape;
    attend.query = query.GetTensorData<T>();
    attend.key_cache = key_cache.GetTensorData<T>();
    attend.value_cache = value_cache.GetTensorData<T>();
    attend.past_lengths = past_lengths;
    attend.new_lengths = new_lengths;
    attend.output = output.GetTensorMutableData<T>();
    OrtExecutor executor(context);
    std::vector<T> rotated_q;  // rotary inside the op: a rotated copy of this step's queries
    if (rotary.present) {
      const RotaryArgs<T> ra{static_cast<const T*>(rotary.cos), static_cast<const T*>(rotary.sin), rotary.rotary_dim,
                             rotary.max_positions, attrs_.rotary_interleaved};
      rotated_q.resize(static_cast<size_t>(cs.shape.batch) * cs.shape.seq * cs.shape.num_heads * cs.shape.head_dim);
      ApplyRotary(ra, cs.shape, cs.shape.num_heads, attend.query, rotated_q.data(), past_lengths, new_lengths,
                  executor);
      attend.query = rotated_q.data();
    }
    Attend(attend, executor);
  });
}

template struct SharedKvAttentionKernel<float>;
template struct SharedKvAttentionKernel<Float16>;
template struct SharedKvAttentionKernel<BFloat16>;
template struct SharedKvAttentionOp<float>;
template struct SharedKvAttentionOp<Float16>;
template struct SharedKvAttentionOp<BFloat16>;

}  // namespace mixattn::ops
