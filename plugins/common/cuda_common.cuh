// Shared helpers of the kernel library's C API (cuda_api.cu): error bookkeeping and device queries.
// No kernel lives here any more: every op's GPU code is a Triton kernel (libresq_triton.so).
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "resq_kernels.h"

namespace resq {

// Remembers the last CUDA error for resq_cuda_last_error(); returns the ResQStatus to hand back.
int record_cuda_error(cudaError_t e);
int device_sm();

}  // namespace resq
