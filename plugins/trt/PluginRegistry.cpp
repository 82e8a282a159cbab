// Entry point TensorRT looks up when it loads this library dynamically
// (trtexec --dynamicPlugins, IPluginRegistry::loadLibrary): one creator per resq op.
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
