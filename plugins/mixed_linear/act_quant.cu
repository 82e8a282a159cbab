// Per-token activation quantisation into the padded kernel layout (one block per token; the row is
// read from global memory once and kept in shared memory for the range and the codes), and the
// one-off weight preparation (padding + group sums).
#include "cuda_common.cuh"

namespace resq {
namespace {

constexpr int kQuantThreads = 256;

struct QuantArgs {
  ResQLinearShape s;
  ResQLinearLayout L;
  int64_t t;
  uint8_t* q_low;
  uint8_t* q_high;
  float* sx;
  int32_t* zx;
};

// block-wide min and max; every thread gets both
__device__ void block_range(float lo, float hi, float* red, float* out_lo, float* out_hi) {
  lo = warp_min(lo);
  hi = warp_max(hi);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  __syncthreads();  // red is reused group after group
  if (lane == 0) {
    red[warp] = lo;
    red[32 + warp] = hi;
  }
  __syncthreads();
  lo = lane < nw ? red[lane] : 0.0f;
  hi = lane < nw ? red[32 + lane] : 0.0f;
  *out_lo = warp_min(lo);
  *out_hi = warp_max(hi);
}

template <typename T>
__global__ void quantize_act_kernel(QuantArgs a, const T* __restrict__ x) {
  extern __shared__ float row[];
  __shared__ float red[64];
  const int64_t tok = blockIdx.x;
  const int k = a.s.k;
  for (int c = threadIdx.x; c < k; c += blockDim.x) row[c] = to_float(x[tok * k + c]);
  __syncthreads();
  for (int g = 0; g < a.L.groups; ++g) {
    const bool low = g < a.s.low_groups;
    const int gi = low ? g : g - a.s.low_groups;
    const int gw = low ? a.L.gw_low : a.L.gw_high, gwp = low ? a.L.gwp_low : a.L.gwp_high;
    const int bits = low ? a.s.a_bits_low : a.s.a_bits_high;
    const float* src = row + (low ? 0 : a.s.k_low) + gi * gw;
    float lo = 0.0f, hi = 0.0f;
    for (int c = threadIdx.x; c < gw; c += blockDim.x) {
      lo = fminf(lo, src[c]);
      hi = fmaxf(hi, src[c]);
    }
    block_range(lo, hi, red, &lo, &hi);
    const AsymParams p = asym_params(lo, hi, bits);
    if (threadIdx.x == 0) {
      a.sx[tok * a.L.groups + g] = p.scale;
      a.zx[tok * a.L.groups + g] = static_cast<int32_t>(p.zero);
    }
    uint8_t* dst = low ? a.q_low + tok * a.L.act_low_pitch : a.q_high + tok * a.L.act_high_pitch;
    if (bits == 4) {
      uint8_t* d = dst + gi * gwp / 2;
      for (int j = threadIdx.x; j < gwp / 2; j += blockDim.x) {
        const int c = 2 * j;  // gw is even: both channels of a byte are real or both padding
        const int v = c < gw ? asym_code(src[c], p) | (asym_code(src[c + 1], p) << 4) : 0;
        d[j] = static_cast<uint8_t>(v);
      }
    } else {
      uint8_t* d = dst + gi * gwp;
      for (int c = threadIdx.x; c < gwp; c += blockDim.x) d[c] = c < gw ? static_cast<uint8_t>(asym_code(src[c], p)) : 0;
    }
  }
}

// padded copy of the 4-bit part: one thread per output byte
__global__ void pad_low_kernel(ResQLinearLayout L, int k_low, int32_t n, const int8_t* __restrict__ src,
                               int8_t* __restrict__ dst) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= static_cast<int64_t>(n) * L.w_low_pitch) return;
  const int64_t o = i / L.w_low_pitch;
  const int j = static_cast<int>(i % L.w_low_pitch);
  const int g = 2 * j / L.gwp_low, c = 2 * j % L.gwp_low;
  dst[i] = c < L.gw_low ? src[o * (k_low / 2) + (g * L.gw_low + c) / 2] : 0;
}

