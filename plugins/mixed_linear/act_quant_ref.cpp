// CPU reference: per-token activation quantisation into the padded kernel layout, and the weight
// preparation (padding + group sums) of the mixed GEMM.
#include <cstring>
#include <vector>

#include "cpu_common.h"
#include "resq_cpu_ref.h"

using namespace resq_cpu;

namespace {

// one part (low or high) of one token: groups of gw channels, padded to gwp, written at `dst`
void quantize_part(const float* x, int groups, int gw, int gwp, int bits, uint8_t* dst, float* sx, int32_t* zx) {
  std::vector<uint8_t> codes(gw);
  std::memset(dst, 0, static_cast<size_t>(groups) * gwp * bits / 8);
  for (int g = 0; g < groups; ++g) {
    quantize_group(x + static_cast<int64_t>(g) * gw, gw, bits, &sx[g], &zx[g], codes.data());
    for (int c = 0; c < gw; ++c) {
      const int64_t i = static_cast<int64_t>(g) * gwp + c;
      if (bits == 4)
        set_nibble(dst, i, codes[c]);
      else
        dst[i] = codes[c];
    }
  }
}

}  // namespace

RESQ_API int resq_cpu_quantize_act(const ResQQuantizeActParams* p) {
  if (!p || p->x_dtype != RESQ_F32) return RESQ_ERR_INVALID;
  const ResQLinearShape* s = &p->shape;
  const float* x = static_cast<const float*>(p->x);
  const int64_t t = p->tokens;
  uint8_t *q_low = p->out.q_low, *q_high = p->out.q_high;
  float* sx = p->out.sx;
  int32_t* zx = p->out.zx;
  ResQLinearLayout L;
  if (resq_linear_layout(s, &L) != RESQ_OK || t < 0 || !x || !sx || !zx) return RESQ_ERR_INVALID;
  if ((s->k_low && !q_low) || (s->high_groups && !q_high)) return RESQ_ERR_INVALID;
  for (int64_t r = 0; r < t; ++r) {
    const float* xr = x + r * s->k;
    float* sr = sx + r * L.groups;
    int32_t* zr = zx + r * L.groups;
    if (s->k_low)
      quantize_part(xr, s->low_groups, L.gw_low, L.gwp_low, s->a_bits_low, q_low + r * L.act_low_pitch, sr, zr);
    if (s->high_groups)
      quantize_part(xr + s->k_low, s->high_groups, L.gw_high, L.gwp_high, s->a_bits_high,
                    q_high + r * L.act_high_pitch, sr + s->low_groups, zr + s->low_groups);
  }
  return RESQ_OK;
}

RESQ_API int resq_cpu_prepare_weights(const ResQPrepareWeightsParams* p) {
  if (!p) return RESQ_ERR_INVALID;
  const ResQLinearShape* s = &p->shape;
  const int32_t n = p->n;
  const int8_t *w_low = p->w_low, *w_high = p->w_high;
  int8_t *w_low_p = p->w_low_p, *w_high_p = p->w_high_p;
  int32_t* wsum = p->wsum;
  ResQLinearLayout L;
  if (resq_linear_layout(s, &L) != RESQ_OK || n <= 0 || !wsum) return RESQ_ERR_INVALID;
  if (s->k_low && (!w_low || !w_low_p)) return RESQ_ERR_INVALID;
  if (s->high_groups && (!w_high || !w_high_p)) return RESQ_ERR_INVALID;
  const int kh = s->k - s->k_low;
  for (int64_t o = 0; o < n; ++o) {
    int32_t* ws = wsum + o * L.groups;
    if (s->k_low) {
      const int8_t* src = w_low + o * (s->k_low / 2);
      uint8_t* dst = reinterpret_cast<uint8_t*>(w_low_p + o * L.w_low_pitch);
      std::memset(dst, 0, L.w_low_pitch);
      for (int g = 0; g < s->low_groups; ++g) {
        int32_t sum = 0;
        for (int c = 0; c < L.gw_low; ++c) {
          const int v = nibble_s(src, static_cast<int64_t>(g) * L.gw_low + c);
          set_nibble(dst, static_cast<int64_t>(g) * L.gwp_low + c, v);
          sum += v;
        }
        ws[g] = sum;
      }
    }
    if (s->high_groups) {
      const int8_t* src = w_high + o * kh;
      int8_t* dst = w_high_p + o * L.w_high_pitch;
      std::memset(dst, 0, L.w_high_pitch);
      for (int g = 0; g < s->high_groups; ++g) {
        int32_t sum = 0;
        for (int c = 0; c < L.gw_high; ++c) {
          const int8_t v = src[g * L.gw_high + c];
          dst[g * L.gwp_high + c] = v;
          sum += v;
        }
        ws[s->low_groups + g] = sum;
      }
    }
  }
  return RESQ_OK;
}

RESQ_API int resq_cpu_prepare_lqer_a(const ResQPrepareLqerAParams* p) {
  if (!p) return RESQ_ERR_INVALID;
  const ResQLinearShape* s = &p->shape;
  const int32_t rank = p->rank;
  const int8_t* a = p->a;
  int8_t* a_p = p->a_p;
  int32_t* asum = p->asum;
  ResQLinearLayout L;
  if (resq_linear_layout(s, &L) != RESQ_OK || rank <= 0 || !a || !a_p || !asum) return RESQ_ERR_INVALID;
  for (int64_t j = 0; j < rank; ++j) {
    const int8_t* src = a + j * s->k;
    int8_t* dst = a_p + j * L.a8_pitch;
    std::memset(dst, 0, L.a8_pitch);
    for (int g = 0; g < L.groups; ++g) {
      const bool low = g < s->low_groups;
      const int gw = low ? L.gw_low : L.gw_high, gwp = low ? L.gwp_low : L.gwp_high;
      const int64_t src0 = low ? static_cast<int64_t>(g) * gw : s->k_low + static_cast<int64_t>(g - s->low_groups) * gw;
      const int64_t dst0 = low ? static_cast<int64_t>(g) * gwp
                               : static_cast<int64_t>(s->low_groups) * L.gwp_low + static_cast<int64_t>(g - s->low_groups) * gwp;
      int32_t sum = 0;
      for (int c = 0; c < gw; ++c) {
        dst[dst0 + c] = src[src0 + c];
        sum += src[src0 + c];
      }
      asum[j * L.groups + g] = sum;
    }
  }
  return RESQ_OK;
}
