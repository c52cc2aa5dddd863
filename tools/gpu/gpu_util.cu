// Tiny kernels for the harness: a spin kernel (keeps the GPU busy while the host queues the runs
// that are timed, so host overhead stays out of the GPU-side timing) and an empty kernel.
#include <cuda_runtime.h>

#include <cstdint>

namespace {
__global__ void SpinKernel(unsigned long long ns) {
  unsigned long long start;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  for (;;) {
    unsigned long long now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    if (now - start >= ns) break;
  }
}
__global__ void EmptyKernel() {}
}  // namespace

void LaunchSpin(cudaStream_t stream, unsigned long long ns) { SpinKernel<<<1, 1, 0, stream>>>(ns); }
void LaunchEmpty(cudaStream_t stream) { EmptyKernel<<<1, 32, 0, stream>>>(); }
