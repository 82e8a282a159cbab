// The kernel-side layout of the quantised linear operands, shared by the CPU references, the CUDA
// kernels and the plugins (plain C, host code).
//
// The contract layout (docs/ops.md) stores a linear's input channels as a 4-bit part of k_low
// channels (low_groups equal groups) followed by an 8-bit part (high_groups equal groups). The
// tensor-core GEMM walks K in tiles of RESQ_KTILE channels that must not straddle a group, so every
// group is zero-padded to a multiple of RESQ_KTILE. Padded channels hold code 0 in both the
// activations and the weights, so they add nothing to any integer sum. When every group width is a
// multiple of RESQ_KTILE (Llama-3-8B's 3584 + 512) the padded layout is byte-identical to the
// contract layout.
#pragma once
#include <stdint.h>

#define RESQ_KTILE 64

#ifdef __CUDACC__
#define RESQ_HD __host__ __device__
#else
#define RESQ_HD
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ResQLinearShape {
  int32_t k;            // input channels
  int32_t k_low;        // channels with 4-bit weights (a prefix)
  int32_t low_groups;   // equal groups over the k_low channels (>= 1 when k_low > 0)
  int32_t high_groups;  // equal groups over the k - k_low channels (0 when k_low == k)
  int32_t a_bits_low;   // activation bits of the low groups: 4 or 8
  int32_t a_bits_high;  // activation bits of the high groups: 4 or 8
} ResQLinearShape;

typedef struct ResQLinearLayout {
  int32_t groups;        // low_groups + high_groups
  int32_t gw_low, gw_high;      // contract group widths
  int32_t gwp_low, gwp_high;    // padded group widths (multiples of RESQ_KTILE)
  int32_t act_low_pitch;   // bytes per token of the low activation codes (packed when 4-bit)
  int32_t act_high_pitch;  // bytes per token of the high activation codes (packed when 4-bit)
  int32_t w_low_pitch;     // bytes per output row of the low weight codes (always packed 4-bit)
  int32_t w_high_pitch;    // bytes per output row of the high weight codes (always 8-bit)
  int32_t a8_pitch;        // bytes per row of an all-8-bit operand over the padded K (LQER's A)
} ResQLinearLayout;

typedef struct ResQKVShape {
  int32_t batch, num_heads, num_kv_heads, head_dim;
  int32_t high_channels;  // the last r channels of each head at high_bits; 0: one group
  int32_t kv_bits, high_bits;  // 4 or 8 each
} ResQKVShape;

enum ResQStatus {
  RESQ_OK = 0,
  RESQ_ERR_INVALID = 1,      // shapes or arguments that break the contract
  RESQ_ERR_UNSUPPORTED = 2,  // valid for the contract, not implemented by this kernel
  RESQ_ERR_CUDA = 3,         // a CUDA runtime error (see resq_last_error)
  RESQ_ERR_NO_DEVICE = 4
};

enum ResQDType { RESQ_F32 = 0, RESQ_F16 = 1, RESQ_BF16 = 2 };

static inline int32_t resq_round_up(int32_t x, int32_t m) { return (x + m - 1) / m * m; }

// Fills `out` and returns RESQ_OK, or RESQ_ERR_INVALID for a shape the contract does not allow.
static inline int resq_linear_layout(const ResQLinearShape* s, ResQLinearLayout* out) {
  int32_t kh;
  if (!s || !out || s->k <= 0 || s->k_low < 0 || s->k_low > s->k || (s->k_low % 2)) return RESQ_ERR_INVALID;
  kh = s->k - s->k_low;
  if ((s->k_low > 0) != (s->low_groups > 0) || (kh > 0) != (s->high_groups > 0)) return RESQ_ERR_INVALID;
  if (s->low_groups < 0 || s->high_groups < 0) return RESQ_ERR_INVALID;
  if ((s->a_bits_low != 4 && s->a_bits_low != 8) || (s->a_bits_high != 4 && s->a_bits_high != 8)) return RESQ_ERR_INVALID;
  out->gw_low = s->low_groups ? s->k_low / s->low_groups : 0;
  out->gw_high = s->high_groups ? kh / s->high_groups : 0;
  if (out->gw_low * s->low_groups != s->k_low || out->gw_high * s->high_groups != kh) return RESQ_ERR_INVALID;
  // 4-bit codes are packed two per byte, so a packed group must start on a byte
  if (out->gw_low % 2 || (s->a_bits_high == 4 && out->gw_high % 2)) return RESQ_ERR_INVALID;
  out->groups = s->low_groups + s->high_groups;
  out->gwp_low = resq_round_up(out->gw_low, RESQ_KTILE);
  out->gwp_high = resq_round_up(out->gw_high, RESQ_KTILE);
  out->act_low_pitch = s->low_groups * out->gwp_low * s->a_bits_low / 8;
  out->act_high_pitch = s->high_groups * out->gwp_high * s->a_bits_high / 8;
  out->w_low_pitch = s->low_groups * out->gwp_low / 2;
  out->w_high_pitch = s->high_groups * out->gwp_high;
  out->a8_pitch = s->low_groups * out->gwp_low + s->high_groups * out->gwp_high;
  return RESQ_OK;
}

static inline RESQ_HD int resq_kv_groups(const ResQKVShape* s) { return s->high_channels > 0 ? 2 : 1; }

// One cached K/V row (one token, one KV head; ops.json's C bytes): the low part (head_dim - r
// channels at kv_bits) then the high part (r channels at high_bits); 4-bit codes two per byte,
// channel 2j in the low nibble, 8-bit codes one per byte.
static inline RESQ_HD int32_t resq_kv_low_bytes(const ResQKVShape* s) {
  return (s->head_dim - s->high_channels) * s->kv_bits / 8;
}
static inline RESQ_HD int32_t resq_kv_row_bytes(const ResQKVShape* s) {
  return resq_kv_low_bytes(s) + s->high_channels * s->high_bits / 8;
}
// the code of channel c of a row
static inline RESQ_HD int resq_kv_code(const ResQKVShape* s, const uint8_t* row, int c) {
  const int low = s->head_dim - s->high_channels;
  const int bits = c < low ? s->kv_bits : s->high_bits;
  const int i = c < low ? c : c - low;
  const uint8_t* part = c < low ? row : row + resq_kv_low_bytes(s);
  return bits == 8 ? part[i] : (part[i >> 1] >> ((i & 1) * 4)) & 0xF;
}

static inline int resq_kv_check(const ResQKVShape* s) {
  if (!s || s->batch <= 0 || s->num_heads <= 0 || s->num_kv_heads <= 0 || s->head_dim <= 0) return RESQ_ERR_INVALID;
  if (s->num_heads % s->num_kv_heads) return RESQ_ERR_INVALID;
  if (s->high_channels < 0 || s->high_channels >= s->head_dim) return RESQ_ERR_INVALID;
  if ((s->kv_bits != 4 && s->kv_bits != 8) || (s->high_bits != 4 && s->high_bits != 8)) return RESQ_ERR_INVALID;
  // a packed 4-bit part is whole bytes
  if ((s->kv_bits == 4 && (s->head_dim - s->high_channels) % 2) || (s->high_bits == 4 && s->high_channels % 2))
    return RESQ_ERR_INVALID;
  return RESQ_OK;
}

#ifdef __cplusplus
}
#endif
