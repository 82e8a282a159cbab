// Entry points TensorRT looks up when it loads this library dynamically (trtexec --dynamicPlugins,
// IPluginRegistry::loadLibrary): the creators, one per resq op, and the logger finder.
#include "HadamardPlugin.h"
#include "KVCacheAttentionPlugin.h"
#include "MixedLinearPlugin.h"
#include "PluginUtils.h"
#include "resq_kernels.h"
#include "resq_ops.h"

#include <memory>
#include <string>
#include <vector>

extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators) {
  static resq::trt::MixedLinearCreator linear;
  static resq::trt::HadamardCreator hadamard;
  static resq::trt::KVCacheAttentionCreator attention;
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&linear, &hadamard, &attention};
  if (resq_cuda_abi_version() != RESQ_ABI_VERSION) {  // a libresq_kernels.so from another build beside us
    resq::trt::report("libresq_plugins", "libresq_kernels.so has C API version " +
                                             std::to_string(resq_cuda_abi_version()) + ", these plugins need " +
                                             std::to_string(RESQ_ABI_VERSION) + ": rebuild both from one tree");
    nbCreators = 0;
    return nullptr;
  }
  nbCreators = 3;
  return creators;
}

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  resq::trt::set_logger_finder(finder);
}

// What a plugin of `op`, created through its creator with these INT fields (a node's attributes),
// answers TensorRT's getAliasedInput(output) with: the input index, -1 for none; -2 when the library
// has no such op or the creator refuses the fields; -3 when the plugin's build interface is not the V2
// one that TensorRT asks. The engine build's network check calls it for every aliased output in ops.json.
extern "C" __attribute__((visibility("default"))) int32_t resq_plugin_aliased_input(
    const char* op, const char* const* names, const int32_t* values, int32_t n_fields, int32_t output) {
  int32_t n = 0;
  nvinfer1::IPluginCreatorInterface* const* creators = getCreators(n);
  std::vector<nvinfer1::PluginField> fields;
  for (int32_t i = 0; i < n_fields; ++i) fields.emplace_back(names[i], &values[i], nvinfer1::PluginFieldType::kINT32, 1);
  const nvinfer1::PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
  for (int32_t c = 0; c < n; ++c) {
    auto* creator = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[c]);
    if (std::string(creator->getPluginName()) != op) continue;
    std::unique_ptr<nvinfer1::IPluginV3> plugin(creator->createPlugin(op, &fc, nvinfer1::TensorRTPhase::kBUILD));
    if (!plugin) return -2;
    nvinfer1::IPluginCapability* build = plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD);
    const nvinfer1::InterfaceInfo info = build ? build->getInterfaceInfo() : nvinfer1::InterfaceInfo{};
    if (!build || !info.kind || std::string(info.kind) != "PLUGIN_V3ONE_BUILD" || info.major != 2) return -3;
    return static_cast<nvinfer1::IPluginV3OneBuildV2*>(build)->getAliasedInput(output);
  }
  return -2;
}
