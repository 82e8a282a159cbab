// The mixed INT4 x INT4 + INT8 x INT8 GEMM with the exact grouped epilogue.
//
// Design (correctness first, one clear structure for every architecture):
// - A block owns a BM x BN output tile (BM = 16 * MT tokens, BN = 8 * NT output channels) and has
//   KW warps. All warps compute the whole tile; they split every group's 64-channel k-tiles
//   round-robin (split-K inside the block) without atomics, and at decode (M <= 16, memory bound on
//   the weights) each warp loads four k-steps before their MMAs, to keep more bytes in flight.
//   Integer partial sums are exact, so neither the order of the cross-warp reduction nor the
//   unrolling changes the result.
// - Fragments are loaded straight from global memory into registers: with the padded layout every
//   load is an aligned 32-bit word, and the lanes of a warp read whole 32-byte sectors. (A shared
//   memory pipeline with cp.async / TMA is the next step for large M; see docs/plugins.md.)
// - int32 accumulators are flushed at the end of every group into a float64 sum, in the reference's
//   order: y = part_0 + part_1 + ..., part_g = (double(acc - z * wsum) * sx) * wscale, then LQER, then
//   bias, rounded to float32 once (the float64 island of docs/ops.md).
// - sm_80/86/89: u4 x s4 m16n8k64 MMAs. sm_90+: no 4-bit MMA, the 4-bit registers are unpacked to
//   INT8 and fed to u8 x s8 m16n8k32 MMAs. The 8-bit part is u8 x s8 everywhere.
#include "cuda_common.cuh"
#include "mma.cuh"
#include "resq_ops.h"

