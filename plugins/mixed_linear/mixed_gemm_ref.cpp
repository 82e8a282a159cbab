// CPU reference of the mixed INT4/INT8 GEMM and its epilogue, in exactly the order of
// reference.GroupedIntWeights.matmul and QuantLinear._lqer_int. The epilogue is a float island
// (docs/ops.md): float64, rounded to float32 once per output (and once for the LQER intermediate
// before its quantiser); this file is compiled with -ffp-contract=off.
#include <cmath>
#include <cstdlib>

#include "cpu_common.h"
#include "resq_cpu_ref.h"
#include "resq_ops.h"

namespace S = resq::spec::ResQMixedLinearPrepared;
static_assert(S::kNumInputs <= RESQ_MAX_OP_INPUTS, "ResQOpInputs holds every input");

using namespace resq_cpu;

namespace {

// exact integer dot product of group g of token row (q_low/q_high) with an 8- or 4-bit weight row
struct Operands {
  const ResQLinearShape* s;
  const ResQLinearLayout* L;
  const uint8_t* q_low;
  const uint8_t* q_high;
};

int64_t group_dot_w4w8(const Operands& op, int64_t t, int g, const int8_t* wl, const int8_t* wh) {
  const ResQLinearShape* s = op.s;
  const ResQLinearLayout* L = op.L;
  int64_t acc = 0;
  if (g < s->low_groups) {
    const uint8_t* row = op.q_low + t * L->act_low_pitch;
    for (int c = 0; c < L->gwp_low; ++c)
      acc += act_code(row, s->a_bits_low, L->gwp_low, g, c) * nibble_s(wl, static_cast<int64_t>(g) * L->gwp_low + c);
  } else {
    const int gh = g - s->low_groups;
    const uint8_t* row = op.q_high + t * L->act_high_pitch;
    for (int c = 0; c < L->gwp_high; ++c)
      acc += act_code(row, s->a_bits_high, L->gwp_high, gh, c) * wh[gh * L->gwp_high + c];
  }
  return acc;
}

int64_t group_dot_a8(const Operands& op, int64_t t, int g, const int8_t* a_row) {
  const ResQLinearShape* s = op.s;
  const ResQLinearLayout* L = op.L;
  int64_t acc = 0;
  if (g < s->low_groups) {
    const uint8_t* row = op.q_low + t * L->act_low_pitch;
    const int8_t* w = a_row + static_cast<int64_t>(g) * L->gwp_low;
    for (int c = 0; c < L->gwp_low; ++c) acc += act_code(row, s->a_bits_low, L->gwp_low, g, c) * w[c];
  } else {
    const int gh = g - s->low_groups;
    const uint8_t* row = op.q_high + t * L->act_high_pitch;
    const int8_t* w = a_row + static_cast<int64_t>(s->low_groups) * L->gwp_low + static_cast<int64_t>(gh) * L->gwp_high;
    for (int c = 0; c < L->gwp_high; ++c) acc += act_code(row, s->a_bits_high, L->gwp_high, gh, c) * w[c];
  }
  return acc;
}

// float64(acc - z * wsum) * sx * ws, the operations in the reference's order
inline double group_term(int64_t acc, int32_t z, int32_t wsum, float sx, float ws) {
  const double corr = static_cast<double>(acc - static_cast<int64_t>(z) * wsum);
  const double a = corr * static_cast<double>(sx);
  return a * static_cast<double>(ws);
}

bool operands_ok(const ResQLinearShape* s, const uint8_t* q_low, const uint8_t* q_high) {
  return (!s->k_low || q_low) && (!s->high_groups || q_high);
}

}  // namespace

