/* The C entry of the ops' TensorRT-free layer (libresq_triton.so): an op node described by its
 * integer attributes and its tensors' dims and dtypes, checked and enqueued exactly as the TensorRT
 * plugins do (they are thin adapters over the same layer: mixed_linear_op.h, hadamard_op.h,
 * kv_attention_op.h). Plain C and no CUDA header, so ctypes (tools/op_enqueue_check.py) and the
 * header-built test harness can share it. Errors: a ResQStatus, the message in resq_triton_last_error(). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RESQ_MAX_TENSOR_DIMS 8

typedef struct ResQTensorDesc {
  int32_t nb_dims;
  int64_t dims[RESQ_MAX_TENSOR_DIMS];  /* -1: not known yet (a dynamic dimension at build time) */
  const char* dtype;                   /* ops.json's names: "float32", "int8", "int32", ... */
} ResQTensorDesc;

/* A node: the op's name (ops.json), its INT attributes as the ONNX parser passes them, the tensors
 * it lists (the TensorRT flavour lists only present inputs), its outputs. */
typedef struct ResQOpCall {
  const char* op;
  int32_t n_fields;
  const char* const* field_names;
  const int32_t* field_values;
  int32_t nb_in;
  const ResQTensorDesc* in;
  int32_t nb_out;
  const ResQTensorDesc* out;
} ResQOpCall;

/* What the creator, configurePlugin and getWorkspaceSize do: the attributes (defaults, what the GPU
 * kernels take), the tensors against them; *workspace_size the bytes enqueue needs. */
__attribute__((visibility("default"))) int resq_op_check(const ResQOpCall* call, size_t* workspace_size);
/* The check, then enqueue: the kernels' launches on `stream` through the process-wide launcher (the
 * CUDA one, or the recording one of resq_triton_record_begin, which takes host buffers). */
__attribute__((visibility("default"))) int resq_op_enqueue(const ResQOpCall* call, const void* const* inputs,
                                                           void* const* outputs, void* workspace,
                                                           size_t workspace_size, void* stream);

#ifdef __cplusplus
}
#endif
