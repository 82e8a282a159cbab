// libresq_kernels.so: the CUDA kernels of the resq custom ops behind a plain C API (raw device
// pointers, POD parameters, a cudaStream_t passed as void*; no TensorRT or CUDA headers needed by
// callers). Buffers and layouts are those of the CPU references (resq_cpu_ref.h), which are the
// oracle of the GPU tests. Every function returns a ResQStatus; after RESQ_ERR_CUDA,
// resq_cuda_last_error() names the CUDA error.
//
// Supported by the CUDA mixed GEMM (others return RESQ_ERR_UNSUPPORTED; the CPU references
// support the whole contract): ops.json's "gpu" entry (resq_ops.h gpu_*): a_bits_low == 4,
// a_bits_high == 8, n % 8 == 0; the attention takes head_dim <= 256.
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
RESQ_KAPI int resq_cuda_quantize_act(const ResQQuantizeActParams* p, void* stream);
RESQ_KAPI int resq_cuda_prepare_weights(const ResQPrepareWeightsParams* p, void* stream);
RESQ_KAPI int resq_cuda_prepare_lqer_a(const ResQPrepareLqerAParams* p, void* stream);
RESQ_KAPI int resq_cuda_lqer_project(const ResQLqerProjectParams* p, void* stream);
// Tensor-core GEMM: the 4-bit part by p->mma (ResQMmaPath), the 8-bit part u8 x s8 everywhere; the
// float epilogue as the CPU reference.
RESQ_KAPI int resq_cuda_mixed_gemm(const ResQMixedGemmParams* p, void* stream);

// The whole ResQMixedLinear op on prepared weights: quantise x, LQER projection, GEMM. The workspace
// size reads p's shape, tokens and rank.
RESQ_KAPI size_t resq_cuda_mixed_linear_workspace(const ResQMixedLinearParams* p);
RESQ_KAPI int resq_cuda_mixed_linear(const ResQMixedLinearParams* p, void* stream);

RESQ_KAPI int resq_cuda_hadamard(const ResQHadamardParams* p, void* stream);
RESQ_KAPI int resq_cuda_rotate(const ResQRotateParams* p, void* stream);

RESQ_KAPI int resq_cuda_kv_append(const ResQKVAppendParams* p, void* stream);
// An upper bound for every seq and capacity of the shape's head_dim (about 1 MiB at head_dim 256),
// read from p's shape; seq <= 65535 queries per call.
RESQ_KAPI size_t resq_cuda_kv_attention_workspace(const ResQKVAttentionParams* p);
RESQ_KAPI int resq_cuda_kv_attention(const ResQKVAttentionParams* p, void* stream);
