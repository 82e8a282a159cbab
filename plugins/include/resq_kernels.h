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

// x [t, k] (x_dtype: RESQ_F32, RESQ_F16 or RESQ_BF16) -> codes in the padded layout, sx, zx.
RESQ_KAPI int resq_cuda_quantize_act(const ResQLinearShape* s, const void* x, int x_dtype, int64_t t,
                                     uint8_t* q_low, uint8_t* q_high, float* sx, int32_t* zx, void* stream);
RESQ_KAPI int resq_cuda_prepare_weights(const ResQLinearShape* s, int32_t n, const int8_t* w_low,
                                        const int8_t* w_high, int8_t* w_low_p, int8_t* w_high_p, int32_t* wsum,
                                        void* stream);
RESQ_KAPI int resq_cuda_prepare_lqer_a(const ResQLinearShape* s, int32_t rank, const int8_t* a, int8_t* a_p,
                                       int32_t* asum, void* stream);
RESQ_KAPI int resq_cuda_lqer_project(const ResQLinearShape* s, int64_t t, int32_t rank, const uint8_t* q_low,
                                     const uint8_t* q_high, const float* sx, const int32_t* zx, const int8_t* a_p,
                                     const int32_t* asum, const float* a_scale, int8_t* qa, float* sa, void* stream);
// Tensor-core GEMM: u4 x s4 mma.sync on sm_80/86/89, INT4 unpacked to INT8 in registers and
// u8 x s8 mma.sync on sm_90+; the 8-bit part u8 x s8 everywhere; the float epilogue as the CPU
// reference. y [t, n] in y_dtype (float32 is bit-exact; f16/bf16 round that float32 result).
RESQ_KAPI int resq_cuda_mixed_gemm(const ResQLinearShape* s, int64_t t, int32_t n, const uint8_t* q_low,
                                   const uint8_t* q_high, const float* sx, const int32_t* zx, const int8_t* w_low_p,
                                   const int8_t* w_high_p, const float* wscale, const int32_t* wsum, int32_t rank,
                                   const int8_t* qa, const float* sa, const int8_t* lqer_b,
                                   const float* lqer_b_scale, const float* bias, void* y, int y_dtype, void* stream);

// The whole ResQMixedLinear op on prepared weights: quantise x, LQER projection, GEMM.
RESQ_KAPI size_t resq_cuda_mixed_linear_workspace(const ResQLinearShape* s, int64_t t, int32_t rank);
RESQ_KAPI int resq_cuda_mixed_linear(const ResQLinearShape* s, const void* x, int x_dtype, int64_t t, int32_t n,
                                     const int8_t* w_low_p, const int8_t* w_high_p, const float* wscale,
                                     const int32_t* wsum, int32_t rank, const int8_t* a_p, const int32_t* asum,
                                     const float* a_scale, const int8_t* lqer_b, const float* lqer_b_scale,
                                     const float* bias, void* y, int y_dtype, void* workspace, size_t workspace_size,
                                     void* stream);

RESQ_KAPI int resq_cuda_hadamard(const float* x, int64_t rows, int32_t n, const float* left, int32_t a, float* y,
                                 void* stream);
RESQ_KAPI int resq_cuda_rotate(const float* x, int64_t rows, int32_t d, const float* u, float* y, void* stream);

RESQ_KAPI int resq_cuda_kv_append(const ResQKVShape* s, const float* x, int32_t seq, uint8_t* codes, float* scales,
                                  uint8_t* zeros, int32_t capacity, int32_t pos, void* stream);
// past [B, Hkv, past_len, ...] -> the first past_len positions of a cache with `capacity` positions
RESQ_KAPI int resq_cuda_kv_copy(const ResQKVShape* s, const uint8_t* codes, const float* scales,
                                const uint8_t* zeros, int32_t past_len, uint8_t* dst_codes, float* dst_scales,
                                uint8_t* dst_zeros, int32_t capacity, void* stream);
// An upper bound for every seq and length of the shape's head_dim (about 1 MiB at head_dim 256): the
// attention splits the keys only as far as the workspace it is given holds, so a smaller one (or none)
// is correct, only slower. seq <= 65535 queries per call.
RESQ_KAPI size_t resq_cuda_kv_attention_workspace(const ResQKVShape* s, int32_t seq, int32_t length);
RESQ_KAPI int resq_cuda_kv_attention(const ResQKVShape* s, const float* q, int32_t seq, const uint8_t* k_codes,
                                     const float* k_scales, const uint8_t* k_zeros, const uint8_t* v_codes,
                                     const float* v_scales, const uint8_t* v_zeros, int32_t capacity,
                                     int32_t length, float* out, void* workspace, size_t workspace_size,
                                     void* stream);
