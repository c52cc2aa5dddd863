// Pre-included by tools/gpu/cuda-syntax.sh: what clang's CUDA front end (clang 14 and later) lacks over CUDA 12 / 13
// headers, so that the kernels can be compiled for errors without nvcc. Never part of a build that runs.
#pragma once
#include <cuda_runtime.h>
// libstdc++ 12 spells __attribute__((__noinline__)), which CUDA's macro of that name breaks: <memory> first.
#undef __noinline__
#include <memory>
#define __noinline__ __attribute__((noinline))
// clang 14 lowers <<<...>>> to cudaConfigureCall, which CUDA 12 no longer declares.
extern "C" cudaError_t cudaConfigureCall(dim3, dim3, size_t = 0, cudaStream_t = 0);
// Cache-hinted loads of the vector types the kernels use (clang 14's headers declare only some).
__device__ float __ldcg(const float*);
__device__ float2 __ldcg(const float2*);
__device__ float4 __ldcg(const float4*);
__device__ int __ldcg(const int*);
__device__ uint4 __ldcg(const uint4*);
__device__ uint4 __ldcs(const uint4*);
