// The Triton kernels embedded in libresq_triton.so: one row per (configuration, architecture),
// generated at build time by plugins/tools/compile_triton.py (build/plugins/triton/triton_kernels.cpp)
// from resq_export.kernels.configs.all_configs(). Plain C, no CUDA header: the Python tests read it
// through ctypes (resq_export/native/triton.py mirrors the struct).
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ResQTritonKernel {
  const char* name;           // the configuration's name (KernelConfig.name), what the plugins launch
  const char* arch;           // "80", "86", "89", "90a", "120"
  int32_t sm;                 // 80, 86, 89, 90, 120
  int32_t arch_specific;      // 1 for an `a` target (runs on exactly that SM), 0 otherwise
  const char* kernel;         // the entry function's name in the cubin
  int32_t num_warps;          // block = num_warps * 32 threads
  int32_t shared;             // dynamic shared memory bytes of a launch (Triton's metadata "shared")
  int32_t static_shared;      // static shared memory of the cubin (cuobjdump -res-usage)
  int32_t registers;          // registers per thread
  int32_t num_params;         // parameters in launch order, the two trailing scratch pointers included
  const char* params;         // "name:type[/16],..." (/16: compiled assuming divisibility by 16)
  const unsigned char* cubin;
  size_t cubin_bytes;
  const char* sha256;         // of the cubin, hex
  const char* constexprs;     // "BLOCK_M=16,BLOCK_N=64,..." the configuration was compiled with
} ResQTritonKernel;

#ifdef __cplusplus
}
#endif
