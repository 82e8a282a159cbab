// TensorRT plugin of ResQMixedLinearPrepared: ResQMixedLinear with its weights already in the GPU
// GEMM's layout (see plugins/mixed_linear/README.md for the I/O table). A thin adapter: the attribute
// checks, the input mapping, the weights' check, the workspace and the launch are MixedLinearOp's
// (mixed_linear_op.h, libresq_triton.so), which CI runs without TensorRT.
#pragma once
#include "PluginUtils.h"
#include "mixed_linear_op.h"

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
  ops::MixedLinearOp op_;
};

class MixedLinearCreator : public CreatorBase {
 public:
  MixedLinearCreator();
  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
};

}  // namespace trt
}  // namespace resq
