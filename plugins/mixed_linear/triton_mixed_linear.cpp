// ResQMixedLinearPrepared on the Triton cubins, through the launch seam: the launch policy of
// resq_export/kernels/launch.py (mixed_linear: quantise, LQER projection, GEMM, split-K reduction at
// decode) with the grids taken from the embedded configurations' tile sizes. Same parameter struct
// as the CUDA library's resq_cuda_mixed_linear (resq_params.h), float32 x and y.
#include <cstring>
#include <string>
#include <vector>

#include "resq_ops.h"
#include "resq_params.h"
#include "triton_loader.h"
#include "triton_ops.h"

namespace S = resq::spec::ResQMixedLinearPrepared;
using resq::triton::arg;
using resq::triton::KernelArg;

namespace {

// the contract's runs of groups (ops.json, reference.GPU_CHUNK_GROUPS), compiled in with the cubins
int chunk() { return resq::triton::policy_of("GPU_CHUNK_GROUPS"); }

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
size_t align(size_t v) { return (v + 255) / 256 * 256; }

std::string bits(const ResQLinearShape& s) {
  return "a" + std::to_string(s.a_bits_low) + "_a" + std::to_string(s.a_bits_high);
}

// launch.gemm_tile, with launch.py's thresholds compiled in beside the cubins: the split decode tile
// up to SPLIT_MAX_M tokens, the fused small tile up to DECODE_MAX_M, then the prefill tile
const char* tile_of(int64_t m) {
  const int split_max = resq::triton::policy_of("SPLIT_MAX_M"), decode_max = resq::triton::policy_of("DECODE_MAX_M");
  if (m <= split_max) return "decode";
  return m <= decode_max ? "small" : "prefill";
}

int n_runs(const ResQLinearShape& s) {
  const int c = chunk() > 0 ? chunk() : 1;
  return static_cast<int>(cdiv(s.low_groups, c) + cdiv(s.high_groups, c));
}

// The workspace, in this order (each 256-byte aligned): q_low, q_high, sx, zx, the LQER buffers
// (zero bias [R], xa [M, R], qa [M, R], sa [M]), partial [runs, M, max(N, R)].
struct Workspace {
  size_t q_low, q_high, sx, zx, zero, xa, qa, sa, partial, total;
};

Workspace plan(const ResQLinearShape& s, const ResQLinearLayout& L, int64_t m, int64_t n, int rank) {
  Workspace w{};
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t here = at;
    at += align(bytes > 0 ? bytes : 1);
    return here;
  };
  w.q_low = take(static_cast<size_t>(m) * (L.act_low_pitch > 0 ? L.act_low_pitch : 1));
  w.q_high = take(static_cast<size_t>(m) * (L.act_high_pitch > 0 ? L.act_high_pitch : 1));
  w.sx = take(static_cast<size_t>(m) * L.groups * 4);
  w.zx = take(static_cast<size_t>(m) * L.groups * 4);
  w.zero = take(static_cast<size_t>(rank) * 4);
  w.xa = take(static_cast<size_t>(m) * rank * 4);
  w.qa = take(static_cast<size_t>(m) * rank);
  w.sa = take(static_cast<size_t>(m) * 4);
  const int64_t widest = n > rank ? n : rank;
  w.partial = take(static_cast<size_t>(n_runs(s)) * m * widest * 4);
  w.total = at;
  (void)s;
  return w;
}

struct Gemm {  // one grouped GEMM (launch.grouped_gemm)
  const void *w_low, *w_high, *wscale, *wsum, *bias, *qa, *sa, *lqer_b, *lqer_b_scale;
  void* y;
  int32_t n, w_low_pitch, w_high_pitch, ws_stride_n, ws_stride_g, rank, w_bits_low;
};

