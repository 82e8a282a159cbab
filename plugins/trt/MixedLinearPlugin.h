// TensorRT plugin of ResQMixedLinear (see plugins/trt/README.md for the I/O table).
#pragma once
#include "PluginUtils.h"
#include "resq_kernels.h"

namespace resq {
namespace trt {

class MixedLinearPlugin : public PluginBase {
 public:
  explicit MixedLinearPlugin(Attributes attrs);
  ~MixedLinearPlugin() override;
  nvinfer1::IPluginV3* clone() noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* in, int32_t nb_in, const nvinfer1::DimsExprs*, int32_t,
                          nvinfer1::DimsExprs* out, int32_t nb_out, nvinfer1::IExprBuilder& b) noexcept override;
  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                          const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept override;
  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* io, int32_t nb_in,
                                 int32_t nb_out) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* in_desc, const nvinfer1::PluginTensorDesc*,
                  const void* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

 protected:
  int spec_input(int32_t pos, int32_t nb_inputs) const override;

 private:
  int compact(int spec) const;  // position of a spec input, -1 when absent
  int32_t expected_inputs() const;
  ResQLinearShape shape(const nvinfer1::Dims& x, const nvinfer1::Dims& w_low, const nvinfer1::Dims* w_high) const;
  int prepare(const ResQLinearShape& s, int32_t n, const void* w_low, const void* w_high, const void* lqer_a,
              cudaStream_t stream);
  void release();
  // weights in the kernel layout, made on the first enqueue from the constant weight inputs
  const void* prepared_from_ = nullptr;
  int8_t* w_low_p_ = nullptr;
  int8_t* w_high_p_ = nullptr;
  int32_t* wsum_ = nullptr;
  int8_t* a_p_ = nullptr;
  int32_t* asum_ = nullptr;
};

class MixedLinearCreator : public CreatorBase {
 public:
  MixedLinearCreator();
  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
};

}  // namespace trt
}  // namespace resq
