#include "MixedLinearPlugin.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <vector>

namespace resq {
namespace trt {

namespace S = resq::spec::ResQMixedLinear;
using nvinfer1::DimsExprs;

MixedLinearPlugin::MixedLinearPlugin(Attributes attrs)
    : PluginBase(S::kName, S::kVersion, S::kInputDTypes, S::kNumInputs, S::kOutputDTypes, S::kNumOutputs,
                 std::move(attrs)) {
  // what the CUDA GEMM runs (resq_kernels.h): refused when the engine is built, not at its first call
  const bool low = attrs_.get(S::attr_low_groups, S::default_low_groups) > 0;
  const bool high = attrs_.get(S::attr_high_groups, S::default_high_groups) > 0;
  if ((low && attrs_.get(S::attr_a_bits_low, S::default_a_bits_low) != 4) ||
      (high && attrs_.get(S::attr_a_bits_high, S::default_a_bits_high) != 8))
    throw std::invalid_argument("the CUDA GEMM takes 4-bit activations on the 4-bit groups and 8-bit on the 8-bit "
                                "ones (a_bits_low 4, a_bits_high 8)");
}

MixedLinearPlugin::~MixedLinearPlugin() { release(); }

void MixedLinearPlugin::release() {
  for (void* p : {static_cast<void*>(w_low_p_), static_cast<void*>(w_high_p_), static_cast<void*>(wsum_),
                  static_cast<void*>(a_p_), static_cast<void*>(asum_)})
    if (p) cudaFree(p);
  w_low_p_ = w_high_p_ = a_p_ = nullptr;
  wsum_ = asum_ = nullptr;
  prepared_from_ = nullptr;
}

nvinfer1::IPluginV3* MixedLinearPlugin::clone() noexcept {
  try {
    return new MixedLinearPlugin(attrs_);  // the clone prepares its own weights
  } catch (...) {
    return nullptr;
  }
}

// The TensorRT flavour (resq_export/export/writer.py) lists only present inputs and always a bias
// (zeros where the model has none), so the attributes alone say where each input is.
int MixedLinearPlugin::compact(int spec) const {
  const bool high = attrs_.get(S::attr_high_groups, S::default_high_groups) > 0;
  const bool lqer = attrs_.get(S::attr_lqer_rank, S::default_lqer_rank) > 0;
  const bool present[S::kNumInputs] = {true, true, high, true, true, lqer, lqer, lqer, lqer};
  if (!present[spec]) return -1;
  int pos = 0;
  for (int i = 0; i < spec; ++i) pos += present[i] ? 1 : 0;
  return pos;
}

int32_t MixedLinearPlugin::expected_inputs() const {
  int32_t n = 0;
  for (int spec = 0; spec < S::kNumInputs; ++spec) n += compact(spec) >= 0 ? 1 : 0;
  return n;
}

int MixedLinearPlugin::spec_input(int32_t pos, int32_t) const {
  for (int spec = 0; spec < S::kNumInputs; ++spec)
    if (compact(spec) == pos) return spec;
  return 0;
}

bool MixedLinearPlugin::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* io,
                                                  int32_t nb_in, int32_t nb_out) noexcept {
  if (nb_in != expected_inputs()) {
    report(name_, "got " + std::to_string(nb_in) + " inputs, the attributes imply " +
                      std::to_string(expected_inputs()) + " (export with this resq-export's TensorRT flavour)");
    return false;
  }
  return PluginBase::supportsFormatCombination(pos, io, nb_in, nb_out);
}

int32_t MixedLinearPlugin::getOutputShapes(const DimsExprs* in, int32_t nb_in, const DimsExprs*, int32_t,
                                           DimsExprs* out, int32_t nb_out, nvinfer1::IExprBuilder&) noexcept {
  if (nb_out != 1 || nb_in != expected_inputs()) return -1;
  out[0] = in[0];  // [..., K] -> [..., N], N the rows of wscale
  out[0].d[in[0].nbDims - 1] = in[compact(S::in_wscale)].d[0];
  return 0;
}

ResQLinearShape MixedLinearPlugin::shape(const nvinfer1::Dims& x, const nvinfer1::Dims& w_low,
                                         const nvinfer1::Dims* w_high) const {
  ResQLinearShape s{};
  s.k = static_cast<int32_t>(x.d[x.nbDims - 1]);
  s.k_low = static_cast<int32_t>(w_low.d[1] * 2);
  s.low_groups = attrs_.get(S::attr_low_groups, S::default_low_groups);
  s.high_groups = attrs_.get(S::attr_high_groups, S::default_high_groups);
  s.a_bits_low = attrs_.get(S::attr_a_bits_low, S::default_a_bits_low);
  s.a_bits_high = attrs_.get(S::attr_a_bits_high, S::default_a_bits_high);
  (void)w_high;
  return s;
}

size_t MixedLinearPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* in, int32_t,
                                           const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept {
  const nvinfer1::Dims& x = in[0].max;
  int64_t t = 1;
  for (int i = 0; i + 1 < x.nbDims; ++i) t *= x.d[i];
  const ResQLinearShape s = shape(x, in[compact(S::in_qweight_low)].max, nullptr);
  return resq_cuda_mixed_linear_workspace(&s, t, attrs_.get(S::attr_lqer_rank, 0));
}

int MixedLinearPlugin::prepare(const ResQLinearShape& s, int32_t n, const void* w_low, const void* w_high,
                               const void* lqer_a, cudaStream_t stream) {
  release();
  ResQLinearLayout L;
  if (resq_linear_layout(&s, &L) != RESQ_OK) return RESQ_ERR_INVALID;
  const int rank = attrs_.get(S::attr_lqer_rank, 0);
  if (cudaMalloc(&w_low_p_, static_cast<size_t>(n) * L.w_low_pitch + 1) != cudaSuccess ||
      cudaMalloc(&w_high_p_, static_cast<size_t>(n) * L.w_high_pitch + 1) != cudaSuccess ||
      cudaMalloc(&wsum_, static_cast<size_t>(n) * L.groups * 4) != cudaSuccess)
    return RESQ_ERR_CUDA;
  int st = resq_cuda_prepare_weights(&s, n, static_cast<const int8_t*>(w_low), static_cast<const int8_t*>(w_high),
                                     w_low_p_, w_high_p_, wsum_, stream);
  if (st == RESQ_OK && rank > 0) {
    if (cudaMalloc(&a_p_, static_cast<size_t>(rank) * L.a8_pitch) != cudaSuccess ||
        cudaMalloc(&asum_, static_cast<size_t>(rank) * L.groups * 4) != cudaSuccess)
      return RESQ_ERR_CUDA;
    st = resq_cuda_prepare_lqer_a(&s, rank, static_cast<const int8_t*>(lqer_a), a_p_, asum_, stream);
  }
  if (st == RESQ_OK) prepared_from_ = w_low;
  return st;
}

int32_t MixedLinearPlugin::enqueue(const nvinfer1::PluginTensorDesc* in_desc, const nvinfer1::PluginTensorDesc*,
                                   const void* const* inputs, void* const* outputs, void* workspace,
                                   cudaStream_t stream) noexcept {
  auto at = [&](int spec) -> const void* {
    const int p = compact(spec);
    return p < 0 ? nullptr : inputs[p];
  };
  const nvinfer1::Dims& x = in_desc[0].dims;
  int64_t t = 1;
  for (int i = 0; i + 1 < x.nbDims; ++i) t *= x.d[i];
  const ResQLinearShape s = shape(x, in_desc[compact(S::in_qweight_low)].dims, nullptr);
  const int32_t n = static_cast<int32_t>(in_desc[compact(S::in_wscale)].dims.d[0]);
  const int rank = attrs_.get(S::attr_lqer_rank, 0);
  if (prepared_from_ != at(S::in_qweight_low)) {
    const int st = prepare(s, n, at(S::in_qweight_low), at(S::in_qweight_high), at(S::in_lqer_a), stream);
    if (st != RESQ_OK) {
      report(name_, "weight preparation failed: status " + std::to_string(st));
      return -1;
    }
  }
  const size_t ws = resq_cuda_mixed_linear_workspace(&s, t, rank);
  const int st = resq_cuda_mixed_linear(
      &s, inputs[0], RESQ_F32, t, n, w_low_p_, w_high_p_, static_cast<const float*>(at(S::in_wscale)), wsum_, rank,
      a_p_, asum_, static_cast<const float*>(at(S::in_lqer_a_scale)), static_cast<const int8_t*>(at(S::in_lqer_b)),
      static_cast<const float*>(at(S::in_lqer_b_scale)), static_cast<const float*>(at(S::in_bias)), outputs[0],
      RESQ_F32, workspace, ws, stream);
  if (st != RESQ_OK) {
    report(name_, std::string("kernel failed: ") + (st == RESQ_ERR_CUDA ? resq_cuda_last_error() : std::to_string(st)));
    return -1;
  }
  return 0;
}

MixedLinearCreator::MixedLinearCreator()
    : CreatorBase(S::kName, S::kVersion,
                  {S::attr_low_groups, S::attr_high_groups, S::attr_a_bits_low, S::attr_a_bits_high, S::attr_lqer_rank}) {}

nvinfer1::IPluginV3* MixedLinearCreator::createPlugin(const char*, const nvinfer1::PluginFieldCollection* fc,
                                                      nvinfer1::TensorRTPhase) noexcept {
  try {
    return new MixedLinearPlugin(Attributes(fc));
  } catch (const std::exception& e) {
    report(S::kName, e.what());
    return nullptr;
  }
}

}  // namespace trt
}  // namespace resq
