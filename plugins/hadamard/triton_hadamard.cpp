// ResQHadamard on the Triton cubins, through the launch seam: launch.py's hadamard (the Walsh-
// Hadamard butterflies in blocks of b = n / a channels, then the a x a left factor), the grids from
// the embedded configurations' tile sizes.
#include <cmath>
#include <string>

#include "triton_loader.h"
#include "triton_ops.h"

using resq::triton::arg;
using resq::triton::KernelArg;

RESQ_TAPI int resq_triton_hadamard(const ResQHadamardParams* p, void* stream_ptr) {
  if (!p || p->rows < 0 || p->rows > 0x7fffffff || p->n <= 0 || p->a < 1 || p->n % p->a || !p->x || !p->y ||
      (p->a > 1 && !p->left))
    return RESQ_ERR_INVALID;
  const int32_t b = p->n / p->a;
  if (b < 2 || (b & (b - 1))) return RESQ_ERR_UNSUPPORTED;
  if (p->rows == 0) return RESQ_OK;
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  resq::triton::Launcher& l = resq::triton::launcher();
  const std::string fwht = "fwht_b" + std::to_string(b);
  const int p_blk = resq::triton::constexpr_of(fwht.c_str(), "P_BLK");
  if (p_blk <= 0) return RESQ_ERR_UNSUPPORTED;  // b above the largest compiled block
  const unsigned rows = static_cast<unsigned>(p->rows);
  const float norm = static_cast<float>(std::sqrt(static_cast<double>(b)));
  const int32_t a = p->a, n = p->n;
  {
    const KernelArg args[] = {arg(p->x), arg(p->y), arg(a), arg(n), arg(norm)};
    const int st = l.launch(fwht.c_str(), dim3(rows, static_cast<unsigned>((a + p_blk - 1) / p_blk), 1), stream, args, 5);
    if (st != RESQ_OK || a == 1) return st;
  }
  int a_pad = 2;
  while (a_pad < a) a_pad *= 2;
  const std::string mix = "hadamard_mix_a" + std::to_string(a_pad);
  const int block_c = resq::triton::constexpr_of(mix.c_str(), "BLOCK_C");
  if (block_c <= 0) return RESQ_ERR_UNSUPPORTED;
  const KernelArg args[] = {arg(p->y), arg(p->left), arg(a), arg(b), arg(n)};
  return l.launch(mix.c_str(), dim3(rows, static_cast<unsigned>((b + block_c - 1) / block_c), 1), stream, args, 5);
}
