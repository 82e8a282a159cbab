#include "MixedLinearPlugin.h"

#include <stdexcept>

namespace resq {
namespace trt {

namespace S = resq::spec::ResQMixedLinearPrepared;
using nvinfer1::DimsExprs;

// the op refuses (std::invalid_argument) what the GPU kernels do not take: when the engine is built,
// not at its first call
MixedLinearPlugin::MixedLinearPlugin(Attributes attrs)
    : PluginBase(S::kName, S::kVersion, S::kInputDTypes, S::kNumInputs, S::kOutputDTypes, S::kNumOutputs, S::kOutputAliasesInput,
                 std::move(attrs)),
      op_(attrs_) {}

nvinfer1::IPluginV3* MixedLinearPlugin::clone() noexcept {
  try {
    return new MixedLinearPlugin(attrs_);  // no state besides the attributes: the weights are engine constants
  } catch (...) {
    return nullptr;
  }
}

int MixedLinearPlugin::spec_input(int32_t pos, int32_t) const {
  const int spec = op_.spec_input(pos);
  return spec < 0 ? 0 : spec;
}

bool MixedLinearPlugin::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* io,
                                                  int32_t nb_in, int32_t nb_out) noexcept {
  if (nb_in != op_.expected_inputs()) {
    report(name_, "got " + std::to_string(nb_in) + " inputs, the attributes imply " +
                      std::to_string(op_.expected_inputs()) + " (export with this resq-export's TensorRT flavour)");
    return false;
  }
  return PluginBase::supportsFormatCombination(pos, io, nb_in, nb_out);
}

// the weights are constants: fixed dims; X's K is static in our graphs
int32_t MixedLinearPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                                           const nvinfer1::DynamicPluginTensorDesc* out, int32_t nb_out) noexcept {
  return configure_op(op_, in, nb_in, out, nb_out);
}

int32_t MixedLinearPlugin::getOutputShapes(const DimsExprs* in, int32_t nb_in, const DimsExprs*, int32_t,
                                           DimsExprs* out, int32_t nb_out, nvinfer1::IExprBuilder&) noexcept {
  if (nb_out != 1 || nb_in != op_.expected_inputs()) return -1;
  out[0] = in[0];  // [..., K] -> [..., N], N the rows of wscale
  out[0].d[in[0].nbDims - 1] = in[op_.compact(S::in_wscale)].d[0];
  return 0;
}

size_t MixedLinearPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                                           const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept {
  return workspace_op(op_, in, nb_in);
}

int32_t MixedLinearPlugin::enqueue(const nvinfer1::PluginTensorDesc* in_desc, const nvinfer1::PluginTensorDesc*,
                                   const void* const* inputs, void* const* outputs, void* workspace,
                                   cudaStream_t stream) noexcept {
  return enqueue_op(op_, in_desc, inputs, outputs, workspace, stream);
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
