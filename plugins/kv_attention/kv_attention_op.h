// ResQKVCacheAttention without TensorRT: the attributes (defaults, the op contract, what the GPU
// kernels take: ops.json's "gpu" entry), which inputs a node lists (key_rotation, U_C, the only
// optional one, is last: ten inputs without it, eleven with it), the tensors' dims against the
// attributes and each other, the workspace, the copy of the past cache into present where they are
// not one buffer, and the launch (triton_kv_attention.cpp). The TensorRT plugin
// (KVCacheAttentionPlugin) and resq_op_enqueue (ctypes, CI) are adapters over this class.
#pragma once
#include <cstddef>
#include <string>

#include "resq_params.h"
#include "triton_op.h"

namespace resq {
namespace ops {

class RESQ_OP_API KVAttentionOp {
 public:
  // std::invalid_argument (its text the creator's error) for a missing required attribute, attributes
  // outside the op contract or outside what the GPU kernels take
  explicit KVAttentionOp(const Fields& fields);
  const Fields& fields() const { return fields_; }
  // whether a node listing nb_in tensors is one of the op's two forms (with or without U_C)
  static bool input_count_ok(int nb_in);
  // the position of key_rotation among nb_in listed tensors, -1 when the node has none
  static int rotation_input(int nb_in);
  static int num_outputs();
  // the shape the kernels take, for `batch` sequences
  ResQKVShape shape(int64_t batch) const;
  // configurePlugin's check: the input count, dtypes (the contract's uint8 also as the TensorRT
  // flavour's int8), Q/K/V/Y against the attributes, the six caches against the stored row of the
  // contract and each other, past_length [B], U_C [D, D], each present as its past; "" when they fit.
  // A dimension not known yet (-1) is left to the enqueue.
  std::string check(const TensorDesc* in, int nb_in, const TensorDesc* out, int nb_out) const;
  // bytes of the intermediates at these (largest) shapes: a bound for every smaller call
  size_t workspace(const TensorDesc* in, int nb_in) const;
  // the past cache into present where the runtime gave two buffers, then the launches; a ResQStatus,
  // the message in resq_triton_last_error()
  int enqueue(const TensorDesc* in, int nb_in, const void* const* inputs, void* const* outputs, void* workspace,
              size_t workspace_size, void* stream) const;

 private:
  Fields fields_;
};

}  // namespace ops
}  // namespace resq
