// Exposes what the compiled code believes the op spec is, so a test can compare it with ops.json.
#include "resq_cpu_ref.h"
#include "resq_ops.h"

RESQ_API const char* resq_spec_manifest(void) { return RESQ_SPEC_MANIFEST; }

RESQ_API int resq_abi_version(void) { return RESQ_ABI_VERSION; }

// The layout arithmetic of resq_layout.h, exported so callers (Python) never duplicate it.
RESQ_API int resq_layout_of(const ResQLinearShape* s, ResQLinearLayout* out) { return resq_linear_layout(s, out); }
