// SharedKvAttention (reader layer) on the CPU: attend over the owner's cache. Semantics: docs/ops.md; input checks:
// attention_call.cc.
#include <vector>

#include "mixattention/op_spec.h"
#include "ops/attention_ops.h"

namespace mixattn::ops {

template <typename T>
OrtStatusPtr SharedKvAttentionKernel<T>::ComputeV2(OrtKernelContext* context) {
  return GuardStatus([&] {
    Ort::KernelContext ctx(context);
    const AttentionCall c = ReadCall(OpKind::kReader, attrs_, ctx, /*lengths_on_host=*/true);
    OrtExecutor executor(context);
    AttendArgs<T> attend = AttendArgsOf<T>(c);
    std::vector<T> rotated_q;  // rotary inside the op: a rotated copy of this step's queries
    attend.query = RotatedRows(c, attrs_.rotary_interleaved, c.shape.num_heads, attend.query, rotated_q, executor);
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
