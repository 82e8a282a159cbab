// CPU reference of U_C, the rotation of q and k after RoPE inside the attention.
#include "resq_cpu_ref.h"

RESQ_API int resq_cpu_rotate(const ResQRotateParams* p) {
  if (!p) return RESQ_ERR_INVALID;
  const float *x = p->x, *u = p->u;
  const int64_t rows = p->rows;
  const int32_t d = p->d;
  float* y = p->y;
  if (!x || !u || !y || rows < 0 || d <= 0) return RESQ_ERR_INVALID;
  for (int64_t r = 0; r < rows; ++r)
    for (int32_t j = 0; j < d; ++j) {
      float acc = 0.0f;
      for (int32_t i = 0; i < d; ++i) acc += x[r * d + i] * u[static_cast<int64_t>(i) * d + j];
      y[r * d + j] = acc;
    }
  return RESQ_OK;
}
