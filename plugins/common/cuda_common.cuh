// Shared device helpers of the kernel library.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "resq_kernels.h"

namespace resq {

// Remembers the last CUDA error for resq_cuda_last_error(); returns the ResQStatus to hand back.
int record_cuda_error(cudaError_t e);
inline int launch_status() { return record_cuda_error(cudaGetLastError()); }
inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
int device_sm();
int device_sm_count();

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_min(float v) {
  for (int o = 16; o; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// The quantiser of docs/ops.md given the group's range; explicit _rn intrinsics so nvcc never
// fuses or reorders what the reference rounds step by step.
struct AsymParams {
  float scale, zero, qmax;
};
__device__ __forceinline__ AsymParams asym_params(float lo, float hi, int bits) {
  AsymParams p;
  p.qmax = static_cast<float>((1 << bits) - 1);
  lo = fminf(lo, 0.0f);
  hi = fmaxf(hi, 0.0f);
  float s = __fdiv_rn(__fsub_rn(hi, lo), p.qmax);
  p.scale = s > 0.0f ? s : 1.0f;
  p.zero = rintf(__fdiv_rn(-lo, p.scale));
  return p;
}
__device__ __forceinline__ int asym_code(float x, const AsymParams& p) {
  const float q = __fadd_rn(rintf(__fdiv_rn(x, p.scale)), p.zero);
  return static_cast<int>(fminf(fmaxf(q, 0.0f), p.qmax));
}

inline size_t align_up(size_t v, size_t a = 256) { return (v + a - 1) / a * a; }

}  // namespace resq
