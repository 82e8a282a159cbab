// Online Hadamard x @ kron(left, S / sqrt(b)) (b a power of two): one block per row, the row in
// shared memory, the butterflies stage by stage in the reference's order (so the Walsh-Hadamard part
// is bit-exact), then the small a x a factor.
#include <cmath>

#include "cuda_common.cuh"

namespace resq {
namespace {

__global__ void hadamard_kernel(const float* __restrict__ x, int n, int b, float norm, const float* __restrict__ left,
                                int a, float* __restrict__ y) {
  extern __shared__ float buf[];  // the row (n values)
  const int64_t r = blockIdx.x;
  for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = x[r * n + i];
  __syncthreads();
  for (int h = 1; h < b; h *= 2) {
    for (int i = threadIdx.x; i < n / 2; i += blockDim.x) {
      const int blk = i / (b / 2), k = i % (b / 2);  // pair k of sub-block blk
      const int j = blk * b + (k / h) * 2 * h + (k % h);
      const float u = buf[j], w = buf[j + h];
      buf[j] = __fadd_rn(u, w);
      buf[j + h] = __fsub_rn(u, w);
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = __fdiv_rn(buf[i], norm);
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    if (a == 1) {
      y[r * n + i] = buf[i];
      continue;
    }
    const int row = i / b, col = i % b;
    float acc = 0.0f;
    for (int p = 0; p < a; ++p) acc = __fadd_rn(acc, __fmul_rn(left[p * a + row], buf[p * b + col]));
    y[r * n + i] = acc;
  }
}

}  // namespace
}  // namespace resq

using namespace resq;

RESQ_KAPI int resq_cuda_hadamard(const ResQHadamardParams* p, void* stream) {
  if (!p) return RESQ_ERR_INVALID;
  const float *x = p->x, *left = p->left;
  const int64_t rows = p->rows;
  const int32_t n = p->n, a = p->a;
  float* y = p->y;
  if (!x || !y || rows < 0 || a <= 0 || n <= 0 || n % a || (a > 1 && !left)) return RESQ_ERR_INVALID;
  const int b = n / a;
  if (b & (b - 1)) return RESQ_ERR_INVALID;
  if (rows == 0) return RESQ_OK;
  const size_t smem = sizeof(float) * n;
  cudaError_t e = cudaFuncSetAttribute(hadamard_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) return record_cuda_error(e);
  const float norm = static_cast<float>(std::sqrt(static_cast<double>(b)));
  hadamard_kernel<<<static_cast<unsigned>(rows), 256, smem, as_stream(stream)>>>(x, n, b, norm, left, a, y);
  return launch_status();
}
