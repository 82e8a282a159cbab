// The whole ResQMixedLinear op on prepared weights: quantise x (codes, scales and zero points in the
// workspace), the LQER projection when rank > 0, then the GEMM with its fused epilogue.
#include "common.cuh"

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

RESQ_KAPI size_t resq_cuda_mixed_linear_workspace(const ResQLinearShape* s, int64_t t, int32_t rank) {
  ResQLinearLayout L;
  if (resq_linear_layout(s, &L) != RESQ_OK || t < 0 || rank < 0) return 0;
  return carve(L, t, rank, nullptr).size;
}

RESQ_KAPI int resq_cuda_mixed_linear(const ResQLinearShape* s, const void* x, int x_dtype, int64_t t, int32_t n,
                                     const int8_t* w_low_p, const int8_t* w_high_p, const float* wscale,
                                     const int32_t* wsum, int32_t rank, const int8_t* a_p, const int32_t* asum,
                                     const float* a_scale, const int8_t* lqer_b, const float* lqer_b_scale,
                                     const float* bias, void* y, int y_dtype, void* workspace, size_t workspace_size,
                                     void* stream) {
  ResQLinearLayout L;
  if (resq_linear_layout(s, &L) != RESQ_OK || t < 0 || rank < 0) return RESQ_ERR_INVALID;
  const Workspace w = carve(L, t, rank, static_cast<char*>(workspace));
  if (!workspace || workspace_size < w.size) return RESQ_ERR_INVALID;
  int st = resq_cuda_quantize_act(s, x, x_dtype, t, w.q_low, w.q_high, w.sx, w.zx, stream);
  if (st == RESQ_OK && rank > 0)
    st = resq_cuda_lqer_project(s, t, rank, w.q_low, w.q_high, w.sx, w.zx, a_p, asum, a_scale, w.qa, w.sa, stream);
  if (st == RESQ_OK)
    st = resq_cuda_mixed_gemm(s, t, n, w.q_low, w.q_high, w.sx, w.zx, w_low_p, w_high_p, wscale, wsum, rank,
                              rank > 0 ? w.qa : nullptr, rank > 0 ? w.sa : nullptr, lqer_b, lqer_b_scale, bias, y,
                              y_dtype, stream);
  return st;
}
