// libresq_kernels.so: the hand-written CUDA kernels of the KV-cache attention (and its rotation)
// behind a plain C API (raw device pointers, POD parameters, a cudaStream_t passed as void*; no
// TensorRT or CUDA headers needed by callers). Buffers and layouts are those of the CPU references
// (resq_cpu_ref.h), which are the oracle of the GPU tests. Every function returns a ResQStatus;
// after RESQ_ERR_CUDA, resq_cuda_last_error() names the CUDA error. The attention takes
// head_dim <= 256. The mixed linear and the Hadamard have one GPU implementation, the Triton
// cubins of libresq_triton.so (triton_ops.h); their hand-written kernels are gone.
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
// The architectures this library holds cubins for, as the build's RESQ_CUDA_ARCHS spells them,
// comma-separated ("80,86,89,90a,120"). No device needed: an ahead-of-time engine build asks it.
RESQ_KAPI const char* resq_cuda_compiled_archs(void);
// The C API's version (RESQ_ABI_VERSION of ops.json's abi_version, at this library's build).
RESQ_KAPI int resq_cuda_abi_version(void);

// Every kernel takes its parameter struct (resq_params.h) and a cudaStream_t as void*.
RESQ_KAPI int resq_cuda_rotate(const ResQRotateParams* p, void* stream);

RESQ_KAPI int resq_cuda_kv_append(const ResQKVAppendParams* p, void* stream);
// An upper bound for every seq and capacity of the shape's head_dim (about 1 MiB at head_dim 256),
// read from p's shape; seq <= 65535 queries per call.
RESQ_KAPI size_t resq_cuda_kv_attention_workspace(const ResQKVAttentionParams* p);
RESQ_KAPI int resq_cuda_kv_attention(const ResQKVAttentionParams* p, void* stream);
