// TensorRT plugin of ResQHadamard: Y = X @ kron(left, S / sqrt(b)) along the last axis. A thin adapter
// over HadamardOp (hadamard_op.h, libresq_triton.so), which CI runs without TensorRT.
#pragma once
#include "PluginUtils.h"
#include "hadamard_op.h"

namespace resq {
namespace trt {

class HadamardPlugin : public PluginBase {
 public:
  explicit HadamardPlugin(Attributes attrs);
  nvinfer1::IPluginV3* clone() noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* in, int32_t nb_in, const nvinfer1::DimsExprs*, int32_t,
                          nvinfer1::DimsExprs* out, int32_t nb_out, nvinfer1::IExprBuilder& b) noexcept override;
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                          const nvinfer1::DynamicPluginTensorDesc* out, int32_t nb_out) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* in_desc, const nvinfer1::PluginTensorDesc*,
                  const void* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

 private:
  ops::HadamardOp op_;
};

class HadamardCreator : public CreatorBase {
 public:
  HadamardCreator();
  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
};

}  // namespace trt
}  // namespace resq
