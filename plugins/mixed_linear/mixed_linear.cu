// The whole ResQMixedLinear op on prepared weights: quantise x (codes, scales and zero points in the
// workspace), the LQER projection when rank > 0, then the GEMM with its fused epilogue.
#include "cuda_common.cuh"
#include "resq_ops.h"

namespace resq {
namespace {

struct Workspace {
  uint8_t* q_low;
  uint8_t* q_high;
  float* sx;
  int32_t* zx;
  int8_t* qa;
  float* sa;
  size_t size;
};

Workspace carve(const ResQLinearLayout& L, int64_t t, int32_t rank, char* base) {
  Workspace w{};
  size_t off = 0;
  auto take = [&](size_t bytes) {
    char* p = base ? base + off : nullptr;
    off += align_up(bytes > 0 ? bytes : 1);
    return p;
  };
  w.q_low = reinterpret_cast<uint8_t*>(take(static_cast<size_t>(t) * L.act_low_pitch));
  w.q_high = reinterpret_cast<uint8_t*>(take(static_cast<size_t>(t) * L.act_high_pitch));
  w.sx = reinterpret_cast<float*>(take(static_cast<size_t>(t) * L.groups * 4));
  w.zx = reinterpret_cast<int32_t*>(take(static_cast<size_t>(t) * L.groups * 4));
  w.qa = reinterpret_cast<int8_t*>(take(static_cast<size_t>(t) * rank));
  w.sa = reinterpret_cast<float*>(take(static_cast<size_t>(t) * 4));
  w.size = off;
  return w;
}

}  // namespace
}  // namespace resq

using namespace resq;

RESQ_KAPI size_t resq_cuda_mixed_linear_workspace(const ResQMixedLinearParams* p) {
  ResQLinearLayout L;
  if (!p || resq_linear_layout(&p->shape, &L) != RESQ_OK || p->tokens < 0 || p->rank < 0) return 0;
  return carve(L, p->tokens, p->rank, nullptr).size;
}

RESQ_KAPI int resq_cuda_mixed_linear(const ResQMixedLinearParams* p, void* stream) {
  ResQLinearLayout L;
  if (!p || resq_linear_layout(&p->shape, &L) != RESQ_OK || p->tokens < 0 || p->rank < 0) return RESQ_ERR_INVALID;
  const Workspace w = carve(L, p->tokens, p->rank, static_cast<char*>(p->workspace));
  if (!p->workspace || p->workspace_size < w.size) return RESQ_ERR_INVALID;
  const ResQActCodes act{w.q_low, w.q_high, w.sx, w.zx};
  const bool lqer = p->rank > 0;
  const ResQQuantizeActParams quant{p->shape, p->tokens, p->in.at[spec::ResQMixedLinearPrepared::in_X], p->x_dtype, act};
  int st = resq_cuda_quantize_act(&quant, stream);
  if (st == RESQ_OK && lqer) {
    const ResQLqerProjectParams proj{p->shape, p->tokens, p->rank, act, p->in, w.qa, w.sa};
    st = resq_cuda_lqer_project(&proj, stream);
  }
  if (st == RESQ_OK) {
    const ResQMixedGemmParams gemm{p->shape, p->tokens, p->n, p->rank, act, p->in, lqer ? w.qa : nullptr,
                                   lqer ? w.sa : nullptr, p->y, p->y_dtype, p->mma};
    st = resq_cuda_mixed_gemm(&gemm, stream);
  }
  return st;
}
