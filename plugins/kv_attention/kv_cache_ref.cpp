// CPU reference of the quantised KV cache: append (quantise per token per KV head, pack the row as
// resq_layout.h says, write it in place at the sequence's length) and causal GQA attention over the
// dequantised cache.
#include <cmath>
#include <vector>

#include "cpu_common.h"
#include "resq_cpu_ref.h"

using namespace resq_cpu;

namespace {

struct Groups {
  int count, width[2], start[2], bits[2];
};

Groups kv_groups(const ResQKVShape* s) {
  Groups g{};
  g.count = resq_kv_groups(s);
  g.start[0] = 0;
  g.width[0] = s->head_dim - s->high_channels;
  g.bits[0] = s->kv_bits;
  g.start[1] = g.width[0];
  g.width[1] = s->high_channels;
  g.bits[1] = s->high_bits;
  return g;
}

// dequantise one cached token of one head: s * (q - z), the subtraction in integers
void dequant_row(const ResQKVShape* s, const Groups& G, const uint8_t* row, const float* scales, const uint8_t* zeros,
                 float* out) {
  for (int g = 0; g < G.count; ++g)
    for (int c = G.start[g]; c < G.start[g] + G.width[g]; ++c)
      out[c] = static_cast<float>(resq_kv_code(s, row, c) - static_cast<int>(zeros[g])) * scales[g];
}

// every sequence's new rows inside the cache
bool lengths_fit(const int32_t* past_length, int batch, int seq, int capacity) {
  for (int b = 0; b < batch; ++b)
    if (past_length[b] < 0 || past_length[b] + seq > capacity) return false;
  return true;
}

}  // namespace

RESQ_API int resq_cpu_kv_append(const ResQKVAppendParams* p) {
  if (!p) return RESQ_ERR_INVALID;
  const ResQKVShape* s = &p->shape;
  const float* x = p->x;
  const int32_t seq = p->seq, capacity = p->cache.capacity;
  const int32_t* past_length = p->past_length;
  uint8_t *codes = p->cache.codes, *zeros = p->cache.zeros;
  float* scales = p->cache.scales;
  if (resq_kv_check(s) != RESQ_OK || !x || !codes || !scales || !zeros || !past_length || seq < 0)
    return RESQ_ERR_INVALID;
  if (!lengths_fit(past_length, s->batch, seq, capacity)) return RESQ_ERR_INVALID;
  const Groups G = kv_groups(s);
  const int d = s->head_dim, row_bytes = resq_kv_row_bytes(s);
  std::vector<uint8_t> one(d);  // a row's codes, one per channel, before packing
  for (int64_t bh = 0; bh < static_cast<int64_t>(s->batch) * s->num_kv_heads; ++bh)
    for (int32_t i = 0; i < seq; ++i) {
      const float* src = x + (bh * seq + i) * d;
      const int64_t slot = bh * capacity + past_length[bh / s->num_kv_heads] + i;
      uint8_t* row = codes + slot * row_bytes;
      for (int g = 0; g < G.count; ++g) {
        int32_t z;
        quantize_group(src + G.start[g], G.width[g], G.bits[g], &scales[slot * G.count + g], &z, &one[G.start[g]]);
        zeros[slot * G.count + g] = static_cast<uint8_t>(z);
        uint8_t* part = g == 0 ? row : row + resq_kv_low_bytes(s);
        for (int c = 0; c < G.width[g]; ++c) {
          const uint8_t q = one[G.start[g] + c];
          if (G.bits[g] == 8) part[c] = q;
          else if (c % 2 == 0) part[c / 2] = q;
          else part[c / 2] = static_cast<uint8_t>(part[c / 2] | (q << 4));
        }
      }
    }
  return RESQ_OK;
}

RESQ_API int resq_cpu_kv_attention(const ResQKVAttentionParams* p) {
  if (!p || p->k.capacity != p->v.capacity) return RESQ_ERR_INVALID;
  const ResQKVShape* s = &p->shape;
  const float* q = p->q;
  const int32_t seq = p->seq, capacity = p->k.capacity;
  const int32_t* past_length = p->past_length;
  const uint8_t *k_codes = p->k.codes, *k_zeros = p->k.zeros, *v_codes = p->v.codes, *v_zeros = p->v.zeros;
  const float *k_scales = p->k.scales, *v_scales = p->v.scales;
  float* out = p->out;
  if (resq_kv_check(s) != RESQ_OK || !q || !out || !k_codes || !k_scales || !k_zeros || !v_codes || !v_scales ||
      !v_zeros)
    return RESQ_ERR_INVALID;
  if (!past_length || seq <= 0 || !lengths_fit(past_length, s->batch, seq, capacity)) return RESQ_ERR_INVALID;
  const Groups G = kv_groups(s);
  const int d = s->head_dim, H = s->num_heads, group = s->num_heads / s->num_kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<float> kd(static_cast<size_t>(capacity) * d), vd(static_cast<size_t>(capacity) * d);
  std::vector<double> score(capacity), acc(d);
  for (int b = 0; b < s->batch; ++b)
    for (int kvh = 0; kvh < s->num_kv_heads; ++kvh) {
      const int length = past_length[b] + seq;  // the rows this sequence reads
      const int64_t base = (static_cast<int64_t>(b) * s->num_kv_heads + kvh) * capacity;
      for (int t = 0; t < length; ++t) {
        const int64_t at = (base + t) * resq_kv_row_bytes(s);
        dequant_row(s, G, k_codes + at, k_scales + (base + t) * G.count, k_zeros + (base + t) * G.count,
                    &kd[static_cast<size_t>(t) * d]);
        dequant_row(s, G, v_codes + at, v_scales + (base + t) * G.count, v_zeros + (base + t) * G.count,
                    &vd[static_cast<size_t>(t) * d]);
      }
      for (int h = kvh * group; h < (kvh + 1) * group; ++h)
        for (int i = 0; i < seq; ++i) {
          const float* qr = q + ((static_cast<int64_t>(b) * H + h) * seq + i) * d;
          const int last = past_length[b] + i;  // causal: the query at row `last` sees rows 0..last
          double m = -INFINITY, l = 0.0;
          for (int t = 0; t <= last; ++t) {
            double dot = 0.0;
            for (int c = 0; c < d; ++c) dot += static_cast<double>(qr[c]) * kd[static_cast<size_t>(t) * d + c];
            score[t] = dot * scale;
            m = std::fmax(m, score[t]);
          }
          for (int c = 0; c < d; ++c) acc[c] = 0.0;
          for (int t = 0; t <= last; ++t) {
            const double e = std::exp(score[t] - m);
            l += e;
            for (int c = 0; c < d; ++c) acc[c] += e * vd[static_cast<size_t>(t) * d + c];
          }
          float* o = out + ((static_cast<int64_t>(b) * seq + i) * H + h) * d;
          for (int c = 0; c < d; ++c) o[c] = static_cast<float>(acc[c] / l);
        }
    }
  return RESQ_OK;
}
