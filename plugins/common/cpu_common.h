// Helpers of the CPU references: the quantiser of docs/ops.md and nibble access.
#pragma once
#include <cmath>
#include <cstdint>

namespace resq_cpu {

// round half to even (the default FE_TONEAREST mode), like torch.round and __float2int_rn
inline float round_even(float v) { return std::nearbyint(v); }

// Asymmetric quantisation of one group; codes one per channel.
inline void quantize_group(const float* x, int n, int bits, float* scale, int32_t* zero, uint8_t* codes) {
  const float qmax = static_cast<float>((1 << bits) - 1);
  float lo = 0.0f, hi = 0.0f;  // the range always includes 0
  for (int i = 0; i < n; ++i) {
    lo = std::fmin(lo, x[i]);
    hi = std::fmax(hi, x[i]);
  }
  float s = (hi - lo) / qmax;
  if (!(s > 0.0f)) s = 1.0f;
  const float z = round_even(-lo / s);
  for (int i = 0; i < n; ++i) {
    float q = round_even(x[i] / s) + z;
    q = std::fmin(std::fmax(q, 0.0f), qmax);
    codes[i] = static_cast<uint8_t>(q);
  }
  *scale = s;
  *zero = static_cast<int32_t>(z);
}

inline int nibble_u(const uint8_t* p, int64_t i) { return (p[i >> 1] >> ((i & 1) * 4)) & 0xF; }
inline int nibble_s(const int8_t* p, int64_t i) {
  const int v = (static_cast<uint8_t>(p[i >> 1]) >> ((i & 1) * 4)) & 0xF;
  return v > 7 ? v - 16 : v;
}
inline void set_nibble(uint8_t* p, int64_t i, int v) {
  const int shift = (i & 1) * 4;
  p[i >> 1] = static_cast<uint8_t>((p[i >> 1] & ~(0xF << shift)) | ((v & 0xF) << shift));
}

// code of channel c of padded group g of one token's activation part
inline int act_code(const uint8_t* row, int bits, int gwp, int g, int c) {
  const int64_t i = static_cast<int64_t>(g) * gwp + c;
  return bits == 4 ? nibble_u(row, i) : row[i];
}

}  // namespace resq_cpu
