// CPU reference of the online Hadamard transform.
#include <cmath>
#include <cstring>
#include <vector>

#include "resq_cpu_ref.h"

namespace {
bool power_of_two(int32_t v) { return v > 0 && (v & (v - 1)) == 0; }
}  // namespace

RESQ_API int resq_cpu_hadamard(const ResQHadamardParams* p) {
  if (!p) return RESQ_ERR_INVALID;
  const float *x = p->x, *left = p->left;
  const int64_t rows = p->rows;
  const int32_t n = p->n, a = p->a;
  float* y = p->y;
  if (!x || !y || rows < 0 || a <= 0 || n <= 0 || n % a || !power_of_two(n / a) || (a > 1 && !left))
    return RESQ_ERR_INVALID;
  const int32_t b = n / a;
  // the same divisor as algo.hadamard.fwht and the ONNX body: float32(sqrt(b))
  const float norm = static_cast<float>(std::sqrt(static_cast<double>(b)));
  std::vector<float> buf(n);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(buf.data(), x + r * n, sizeof(float) * n);
    for (int32_t p = 0; p < a; ++p) {
      float* v = buf.data() + static_cast<int64_t>(p) * b;
      for (int32_t h = 1; h < b; h *= 2)  // butterflies in the reference's stage order
        for (int32_t i = 0; i < b; i += 2 * h)
          for (int32_t j = i; j < i + h; ++j) {
            const float u = v[j], w = v[j + h];
            v[j] = u + w;
            v[j + h] = u - w;
          }
      for (int32_t j = 0; j < b; ++j) v[j] = v[j] / norm;
    }
    float* out = y + r * n;
    if (a == 1) {
      std::memcpy(out, buf.data(), sizeof(float) * n);
      continue;
    }
    for (int32_t i = 0; i < a; ++i)
      for (int32_t q = 0; q < b; ++q) {
        float acc = 0.0f;
        for (int32_t p = 0; p < a; ++p) acc += left[p * a + i] * buf[static_cast<int64_t>(p) * b + q];
        out[static_cast<int64_t>(i) * b + q] = acc;
      }
  }
  return RESQ_OK;
}