// padded copy of an 8-bit part starting at contract channel `src0` / padded byte `dst0`
__global__ void pad_8bit_kernel(int groups, int gw, int gwp, int32_t rows, const int8_t* __restrict__ src,
                                int src_pitch, int src0, int8_t* __restrict__ dst, int dst_pitch, int dst0) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int width = groups * gwp;
  if (i >= static_cast<int64_t>(rows) * width) return;
  const int64_t r = i / width;
  const int j = static_cast<int>(i % width), g = j / gwp, c = j % gwp;
  dst[r * dst_pitch + dst0 + j] = c < gw ? src[r * src_pitch + src0 + g * gw + c] : 0;
}

// sums of the padded codes per (row, group): one warp each; padding adds 0
__global__ void group_sums_kernel(ResQLinearShape s, ResQLinearLayout L, int32_t rows, const int8_t* __restrict__ low4,
                                  int low_pitch, const int8_t* __restrict__ bytes8, int bytes_pitch, int bytes0,
                                  int first_group, int32_t* __restrict__ sums) {
  const int64_t w = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int ngroups = low4 ? s.low_groups : L.groups - first_group;
  if (w >= static_cast<int64_t>(rows) * ngroups) return;
  const int64_t r = w / ngroups;
  const int g = static_cast<int>(w % ngroups);
  int acc = 0;
  if (low4) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(low4 + r * low_pitch + g * L.gwp_low / 2);
    for (int j = lane; j < L.gwp_low / 2; j += 32) {
      const int b = p[j];
      acc += ((b & 0xF) ^ 8) - 8 + ((b >> 4) ^ 8) - 8;
    }
  } else {
    const bool is_low = first_group + g < s.low_groups;
    const int gwp = is_low ? L.gwp_low : L.gwp_high;
    const int off = is_low ? g * L.gwp_low : s.low_groups * L.gwp_low * (first_group == 0) + (first_group + g - s.low_groups) * L.gwp_high;
    const int8_t* p = bytes8 + r * bytes_pitch + bytes0 + off;
    for (int j = lane; j < gwp; j += 32) acc += p[j];
  }
  acc = warp_sum_int(acc);
  if (lane == 0) sums[r * L.groups + first_group + g] = acc;
}

inline unsigned blocks_for(int64_t items, int per_block) { return static_cast<unsigned>((items + per_block - 1) / per_block); }

}  // namespace
}  // namespace resq

using namespace resq;

