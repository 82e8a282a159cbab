#include "HadamardPlugin.h"

#include <vector>

namespace resq {
namespace trt {

namespace S = resq::spec::ResQHadamard;

HadamardPlugin::HadamardPlugin(Attributes attrs)
    : PluginBase(S::kName, S::kVersion, S::kInputDTypes, S::kNumInputs, S::kOutputDTypes, S::kNumOutputs, S::kOutputAliasesInput,
                 std::move(attrs)),
      op_(attrs_) {}

nvinfer1::IPluginV3* HadamardPlugin::clone() noexcept {
  try {
    return new HadamardPlugin(attrs_);
  } catch (...) {
    return nullptr;
  }
}

int32_t HadamardPlugin::getOutputShapes(const nvinfer1::DimsExprs* in, int32_t nb_in, const nvinfer1::DimsExprs*,
                                        int32_t, nvinfer1::DimsExprs* out, int32_t nb_out,
                                        nvinfer1::IExprBuilder&) noexcept {
  if (nb_in != op_.expected_inputs() || nb_out != 1) return -1;
  out[0] = in[0];
  return 0;
}

int32_t HadamardPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                                        const nvinfer1::DynamicPluginTensorDesc* out, int32_t nb_out) noexcept {
  return configure_op(op_, in, nb_in, out, nb_out);
}

int32_t HadamardPlugin::enqueue(const nvinfer1::PluginTensorDesc* in_desc, const nvinfer1::PluginTensorDesc*,
                                const void* const* inputs, void* const* outputs, void* workspace,
                                cudaStream_t stream) noexcept {
  return enqueue_op(op_, in_desc, inputs, outputs, workspace, stream);
}

HadamardCreator::HadamardCreator()
    : CreatorBase(S::kName, S::kVersion, {S::kIntFields, S::kIntFields + S::kNumIntFields}) {}

nvinfer1::IPluginV3* HadamardCreator::createPlugin(const char*, const nvinfer1::PluginFieldCollection* fc,
                                                   nvinfer1::TensorRTPhase) noexcept {
  try {
    return new HadamardPlugin(Attributes(fc));
  } catch (const std::exception& e) {
    report(S::kName, e.what());
    return nullptr;
  }
}

}  // namespace trt
}  // namespace resq
