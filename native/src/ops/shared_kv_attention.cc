// SharedKvAttention (reader layer) on the CPU: attend over the owner's cache. Semantics: docs/ops.md; input checks:
// attention_call.cc.
#include <vector>

#include "cpu/attention_isa.h"
#include "mixattention/op_spec.h"
#include "ops/attention_ops.h"

namespace mixattn::ops {

template <typename T, typename TCache>
OrtStatusPtr SharedKvAttentionKernel<T, TCache>::ComputeV2(OrtKernelContext* context) {
  return GuardStatus([&] {
    Ort::KernelContext ctx(context);
    const AttentionCall c = ReadCall(OpKind::kReader, attrs_, ctx, /*lengths_on_host=*/true);
    OrtExecutor executor(context);
    AttendArgs<T, TCache> attend = AttendArgsOf<T, TCache>(c);
    std::vector<T> rotated_q;  // rotary inside the op: a rotated copy of this step's queries
    attend.query = RotatedRows(c, attrs_.rotary_interleaved, c.shape.num_heads, attend.query, rotated_q, executor);
    Attend(attend, executor);
  });
}

#define MIXATTN_INSTANTIATE_READER(T, TC)      \
  template struct SharedKvAttentionKernel<T, TC>; \
  template struct SharedKvAttentionOp<T, TC>;
MIXATTN_FOR_EACH_TYPE_PAIR(MIXATTN_INSTANTIATE_READER)

}  // namespace mixattn::ops