int grouped_gemm(resq::triton::Launcher& l, const ResQLinearShape& s, const ResQLinearLayout& L, int32_t m,
                 char* ws, const Workspace& w, const Gemm& g, cudaStream_t stream) {
  const std::string tile = tile_of(m);
  const std::string name = "mixed_gemm_" + tile + "_w" + std::to_string(g.w_bits_low) + "_" + bits(s);
  const int block_m = resq::triton::constexpr_of(name.c_str(), "BLOCK_M");
  const int block_n = resq::triton::constexpr_of(name.c_str(), "BLOCK_N");
  const int split = resq::triton::constexpr_of(name.c_str(), "SPLIT");
  if (block_m <= 0 || block_n <= 0 || split < 0) return RESQ_ERR_UNSUPPORTED;
  const int32_t runs = n_runs(s);
  const void *q_low = ws + w.q_low, *q_high = ws + w.q_high, *sx = ws + w.sx, *zx = ws + w.zx;
  void* partial = ws + w.partial;
  const int32_t groups = L.groups, low_groups = s.low_groups, high_groups = s.high_groups;
  const int32_t gp_low = L.gwp_low, gp_high = L.gwp_high, act_low_pitch = L.act_low_pitch,
                act_high_pitch = L.act_high_pitch;
  const KernelArg args[] = {arg(q_low), arg(q_high), arg(sx), arg(zx), arg(g.w_low), arg(g.w_high), arg(g.wscale),
                            arg(g.wsum), arg(g.bias), arg(g.qa), arg(g.sa), arg(g.lqer_b), arg(g.lqer_b_scale),
                            arg(g.y), arg(partial), arg(m), arg(g.n), arg(groups), arg(low_groups),
                            arg(high_groups), arg(gp_low), arg(gp_high), arg(act_low_pitch), arg(act_high_pitch),
                            arg(g.w_low_pitch), arg(g.w_high_pitch), arg(g.ws_stride_n), arg(g.ws_stride_g),
                            arg(g.rank)};
  const dim3 grid(static_cast<unsigned>(cdiv(g.n, block_n)), static_cast<unsigned>(cdiv(m, block_m)),
                  split ? static_cast<unsigned>(runs) : 1u);
  int st = l.launch(name.c_str(), grid, stream, args, static_cast<int>(sizeof args / sizeof args[0]));
  if (st != RESQ_OK || !split) return st;
  const int rbm = resq::triton::constexpr_of("splitk_reduce", "BLOCK_M");
  const int rbn = resq::triton::constexpr_of("splitk_reduce", "BLOCK_N");
  if (rbm <= 0 || rbn <= 0) return RESQ_ERR_UNSUPPORTED;
  const KernelArg red[] = {arg(partial), arg(runs), arg(g.qa), arg(g.sa), arg(g.lqer_b), arg(g.lqer_b_scale),
                           arg(g.bias), arg(g.y), arg(m), arg(g.n), arg(g.rank)};
  return l.launch("splitk_reduce", dim3(static_cast<unsigned>(cdiv(g.n, rbn)), static_cast<unsigned>(cdiv(m, rbm)), 1),
                  stream, red, static_cast<int>(sizeof red / sizeof red[0]));
}

}  // namespace

RESQ_TAPI size_t resq_triton_mixed_linear_workspace(const ResQMixedLinearParams* p) {
  ResQLinearLayout L;
  if (!p || resq_linear_layout(&p->shape, &L) != RESQ_OK) return 0;
  return plan(p->shape, L, p->tokens, p->n, p->rank).total;
}

