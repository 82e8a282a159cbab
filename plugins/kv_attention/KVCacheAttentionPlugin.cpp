#include "KVCacheAttentionPlugin.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace resq {
namespace trt {

namespace S = resq::spec::ResQKVCacheAttention;
using nvinfer1::DimensionOperation;
using nvinfer1::DimsExprs;

KVCacheAttentionPlugin::KVCacheAttentionPlugin(Attributes attrs)
    : PluginBase(S::kName, S::kVersion, S::kInputDTypes, S::kNumInputs, S::kOutputDTypes, S::kNumOutputs, S::kOutputAliasesInput,
                 std::move(attrs)) {
  const ResQKVShape s = kv_shape(1);  // the required attributes are checked now rather than at enqueue
  if (resq_kv_check(&s) != RESQ_OK)
    throw std::invalid_argument(
        "attributes outside the op contract (docs/ops.md): num_heads " + std::to_string(s.num_heads) +
        ", num_kv_heads " + std::to_string(s.num_kv_heads) + ", head_dim " + std::to_string(s.head_dim) +
        ", high_channels " + std::to_string(s.high_channels) + ", kv_bits " + std::to_string(s.kv_bits) +
        ", high_bits " + std::to_string(s.high_bits));
  if (s.head_dim > S::gpu_max_head_dim || s.high_channels > S::gpu_max_high_channels ||
      s.num_heads / s.num_kv_heads > S::gpu_max_group)
    throw std::invalid_argument("the GPU attention takes head_dim <= " + std::to_string(S::gpu_max_head_dim) + ", <= " +
                                std::to_string(S::gpu_max_high_channels) + " high channels and <= " +
                                std::to_string(S::gpu_max_group) + " query heads per KV head (ops.json \"gpu\")");
}

nvinfer1::IPluginV3* KVCacheAttentionPlugin::clone() noexcept {
  try {
    auto* copy = new KVCacheAttentionPlugin(attrs_);
    copy->nb_inputs_ = nb_inputs_;  // the input count is how enqueue finds key_rotation: keep it across clones
    return copy;
  } catch (...) {
    return nullptr;
  }
}

// key_rotation, the only optional input, is the last: the TensorRT flavour drops it where the model
// has none (ten inputs instead of eleven), and every other input keeps its spec position.
int KVCacheAttentionPlugin::rotation_input(int32_t nb_inputs) { return nb_inputs == S::kNumInputs ? S::in_key_rotation : -1; }

ResQKVShape KVCacheAttentionPlugin::kv_shape(int64_t batch) const {
  ResQKVShape s{};
  s.batch = static_cast<int32_t>(batch);
  s.num_heads = attrs_.require(S::attr_num_heads);
  s.num_kv_heads = attrs_.require(S::attr_num_kv_heads);
  s.head_dim = attrs_.require(S::attr_head_dim);
  s.high_channels = attrs_.get(S::attr_high_channels, S::default_high_channels);
  s.kv_bits = attrs_.get(S::attr_kv_bits, S::default_kv_bits);
  s.high_bits = attrs_.get(S::attr_high_bits, S::default_high_bits);
  return s;
}

int32_t KVCacheAttentionPlugin::getOutputShapes(const DimsExprs* in, int32_t nb_in, const DimsExprs*, int32_t,
                                                DimsExprs* out, int32_t nb_out, nvinfer1::IExprBuilder& b) noexcept {
  if (nb_out != S::kNumOutputs || (nb_in != S::kNumInputs && nb_in != S::kNumInputs - 1)) return -1;
  const DimsExprs& q = in[S::in_Q];
  out[S::out_Y].nbDims = 3;  // [B, S, H * D]
  out[S::out_Y].d[0] = q.d[0];
  out[S::out_Y].d[1] = q.d[2];
  out[S::out_Y].d[2] = b.constant(static_cast<int64_t>(attrs_.get(S::attr_num_heads, 0)) * attrs_.get(S::attr_head_dim, 0));
  for (int o = S::out_present_key_codes; o <= S::out_present_value_zeros; ++o)
    out[o] = in[S::kOutputAliasesInput[o]];  // the same buffer: [B, Hkv, L, x]
  return 0;
}

// The cache tensors' last dims are the stored row of op contract v2 (resq_kv_row_bytes bytes of codes,
// one scale and zero point per group): a cache of another layout (v1 wrote one code per byte) is
// refused here rather than read wrongly by the kernels.
int32_t KVCacheAttentionPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                                                const nvinfer1::DynamicPluginTensorDesc* out, int32_t nb_out) noexcept {
  PluginBase::configurePlugin(in, nb_in, out, nb_out);
  if (nb_in != S::kNumInputs && nb_in != S::kNumInputs - 1) return -1;
  const ResQKVShape s = kv_shape(1);
  for (int t = 0; t < 6; ++t) {  // past_{key,value}_{codes,scales,zeros}
    const nvinfer1::Dims& dims = in[S::in_past_key_codes + t].desc.dims;
    const int64_t want = t % 3 == 0 ? resq_kv_row_bytes(&s) : resq_kv_groups(&s);
    if (dims.nbDims != 4 || (dims.d[3] >= 0 && dims.d[3] != want)) {
      report(name_, "cache input " + std::to_string(t) + " has last dim " +
                        std::to_string(dims.nbDims == 4 ? dims.d[3] : -1) + ", the op contract (v" +
                        std::string(S::kVersion) + ") stores " + std::to_string(want));
      return -1;
    }
  }
  return 0;
}

