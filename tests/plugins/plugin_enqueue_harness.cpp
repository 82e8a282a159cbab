// Test-only: drives a resq plugin of libresq_plugins.so as TensorRT would, without TensorRT's
// runtime: the creator from getCreators, createPlugin with integer fields (as the ONNX parser passes
// a node's attributes), configurePlugin and getWorkspaceSize (build phase), onShapeChange and
// enqueue (runtime) on the caller's buffers. With libresq_triton.so's recording launcher installed,
// enqueue's launches are recorded, not run, so host buffers do (tests/plugins/test_plugin_enqueue.py).
#include <NvInferRuntime.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

namespace {
nvinfer1::Dims dims_of(int nb, const int64_t* d) {
  nvinfer1::Dims out{};
  out.nbDims = nb;
  for (int i = 0; i < nb; ++i) out.d[i] = d[i];
  return out;
}
}  // namespace

// dims: 8 entries per tensor; types: nvinfer1::DataType values. Returns 0, or a step number that
// failed (message in err). ws_needed receives getWorkspaceSize; without a workspace, or with one
// smaller than that, nothing is enqueued (return 5).
extern "C" int harness_enqueue(const char* name, int n_fields, const char* const* field_names, const int32_t* values,
                               int nb_in, const int* in_nb, const int64_t* in_dims, const int* in_types, int nb_out,
                               const int* out_nb, const int64_t* out_dims, const int* out_types,
                               const void* const* inputs, void* const* outputs, void* workspace,
                               size_t workspace_size, size_t* ws_needed, char* err, size_t err_len) {
  auto fail = [&](int step, const std::string& msg) {
    std::snprintf(err, err_len, "%s", msg.c_str());
    return step;
  };
  int32_t n = 0;
  nvinfer1::IPluginCreatorInterface* const* creators = getCreators(n);
  nvinfer1::IPluginCreatorV3One* creator = nullptr;
  for (int i = 0; i < n; ++i) {
    auto* c = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
    if (std::strcmp(c->getPluginName(), name) == 0) creator = c;
  }
  if (!creator) return fail(1, std::string("no creator named ") + name);
  std::vector<nvinfer1::PluginField> fields;
  for (int i = 0; i < n_fields; ++i)
    fields.emplace_back(field_names[i], &values[i], nvinfer1::PluginFieldType::kINT32, 1);
  nvinfer1::PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
  nvinfer1::IPluginV3* plugin = creator->createPlugin(name, &fc, nvinfer1::TensorRTPhase::kBUILD);
  if (!plugin) return fail(2, "createPlugin returned null");
  auto* build = static_cast<nvinfer1::IPluginV3OneBuild*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
  auto* runtime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
  std::vector<nvinfer1::DynamicPluginTensorDesc> din(nb_in), dout(nb_out);
  std::vector<nvinfer1::PluginTensorDesc> pin(nb_in), pout(nb_out);
  // static shapes: min = opt = max = the tensor's dims
  auto describe = [](int nb, const int* nbs, const int64_t* dims, const int* types,
                     std::vector<nvinfer1::PluginTensorDesc>& p, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) {
    for (int i = 0; i < nb; ++i) {
      p[i].dims = dims_of(nbs[i], dims + 8 * i);
      p[i].type = static_cast<nvinfer1::DataType>(types[i]);
      p[i].format = nvinfer1::TensorFormat::kLINEAR;
      d[i].desc = p[i];
      d[i].min = d[i].opt = d[i].max = p[i].dims;
    }
  };
  describe(nb_in, in_nb, in_dims, in_types, pin, din);
  describe(nb_out, out_nb, out_dims, out_types, pout, dout);
  int step = 0;
  if (build->configurePlugin(din.data(), nb_in, dout.data(), nb_out) != 0) step = 3;
  if (!step) {
    *ws_needed = build->getWorkspaceSize(din.data(), nb_in, dout.data(), nb_out);
    if (runtime->onShapeChange(pin.data(), nb_in, pout.data(), nb_out) != 0) step = 4;
  }
  if (!step && (!workspace || workspace_size < *ws_needed)) step = 5;  // no workspace: sizes only
  if (!step && runtime->enqueue(pin.data(), pout.data(), inputs, outputs, workspace, nullptr) != 0) step = 6;
  delete plugin;
  return step ? fail(step, "step " + std::to_string(step) + " failed (configurePlugin 3, onShapeChange 4, workspace 5, "
                           "enqueue 6; the plugin's own message went to stderr)") : 0;
}