namespace resq {
namespace {

// Which 4-bit MMA (ResQMmaPath): AUTO is native m16n8k64 before Hopper, unpacked to INT8 from sm_90 on.
bool unpack_int4(int mma, int sm) {
  if (mma == RESQ_MMA_INT4) return false;
  if (mma == RESQ_MMA_INT4_AS_INT8) return true;
  return sm >= 90;
}

struct GemmArgs {
  ResQLinearShape s;
  ResQLinearLayout L;
  int64_t t;
  int32_t n, rank;
  const uint8_t* q_low;
  const uint8_t* q_high;
  const float* sx;
  const int32_t* zx;
  const int8_t* w_low;
  const int8_t* w_high;
  const float* wscale;
  const int32_t* wsum;
  const int8_t* qa;
  const float* sa;
  const int8_t* lqer_b;
  const float* lqer_b_scale;
  const float* bias;
  void* y;
  int y_dtype;
};

__device__ __forceinline__ uint32_t load_u32(const uint8_t* base, int64_t offset, bool valid) {
  return valid ? __ldg(reinterpret_cast<const uint32_t*>(base + offset)) : 0u;
}

struct MmaU4S4 {
  __device__ __forceinline__ void operator()(int (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) const {
    mma_u4s4(c, a, b);
  }
};
struct MmaU4S4ViaInt8 {
  __device__ __forceinline__ void operator()(int (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) const {
    mma_u4s4_via_int8(c, a, b);
  }
};
struct MmaU8S8 {
  __device__ __forceinline__ void operator()(int (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) const {
    mma_u8s8(c, a, b);
  }
};

// One warp's share of one group: steps w, w + KW, w + 2 KW, ... of 32 bytes per row (a k64 4-bit or
// a k32 8-bit MMA each). U steps are in flight at once: every fragment of U steps is loaded before
// the first of their MMAs, so a warp has U x (A + B fragments) of loads outstanding; decode is bound
// by the bytes in flight. Steps past the end load zeros, whose MMAs add nothing (exact).
template <int MT, int NT, int KW, int U, class Mma>
__device__ __forceinline__ void accumulate_group(int (&acc)[MT][NT][4], const uint8_t* act, int64_t act_pitch,
                                                 const uint8_t* w, int64_t w_pitch, int64_t base, int steps, int warp,
                                                 const int64_t (&rows)[MT][2], const bool (&row_ok)[MT][2],
                                                 int col0, int q4, const bool (&col_ok)[NT], Mma mma) {
  for (int k0 = warp; k0 < steps; k0 += KW * U) {
    uint32_t a[U][MT][4], b[U][NT][2];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const bool k_ok = k0 + u * KW < steps;
      const int64_t off = base + static_cast<int64_t>(k0 + u * KW) * 32 + q4 * 4;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 4; ++r)
          a[u][mt][r] = load_u32(act, rows[mt][r & 1] * act_pitch + off + (r >> 1) * 16, k_ok && row_ok[mt][r & 1]);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int r = 0; r < 2; ++r)
          b[u][nt][r] = load_u32(w, static_cast<int64_t>(col0 + nt * 8) * w_pitch + off + r * 16, k_ok && col_ok[nt]);
    }
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mma(acc[mt][nt], a[u][mt], b[u][nt]);
  }
}

template <int MT, int NT, int KW, int U, bool kUnpack4>
__global__ void __launch_bounds__(32 * KW) mixed_gemm_kernel(GemmArgs p) {
  constexpr int kRegs = MT * NT * 4;
  __shared__ int red[KW > 1 ? KW - 1 : 1][kRegs][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g8 = lane / 4, q4 = lane % 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * MT * 16;
  const int n0 = blockIdx.x * NT * 8;
  const ResQLinearLayout& L = p.L;

  int64_t rows[MT][2];
  bool row_ok[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      rows[mt][h] = m0 + mt * 16 + g8 + 8 * h;
      row_ok[mt][h] = rows[mt][h] < p.t;
    }
  bool col_ok[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) col_ok[nt] = n0 + nt * 8 < p.n;  // n % 8 == 0: whole n8 tiles

  double y[MT][NT][4];  // the epilogue is a float64 island (docs/ops.md), rounded once at the store
  int acc[MT][NT][4];

  for (int g = 0; g < L.groups; ++g) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0;

    if (g < p.s.low_groups) {  // 4-bit part: k64 per 32-byte step
      const int64_t base = static_cast<int64_t>(g) * L.gwp_low / 2;
      if (kUnpack4)
        accumulate_group<MT, NT, KW, U>(acc, p.q_low, L.act_low_pitch, reinterpret_cast<const uint8_t*>(p.w_low),
                                        L.w_low_pitch, base, L.gwp_low / RESQ_KTILE, warp, rows, row_ok, n0 + g8, q4,
                                        col_ok, MmaU4S4ViaInt8{});
      else
        accumulate_group<MT, NT, KW, U>(acc, p.q_low, L.act_low_pitch, reinterpret_cast<const uint8_t*>(p.w_low),
                                        L.w_low_pitch, base, L.gwp_low / RESQ_KTILE, warp, rows, row_ok, n0 + g8, q4,
                                        col_ok, MmaU4S4{});
    } else {  // 8-bit part: k32 per 32-byte step
      const int64_t base = static_cast<int64_t>(g - p.s.low_groups) * L.gwp_high;
      accumulate_group<MT, NT, KW, U>(acc, p.q_high, L.act_high_pitch, reinterpret_cast<const uint8_t*>(p.w_high),
                                      L.w_high_pitch, base, L.gwp_high / 32, warp, rows, row_ok, n0 + g8, q4, col_ok,
                                      MmaU8S8{});
    }

    if (KW > 1) {  // exact integer reduction of the warps' partial sums into warp 0
      __syncthreads();
      if (warp > 0) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) red[warp - 1][(mt * NT + nt) * 4 + i][lane] = acc[mt][nt][i];
      }
      __syncthreads();
      if (warp == 0) {
        for (int w = 0; w < KW - 1; ++w)
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
              for (int i = 0; i < 4; ++i) acc[mt][nt][i] += red[w][(mt * NT + nt) * 4 + i][lane];
      }
    }
    if (warp == 0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int64_t row = rows[mt][i >> 1];
            const int col = n0 + nt * 8 + 2 * q4 + (i & 1);
            if (!row_ok[mt][i >> 1] || !col_ok[nt]) continue;
            const int64_t corr = static_cast<int64_t>(acc[mt][nt][i]) -
                                 static_cast<int64_t>(p.zx[row * L.groups + g]) * p.wsum[static_cast<int64_t>(col) * L.groups + g];
            const double part = __dmul_rn(__dmul_rn(__ll2double_rn(corr), p.sx[row * L.groups + g]),
                                          p.wscale[static_cast<int64_t>(col) * L.groups + g]);
            y[mt][nt][i] = g == 0 ? part : __dadd_rn(y[mt][nt][i], part);
          }
    }
  }

  if (warp != 0) return;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t row = rows[mt][i >> 1];
        const int col = n0 + nt * 8 + 2 * q4 + (i & 1);
        if (!row_ok[mt][i >> 1] || !col_ok[nt]) continue;
        double v = y[mt][nt][i];
        if (p.rank > 0) {
          int dot = 0;  // rank * 128 * 128 stays far inside int32
          for (int j = 0; j < p.rank; ++j)
            dot += static_cast<int>(p.qa[row * p.rank + j]) * p.lqer_b[static_cast<int64_t>(col) * p.rank + j];
          v = __dadd_rn(v, __dmul_rn(__dmul_rn(static_cast<double>(dot), p.sa[row]), p.lqer_b_scale[col]));
        }
        if (p.bias) v = __dadd_rn(v, p.bias[col]);
        store_out(p.y, p.y_dtype, row * p.n + col, __double2float_rn(v));
      }
}