size_t KVCacheAttentionPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                                                const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept {
  ResQKVAttentionParams bound{};
  bound.shape = kv_shape(in[S::in_Q].max.d[0]);
  bound.seq = static_cast<int32_t>(in[S::in_K].max.d[2]);
  // the bound of the largest batch and seq holds for every smaller call; enqueue checks its own plan
  return resq_triton_kv_attention_workspace(&bound, rotation_input(nb_in) >= 0);
}

// The cache is the outputs' buffers, which TensorRT aliases to the past inputs (getAliasedInput): the
// new rows are written in place and nothing else of the cache moves. Only where the builder did not
// enable aliased plugin I/O are they distinct, and the past is copied into them first.
int32_t KVCacheAttentionPlugin::enqueue(const nvinfer1::PluginTensorDesc* in_desc, const nvinfer1::PluginTensorDesc*,
                                        const void* const* inputs, void* const* outputs, void* workspace,
                                        cudaStream_t stream) noexcept {
  // the input count says whether key_rotation (U_C) is there: never guess it (a skipped U_C would
  // give wrong attention without an error)
  if (nb_inputs_ != S::kNumInputs && nb_inputs_ != S::kNumInputs - 1) {
    report(name_, "enqueue before configurePlugin / onShapeChange: the input count (" + std::to_string(nb_inputs_) +
                      ") does not say whether key_rotation is given");
    return -1;
  }
  const nvinfer1::Dims& qd = in_desc[S::in_Q].dims;
  const nvinfer1::Dims& kd = in_desc[S::in_K].dims;
  const nvinfer1::Dims& cache_dims = in_desc[S::in_past_key_codes].dims;
  int st = RESQ_OK;
  for (int o = S::out_present_key_codes; o <= S::out_present_value_zeros && st == RESQ_OK; ++o) {
    const int past = S::kOutputAliasesInput[o];
    if (outputs[o] == inputs[past]) continue;
    const nvinfer1::Dims& d = in_desc[past].dims;
    const size_t bytes = static_cast<size_t>(d.d[0] * d.d[1] * d.d[2] * d.d[3]) * (o % 3 == 2 ? 4 : 1);  // scales: float32
    if (cudaMemcpyAsync(outputs[o], inputs[past], bytes, cudaMemcpyDeviceToDevice, stream) != cudaSuccess) st = RESQ_ERR_CUDA;
  }
  const int32_t capacity = static_cast<int32_t>(cache_dims.d[2]);
  auto cache = [capacity](void* const* t) {
    return ResQKVCache{static_cast<uint8_t*>(t[0]), static_cast<float*>(t[1]), static_cast<uint8_t*>(t[2]), capacity};
  };
  void* const* present = outputs + S::out_present_key_codes;
  const int rot = rotation_input(nb_inputs_);
  ResQKVAttentionParams attn{kv_shape(qd.d[0]), static_cast<int32_t>(kd.d[2]),
                             static_cast<const int32_t*>(inputs[S::in_past_length]), static_cast<const float*>(inputs[S::in_Q]),
                             cache(present), cache(present + 3), static_cast<float*>(outputs[S::out_Y]), workspace, 0};
  attn.workspace_size = resq_triton_kv_attention_workspace(&attn, rot >= 0);  // what getWorkspaceSize reserved at most
  if (st == RESQ_OK)
    st = resq_triton_kv_attention(&attn, static_cast<const float*>(inputs[S::in_K]),
                                  static_cast<const float*>(inputs[S::in_V]),
                                  rot >= 0 ? static_cast<const float*>(inputs[rot]) : nullptr, stream);
  if (st != RESQ_OK) {
    report(name_, std::string("kernel failed: ") + (st == RESQ_ERR_CUDA ? "CUDA error" : std::to_string(st)) + ": " +
                      resq_triton_last_error());
    return -1;
  }
  return 0;
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
