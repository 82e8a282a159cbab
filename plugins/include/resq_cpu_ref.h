// CPU references of every kernel's contract (libresq_cpu_ref.so). Same buffers, layouts and
// argument order as the CUDA entry points in resq_kernels.h, host pointers, no stream. They exist to
// prove packing, layouts and epilogue arithmetic bit-exactly against the Python reference executor
// on machines without a GPU, and are the oracle of the GPU tests.
#pragma once
#include <stdint.h>
#include "resq_layout.h"

#ifdef __cplusplus
#define RESQ_API extern "C" __attribute__((visibility("default")))
#else
#define RESQ_API __attribute__((visibility("default")))
#endif

// "ResQMixedLinear v1 in=... out=... attrs=..." lines compiled from the generated resq_ops.h.
RESQ_API const char* resq_spec_manifest(void);
// The C API's version (RESQ_ABI_VERSION of ops.json's abi_version, at this library's build).
RESQ_API int resq_abi_version(void);
RESQ_API int resq_layout_of(const ResQLinearShape* s, ResQLinearLayout* out);

// x [t, k] float32 -> activation codes in the padded layout (resq_layout.h), scales [t, G] and
// zero points [t, G]: per token per group asymmetric, the range always including 0 (docs/ops.md).
RESQ_API int resq_cpu_quantize_act(const ResQLinearShape* s, const float* x, int64_t t,
                                   uint8_t* q_low, uint8_t* q_high, float* sx, int32_t* zx);

// Contract weights (qweight_low int8 [n, k_low/2] packed s4, qweight_high int8 [n, k - k_low]) ->
// padded kernel layout plus the per-group code sums [n, G] of the zero-point correction.
RESQ_API int resq_cpu_prepare_weights(const ResQLinearShape* s, int32_t n, const int8_t* w_low,
                                      const int8_t* w_high, int8_t* w_low_p, int8_t* w_high_p, int32_t* wsum);

// LQER's A^T int8 [rank, k] -> padded all-8-bit layout [rank, a8_pitch] and sums [rank, G].
RESQ_API int resq_cpu_prepare_lqer_a(const ResQLinearShape* s, int32_t rank, const int8_t* a,
                                     int8_t* a_p, int32_t* asum);

// xa = the grouped GEMM of the quantised x with A (scale a_scale[j] in every group), then
// symmetric 8-bit per token: qa int8 [t, rank], sa float32 [t].
RESQ_API int resq_cpu_lqer_project(const ResQLinearShape* s, int64_t t, int32_t rank, const uint8_t* q_low,
                                   const uint8_t* q_high, const float* sx, const int32_t* zx,
                                   const int8_t* a_p, const int32_t* asum, const float* a_scale,
                                   int8_t* qa, float* sa);

// y [t, n] float32 = sum_g (acc_g - zx*wsum_g) * sx * wscale  (+ LQER from qa, sa) (+ bias), the sum a
// float64 island rounded to float32 once (docs/ops.md).
// qa/sa/lqer_b/lqer_b_scale may be NULL (rank 0); bias may be NULL.
RESQ_API int resq_cpu_mixed_gemm(const ResQLinearShape* s, int64_t t, int32_t n, const uint8_t* q_low,
                                 const uint8_t* q_high, const float* sx, const int32_t* zx,
                                 const int8_t* w_low_p, const int8_t* w_high_p, const float* wscale,
                                 const int32_t* wsum, int32_t rank, const int8_t* qa, const float* sa,
                                 const int8_t* lqer_b, const float* lqer_b_scale, const float* bias,
                                 float* y);

// y [rows, n] = x @ kron(left, S / sqrt(n / a)): Walsh-Hadamard butterflies, then the a x a factor.
RESQ_API int resq_cpu_hadamard(const float* x, int64_t rows, int32_t n, const float* left, int32_t a, float* y);

// y [rows, d] = x [rows, d] @ u [d, d] (U_C on q and k after RoPE).
RESQ_API int resq_cpu_rotate(const float* x, int64_t rows, int32_t d, const float* u, float* y);

// Quantise x [B, Hkv, S, D] per token per KV head and write it at positions pos .. pos+S-1 of a
// cache with room for `capacity` tokens: codes uint8 [B, Hkv, capacity, D] (one code per byte),
// scales float32 [B, Hkv, capacity, G], zeros uint8 [B, Hkv, capacity, G].
RESQ_API int resq_cpu_kv_append(const ResQKVShape* s, const float* x, int32_t seq, uint8_t* codes,
                                float* scales, uint8_t* zeros, int32_t capacity, int32_t pos);

// Causal GQA attention of q [B, H, S, D] (the last S of `length` positions) over the dequantised
// cache (first `length` positions of `capacity`) -> out [B, S, H * D] float32.
RESQ_API int resq_cpu_kv_attention(const ResQKVShape* s, const float* q, int32_t seq,
                                   const uint8_t* k_codes, const float* k_scales, const uint8_t* k_zeros,
                                   const uint8_t* v_codes, const float* v_scales, const uint8_t* v_zeros,
                                   int32_t capacity, int32_t length, float* out);
