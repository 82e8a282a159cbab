#include "MixedLinearPlugin.h"

// the one GPU implementation: the Triton cubins through the launch seam (libresq_triton.so)
#include "triton_ops.h"

#include <stdexcept>
#include <vector>

namespace resq {
namespace trt {

namespace S = resq::spec::ResQMixedLinearPrepared;
using nvinfer1::DimsExprs;

MixedLinearPlugin::MixedLinearPlugin(Attributes attrs)
    : PluginBase(S::kName, S::kVersion, S::kInputDTypes, S::kNumInputs, S::kOutputDTypes, S::kNumOutputs, S::kOutputAliasesInput,
                 std::move(attrs)) {
  attrs_.require(S::attr_k_low);
  // what the engine path accepts (ops.json's "gpu" entry, which the exporter's engine check reads too):
  // refused when the engine is built, not at its first call
  const bool low = attrs_.get(S::attr_low_groups, S::default_low_groups) > 0;
  const bool high = attrs_.get(S::attr_high_groups, S::default_high_groups) > 0;
  if ((low && attrs_.get(S::attr_a_bits_low, S::default_a_bits_low) != S::gpu_a_bits_low) ||
      (high && attrs_.get(S::attr_a_bits_high, S::default_a_bits_high) != S::gpu_a_bits_high))
    throw std::invalid_argument("the GPU linear takes 4-bit activations on the 4-bit groups and 8-bit on the 8-bit "
                                "ones (a_bits_low 4, a_bits_high 8)");
}

nvinfer1::IPluginV3* MixedLinearPlugin::clone() noexcept {
  try {
    return new MixedLinearPlugin(attrs_);  // no state besides the attributes: the weights are engine constants
  } catch (...) {
    return nullptr;
  }
}

// The TensorRT flavour (resq_export/export/writer.py) lists only present inputs, so the attributes
// alone say where each input is: ops.json's present_if rule, generated into resq_ops.h.
bool MixedLinearPlugin::present(int spec) const { return S::input_present(spec, attrs_); }

int MixedLinearPlugin::compact(int spec) const {
  if (!present(spec)) return -1;
  int pos = 0;
  for (int i = 0; i < spec; ++i) pos += present(i) ? 1 : 0;
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

ResQLinearShape MixedLinearPlugin::shape(int64_t k) const {
  ResQLinearShape s{};
  s.k = static_cast<int32_t>(k);
  s.k_low = attrs_.get(S::attr_k_low, 0);
  s.low_groups = attrs_.get(S::attr_low_groups, S::default_low_groups);
  s.high_groups = attrs_.get(S::attr_high_groups, S::default_high_groups);
  s.a_bits_low = attrs_.get(S::attr_a_bits_low, S::default_a_bits_low);
  s.a_bits_high = attrs_.get(S::attr_a_bits_high, S::default_a_bits_high);
  return s;
}

std::string MixedLinearPlugin::check_weights(const nvinfer1::Dims* dims, int64_t k) const {
  const ResQLinearShape s = shape(k);
  ResQLinearLayout L;
  if (resq_linear_layout(&s, &L) != RESQ_OK) return "K " + std::to_string(k) + " does not fit the attributes";
  const int64_t n = dims[compact(S::in_wscale)].d[0];
  const int rank = attrs_.get(S::attr_lqer_rank, 0);
  struct Want {
    int spec;
    int64_t rows, cols;
  };
  const std::vector<Want> wants = {{S::in_weight_low, n, L.w_low_pitch},  {S::in_weight_high, n, L.w_high_pitch},
                                   {S::in_wscale, n, L.groups},           {S::in_weight_sums, n, L.groups},
                                   {S::in_lqer_a, rank, L.a8_pitch},      {S::in_lqer_a_sums, rank, L.groups},
                                   {S::in_lqer_b, n, rank}};
  for (const Want& w : wants) {
    const int p = compact(w.spec);
    if (p < 0) continue;
    const nvinfer1::Dims& d = dims[p];
    if (d.nbDims != 2 || d.d[0] != w.rows || d.d[1] != w.cols)
      return "input " + std::to_string(p) + " is not [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
             "] (the kernel layout of these attributes; export with this resq-export)";
  }
  if (n % 8) return std::to_string(n) + " output features (the GPU GEMM needs a multiple of 8)";
  return "";
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

int32_t MixedLinearPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                                           const nvinfer1::DynamicPluginTensorDesc* out, int32_t nb_out) noexcept {
  PluginBase::configurePlugin(in, nb_in, out, nb_out);
  if (nb_in != expected_inputs()) return -1;
  std::vector<nvinfer1::Dims> dims(nb_in);
  for (int32_t i = 0; i < nb_in; ++i) dims[i] = in[i].desc.dims;  // weights are constants: fixed dims
  const nvinfer1::Dims& x = in[0].desc.dims;
  // K is static in our graphs (the hidden or intermediate size); should a parser leave it dynamic,
  // the check waits for the kernel, which refuses a K that does not fit the attributes.
  if (x.nbDims < 1 || x.d[x.nbDims - 1] < 0) return 0;
  const std::string problem = check_weights(dims.data(), x.d[x.nbDims - 1]);
  if (!problem.empty()) {
    report(name_, problem);
    return -1;
  }
  return 0;
}

int32_t MixedLinearPlugin::getOutputShapes(const DimsExprs* in, int32_t nb_in, const DimsExprs*, int32_t,
                                           DimsExprs* out, int32_t nb_out, nvinfer1::IExprBuilder&) noexcept {
  if (nb_out != 1 || nb_in != expected_inputs()) return -1;
  out[0] = in[0];  // [..., K] -> [..., N], N the rows of wscale
  out[0].d[in[0].nbDims - 1] = in[compact(S::in_wscale)].d[0];
  return 0;
}

size_t MixedLinearPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* in, int32_t,
                                           const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept {
  const nvinfer1::Dims& x = in[0].max;
  int64_t t = 1;
  for (int i = 0; i + 1 < x.nbDims; ++i) t *= x.d[i];
  ResQMixedLinearParams p{};
  p.shape = shape(x.d[x.nbDims - 1]);
  p.tokens = t;
  p.rank = attrs_.get(S::attr_lqer_rank, 0);
  p.n = static_cast<int32_t>(in[compact(S::in_wscale)].max.d[0]);
  return resq_triton_mixed_linear_workspace(&p);
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
  ResQMixedLinearParams p{};
  p.shape = shape(x.d[x.nbDims - 1]);
  p.tokens = t;
  p.n = static_cast<int32_t>(in_desc[compact(S::in_wscale)].dims.d[0]);
  p.rank = attrs_.get(S::attr_lqer_rank, 0);
  for (int i = 0; i < S::kNumInputs; ++i) p.in.at[i] = at(i);
  p.x_dtype = RESQ_F32;
  p.y = outputs[0];
  p.y_dtype = RESQ_F32;
  p.workspace = workspace;
  p.workspace_size = resq_triton_mixed_linear_workspace(&p);
  const int st = resq_triton_mixed_linear(&p, stream);
  if (st != RESQ_OK) {
    report(name_, std::string("kernel failed: status ") + std::to_string(st) + ": " + resq_triton_last_error());
    return -1;
  }
  return 0;
}

MixedLinearCreator::MixedLinearCreator()
    : CreatorBase(S::kName, S::kVersion, {S::kIntFields, S::kIntFields + S::kNumIntFields}) {}

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
