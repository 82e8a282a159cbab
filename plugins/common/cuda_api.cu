// Error bookkeeping and device queries of the C API.
#include <cstdio>
#include <mutex>
#include <string>

#include "cuda_common.cuh"
#include "resq_ops.h"

#ifndef RESQ_CUDA_ARCH_LIST
#error "RESQ_CUDA_ARCH_LIST (the -gencode architectures, comma-separated) must be defined by the build"
#endif

namespace {
std::mutex g_mutex;
std::string g_last_error = "no error";
}  // namespace

namespace resq {

int record_cuda_error(cudaError_t e) {
  if (e == cudaSuccess) return RESQ_OK;
  std::lock_guard<std::mutex> lock(g_mutex);
  g_last_error = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  return e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ? RESQ_ERR_NO_DEVICE : RESQ_ERR_CUDA;
}

int device_sm() {
  int dev = 0, major = 0, minor = 0;
  int st = record_cuda_error(cudaGetDevice(&dev));
  if (st != RESQ_OK) return -st;
  st = record_cuda_error(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  if (st != RESQ_OK) return -st;
  st = record_cuda_error(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  if (st != RESQ_OK) return -st;
  return major * 10 + minor;
}

}  // namespace resq

RESQ_KAPI const char* resq_cuda_last_error(void) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_last_error.c_str();
}

RESQ_KAPI int resq_cuda_layout_of(const ResQLinearShape* s, ResQLinearLayout* out) { return resq_linear_layout(s, out); }

RESQ_KAPI int resq_cuda_device_sm(void) { return resq::device_sm(); }

RESQ_KAPI const char* resq_cuda_compiled_archs(void) { return RESQ_CUDA_ARCH_LIST; }

RESQ_KAPI int resq_cuda_abi_version(void) { return RESQ_ABI_VERSION; }