template <int MT, int NT, int KW, int U>
int launch(const GemmArgs& a, bool unpack4, cudaStream_t st) {
  const dim3 grid((a.n + NT * 8 - 1) / (NT * 8), static_cast<unsigned>((a.t + MT * 16 - 1) / (MT * 16)));
  if (unpack4)
    mixed_gemm_kernel<MT, NT, KW, U, true><<<grid, 32 * KW, 0, st>>>(a);
  else
    mixed_gemm_kernel<MT, NT, KW, U, false><<<grid, 32 * KW, 0, st>>>(a);
  return launch_status();
}

}  // namespace
}  // namespace resq

using namespace resq;

RESQ_KAPI int resq_cuda_mixed_gemm(const ResQMixedGemmParams* p, void* stream) {
  GemmArgs a{};
  if (!p || resq_linear_layout(&p->shape, &a.L) != RESQ_OK) return RESQ_ERR_INVALID;
  const ResQLinearShape* s = &p->shape;
  const int64_t t = p->tokens;
  namespace S = spec::ResQMixedLinearPrepared;
  static_assert(S::kNumInputs <= RESQ_MAX_OP_INPUTS, "ResQOpInputs holds every input");
  const int32_t n = p->n, rank = p->rank;
  a.w_low = op_input<int8_t>(p->in, S::in_weight_low);
  a.w_high = op_input<int8_t>(p->in, S::in_weight_high);
  a.wscale = op_input<float>(p->in, S::in_wscale);
  a.wsum = op_input<int32_t>(p->in, S::in_weight_sums);
  a.lqer_b = op_input<int8_t>(p->in, S::in_lqer_b);
  a.lqer_b_scale = op_input<float>(p->in, S::in_lqer_b_scale);
  a.bias = op_input<float>(p->in, S::in_bias);
  if (t < 0 || n <= 0 || rank < 0 || !p->act.sx || !p->act.zx || !a.wscale || !a.wsum || !p->y)
    return RESQ_ERR_INVALID;
  if ((s->k_low && (!p->act.q_low || !a.w_low)) || (s->high_groups && (!p->act.q_high || !a.w_high)))
    return RESQ_ERR_INVALID;
  if (rank > 0 && (!p->qa || !p->sa || !a.lqer_b || !a.lqer_b_scale)) return RESQ_ERR_INVALID;
  if (p->y_dtype != RESQ_F32 && p->y_dtype != RESQ_F16 && p->y_dtype != RESQ_BF16) return RESQ_ERR_INVALID;
  if (p->mma != RESQ_MMA_AUTO && p->mma != RESQ_MMA_INT4 && p->mma != RESQ_MMA_INT4_AS_INT8) return RESQ_ERR_INVALID;
  namespace G = spec::ResQMixedLinearPrepared;
  if ((s->k_low && s->a_bits_low != G::gpu_a_bits_low) || (s->high_groups && s->a_bits_high != G::gpu_a_bits_high) ||
      n % G::gpu_n_multiple)
    return RESQ_ERR_UNSUPPORTED;
  if (t == 0) return RESQ_OK;
  a.s = *s;
  a.t = t;
  a.n = n;
  a.rank = rank;
  a.q_low = p->act.q_low;
  a.q_high = p->act.q_high;
  a.sx = p->act.sx;
  a.zx = p->act.zx;
  a.qa = p->qa;
  a.sa = p->sa;
  a.y = p->y;
  a.y_dtype = p->y_dtype;
  const int sm = device_sm();
  if (sm < 0) return -sm;
  if (sm < 80) return RESQ_ERR_UNSUPPORTED;
  const bool unpack4 = unpack_int4(p->mma, sm);
  cudaStream_t st = as_stream(stream);
  // decode: one 16-token row of tiles, four warps splitting K, four k-steps in flight per warp;
  // prefill: 32 x 32 tiles, two warps, one step at a time (a 64 x 32 warp tile needs ~255 registers:
  // too little occupancy without shared-memory staging)
  if (t <= 16) return launch<1, 4, 4, 4>(a, unpack4, st);
  return launch<2, 4, 2, 1>(a, unpack4, st);
}