RESQ_KAPI int resq_cuda_quantize_act(const ResQQuantizeActParams* p, void* stream) {
  if (!p) return RESQ_ERR_INVALID;
  const ResQLinearShape* s = &p->shape;
  const void* x = p->x;
  const int x_dtype = p->x_dtype;
  const int64_t t = p->tokens;
  uint8_t *q_low = p->out.q_low, *q_high = p->out.q_high;
  float* sx = p->out.sx;
  int32_t* zx = p->out.zx;
  QuantArgs a{};
  if (resq_linear_layout(s, &a.L) != RESQ_OK || t < 0 || !x || !sx || !zx) return RESQ_ERR_INVALID;
  if ((s->k_low && !q_low) || (s->high_groups && !q_high)) return RESQ_ERR_INVALID;
  if (t == 0) return RESQ_OK;
  a.s = *s;
  a.t = t;
  a.q_low = q_low;
  a.q_high = q_high;
  a.sx = sx;
  a.zx = zx;
  const size_t smem = sizeof(float) * s->k;
  cudaStream_t st = as_stream(stream);
  cudaError_t e = cudaSuccess;
  switch (x_dtype) {
    case RESQ_F32:
      e = cudaFuncSetAttribute(quantize_act_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
      if (e == cudaSuccess) quantize_act_kernel<float><<<(unsigned)t, kQuantThreads, smem, st>>>(a, static_cast<const float*>(x));
      break;
    case RESQ_F16:
      e = cudaFuncSetAttribute(quantize_act_kernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
      if (e == cudaSuccess) quantize_act_kernel<__half><<<(unsigned)t, kQuantThreads, smem, st>>>(a, static_cast<const __half*>(x));
      break;
    case RESQ_BF16:
      e = cudaFuncSetAttribute(quantize_act_kernel<__nv_bfloat16>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
      if (e == cudaSuccess)
        quantize_act_kernel<__nv_bfloat16><<<(unsigned)t, kQuantThreads, smem, st>>>(a, static_cast<const __nv_bfloat16*>(x));
      break;
    default:
      return RESQ_ERR_INVALID;
  }
  if (e != cudaSuccess) return record_cuda_error(e);
  return launch_status();
}

RESQ_KAPI int resq_cuda_prepare_weights(const ResQPrepareWeightsParams* p, void* stream) {
  if (!p) return RESQ_ERR_INVALID;
  const ResQLinearShape* s = &p->shape;
  const int32_t n = p->n;
  const int8_t *w_low = p->w_low, *w_high = p->w_high;
  int8_t *w_low_p = p->w_low_p, *w_high_p = p->w_high_p;
  int32_t* wsum = p->wsum;
  ResQLinearLayout L;
  if (resq_linear_layout(s, &L) != RESQ_OK || n <= 0 || !wsum) return RESQ_ERR_INVALID;
  if ((s->k_low && (!w_low || !w_low_p)) || (s->high_groups && (!w_high || !w_high_p))) return RESQ_ERR_INVALID;
  cudaStream_t st = as_stream(stream);
  const int kh = s->k - s->k_low;
  if (s->k_low) {
    pad_low_kernel<<<blocks_for(int64_t(n) * L.w_low_pitch, 256), 256, 0, st>>>(L, s->k_low, n, w_low, w_low_p);
    group_sums_kernel<<<blocks_for(int64_t(n) * s->low_groups * 32, 256), 256, 0, st>>>(
        *s, L, n, w_low_p, L.w_low_pitch, nullptr, 0, 0, 0, wsum);
  }
  if (s->high_groups) {
    pad_8bit_kernel<<<blocks_for(int64_t(n) * L.w_high_pitch, 256), 256, 0, st>>>(
        s->high_groups, L.gw_high, L.gwp_high, n, w_high, kh, 0, w_high_p, L.w_high_pitch, 0);
    group_sums_kernel<<<blocks_for(int64_t(n) * s->high_groups * 32, 256), 256, 0, st>>>(
        *s, L, n, nullptr, 0, w_high_p, L.w_high_pitch, 0, s->low_groups, wsum);
  }
  return launch_status();
}

RESQ_KAPI int resq_cuda_prepare_lqer_a(const ResQPrepareLqerAParams* p, void* stream) {
  if (!p) return RESQ_ERR_INVALID;
  const ResQLinearShape* s = &p->shape;
  const int32_t rank = p->rank;
  const int8_t* a = p->a;
  int8_t* a_p = p->a_p;
  int32_t* asum = p->asum;
  ResQLinearLayout L;
  if (resq_linear_layout(s, &L) != RESQ_OK || rank <= 0 || !a || !a_p || !asum) return RESQ_ERR_INVALID;
  cudaStream_t st = as_stream(stream);
  if (s->low_groups)
    pad_8bit_kernel<<<blocks_for(int64_t(rank) * s->low_groups * L.gwp_low, 256), 256, 0, st>>>(
        s->low_groups, L.gw_low, L.gwp_low, rank, a, s->k, 0, a_p, L.a8_pitch, 0);
  if (s->high_groups)
    pad_8bit_kernel<<<blocks_for(int64_t(rank) * s->high_groups * L.gwp_high, 256), 256, 0, st>>>(
        s->high_groups, L.gw_high, L.gwp_high, rank, a, s->k, s->k_low, a_p, L.a8_pitch, s->low_groups * L.gwp_low);
  group_sums_kernel<<<blocks_for(int64_t(rank) * L.groups * 32, 256), 256, 0, st>>>(
      *s, L, rank, nullptr, 0, a_p, L.a8_pitch, 0, 0, asum);
  return launch_status();
}
