// TensorRT plugin of ResQKVCacheAttention: U_C on q and k, quantised append of the new K/V into the
// cache in place (each present output aliased to its past input; rows packed as resq_layout.h says),
// causal GQA attention over the dequantised cache. A thin adapter: the attribute checks, the tensors'
// check, the workspace, the copy where present and past are two buffers and the launches are
// KVAttentionOp's (kv_attention_op.h, libresq_triton.so), which CI runs without TensorRT.
#pragma once
#include "PluginUtils.h"
#include "kv_attention_op.h"

namespace resq {
namespace trt {

class KVCacheAttentionPlugin : public PluginBase {
 public:
  explicit KVCacheAttentionPlugin(Attributes attrs);
  nvinfer1::IPluginV3* clone() noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* in, int32_t nb_in, const nvinfer1::DimsExprs*, int32_t,
                          nvinfer1::DimsExprs* out, int32_t nb_out, nvinfer1::IExprBuilder& b) noexcept override;
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                          const nvinfer1::DynamicPluginTensorDesc* out, int32_t nb_out) noexcept override;
  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                          const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* in_desc, const nvinfer1::PluginTensorDesc*,
                  const void* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

 private:
  ops::KVAttentionOp op_;
};

class KVCacheAttentionCreator : public CreatorBase {
 public:
  KVCacheAttentionCreator();
  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
};

}  // namespace trt
}  // namespace resq
