// The resq ops on the Triton cubins (libresq_triton.so), through the process-wide launcher of the
// seam (triton_loader.h): the C++ form of resq_export/kernels/launch.py's policy. The parameter
// structs are the CUDA library's (resq_params.h); float32 activations and outputs.
#pragma once
#include <stddef.h>

#include "resq_params.h"
#include "triton_loader.h"

RESQ_TAPI size_t resq_triton_mixed_linear_workspace(const ResQMixedLinearParams* p);
RESQ_TAPI int resq_triton_mixed_linear(const ResQMixedLinearParams* p, void* stream);
RESQ_TAPI int resq_triton_hadamard(const ResQHadamardParams* p, void* stream);
// ResQKVCacheAttention (kv_launch.py): U_C on q and k when `rotation` is given, the new k, v rows
// [B, Hkv, seq, D] appended in place into p's caches at past_length[b] (device memory), the attention
// of p->q into p->out. The workspace: resq_triton_kv_attention_workspace at the largest batch
// (p->shape.batch) and seq (p->seq) bounds every smaller call.
RESQ_TAPI size_t resq_triton_kv_attention_workspace(const ResQKVAttentionParams* p, int rotation);
RESQ_TAPI int resq_triton_kv_attention(const ResQKVAttentionParams* p, const float* k, const float* v,
                                       const float* rotation, void* stream);
