#include "KVCacheAttentionPlugin.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace resq {
namespace trt {

namespace S = resq::spec::ResQKVCacheAttention;
using nvinfer1::DimsExprs;

// the op refuses (std::invalid_argument) attributes outside the contract or the GPU kernels: when the
// engine is built, not at its first call
KVCacheAttentionPlugin::KVCacheAttentionPlugin(Attributes attrs)
    : PluginBase(S::kName, S::kVersion, S::kInputDTypes, S::kNumInputs, S::kOutputDTypes, S::kNumOutputs, S::kOutputAliasesInput,
                 std::move(attrs)),
      op_(attrs_) {}

nvinfer1::IPluginV3* KVCacheAttentionPlugin::clone() noexcept {
  try {
    auto* copy = new KVCacheAttentionPlugin(attrs_);
    copy->nb_inputs_ = nb_inputs_;  // the input count is how enqueue finds key_rotation: keep it across clones
    return copy;
  } catch (...) {
    return nullptr;
  }
}

int32_t KVCacheAttentionPlugin::getOutputShapes(const DimsExprs* in, int32_t nb_in, const DimsExprs*, int32_t,
                                                DimsExprs* out, int32_t nb_out, nvinfer1::IExprBuilder& b) noexcept {
  if (nb_out != S::kNumOutputs || !ops::KVAttentionOp::input_count_ok(nb_in)) return -1;
  const DimsExprs& q = in[S::in_Q];
  out[S::out_Y].nbDims = 3;  // [B, S, H * D]
  out[S::out_Y].d[0] = q.d[0];
  out[S::out_Y].d[1] = q.d[2];
  out[S::out_Y].d[2] = b.constant(static_cast<int64_t>(attrs_.get(S::attr_num_heads, 0)) * attrs_.get(S::attr_head_dim, 0));
  for (int o = S::out_present_key_codes; o <= S::out_present_value_zeros; ++o)
    out[o] = in[S::kOutputAliasesInput[o]];  // the same buffer: [B, Hkv, L, x]
  return 0;
}

int32_t KVCacheAttentionPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                                                const nvinfer1::DynamicPluginTensorDesc* out, int32_t nb_out) noexcept {
  return configure_op(op_, in, nb_in, out, nb_out);
}

size_t KVCacheAttentionPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                                                const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept {
  return workspace_op(op_, in, nb_in);
}

// enqueue is not told how many inputs there are, and the count alone says whether key_rotation (U_C)
// is given: configurePlugin / onShapeChange, which precede it, recorded it (nb_inputs_); never guessed
// (a skipped U_C gives wrong attention without an error)
int32_t KVCacheAttentionPlugin::enqueue(const nvinfer1::PluginTensorDesc* in_desc, const nvinfer1::PluginTensorDesc*,
                                        const void* const* inputs, void* const* outputs, void* workspace,
                                        cudaStream_t stream) noexcept {
  if (!ops::KVAttentionOp::input_count_ok(nb_inputs_)) {
    report(name_, "enqueue before configurePlugin / onShapeChange: the input count (" + std::to_string(nb_inputs_) +
                      ") does not say whether key_rotation is given");
    return -1;
  }
  try {
    const std::vector<ops::TensorDesc> ins = descs_of(in_desc, nb_inputs_);
    // TensorRT's workspace is getWorkspaceSize's at the largest shapes: at least what these need
    if (op_.enqueue(ins.data(), nb_inputs_, inputs, outputs, workspace, op_.workspace(ins.data(), nb_inputs_), stream) ==
        RESQ_OK)
      return 0;
    report(name_, resq_triton_last_error());
  } catch (const std::exception& e) {
    report(name_, e.what());
  }
  return -1;
}

KVCacheAttentionCreator::KVCacheAttentionCreator()
    : CreatorBase(S::kName, S::kVersion, {S::kIntFields, S::kIntFields + S::kNumIntFields}) {}

nvinfer1::IPluginV3* KVCacheAttentionCreator::createPlugin(const char*, const nvinfer1::PluginFieldCollection* fc,
                                                           nvinfer1::TensorRTPhase) noexcept {
  try {
    return new KVCacheAttentionPlugin(Attributes(fc));
  } catch (const std::exception& e) {
    report(S::kName, e.what());
    return nullptr;
  }
}

}  // namespace trt
}  // namespace resq
