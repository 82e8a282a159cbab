// LQER projection: xa = grouped GEMM of the quantised x with A^T (8-bit, scale per rank component),
// then symmetric 8-bit per token. rank is small (tens), so plain integer dot products (one warp per
// rank component, one block per token) beat a tensor-core tile here; the whole row of xa stays in
// the block for the per-token maximum.
#include "cuda_common.cuh"
#include "resq_ops.h"

namespace resq {
namespace {

struct LqerArgs {
  ResQLinearShape s;
  ResQLinearLayout L;
  int32_t rank;
  const uint8_t* q_low;
  const uint8_t* q_high;
  const float* sx;
  const int32_t* zx;
  const int8_t* a_p;
  const int32_t* asum;
  const float* a_scale;
  int8_t* qa;
  float* sa;
};

__device__ __forceinline__ int act_code(const uint8_t* row, int bits, int64_t i) {
  return bits == 4 ? (row[i >> 1] >> ((i & 1) * 4)) & 0xF : row[i];
}

__global__ void lqer_project_kernel(LqerArgs p) {
  extern __shared__ float xa[];
  __shared__ float red[32];
  const int64_t tok = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  const ResQLinearLayout& L = p.L;
  const uint8_t* lo_row = p.q_low ? p.q_low + tok * L.act_low_pitch : nullptr;
  const uint8_t* hi_row = p.q_high ? p.q_high + tok * L.act_high_pitch : nullptr;
  for (int j = warp; j < p.rank; j += nw) {
    const int8_t* a_row = p.a_p + static_cast<int64_t>(j) * L.a8_pitch;
    double y = 0.0;  // a float64 island like the reference epilogue, rounded once below
    for (int g = 0; g < L.groups; ++g) {
      const bool low = g < p.s.low_groups;
      const int gi = low ? g : g - p.s.low_groups, gwp = low ? L.gwp_low : L.gwp_high;
      const int bits = low ? p.s.a_bits_low : p.s.a_bits_high;
      const uint8_t* row = low ? lo_row : hi_row;
      const int8_t* w = a_row + (low ? 0 : p.s.low_groups * L.gwp_low) + static_cast<int64_t>(gi) * gwp;
      int acc = 0;
      for (int c = lane; c < gwp; c += 32) acc += act_code(row, bits, static_cast<int64_t>(gi) * gwp + c) * w[c];
      acc = warp_sum_int(acc);
      const int64_t corr = static_cast<int64_t>(acc) - static_cast<int64_t>(p.zx[tok * L.groups + g]) * p.asum[j * L.groups + g];
      const double part = __dmul_rn(__dmul_rn(__ll2double_rn(corr), p.sx[tok * L.groups + g]), p.a_scale[j]);
      y = g == 0 ? part : __dadd_rn(y, part);
    }
    if (lane == 0) xa[j] = __double2float_rn(y);
  }
  __syncthreads();
  float m = 0.0f;
  for (int j = threadIdx.x; j < p.rank; j += blockDim.x) m = fmaxf(m, fabsf(xa[j]));
  m = warp_max(m);
  if (lane == 0) red[warp] = m;
  __syncthreads();
  m = lane < nw ? red[lane] : 0.0f;
  m = warp_max(m);
  float scale = __fdiv_rn(m, 127.0f);
  if (!(scale > 0.0f)) scale = 1.0f;
  if (threadIdx.x == 0) p.sa[tok] = scale;
  for (int j = threadIdx.x; j < p.rank; j += blockDim.x)
    p.qa[tok * p.rank + j] = static_cast<int8_t>(fminf(fmaxf(rintf(__fdiv_rn(xa[j], scale)), -128.0f), 127.0f));
}

}  // namespace
}  // namespace resq

using namespace resq;

RESQ_KAPI int resq_cuda_lqer_project(const ResQLqerProjectParams* p, void* stream) {
  if (!p) return RESQ_ERR_INVALID;
  const ResQLinearShape* s = &p->shape;
  const int64_t t = p->tokens;
  namespace S = spec::ResQMixedLinearPrepared;
  const int32_t rank = p->rank;
  const uint8_t *q_low = p->act.q_low, *q_high = p->act.q_high;
  const float* sx = p->act.sx;
  const int32_t* zx = p->act.zx;
  const int8_t* a_p = op_input<int8_t>(p->in, S::in_lqer_a);
  const int32_t* asum = op_input<int32_t>(p->in, S::in_lqer_a_sums);
  const float* a_scale = op_input<float>(p->in, S::in_lqer_a_scale);
  int8_t* qa = p->qa;
  float* sa = p->sa;
  LqerArgs a{};
  if (resq_linear_layout(s, &a.L) != RESQ_OK || t < 0 || rank <= 0 || rank > 4096) return RESQ_ERR_INVALID;
  if ((s->k_low && !q_low) || (s->high_groups && !q_high) || !sx || !zx || !a_p || !asum || !a_scale || !qa || !sa)
    return RESQ_ERR_INVALID;
  if (t == 0) return RESQ_OK;
  a.s = *s;
  a.rank = rank;
  a.q_low = q_low;
  a.q_high = q_high;
  a.sx = sx;
  a.zx = zx;
  a.a_p = a_p;
  a.asum = asum;
  a.a_scale = a_scale;
  a.qa = qa;
  a.sa = sa;
  lqer_project_kernel<<<static_cast<unsigned>(t), 256, sizeof(float) * rank, as_stream(stream)>>>(a);
  return launch_status();
}
