// The ops' TensorRT-free layer, shared part: what a TensorRT plugin does between "the node's integer
// fields and its tensors' dims and dtypes" and the launch lives in one class per op (MixedLinearOp,
// HadamardOp, KVAttentionOp) built into libresq_triton.so, so that CI drives the very same code
// through ctypes (resq_op_check / resq_op_enqueue) without TensorRT headers, and the IPluginV3
// classes only translate PluginField / PluginTensorDesc into these plain types.
#pragma once
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

#include "triton_op_call.h"

// the op classes are called from libresq_plugins.so, which links this library
#define RESQ_OP_API __attribute__((visibility("default")))

namespace resq {
namespace ops {

using TensorDesc = ResQTensorDesc;

// The INT attributes of a node by name; absent ones take the op's defaults (ops.json).
class Fields {
 public:
  int get(const char* name, int fallback) const {
    auto it = ints_.find(name);
    return it == ints_.end() ? fallback : it->second;
  }
  int require(const char* name) const {  // std::invalid_argument when missing (the creator's refusal)
    auto it = ints_.find(name);
    if (it == ints_.end()) throw std::invalid_argument(std::string("missing attribute ") + name);
    return it->second;
  }
  void set(const char* name, int32_t value) { ints_[name] = value; }
  const std::map<std::string, int32_t>& all() const { return ints_; }

 protected:
  std::map<std::string, int32_t> ints_;
};

// rows of a [..., K] tensor: the product of every dimension but the last
RESQ_OP_API int64_t rows_of(const TensorDesc& d);
// "[2, 5, 64]"
RESQ_OP_API std::string dims_text(const TensorDesc& d);
// a launch's status; a failure's message (resq_triton_last_error) says the kernel failed and why
RESQ_OP_API int launched(int status);
// "" when the dtype of the pos-th listed tensor is the spec's, else the problem
RESQ_OP_API std::string check_dtype(const char* what, int pos, const TensorDesc& d, const char* spec_dtype);

}  // namespace ops
}  // namespace resq
