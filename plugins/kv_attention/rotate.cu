// U_C, the rotation of q and k after RoPE inside the attention: x @ u per head row, one thread per
// output value, summed in the reference's order.
#include "cuda_common.cuh"

namespace resq {
namespace {

__global__ void rotate_kernel(const float* __restrict__ x, int64_t rows, int d, const float* __restrict__ u,
                              float* __restrict__ y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * d) return;
  const int64_t r = i / d;
  const int j = static_cast<int>(i % d);
  float acc = 0.0f;
  for (int k = 0; k < d; ++k) acc = __fadd_rn(acc, __fmul_rn(x[r * d + k], u[static_cast<int64_t>(k) * d + j]));
  y[i] = acc;
}

}  // namespace
}  // namespace resq

using namespace resq;

RESQ_KAPI int resq_cuda_rotate(const ResQRotateParams* p, void* stream) {
  if (!p) return RESQ_ERR_INVALID;
  const float *x = p->x, *u = p->u;
  const int64_t rows = p->rows;
  const int32_t d = p->d;
  float* y = p->y;
  if (!x || !u || !y || rows < 0 || d <= 0) return RESQ_ERR_INVALID;
  if (rows == 0) return RESQ_OK;
  const int64_t total = rows * d;
  rotate_kernel<<<static_cast<unsigned>((total + 255) / 256), 256, 0, as_stream(stream)>>>(x, rows, d, u, y);
  return launch_status();
}
