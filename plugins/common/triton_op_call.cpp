// resq_op_check / resq_op_enqueue: a node handed over as plain C (ctypes, the tests' harness) goes
// through the same op classes the TensorRT plugins adapt, so CI runs that code without TensorRT.
#include <cstring>
#include <exception>
#include <string>

#include "hadamard_op.h"
#include "kv_attention_op.h"
#include "mixed_linear_op.h"
#include "resq_ops.h"
#include "triton_loader.h"
#include "triton_op.h"

namespace resq {
namespace ops {

int64_t rows_of(const TensorDesc& d) {
  int64_t rows = 1;
  for (int i = 0; i + 1 < d.nb_dims; ++i) rows *= d.dims[i];
  return rows;
}

std::string dims_text(const TensorDesc& d) {
  std::string s = "[";
  for (int i = 0; i < d.nb_dims; ++i) s += (i ? ", " : "") + std::to_string(d.dims[i]);
  return s + "]";
}

std::string check_dtype(const char* what, int pos, const TensorDesc& d, const char* spec_dtype) {
  if (d.dtype && std::strcmp(d.dtype, spec_dtype) == 0) return "";
  // TensorRT has no uint8 plugin I/O: its flavour carries the contract's uint8 tensors (KV codes, zero
  // points) as int8 with the same bytes, and the kernels read them as uint8
  if (d.dtype && !std::strcmp(spec_dtype, "uint8") && !std::strcmp(d.dtype, "int8")) return "";
  return std::string(what) + " " + std::to_string(pos) + " is " + (d.dtype ? d.dtype : "of no dtype") + ", the op takes " +
         spec_dtype;
}

int launched(int status) {
  if (status == RESQ_OK) return status;
  return triton::fail(status, "kernel failed: status " + std::to_string(status) + ": " + resq_triton_last_error());
}

namespace {

Fields fields_of(const ResQOpCall& c) {
  Fields f;
  for (int i = 0; i < c.n_fields; ++i) f.set(c.field_names[i], c.field_values[i]);
  return f;
}

bool well_formed(const ResQOpCall* c) {
  if (!c || !c->op || c->n_fields < 0 || c->nb_in < 0 || c->nb_out < 0) return false;
  if ((c->n_fields && (!c->field_names || !c->field_values)) || (c->nb_in && !c->in) || (c->nb_out && !c->out))
    return false;
  for (int i = 0; i < c->n_fields; ++i)
    if (!c->field_names[i]) return false;
  for (int i = 0; i < c->nb_in + c->nb_out; ++i) {
    const ResQTensorDesc& d = i < c->nb_in ? c->in[i] : c->out[i - c->nb_in];
    if (d.nb_dims < 0 || d.nb_dims > RESQ_MAX_TENSOR_DIMS) return false;
  }
  return true;
}

// the outputs of an op (the linear and the Hadamard have one; the attention its Y and six present caches)
template <class Op>
int outputs_of() { return 1; }
template <>
int outputs_of<KVAttentionOp>() { return KVAttentionOp::num_outputs(); }

// the creator (constructor), configurePlugin (check), getWorkspaceSize, then enqueue when asked
template <class Op>
int run(const ResQOpCall& c, size_t* workspace_size, bool launch, const void* const* inputs, void* const* outputs,
        void* workspace, size_t given, void* stream) {
  const Op op(fields_of(c));
  const std::string problem = op.check(c.in, c.nb_in, c.out, c.nb_out);
  if (!problem.empty()) return triton::fail(RESQ_ERR_INVALID, std::string(c.op) + ": " + problem);
  if (c.nb_out != outputs_of<Op>())
    return triton::fail(RESQ_ERR_INVALID, std::string(c.op) + ": " + std::to_string(outputs_of<Op>()) +
                                              " outputs, not " + std::to_string(c.nb_out));
  if (workspace_size) *workspace_size = op.workspace(c.in, c.nb_in);
  if (!launch) return RESQ_OK;
  if (!inputs || !outputs) return triton::fail(RESQ_ERR_INVALID, std::string(c.op) + ": no tensor pointers");
  return op.enqueue(c.in, c.nb_in, inputs, outputs, workspace, given, stream);
}

int dispatch(const ResQOpCall* c, size_t* workspace_size, bool launch, const void* const* inputs,
             void* const* outputs, void* workspace, size_t given, void* stream) noexcept {
  try {
    if (!well_formed(c)) return triton::fail(RESQ_ERR_INVALID, "malformed ResQOpCall");
    if (!std::strcmp(c->op, spec::ResQMixedLinearPrepared::kName))
      return run<MixedLinearOp>(*c, workspace_size, launch, inputs, outputs, workspace, given, stream);
    if (!std::strcmp(c->op, spec::ResQHadamard::kName))
      return run<HadamardOp>(*c, workspace_size, launch, inputs, outputs, workspace, given, stream);
    if (!std::strcmp(c->op, spec::ResQKVCacheAttention::kName))
      return run<KVAttentionOp>(*c, workspace_size, launch, inputs, outputs, workspace, given, stream);
    return triton::fail(RESQ_ERR_UNSUPPORTED, std::string("no TensorRT-free layer for op ") + c->op +
                                                  " (ResQMixedLinearPrepared, ResQHadamard, ResQKVCacheAttention)");
  } catch (const std::exception& e) {  // the creator's refusal (std::invalid_argument)
    return triton::fail(RESQ_ERR_INVALID, std::string(c->op) + ": " + e.what());
  }
}

}  // namespace
}  // namespace ops
}  // namespace resq

int resq_op_check(const ResQOpCall* call, size_t* workspace_size) {
  return resq::ops::dispatch(call, workspace_size, false, nullptr, nullptr, nullptr, 0, nullptr);
}

int resq_op_enqueue(const ResQOpCall* call, const void* const* inputs, void* const* outputs, void* workspace,
                    size_t workspace_size, void* stream) {
  return resq::ops::dispatch(call, nullptr, true, inputs, outputs, workspace, workspace_size, stream);
}
