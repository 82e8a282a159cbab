// TensorRT plugin of ResQMixedLinearPrepared: ResQMixedLinear with its weights already in the CUDA
// GEMM's layout (see plugins/mixed_linear/README.md for the I/O table).
#pragma once
#include "PluginUtils.h"
#include "resq_kernels.h"

namespace resq {
namespace trt {

class MixedLinearPlugin : public PluginBase {
 public:
  explicit MixedLinearPlugin(Attributes attrs);
  nvinfer1::IPluginV3* clone() noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* in, int32_t nb_in, const nvinfer1::DimsExprs*, int32_t,
                          nvinfer1::DimsExprs* out, int32_t nb_out, nvinfer1::IExprBuilder& b) noexcept override;
  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                          const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept override;
  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* io, int32_t nb_in,
                                 int32_t nb_out) noexcept override;
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                          const nvinfer1::DynamicPluginTensorDesc* out, int32_t nb_out) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* in_desc, const nvinfer1::PluginTensorDesc*,
                  const void* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

 protected:
  int spec_input(int32_t pos, int32_t nb_inputs) const override;

 private:
  bool present(int spec) const;  // whether the node lists this spec input
  int compact(int spec) const;  // position of a spec input, -1 when absent
  int32_t expected_inputs() const;
  ResQLinearShape shape(int64_t k) const;
  // the weight operands' dims against the kernel layout of the attributes; "" when they match
  std::string check_weights(const nvinfer1::Dims* dims, int64_t k) const;
};

class MixedLinearCreator : public CreatorBase {
 public:
  MixedLinearCreator();
  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
};

}  // namespace trt
}  // namespace resq
