// Test-only, built where TensorRT headers are: drives a resq plugin of libresq_plugins.so as TensorRT
// would, without TensorRT's runtime, with the same C description of a node as libresq_triton.so's
// resq_op_check / resq_op_enqueue (triton_op_call.h): the creator from getCreators, createPlugin with
// integer fields (as the ONNX parser passes a node's attributes), configurePlugin and getWorkspaceSize
// (build phase), onShapeChange and enqueue (runtime) on the caller's buffers. With libresq_triton.so's
// recording launcher installed, enqueue's launches are recorded, not run, so host buffers do
// (tools/op_enqueue_check.py --harness). The plugins' own messages reach harness_last_error() through
// the logger finder the library is given, as TensorRT gives one.
#include <NvInferRuntime.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "triton_op_call.h"

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);

namespace {
std::string g_error;

class Capture : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kERROR) g_error = msg;
  }
};

class Finder : public nvinfer1::ILoggerFinder {
 public:
  nvinfer1::ILogger* findLogger() noexcept override { return &logger_; }

 private:
  Capture logger_;
};

nvinfer1::DataType type_of(const char* dtype) {
  if (dtype && !std::strcmp(dtype, "int8")) return nvinfer1::DataType::kINT8;
  if (dtype && !std::strcmp(dtype, "int32")) return nvinfer1::DataType::kINT32;
  if (dtype && !std::strcmp(dtype, "float16")) return nvinfer1::DataType::kHALF;
  // the TensorRT flavour carries the contract's uint8 tensors (KV codes, zero points) as int8 (PluginUtils.cpp)
  if (dtype && !std::strcmp(dtype, "uint8")) return nvinfer1::DataType::kINT8;
  return nvinfer1::DataType::kFLOAT;
}

// static shapes: min = opt = max = the tensor's dims
void describe(int nb, const ResQTensorDesc* t, std::vector<nvinfer1::PluginTensorDesc>& p,
              std::vector<nvinfer1::DynamicPluginTensorDesc>& d) {
  p.resize(nb);
  d.resize(nb);
  for (int i = 0; i < nb; ++i) {
    p[i].dims.nbDims = t[i].nb_dims;
    for (int j = 0; j < t[i].nb_dims; ++j) p[i].dims.d[j] = t[i].dims[j];
    p[i].type = type_of(t[i].dtype);
    p[i].format = nvinfer1::TensorFormat::kLINEAR;
    d[i].desc = p[i];
    d[i].min = d[i].opt = d[i].max = p[i].dims;
  }
}

int fail(const std::string& step) {
  g_error = step + " failed: " + g_error;
  return 1;
}

// createPlugin .. getWorkspaceSize, then (launch) onShapeChange and enqueue
int drive(const ResQOpCall* c, size_t* ws_needed, bool launch, const void* const* inputs, void* const* outputs,
          void* workspace, size_t workspace_size, void* stream) {
  static Finder finder;
  setLoggerFinder(&finder);
  g_error = "no message";
  int32_t n = 0;
  nvinfer1::IPluginCreatorInterface* const* creators = getCreators(n);
  nvinfer1::IPluginCreatorV3One* creator = nullptr;
  for (int i = 0; i < n; ++i) {
    auto* candidate = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
    if (std::strcmp(candidate->getPluginName(), c->op) == 0) creator = candidate;
  }
  if (!creator) return g_error = std::string("no creator named ") + c->op, 1;
  std::vector<nvinfer1::PluginField> fields;
  for (int i = 0; i < c->n_fields; ++i)
    fields.emplace_back(c->field_names[i], &c->field_values[i], nvinfer1::PluginFieldType::kINT32, 1);
  nvinfer1::PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
  std::unique_ptr<nvinfer1::IPluginV3> plugin(creator->createPlugin(c->op, &fc, nvinfer1::TensorRTPhase::kBUILD));
  if (!plugin) return fail("createPlugin");
  auto* build = static_cast<nvinfer1::IPluginV3OneBuild*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
  auto* runtime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
  std::vector<nvinfer1::DynamicPluginTensorDesc> din, dout;
  std::vector<nvinfer1::PluginTensorDesc> pin, pout;
  describe(c->nb_in, c->in, pin, din);
  describe(c->nb_out, c->out, pout, dout);
  for (int pos = 0; pos < c->nb_in + c->nb_out; ++pos) {
    std::vector<nvinfer1::DynamicPluginTensorDesc> io(din);
    io.insert(io.end(), dout.begin(), dout.end());
    if (!build->supportsFormatCombination(pos, io.data(), c->nb_in, c->nb_out))
      return fail("supportsFormatCombination of tensor " + std::to_string(pos));
  }
  if (build->configurePlugin(din.data(), c->nb_in, dout.data(), c->nb_out) != 0) return fail("configurePlugin");
  const size_t needed = build->getWorkspaceSize(din.data(), c->nb_in, dout.data(), c->nb_out);
  if (ws_needed) *ws_needed = needed;
  if (!launch) return 0;
  if (runtime->onShapeChange(pin.data(), c->nb_in, pout.data(), c->nb_out) != 0) return fail("onShapeChange");
  if (workspace_size < needed) return g_error = "a workspace smaller than getWorkspaceSize's", 1;
  if (runtime->enqueue(pin.data(), pout.data(), inputs, outputs, workspace, static_cast<cudaStream_t>(stream)) != 0)
    return fail("enqueue");
  return 0;
}
}  // namespace

extern "C" int harness_check(const ResQOpCall* c, size_t* ws_needed) {
  return drive(c, ws_needed, false, nullptr, nullptr, nullptr, 0, nullptr);
}

extern "C" int harness_enqueue(const ResQOpCall* c, const void* const* inputs, void* const* outputs, void* workspace,
                               size_t workspace_size, void* stream) {
  return drive(c, nullptr, true, inputs, outputs, workspace, workspace_size, stream);
}

extern "C" const char* harness_last_error() { return g_error.c_str(); }
