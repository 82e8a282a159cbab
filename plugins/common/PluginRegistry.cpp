// Entry points TensorRT looks up when it loads this library dynamically (trtexec --dynamicPlugins,
// IPluginRegistry::loadLibrary): the creators, one per resq op, and the logger finder.
#include "HadamardPlugin.h"
#include "KVCacheAttentionPlugin.h"
#include "MixedLinearPlugin.h"
#include "PluginUtils.h"
#include "resq_kernels.h"
#include "resq_ops.h"

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
