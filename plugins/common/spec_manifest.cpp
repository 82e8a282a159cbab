// Exposes what the compiled code believes the contract is, so that tests can compare it with
// ops.json (the op spec) and with the ctypes mirror of resq_params.h (the parameter structs).
#include <cstddef>
#include <string>

#include "resq_cpu_ref.h"
#include "resq_ops.h"

RESQ_API const char* resq_spec_manifest(void) { return RESQ_SPEC_MANIFEST; }

RESQ_API int resq_abi_version(void) { return RESQ_ABI_VERSION; }

// The layout arithmetic of resq_layout.h, exported so callers (Python) never duplicate it.
RESQ_API int resq_layout_of(const ResQLinearShape* s, ResQLinearLayout* out) { return resq_linear_layout(s, out); }

// Bytes of one cached K/V row (resq_kv_row_bytes), or -RESQ_ERR_INVALID for a shape outside the contract.
RESQ_API int resq_kv_row_bytes_of(const ResQKVShape* s) {
  return resq_kv_check(s) == RESQ_OK ? resq_kv_row_bytes(s) : -RESQ_ERR_INVALID;
}

namespace {

#define RESQ_FIELD(S, f) " " #f ":" + std::to_string(offsetof(S, f))
#define RESQ_STRUCT(S, fields) std::string(#S " ") + std::to_string(sizeof(S)) + fields + "\n"

std::string params_manifest() {
  std::string m;
  m += RESQ_STRUCT(ResQLinearShape, RESQ_FIELD(ResQLinearShape, k) + RESQ_FIELD(ResQLinearShape, k_low) +
                   RESQ_FIELD(ResQLinearShape, low_groups) + RESQ_FIELD(ResQLinearShape, high_groups) +
                   RESQ_FIELD(ResQLinearShape, a_bits_low) + RESQ_FIELD(ResQLinearShape, a_bits_high));
  m += RESQ_STRUCT(ResQKVShape, RESQ_FIELD(ResQKVShape, batch) + RESQ_FIELD(ResQKVShape, num_heads) +
                   RESQ_FIELD(ResQKVShape, num_kv_heads) + RESQ_FIELD(ResQKVShape, head_dim) +
                   RESQ_FIELD(ResQKVShape, high_channels) + RESQ_FIELD(ResQKVShape, kv_bits) +
                   RESQ_FIELD(ResQKVShape, high_bits));
  m += RESQ_STRUCT(ResQActCodes, RESQ_FIELD(ResQActCodes, q_low) + RESQ_FIELD(ResQActCodes, q_high) +
                   RESQ_FIELD(ResQActCodes, sx) + RESQ_FIELD(ResQActCodes, zx));
  m += RESQ_STRUCT(ResQOpInputs, RESQ_FIELD(ResQOpInputs, at));
  m += RESQ_STRUCT(ResQQuantizeActParams, RESQ_FIELD(ResQQuantizeActParams, shape) +
                   RESQ_FIELD(ResQQuantizeActParams, tokens) + RESQ_FIELD(ResQQuantizeActParams, x) +
                   RESQ_FIELD(ResQQuantizeActParams, x_dtype) + RESQ_FIELD(ResQQuantizeActParams, out));
  m += RESQ_STRUCT(ResQPrepareWeightsParams, RESQ_FIELD(ResQPrepareWeightsParams, shape) +
                   RESQ_FIELD(ResQPrepareWeightsParams, n) + RESQ_FIELD(ResQPrepareWeightsParams, w_low) +
                   RESQ_FIELD(ResQPrepareWeightsParams, w_high) + RESQ_FIELD(ResQPrepareWeightsParams, w_low_p) +
                   RESQ_FIELD(ResQPrepareWeightsParams, w_high_p) + RESQ_FIELD(ResQPrepareWeightsParams, wsum));
  m += RESQ_STRUCT(ResQPrepareLqerAParams, RESQ_FIELD(ResQPrepareLqerAParams, shape) +
                   RESQ_FIELD(ResQPrepareLqerAParams, rank) + RESQ_FIELD(ResQPrepareLqerAParams, a) +
                   RESQ_FIELD(ResQPrepareLqerAParams, a_p) + RESQ_FIELD(ResQPrepareLqerAParams, asum));
  m += RESQ_STRUCT(ResQLqerProjectParams, RESQ_FIELD(ResQLqerProjectParams, shape) +
                   RESQ_FIELD(ResQLqerProjectParams, tokens) + RESQ_FIELD(ResQLqerProjectParams, rank) +
                   RESQ_FIELD(ResQLqerProjectParams, act) + RESQ_FIELD(ResQLqerProjectParams, in) +
                   RESQ_FIELD(ResQLqerProjectParams, qa) + RESQ_FIELD(ResQLqerProjectParams, sa));
  m += RESQ_STRUCT(ResQMixedGemmParams, RESQ_FIELD(ResQMixedGemmParams, shape) + RESQ_FIELD(ResQMixedGemmParams, tokens) +
                   RESQ_FIELD(ResQMixedGemmParams, n) + RESQ_FIELD(ResQMixedGemmParams, rank) +
                   RESQ_FIELD(ResQMixedGemmParams, act) + RESQ_FIELD(ResQMixedGemmParams, in) +
                   RESQ_FIELD(ResQMixedGemmParams, qa) + RESQ_FIELD(ResQMixedGemmParams, sa) +
                   RESQ_FIELD(ResQMixedGemmParams, y) + RESQ_FIELD(ResQMixedGemmParams, y_dtype) +
                   RESQ_FIELD(ResQMixedGemmParams, mma));
  m += RESQ_STRUCT(ResQMixedLinearParams, RESQ_FIELD(ResQMixedLinearParams, shape) +
                   RESQ_FIELD(ResQMixedLinearParams, tokens) + RESQ_FIELD(ResQMixedLinearParams, n) +
                   RESQ_FIELD(ResQMixedLinearParams, rank) + RESQ_FIELD(ResQMixedLinearParams, in) +
                   RESQ_FIELD(ResQMixedLinearParams, x_dtype) + RESQ_FIELD(ResQMixedLinearParams, y) +
                   RESQ_FIELD(ResQMixedLinearParams, y_dtype) + RESQ_FIELD(ResQMixedLinearParams, mma) +
                   RESQ_FIELD(ResQMixedLinearParams, workspace) + RESQ_FIELD(ResQMixedLinearParams, workspace_size));
  m += RESQ_STRUCT(ResQHadamardParams, RESQ_FIELD(ResQHadamardParams, rows) + RESQ_FIELD(ResQHadamardParams, n) +
                   RESQ_FIELD(ResQHadamardParams, a) + RESQ_FIELD(ResQHadamardParams, x) +
                   RESQ_FIELD(ResQHadamardParams, left) + RESQ_FIELD(ResQHadamardParams, y));
  m += RESQ_STRUCT(ResQRotateParams, RESQ_FIELD(ResQRotateParams, rows) + RESQ_FIELD(ResQRotateParams, d) +
                   RESQ_FIELD(ResQRotateParams, x) + RESQ_FIELD(ResQRotateParams, u) + RESQ_FIELD(ResQRotateParams, y));
  m += RESQ_STRUCT(ResQKVCache, RESQ_FIELD(ResQKVCache, codes) + RESQ_FIELD(ResQKVCache, scales) +
                   RESQ_FIELD(ResQKVCache, zeros) + RESQ_FIELD(ResQKVCache, capacity));
  m += RESQ_STRUCT(ResQKVAppendParams, RESQ_FIELD(ResQKVAppendParams, shape) + RESQ_FIELD(ResQKVAppendParams, seq) +
                   RESQ_FIELD(ResQKVAppendParams, past_length) + RESQ_FIELD(ResQKVAppendParams, x) +
                   RESQ_FIELD(ResQKVAppendParams, cache));
  m += RESQ_STRUCT(ResQKVAttentionParams, RESQ_FIELD(ResQKVAttentionParams, shape) +
                   RESQ_FIELD(ResQKVAttentionParams, seq) + RESQ_FIELD(ResQKVAttentionParams, past_length) +
                   RESQ_FIELD(ResQKVAttentionParams, q) + RESQ_FIELD(ResQKVAttentionParams, k) +
                   RESQ_FIELD(ResQKVAttentionParams, v) + RESQ_FIELD(ResQKVAttentionParams, out) +
                   RESQ_FIELD(ResQKVAttentionParams, workspace) + RESQ_FIELD(ResQKVAttentionParams, workspace_size));
  return m;
}

}  // namespace

RESQ_API const char* resq_params_manifest(void) {
  static const std::string manifest = params_manifest();
  return manifest.c_str();
}
