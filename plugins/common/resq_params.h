// The parameter structs of the native entry points: one per kernel, taken by the CUDA entry point
// (resq_kernels.h, device pointers) and by its CPU reference (resq_cpu_ref.h, host pointers) alike.
// Named fields instead of long positional pointer lists; the linear's weights travel as the op's
// input table (ResQOpInputs), indexed by ops.json's input names. Python mirrors these structs
// with ctypes (resq_export/native/params.py); resq_params_manifest() reports their sizes and field
// offsets, and a test checks that both sides agree.
//
// Shapes and layouts: resq_layout.h. A NULL pointer is allowed only where a comment says so.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "resq_layout.h"

#ifdef __cplusplus
extern "C" {
#endif

// Which 4-bit MMA the hand-written CUDA GEMM ran. That GEMM is gone (the Triton cubins are the one GPU
// implementation, with no int4 dot); the field stays in the structs so that their layout, which the
// CPU references and resq_export/native/params.py share, does not change. Nothing reads it.
enum ResQMmaPath { RESQ_MMA_AUTO = 0, RESQ_MMA_INT4 = 1, RESQ_MMA_INT4_AS_INT8 = 2 };

// Activation codes of `tokens` rows in the padded layout: resq_*_quantize_act writes them, the LQER
// projection and the GEMM read them. q_low (q_high) may be NULL when k_low == 0 (high_groups == 0).
typedef struct ResQActCodes {
  uint8_t* q_low;   // [tokens, act_low_pitch], 4-bit codes packed two per byte when a_bits_low == 4
  uint8_t* q_high;  // [tokens, act_high_pitch]
  float* sx;        // [tokens, G] scales
  int32_t* zx;      // [tokens, G] zero points
} ResQActCodes;

// An op node's input tensors by their index in ops.json (resq_ops.h: spec::<Op>::in_<name>), NULL
// where the node lists none. The kernels read the inputs they need by those names, so an input added
// to an op in ops.json reaches its kernel with no change here, in the plugin or in Python's wrappers.
#define RESQ_MAX_OP_INPUTS 16
typedef struct ResQOpInputs {
  const void* at[RESQ_MAX_OP_INPUTS];
} ResQOpInputs;

// x [tokens, k] (x_dtype: RESQ_F32, or RESQ_F16 / RESQ_BF16 on the GPU) -> out.
typedef struct ResQQuantizeActParams {
  ResQLinearShape shape;
  int64_t tokens;
  const void* x;
  int32_t x_dtype;
  ResQActCodes out;
} ResQQuantizeActParams;

// Contract weights (qweight_low int8 [n, k_low / 2] packed s4, qweight_high int8 [n, k - k_low]) ->
// the kernel layout and the per-group code sums.
typedef struct ResQPrepareWeightsParams {
  ResQLinearShape shape;
  int32_t n;
  const int8_t* w_low;
  const int8_t* w_high;
  int8_t* w_low_p;  // [n, w_low_pitch]
  int8_t* w_high_p;  // [n, w_high_pitch]
  int32_t* wsum;     // [n, G]
} ResQPrepareWeightsParams;

// LQER's A^T int8 [rank, k] -> the padded all-8-bit layout [rank, a8_pitch] and sums [rank, G].
typedef struct ResQPrepareLqerAParams {
  ResQLinearShape shape;
  int32_t rank;
  const int8_t* a;
  int8_t* a_p;
  int32_t* asum;
} ResQPrepareLqerAParams;

// xa = the grouped GEMM of the quantised x with LQER's A (in: ResQMixedLinearPrepared's lqer_a,
// lqer_a_sums, lqer_a_scale), then symmetric 8-bit per token: qa int8 [tokens, rank], sa float32
// [tokens].
typedef struct ResQLqerProjectParams {
  ResQLinearShape shape;
  int64_t tokens;
  int32_t rank;
  ResQActCodes act;
  ResQOpInputs in;
  int8_t* qa;
  float* sa;
} ResQLqerProjectParams;

// y [tokens, n] = sum_g (acc_g - zx * wsum_g) * sx * wscale (+ LQER from qa, sa, lqer_b,
// lqer_b_scale) (+ bias), the sum a float64 island rounded to float32 once (docs/ops.md). `in` holds
// ResQMixedLinearPrepared's inputs (X unused: act is X quantised; bias may be NULL). y_dtype RESQ_F32
// is the exact result; f16 / bf16 (GPU only) round that float32.
typedef struct ResQMixedGemmParams {
  ResQLinearShape shape;
  int64_t tokens;
  int32_t n;
  int32_t rank;      // lqer_rank; 0: no LQER
  ResQActCodes act;
  ResQOpInputs in;
  const int8_t* qa;  // [tokens, rank] from the LQER projection; NULL when rank == 0
  const float* sa;   // [tokens]
  void* y;
  int32_t y_dtype;
  int32_t mma;  // ResQMmaPath
} ResQMixedGemmParams;

// The whole ResQMixedLinearPrepared op (GPU): quantise in.at[in_X] (x_dtype), LQER projection, GEMM,
// the intermediates in `workspace` (resq_triton_mixed_linear_workspace bytes).
typedef struct ResQMixedLinearParams {
  ResQLinearShape shape;
  int64_t tokens;
  int32_t n;
  int32_t rank;
  ResQOpInputs in;
  int32_t x_dtype;
  void* y;
  int32_t y_dtype;
  int32_t mma;  // ResQMmaPath
  void* workspace;
  size_t workspace_size;
} ResQMixedLinearParams;

// y [rows, n] = x @ kron(left, S / sqrt(n / a)): Walsh-Hadamard butterflies, then the a x a factor
// (left may be NULL when a == 1).
typedef struct ResQHadamardParams {
  int64_t rows;
  int32_t n;
  int32_t a;
  const float* x;
  const float* left;
  float* y;
} ResQHadamardParams;

// y [rows, d] = x [rows, d] @ u [d, d] (U_C on q and k after RoPE).
typedef struct ResQRotateParams {
  int64_t rows;
  int32_t d;
  const float* x;
  const float* u;
  float* y;
} ResQRotateParams;

// One quantised cache tensor (K or V) with room for `capacity` tokens: codes uint8
// [B, Hkv, capacity, resq_kv_row_bytes] (resq_layout.h: the 4-bit part packed two per byte), scales
// float32 [B, Hkv, capacity, G], zeros uint8 [B, Hkv, capacity, G].
typedef struct ResQKVCache {
  uint8_t* codes;
  float* scales;
  uint8_t* zeros;
  int32_t capacity;
} ResQKVCache;

// Quantise x [B, Hkv, seq, D] per token per KV head into rows past_length[b] .. past_length[b] + seq - 1
// of sequence b's cache (in place). past_length: [B] int32 in the callee's memory (the GPU's for
// resq_cuda_*), read there so a call needs no host copy of it (CUDA graphs, TensorRT's device
// tensor). The CPU refuses rows beyond the capacity; the GPU, which cannot return an error per row,
// leaves them unwritten.
typedef struct ResQKVAppendParams {
  ResQKVShape shape;
  int32_t seq;
  const int32_t* past_length;
  const float* x;
  ResQKVCache cache;
} ResQKVAppendParams;

// Causal GQA attention of q [B, H, seq, D] over the dequantised caches: query i of sequence b is at
// row past_length[b] + i and reads rows 0 .. past_length[b] + i -> out [B, seq, H * D] float32. The
// GPU splits the keys by the capacity (the bound it knows without reading past_length), only as far
// as `workspace` holds (resq_cuda_kv_attention_workspace bytes is enough for any split), so a
// smaller one, or none, is correct, only slower.
typedef struct ResQKVAttentionParams {
  ResQKVShape shape;
  int32_t seq;
  const int32_t* past_length;
  const float* q;
  ResQKVCache k;
  ResQKVCache v;
  float* out;
  void* workspace;
  size_t workspace_size;
} ResQKVAttentionParams;

#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
namespace resq {
// in.at[index] as the tensor's element type (index: resq_ops.h spec::<Op>::in_<name>)
template <class T> inline const T* op_input(const ResQOpInputs& in, int index) { return static_cast<const T*>(in.at[index]); }
}  // namespace resq
#endif
