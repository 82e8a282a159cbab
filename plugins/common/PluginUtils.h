// Shared glue of the resq TensorRT plugins (IPluginV3, TensorRT 10+): attribute fields, dtype
// tables from the generated spec header, and a base class with everything the three ops share.
#pragma once
#include <NvInferRuntime.h>

#include <cstdint>
#include <exception>
#include <map>
#include <string>
#include <vector>

#include "resq_ops.h"
#include "triton_loader.h"
#include "triton_op.h"

namespace resq {
namespace trt {

nvinfer1::DataType dtype_of(const char* spec_dtype);

// Integer attributes of a node (the ONNX parser passes INT attributes as kINT32 fields): the ops'
// layer's Fields, plus the TensorRT field collections.
class Attributes : public ops::Fields {
 public:
  Attributes() = default;
  explicit Attributes(const nvinfer1::PluginFieldCollection* fc);
  // fields for serialisation; valid while this object lives and is not modified
  const nvinfer1::PluginFieldCollection* fields();

 private:
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection collection_{};
};

// A tensor's description for the ops' layer (triton_op.h): dims, and its dtype by ops.json's name
ops::TensorDesc desc_of(const nvinfer1::PluginTensorDesc& d);
std::vector<ops::TensorDesc> descs_of(const nvinfer1::PluginTensorDesc* d, int32_t n);
std::vector<ops::TensorDesc> descs_of(const nvinfer1::DynamicPluginTensorDesc* d, int32_t n, bool max = false);

// errors go to the logger of the engine or context that called (TensorRT hands the library a logger
// finder through setLoggerFinder), else to stderr
void report(const char* plugin, const std::string& message) noexcept;

// The parts of IPluginV3 that are the same for every resq op: identity from the spec, formats
// (linear, the spec's dtypes), output dtypes, capability lookup, the outputs aliased to inputs
// (ops.json "aliases"; the build interface is V2, TensorRT 10.3+, which asks for them when the
// builder enables PreviewFeature::kALIASED_PLUGIN_IO_10_03).
class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuildV2,
                   public nvinfer1::IPluginV3OneRuntime {
 public:
  PluginBase(const char* name, const char* version, const char* const* in_dtypes, int n_spec_inputs,
             const char* const* out_dtypes, int n_outputs, const int* out_aliases, Attributes attrs);

  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  const char* getPluginName() const noexcept override { return name_; }
  const char* getPluginVersion() const noexcept override { return version_; }
  const char* getPluginNamespace() const noexcept override { return RESQ_SPEC_PLUGIN_NAMESPACE; }

  int32_t getNbOutputs() const noexcept override { return n_outputs_; }
  // an aliased input precedes every optional one (gen_ops_header.py checks), so its spec index is
  // its position however many optional inputs a node lists
  int32_t getAliasedInput(int32_t output) noexcept override {
    return output >= 0 && output < n_outputs_ ? out_aliases_[output] : -1;
  }
  int32_t getOutputDataTypes(nvinfer1::DataType* out, int32_t nb_out, const nvinfer1::DataType* in,
                             int32_t nb_in) const noexcept override;
  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* io, int32_t nb_in,
                                 int32_t nb_out) noexcept override;
  // enqueue() is not told how many inputs there are; both calls below precede it and are
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc*, int32_t nb_in,
                          const nvinfer1::DynamicPluginTensorDesc*, int32_t) noexcept override {
    nb_inputs_ = nb_in;
    return 0;
  }
  int32_t onShapeChange(const nvinfer1::PluginTensorDesc*, int32_t nb_in, const nvinfer1::PluginTensorDesc*,
                        int32_t) noexcept override {
    nb_inputs_ = nb_in;
    return 0;
  }
  // an execution context is being created (outside enqueue): load the Triton cubins for the current
  // device now, not at a first launch that may be inside a CUDA-graph capture; a failure is
  // reported by the enqueue that needs the kernel
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext*) noexcept override {
    resq_triton_prepare(-1);
    return clone();
  }
  const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override { return attrs_.fields(); }

 protected:
  // configurePlugin, getWorkspaceSize and enqueue of an op of the TensorRT-free layer (triton_op.h): the
  // tensors' descriptions handed over, its message reported to TensorRT's logger
  template <class Op>
  int32_t configure_op(const Op& op, const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in,
                       const nvinfer1::DynamicPluginTensorDesc* out, int32_t nb_out) noexcept {
    PluginBase::configurePlugin(in, nb_in, out, nb_out);
    try {
      const std::vector<ops::TensorDesc> ins = descs_of(in, nb_in), outs = descs_of(out, nb_out);
      const std::string problem = op.check(ins.data(), nb_in, outs.data(), nb_out);
      if (problem.empty()) return 0;
      report(name_, problem);
    } catch (const std::exception& e) {
      report(name_, e.what());
    }
    return -1;
  }
  // getWorkspaceSize at the profile's largest shapes: what the op needs there bounds every smaller call
  template <class Op>
  size_t workspace_op(const Op& op, const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_in) const noexcept {
    try {
      const std::vector<ops::TensorDesc> ins = descs_of(in, nb_in, /*max=*/true);
      return op.workspace(ins.data(), nb_in);
    } catch (const std::exception& e) {
      report(name_, e.what());
      return 0;
    }
  }
  template <class Op>
  int32_t enqueue_op(const Op& op, const nvinfer1::PluginTensorDesc* in_desc, const void* const* inputs,
                     void* const* outputs, void* workspace, cudaStream_t stream) noexcept {
    try {
      // enqueue is not told how many inputs there are: the attributes say it
      const std::vector<ops::TensorDesc> ins = descs_of(in_desc, op.expected_inputs());
      const int nb = static_cast<int>(ins.size());
      // TensorRT's workspace is getWorkspaceSize's at the largest shapes: at least what these need
      if (op.enqueue(ins.data(), nb, inputs, outputs, workspace, op.workspace(ins.data(), nb), stream) == RESQ_OK)
        return 0;
      report(name_, resq_triton_last_error());
    } catch (const std::exception& e) {
      report(name_, e.what());
    }
    return -1;
  }

  // spec input index of the pos-th tensor TensorRT passes (absent optional inputs are skipped)
  virtual int spec_input(int32_t pos, int32_t nb_inputs) const { (void)nb_inputs; return pos; }
  const char* name_;
  const char* version_;
  const char* const* in_dtypes_;
  int n_spec_inputs_;
  const char* const* out_dtypes_;
  int n_outputs_;
  const int* out_aliases_;
  Attributes attrs_;
  int32_t nb_inputs_ = -1;
};

// Creator of one op: the fields it accepts come from the generated header.
class CreatorBase : public nvinfer1::IPluginCreatorV3One {
 public:
  CreatorBase(const char* name, const char* version, std::vector<const char*> int_attrs);
  const char* getPluginName() const noexcept override { return name_; }
  const char* getPluginVersion() const noexcept override { return version_; }
  const char* getPluginNamespace() const noexcept override { return RESQ_SPEC_PLUGIN_NAMESPACE; }
  const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override { return &collection_; }

 private:
  const char* name_;
  const char* version_;
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection collection_{};
};

void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept;

}  // namespace trt
}  // namespace resq
