// Tensor-core decode (decode_tc.cuh) over int8 caches: its instantiations, compiled apart from the others.
#include "cuda/decode_tc.cuh"

namespace mixattn::cuda::tc {
template DecodeLauncher LauncherFor<int8_t>(DType, int);
template unsigned ClusterBitsFor<int8_t>(DType, int);
template int OccupancyFor<int8_t>(DType, int);
}  // namespace mixattn::cuda::tc
