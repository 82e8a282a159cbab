// ResQMixedLinearPrepared without TensorRT: the attributes (defaults, what the GPU kernels take:
// ops.json's "gpu" entry), which spec input each listed tensor is (ops.json's present_if rule), the
// weights' dims against the kernel layout, the workspace, and the launch through the seam. The
// TensorRT plugin (MixedLinearPlugin) and resq_op_enqueue (ctypes, CI) are adapters over this class.
#pragma once
#include <cstddef>
#include <string>

#include "resq_params.h"
#include "triton_op.h"

namespace resq {
namespace ops {

class RESQ_OP_API MixedLinearOp {
 public:
  // std::invalid_argument (its text the creator's error) for a missing k_low or an activation
  // width the kernels lack
  explicit MixedLinearOp(const Fields& fields);
  const Fields& fields() const { return fields_; }
  bool present(int spec) const;  // whether a node lists this spec input
  int compact(int spec) const;   // position of a spec input among the listed ones, -1 when absent
  int expected_inputs() const;
  int spec_input(int pos) const;  // the spec index of the pos-th listed tensor
  // configurePlugin's check: dtypes, the weights against the kernel layout of the attributes; "" when
  // they fit. A K not known yet (-1) leaves the weights to the kernel, which refuses a K that does not fit.
  std::string check(const TensorDesc* in, int nb_in, const TensorDesc* out, int nb_out) const;
  // bytes of the intermediates at these (largest) shapes
  size_t workspace(const TensorDesc* in, int nb_in) const;
  // the launches; a ResQStatus, the message in resq_triton_last_error()
  int enqueue(const TensorDesc* in, int nb_in, const void* const* inputs, void* const* outputs, void* workspace,
              size_t workspace_size, void* stream) const;

 private:
  ResQLinearShape shape(int64_t k) const;
  ResQMixedLinearParams params(const TensorDesc* in) const;
  Fields fields_;
};

}  // namespace ops
}  // namespace resq
