#include "hadamard_op.h"

#include "resq_ops.h"
#include "triton_loader.h"
#include "triton_ops.h"

namespace resq {
namespace ops {

namespace S = resq::spec::ResQHadamard;

int HadamardOp::expected_inputs() const { return S::kNumInputs; }

std::string HadamardOp::check(const TensorDesc* in, int nb_in, const TensorDesc* out, int nb_out) const {
  if (nb_in != S::kNumInputs) return "got " + std::to_string(nb_in) + " inputs, the op takes X and left";
  for (int pos = 0; pos < nb_in; ++pos) {
    const std::string bad = check_dtype("input", pos, in[pos], S::kInputDTypes[pos]);
    if (!bad.empty()) return bad;
  }
  for (int pos = 0; pos < nb_out; ++pos) {
    const std::string bad = check_dtype("output", pos, out[pos], S::kOutputDTypes[pos]);
    if (!bad.empty()) return bad;
  }
  const TensorDesc &x = in[S::in_X], &left = in[S::in_left];
  if (x.nb_dims < 1) return "X has no dimensions (the op takes [..., K])";
  if (left.nb_dims != 2 || left.dims[0] != left.dims[1] || left.dims[0] < 1)
    return "left is " + dims_text(left) + ", not [a, a]";
  const int64_t k = x.dims[x.nb_dims - 1], a = left.dims[0];
  if (k < 0) return "";
  const int64_t b = k / a;
  if (k % a || b < 2 || (b & (b - 1)))
    return "K " + std::to_string(k) + " is not a times a power of two (a = " + std::to_string(a) + ")";
  // the butterflies of b channels and the a x a mix are compiled for the block sizes the exporter
  // writes; another one is refused here, when the engine is built, not at its first call
  if (triton::constexpr_of(("fwht_b" + std::to_string(b)).c_str(), "P_BLK") <= 0)
    return "no compiled Walsh-Hadamard kernel for blocks of " + std::to_string(b) + " channels (fwht_b" +
           std::to_string(b) + "; resq_export/kernels/configs.py)";
  int64_t a_pad = 2;
  while (a_pad < a) a_pad *= 2;
  if (a > 1 && triton::constexpr_of(("hadamard_mix_a" + std::to_string(a_pad)).c_str(), "BLOCK_C") <= 0)
    return "no compiled left-factor kernel for a = " + std::to_string(a) + " (hadamard_mix_a" +
           std::to_string(a_pad) + "; resq_export/kernels/configs.py)";
  return "";
}

int HadamardOp::enqueue(const TensorDesc* in, int nb_in, const void* const* inputs, void* const* outputs, void*,
                        size_t, void* stream) const {
  if (nb_in != S::kNumInputs)
    return triton::fail(RESQ_ERR_INVALID, "got " + std::to_string(nb_in) + " inputs, the op takes X and left");
  const TensorDesc& x = in[S::in_X];
  const ResQHadamardParams p{rows_of(x), static_cast<int32_t>(x.dims[x.nb_dims - 1]),
                             static_cast<int32_t>(in[S::in_left].dims[0]), static_cast<const float*>(inputs[S::in_X]),
                             static_cast<const float*>(inputs[S::in_left]), static_cast<float*>(outputs[S::out_Y])};
  return launched(resq_triton_hadamard(&p, stream));
}

}  // namespace ops
}  // namespace resq
