// Entry points TensorRT looks up when it loads this library dynamically (trtexec --dynamicPlugins,
// IPluginRegistry::loadLibrary): the creators, one per resq op, and the logger finder.
#include "HadamardPlugin.h"
#include "KVCacheAttentionPlugin.h"
#include "MixedLinearPlugin.h"

extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators) {
  static resq::trt::MixedLinearCreator linear;
  static resq::trt::HadamardCreator hadamard;
  static resq::trt::KVCacheAttentionCreator attention;
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&linear, &hadamard, &attention};
  nbCreators = 3;
  return creators;
}

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  resq::trt::set_logger_finder(finder);
}
