// CPU references of every kernel's contract (libresq_cpu_ref.so). Same buffers, layouts and
// parameter structs as the CUDA entry points in resq_kernels.h, host pointers, no stream. They exist to
// prove packing, layouts and epilogue arithmetic bit-exactly against the Python reference executor
// on machines without a GPU, and are the oracle of the GPU tests.
#pragma once
#include <stdint.h>
#include "resq_layout.h"
#include "resq_params.h"

#ifdef __cplusplus
#define RESQ_API extern "C" __attribute__((visibility("default")))
#else
#define RESQ_API __attribute__((visibility("default")))
#endif

// "ResQMixedLinear v1 in=... out=... attrs=..." lines compiled from the generated resq_ops.h.
RESQ_API const char* resq_spec_manifest(void);
// "ResQMixedGemmParams <sizeof> shape:0 tokens:24 ..." lines: each struct of resq_params.h with
// its size and its fields' offsets, as this compiler lays them out.
RESQ_API const char* resq_params_manifest(void);
// The C API's version (RESQ_ABI_VERSION of ops.json's abi_version, at this library's build).
RESQ_API int resq_abi_version(void);
RESQ_API int resq_layout_of(const ResQLinearShape* s, ResQLinearLayout* out);
RESQ_API int resq_kv_row_bytes_of(const ResQKVShape* s);

// The kernels' contract on host pointers, one parameter struct each (resq_params.h). The CPU
// references take float32 activations and write float32 outputs only; they ignore mma.
RESQ_API int resq_cpu_quantize_act(const ResQQuantizeActParams* p);
RESQ_API int resq_cpu_prepare_weights(const ResQPrepareWeightsParams* p);
RESQ_API int resq_cpu_prepare_lqer_a(const ResQPrepareLqerAParams* p);
RESQ_API int resq_cpu_lqer_project(const ResQLqerProjectParams* p);
RESQ_API int resq_cpu_mixed_gemm(const ResQMixedGemmParams* p);
RESQ_API int resq_cpu_hadamard(const ResQHadamardParams* p);
RESQ_API int resq_cpu_rotate(const ResQRotateParams* p);
RESQ_API int resq_cpu_kv_append(const ResQKVAppendParams* p);
RESQ_API int resq_cpu_kv_attention(const ResQKVAttentionParams* p);