RESQ_TAPI int resq_triton_mixed_linear(const ResQMixedLinearParams* p, void* stream_ptr) {
  ResQLinearLayout L;
  if (!p || resq_linear_layout(&p->shape, &L) != RESQ_OK || p->tokens < 0 || p->tokens > INT32_MAX || p->n <= 0 ||
      p->rank < 0 || p->x_dtype != RESQ_F32 || p->y_dtype != RESQ_F32 || !p->in.at[S::in_X] || !p->y)
    return RESQ_ERR_INVALID;
  if (chunk() <= 0 || resq::triton::policy_of("SPLIT_MAX_M") < 0 || resq::triton::policy_of("DECODE_MAX_M") < 0)
    return RESQ_ERR_UNSUPPORTED;  // a library built without resq_export.kernels' launch policy
  if (p->tokens == 0) return RESQ_OK;
  const ResQLinearShape& s = p->shape;
  const int32_t m = static_cast<int32_t>(p->tokens);
  const Workspace w = plan(s, L, m, p->n, p->rank);
  if (!p->workspace || p->workspace_size < w.total) return RESQ_ERR_INVALID;
  auto* ws = static_cast<char*>(p->workspace);
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  resq::triton::Launcher& l = resq::triton::launcher();
  const auto& in = p->in.at;

  // 1. activation quantiser: (cdiv(M, BLOCK_T), G) programs
  const std::string act = "act_quant_" + bits(s);
  const int block_t = resq::triton::constexpr_of(act.c_str(), "BLOCK_T");
  if (block_t <= 0) return RESQ_ERR_UNSUPPORTED;
  {
    const void *x = in[S::in_X], *q_low = ws + w.q_low, *q_high = ws + w.q_high, *sx = ws + w.sx, *zx = ws + w.zx;
    const int32_t k = s.k, k_low = s.k_low, low_groups = s.low_groups, high_groups = s.high_groups;
    const KernelArg args[] = {arg(x), arg(q_low), arg(q_high), arg(sx), arg(zx), arg(m), arg(k), arg(k_low),
                              arg(low_groups), arg(high_groups), arg(L.gw_low), arg(L.gw_high), arg(L.gwp_low),
                              arg(L.gwp_high), arg(L.act_low_pitch), arg(L.act_high_pitch)};
    const int st = l.launch(act.c_str(), dim3(static_cast<unsigned>(cdiv(m, block_t)), L.groups, 1), stream, args,
                            static_cast<int>(sizeof args / sizeof args[0]));
    if (st != RESQ_OK) return st;
  }
  // 2. LQER: xa = x . A (A as an all-8-bit weight, zero bias), then its per-token 8-bit quantiser
  const void *qa = nullptr, *sa = nullptr;
  if (p->rank > 0) {
    const auto* a_p = static_cast<const char*>(in[S::in_lqer_a]);
    void* zero = ws + w.zero;
    int st = l.memset(zero, 0, static_cast<size_t>(p->rank) * 4, stream);
    if (st != RESQ_OK) return st;
    Gemm g{a_p, a_p + static_cast<size_t>(s.low_groups) * L.gwp_low, in[S::in_lqer_a_scale], in[S::in_lqer_a_sums],
           zero, nullptr, nullptr, nullptr, nullptr, ws + w.xa, p->rank, L.a8_pitch, L.a8_pitch, 1, 0, 0, 8};
    st = grouped_gemm(l, s, L, m, ws, w, g, stream);
    if (st != RESQ_OK) return st;
    const void* xa = ws + w.xa;
    qa = ws + w.qa;
    sa = ws + w.sa;
    const int32_t r = p->rank;
    const KernelArg args[] = {arg(xa), arg(qa), arg(sa), arg(r)};
    st = l.launch("lqer_quant", dim3(static_cast<unsigned>(m), 1, 1), stream, args, 4);
    if (st != RESQ_OK) return st;
  }
  // 3. the GEMM with its epilogue (LQER, bias)
  Gemm g{in[S::in_weight_low], in[S::in_weight_high], in[S::in_wscale], in[S::in_weight_sums], in[S::in_bias], qa, sa,
         in[S::in_lqer_b], in[S::in_lqer_b_scale], p->y, p->n, L.w_low_pitch, L.w_high_pitch, L.groups, 1, p->rank, 4};
  if (!g.bias) return RESQ_ERR_INVALID;  // the TensorRT flavour gives every linear a (zero) bias
  return grouped_gemm(l, s, L, m, ws, w, g, stream);
}
