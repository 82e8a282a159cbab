#include "PluginUtils.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace resq {
namespace trt {

using nvinfer1::DataType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;

DataType dtype_of(const char* spec_dtype) {
  if (!std::strcmp(spec_dtype, "float32")) return DataType::kFLOAT;
  if (!std::strcmp(spec_dtype, "int8")) return DataType::kINT8;
  // TensorRT has no uint8 plugin I/O: the exporter's TensorRT flavour carries the spec's uint8
  // tensors (KV codes, zero points) as int8 with the same bytes, and the kernels read them as uint8.
  if (!std::strcmp(spec_dtype, "uint8")) return DataType::kINT8;
  if (!std::strcmp(spec_dtype, "int32")) return DataType::kINT32;
  throw std::invalid_argument(std::string("ops.json dtype without a TensorRT type: ") + spec_dtype);
}

Attributes::Attributes(const nvinfer1::PluginFieldCollection* fc) {
  for (int32_t i = 0; fc && i < fc->nbFields; ++i) {
    const PluginField& f = fc->fields[i];
    if (f.type == PluginFieldType::kINT32 && f.length == 1 && f.data)
      ints_[f.name] = *static_cast<const int32_t*>(f.data);
    else if (f.type == PluginFieldType::kINT64 && f.length == 1 && f.data)
      ints_[f.name] = static_cast<int32_t>(*static_cast<const int64_t*>(f.data));
    // STRING fields (plugin_namespace, plugin_version) select the creator; nothing to keep
  }
}

const nvinfer1::PluginFieldCollection* Attributes::fields() {
  fields_.clear();
  for (auto& kv : ints_) fields_.emplace_back(kv.first.c_str(), &kv.second, PluginFieldType::kINT32, 1);
  collection_.nbFields = static_cast<int32_t>(fields_.size());
  collection_.fields = fields_.data();
  return &collection_;
}

namespace {
// ops.json's name of a TensorRT type (TensorRT has no uint8 plugin I/O: the spec's uint8 tensors travel
// as kINT8, see dtype_of, and the ops here take none)
const char* spec_name_of(DataType t) {
  switch (t) {
    case DataType::kFLOAT: return "float32";
    case DataType::kINT8: return "int8";
    case DataType::kINT32: return "int32";
    case DataType::kHALF: return "float16";
    default: return "unsupported";
  }
}

ops::TensorDesc desc_from(const nvinfer1::Dims& dims, DataType type) {
  ops::TensorDesc out{};
  out.nb_dims = dims.nbDims < 0 ? 0 : (dims.nbDims > RESQ_MAX_TENSOR_DIMS ? RESQ_MAX_TENSOR_DIMS : dims.nbDims);
  for (int i = 0; i < out.nb_dims; ++i) out.dims[i] = dims.d[i];
  out.dtype = spec_name_of(type);
  return out;
}
}  // namespace

ops::TensorDesc desc_of(const nvinfer1::PluginTensorDesc& d) { return desc_from(d.dims, d.type); }

std::vector<ops::TensorDesc> descs_of(const nvinfer1::PluginTensorDesc* d, int32_t n) {
  std::vector<ops::TensorDesc> out;
  for (int32_t i = 0; i < n; ++i) out.push_back(desc_of(d[i]));
  return out;
}

std::vector<ops::TensorDesc> descs_of(const nvinfer1::DynamicPluginTensorDesc* d, int32_t n, bool max) {
  std::vector<ops::TensorDesc> out;
  for (int32_t i = 0; i < n; ++i) out.push_back(desc_from(max ? d[i].max : d[i].desc.dims, d[i].desc.type));
  return out;
}

PluginBase::PluginBase(const char* name, const char* version, const char* const* in_dtypes, int n_spec_inputs,
                       const char* const* out_dtypes, int n_outputs, const int* out_aliases, Attributes attrs)
    : name_(name), version_(version), in_dtypes_(in_dtypes), n_spec_inputs_(n_spec_inputs), out_dtypes_(out_dtypes),
      n_outputs_(n_outputs), out_aliases_(out_aliases), attrs_(std::move(attrs)) {}

nvinfer1::IPluginCapability* PluginBase::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuildV2*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

int32_t PluginBase::getOutputDataTypes(DataType* out, int32_t nb_out, const DataType*, int32_t) const noexcept {
  try {
    for (int32_t i = 0; i < nb_out && i < n_outputs_; ++i) out[i] = dtype_of(out_dtypes_[i]);
    return 0;
  } catch (const std::exception& e) {
    report(name_, e.what());
    return -1;
  }
}

bool PluginBase::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* io, int32_t nb_in,
                                           int32_t nb_out) noexcept {
  try {
    if (pos < 0 || pos >= nb_in + nb_out) return false;
    if (io[pos].desc.format != nvinfer1::TensorFormat::kLINEAR) return false;
    const char* want = pos < nb_in ? in_dtypes_[spec_input(pos, nb_in)] : out_dtypes_[pos - nb_in];
    return io[pos].desc.type == dtype_of(want);
  } catch (const std::exception& e) {
    report(name_, e.what());
    return false;
  }
}

CreatorBase::CreatorBase(const char* name, const char* version, std::vector<const char*> int_attrs)
    : name_(name), version_(version) {
  for (const char* a : int_attrs) fields_.emplace_back(a, nullptr, PluginFieldType::kINT32, 1);
  collection_.nbFields = static_cast<int32_t>(fields_.size());
  collection_.fields = fields_.data();
}

namespace {
std::atomic<nvinfer1::ILoggerFinder*> logger_finder{nullptr};
}  // namespace

void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept { logger_finder.store(finder); }

void report(const char* plugin, const std::string& message) noexcept {
  const std::string line = std::string("[resq plugin ") + plugin + "] " + message;
  nvinfer1::ILoggerFinder* finder = logger_finder.load();
  nvinfer1::ILogger* logger = finder ? finder->findLogger() : nullptr;
  if (logger)
    logger->log(nvinfer1::ILogger::Severity::kERROR, line.c_str());
  else
    std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace trt
}  // namespace resq