RESQ_API int resq_cpu_lqer_project(const ResQLqerProjectParams* p) {
  if (!p) return RESQ_ERR_INVALID;
  const ResQLinearShape* s = &p->shape;
  const int64_t t = p->tokens;
  const int32_t rank = p->rank;
  const uint8_t *q_low = p->act.q_low, *q_high = p->act.q_high;
  const float* sx = p->act.sx;
  const int32_t* zx = p->act.zx;
  const int8_t* a_p = resq::op_input<int8_t>(p->in, S::in_lqer_a);
  const int32_t* asum = resq::op_input<int32_t>(p->in, S::in_lqer_a_sums);
  const float* a_scale = resq::op_input<float>(p->in, S::in_lqer_a_scale);
  int8_t* qa = p->qa;
  float* sa = p->sa;
  ResQLinearLayout L;
  if (resq_linear_layout(s, &L) != RESQ_OK || t < 0 || rank <= 0) return RESQ_ERR_INVALID;
  if (!operands_ok(s, q_low, q_high) || !sx || !zx || !a_p || !asum || !a_scale || !qa || !sa) return RESQ_ERR_INVALID;
  const Operands op{s, &L, q_low, q_high};
  float* xa = static_cast<float*>(std::malloc(sizeof(float) * rank));
  if (!xa) return RESQ_ERR_INVALID;
  for (int64_t r = 0; r < t; ++r) {
    float amax = 0.0f;
    for (int j = 0; j < rank; ++j) {
      double y = 0.0;
      for (int g = 0; g < L.groups; ++g) {
        const double part = group_term(group_dot_a8(op, r, g, a_p + static_cast<int64_t>(j) * L.a8_pitch),
                                      zx[r * L.groups + g], asum[j * L.groups + g], sx[r * L.groups + g], a_scale[j]);
        y = g == 0 ? part : y + part;
      }
      xa[j] = static_cast<float>(y);
      amax = std::fmax(amax, std::fabs(xa[j]));
    }
    float scale = amax / 127.0f;
    if (!(scale > 0.0f)) scale = 1.0f;
    sa[r] = scale;
    for (int j = 0; j < rank; ++j) {
      const float q = std::fmin(std::fmax(round_even(xa[j] / scale), -128.0f), 127.0f);
      qa[r * rank + j] = static_cast<int8_t>(q);
    }
  }
  std::free(xa);
  return RESQ_OK;
}

RESQ_API int resq_cpu_mixed_gemm(const ResQMixedGemmParams* p) {
  if (!p || p->y_dtype != RESQ_F32) return RESQ_ERR_INVALID;
  const ResQLinearShape* s = &p->shape;
  const int64_t t = p->tokens;
  const int32_t n = p->n, rank = p->rank;
  const uint8_t *q_low = p->act.q_low, *q_high = p->act.q_high;
  const float* sx = p->act.sx;
  const int32_t* zx = p->act.zx;
  const int8_t* w_low_p = resq::op_input<int8_t>(p->in, S::in_weight_low);
  const int8_t* w_high_p = resq::op_input<int8_t>(p->in, S::in_weight_high);
  const float* wscale = resq::op_input<float>(p->in, S::in_wscale);
  const int32_t* wsum = resq::op_input<int32_t>(p->in, S::in_weight_sums);
  const int8_t *qa = p->qa, *lqer_b = resq::op_input<int8_t>(p->in, S::in_lqer_b);
  const float *sa = p->sa, *lqer_b_scale = resq::op_input<float>(p->in, S::in_lqer_b_scale);
  const float* bias = resq::op_input<float>(p->in, S::in_bias);
  float* y = static_cast<float*>(p->y);
  ResQLinearLayout L;
  if (resq_linear_layout(s, &L) != RESQ_OK || t < 0 || n <= 0 || rank < 0) return RESQ_ERR_INVALID;
  if (!operands_ok(s, q_low, q_high) || !sx || !zx || !wscale || !wsum || !y) return RESQ_ERR_INVALID;
  if ((s->k_low && !w_low_p) || (s->high_groups && !w_high_p)) return RESQ_ERR_INVALID;
  if (rank > 0 && (!qa || !sa || !lqer_b || !lqer_b_scale)) return RESQ_ERR_INVALID;
  const Operands op{s, &L, q_low, q_high};
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t o = 0; o < n; ++o) {
      const int8_t* wl = s->k_low ? w_low_p + o * L.w_low_pitch : nullptr;
      const int8_t* wh = s->high_groups ? w_high_p + o * L.w_high_pitch : nullptr;
      double acc = 0.0;
      for (int g = 0; g < L.groups; ++g) {
        const double part = group_term(group_dot_w4w8(op, r, g, wl, wh), zx[r * L.groups + g],
                                      wsum[o * L.groups + g], sx[r * L.groups + g], wscale[o * L.groups + g]);
        acc = g == 0 ? part : acc + part;
      }
      if (rank > 0) {
        int64_t dot = 0;
        for (int j = 0; j < rank; ++j) dot += static_cast<int64_t>(qa[r * rank + j]) * lqer_b[o * rank + j];
        const double a = static_cast<double>(dot) * static_cast<double>(sa[r]);
        acc = acc + a * static_cast<double>(lqer_b_scale[o]);
      }
      if (bias) acc = acc + static_cast<double>(bias[o]);
      y[r * n + o] = static_cast<float>(acc);
    }
  }
  return RESQ_OK;
}
