// KV-cache append: quantise the new K or V per token per KV head (groups [D - r, r] at
// [kv_bits, high_bits]) straight into the cache, in place at the row past_length[b] + i read from
// device memory, 4-bit codes packed two per byte (resq_layout.h); one warp per (token, head).
#include "cuda_common.cuh"

namespace resq {
namespace {

__global__ void kv_append_kernel(ResQKVShape s, const float* __restrict__ x, int seq, uint8_t* __restrict__ codes,
                                 float* __restrict__ scales, uint8_t* __restrict__ zeros, int capacity,
                                 const int32_t* __restrict__ past_length) {
  const int64_t w = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int64_t heads = static_cast<int64_t>(s.batch) * s.num_kv_heads;
  if (w >= heads * seq) return;
  const int64_t bh = w / seq;
  const int i = static_cast<int>(w % seq);
  const int pos = past_length[bh / s.num_kv_heads] + i;
  if (pos < 0 || pos >= capacity) return;  // outside the cache: nothing to write (see resq_params.h)
  const int d = s.head_dim, ng = resq_kv_groups(&s);
  const float* src = x + (bh * seq + i) * d;
  const int64_t slot = bh * capacity + pos;
  uint8_t* row = codes + slot * resq_kv_row_bytes(&s);
  for (int g = 0; g < ng; ++g) {
    const int start = g == 0 ? 0 : d - s.high_channels;
    const int width = g == 0 ? d - s.high_channels : s.high_channels;
    const int bits = g == 0 ? s.kv_bits : s.high_bits;
    float lo = 0.0f, hi = 0.0f;
    for (int c = lane; c < width; c += 32) {
      lo = fminf(lo, src[start + c]);
      hi = fmaxf(hi, src[start + c]);
    }
    const AsymParams p = asym_params(warp_min(lo), warp_max(hi), bits);
    uint8_t* part = g == 0 ? row : row + resq_kv_low_bytes(&s);
    if (bits == 8) {
      for (int c = lane; c < width; c += 32) part[c] = static_cast<uint8_t>(asym_code(src[start + c], p));
    } else {  // a lane packs channels 2j and 2j + 1 into byte j
      for (int j = lane; j < width / 2; j += 32)
        part[j] = static_cast<uint8_t>(asym_code(src[start + 2 * j], p) | (asym_code(src[start + 2 * j + 1], p) << 4));
    }
    if (lane == 0) {
      scales[slot * ng + g] = p.scale;
      zeros[slot * ng + g] = static_cast<uint8_t>(p.zero);
    }
  }
}

}  // namespace
}  // namespace resq

using namespace resq;

RESQ_KAPI int resq_cuda_kv_append(const ResQKVAppendParams* p, void* stream) {
  if (!p) return RESQ_ERR_INVALID;
  const ResQKVShape* s = &p->shape;
  const float* x = p->x;
  const int32_t seq = p->seq, capacity = p->cache.capacity;
  const int32_t* past_length = p->past_length;
  uint8_t *codes = p->cache.codes, *zeros = p->cache.zeros;
  float* scales = p->cache.scales;
  if (resq_kv_check(s) != RESQ_OK || !x || !codes || !scales || !zeros || !past_length) return RESQ_ERR_INVALID;
  if (seq < 0 || seq > capacity) return RESQ_ERR_INVALID;
  if (seq == 0) return RESQ_OK;
  const int64_t warps = static_cast<int64_t>(s->batch) * s->num_kv_heads * seq;
  kv_append_kernel<<<static_cast<unsigned>((warps * 32 + 255) / 256), 256, 0, as_stream(stream)>>>(
      *s, x, seq, codes, scales, zeros, capacity, past_length);
  return launch_status();
}
