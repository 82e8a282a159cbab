#include "HadamardPlugin.h"

// the one GPU implementation: the Triton cubins through the launch seam (libresq_triton.so)
#include "triton_ops.h"

namespace resq {
namespace trt {

namespace S = resq::spec::ResQHadamard;

HadamardPlugin::HadamardPlugin(Attributes attrs)
    : PluginBase(S::kName, S::kVersion, S::kInputDTypes, S::kNumInputs, S::kOutputDTypes, S::kNumOutputs, S::kOutputAliasesInput,
                 std::move(attrs)) {}

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
  if (nb_in != 2 || nb_out != 1) return -1;
  out[0] = in[0];
  return 0;
}

int32_t HadamardPlugin::enqueue(const nvinfer1::PluginTensorDesc* in_desc, const nvinfer1::PluginTensorDesc*,
                                const void* const* inputs, void* const* outputs, void*, cudaStream_t stream) noexcept {
  const nvinfer1::Dims& x = in_desc[S::in_X].dims;
  int64_t rows = 1;
  for (int i = 0; i + 1 < x.nbDims; ++i) rows *= x.d[i];
  const ResQHadamardParams p{rows, static_cast<int32_t>(x.d[x.nbDims - 1]),
                             static_cast<int32_t>(in_desc[S::in_left].dims.d[0]),
                             static_cast<const float*>(inputs[S::in_X]), static_cast<const float*>(inputs[S::in_left]),
                             static_cast<float*>(outputs[S::out_Y])};
  const int st = resq_triton_hadamard(&p, stream);
  if (st != RESQ_OK) {
    report(name_, std::string("kernel failed: status ") + std::to_string(st) + ": " + resq_triton_last_error());
    return -1;
  }
  return 0;
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
