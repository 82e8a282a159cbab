// libresq_kernels.so: the C API of device queries and error bookkeeping (raw pointers, POD parameters,
// no TensorRT or CUDA headers needed by callers): the current device's SM, the architectures of the
// build (an ahead-of-time engine build asks them without a device), the ABI version. It holds no
// kernel: every op's GPU code is a Triton kernel in libresq_triton.so (triton_ops.h), the KV attention
// (rotation, append, flash-decoding) included. Every function returns a ResQStatus or a value;
// resq_cuda_last_error() names the last CUDA error.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "resq_layout.h"
#include "resq_params.h"

#ifdef __cplusplus
#define RESQ_KAPI extern "C" __attribute__((visibility("default")))
#else
#define RESQ_KAPI __attribute__((visibility("default")))
#endif

RESQ_KAPI const char* resq_cuda_last_error(void);
RESQ_KAPI int resq_cuda_layout_of(const ResQLinearShape* s, ResQLinearLayout* out);
// major * 10 + minor of the current device, or a negative ResQStatus
RESQ_KAPI int resq_cuda_device_sm(void);
// The build's RESQ_CUDA_ARCHS (the Triton cubins' architectures), as it spells them,
// comma-separated ("80,86,89,90a,120"). No device needed: an ahead-of-time engine build asks it.
RESQ_KAPI const char* resq_cuda_compiled_archs(void);
// The C API's version (RESQ_ABI_VERSION of ops.json's abi_version, at this library's build).
RESQ_KAPI int resq_cuda_abi_version(void);
