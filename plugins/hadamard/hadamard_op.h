// ResQHadamard without TensorRT: the tensors' check (X [..., K], left [a, a], K / a a power of two
// whose butterflies and left factor are compiled) and the launch through the seam. The TensorRT plugin
// (HadamardPlugin) and resq_op_enqueue (ctypes, CI) are adapters over this class.
#pragma once
#include <cstddef>
#include <string>

#include "triton_op.h"

namespace resq {
namespace ops {

class RESQ_OP_API HadamardOp {
 public:
  explicit HadamardOp(const Fields& fields) : fields_(fields) {}  // no INT attributes
  const Fields& fields() const { return fields_; }
  int expected_inputs() const;
  int spec_input(int pos) const { return pos; }  // no optional input
  // configurePlugin's check; "" when the tensors fit (a K not known yet waits for the kernel)
  std::string check(const TensorDesc* in, int nb_in, const TensorDesc* out, int nb_out) const;
  size_t workspace(const TensorDesc*, int) const { return 0; }
  // the launches; a ResQStatus, the message in resq_triton_last_error()
  int enqueue(const TensorDesc* in, int nb_in, const void* const* inputs, void* const* outputs, void* workspace,
              size_t workspace_size, void* stream) const;

 private:
  Fields fields_;
};

}  // namespace ops
}  // namespace resq
