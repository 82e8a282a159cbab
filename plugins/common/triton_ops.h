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
