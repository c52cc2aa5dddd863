// Tensor-core decode (decode_tc.cuh) over fp8 E4M3 caches: its instantiations, compiled apart from the others.
#include "cuda/decode_tc.cuh"

namespace mixattn::cuda::tc {
template DecodeLauncher LauncherFor<__nv_fp8_e4m3>(DType, int);
template unsigned ClusterBitsFor<__nv_fp8_e4m3>(DType, int);
template int OccupancyFor<__nv_fp8_e4m3>(DType, int);
}  // namespace mixattn::cuda::tc
