#include "mixed_linear_op.h"

#include <stdexcept>
#include <vector>

#include "resq_ops.h"
#include "triton_loader.h"
#include "triton_ops.h"

namespace resq {
namespace ops {

namespace S = resq::spec::ResQMixedLinearPrepared;

namespace {
bool gpu_takes_a_bits(int bits) {
  for (int i = 0; i < S::gpu_a_bits_count; ++i)
    if (S::gpu_a_bits[i] == bits) return true;
  return false;
}

std::string gpu_a_bits_text() {
  std::string s;
  for (int i = 0; i < S::gpu_a_bits_count; ++i) s += (i ? (i + 1 == S::gpu_a_bits_count ? " or " : ", ") : "") +
                                                     std::to_string(S::gpu_a_bits[i]);
  return s;
}
}  // namespace

MixedLinearOp::MixedLinearOp(const Fields& fields) : fields_(fields) {
  fields_.require(S::attr_k_low);
  // what the GPU kernels take (ops.json's "gpu" entry, which the exporter's engine check reads too):
  // refused when the engine is built, not at its first call; a part without groups is not looked at
  const struct {
    const char* attr;
    int groups, bits;
  } parts[] = {{S::attr_a_bits_low, fields_.get(S::attr_low_groups, S::default_low_groups),
                fields_.get(S::attr_a_bits_low, S::default_a_bits_low)},
               {S::attr_a_bits_high, fields_.get(S::attr_high_groups, S::default_high_groups),
                fields_.get(S::attr_a_bits_high, S::default_a_bits_high)}};
  for (const auto& p : parts)
    if (p.groups > 0 && !gpu_takes_a_bits(p.bits))
      throw std::invalid_argument(std::string("the GPU linear quantises each part's activations to ") +
                                  gpu_a_bits_text() + " bits, not " + p.attr + " " + std::to_string(p.bits));
}

// The TensorRT flavour (resq_export/export/writer.py) lists only present inputs, so the attributes
// alone say where each input is: ops.json's present_if rule, generated into resq_ops.h.
bool MixedLinearOp::present(int spec) const { return S::input_present(spec, fields_); }

int MixedLinearOp::compact(int spec) const {
  if (spec < 0 || spec >= S::kNumInputs || !present(spec)) return -1;
  int pos = 0;
  for (int i = 0; i < spec; ++i) pos += present(i) ? 1 : 0;
  return pos;
}

int MixedLinearOp::expected_inputs() const {
  int n = 0;
  for (int spec = 0; spec < S::kNumInputs; ++spec) n += present(spec) ? 1 : 0;
  return n;
}

int MixedLinearOp::spec_input(int pos) const {
  for (int spec = 0; spec < S::kNumInputs; ++spec)
    if (compact(spec) == pos) return spec;
  return -1;
}

ResQLinearShape MixedLinearOp::shape(int64_t k) const {
  ResQLinearShape s{};
  s.k = static_cast<int32_t>(k);
  s.k_low = fields_.get(S::attr_k_low, 0);
  s.low_groups = fields_.get(S::attr_low_groups, S::default_low_groups);
  s.high_groups = fields_.get(S::attr_high_groups, S::default_high_groups);
  s.a_bits_low = fields_.get(S::attr_a_bits_low, S::default_a_bits_low);
  s.a_bits_high = fields_.get(S::attr_a_bits_high, S::default_a_bits_high);
  return s;
}

std::string MixedLinearOp::check(const TensorDesc* in, int nb_in, const TensorDesc* out, int nb_out) const {
  if (nb_in != expected_inputs())
    return "got " + std::to_string(nb_in) + " inputs, the attributes imply " + std::to_string(expected_inputs()) +
           " (export with this resq-export's TensorRT flavour)";
  for (int pos = 0; pos < nb_in; ++pos) {
    const std::string bad = check_dtype("input", pos, in[pos], S::kInputDTypes[spec_input(pos)]);
    if (!bad.empty()) return bad;
  }
  for (int pos = 0; pos < nb_out; ++pos) {
    const std::string bad = check_dtype("output", pos, out[pos], S::kOutputDTypes[pos]);
    if (!bad.empty()) return bad;
  }
  const TensorDesc& x = in[compact(S::in_X)];
  if (x.nb_dims < 1) return "X has no dimensions (the op takes [..., K])";
  const int64_t k = x.dims[x.nb_dims - 1];
  if (k < 0) return "";  // K is static in our graphs; should a parser leave it dynamic, the kernel checks it
  const ResQLinearShape s = shape(k);
  ResQLinearLayout L;
  if (resq_linear_layout(&s, &L) != RESQ_OK)
    return "K " + std::to_string(k) + " does not fit the attributes (k_low " + std::to_string(s.k_low) + ", " +
           std::to_string(s.low_groups) + " + " + std::to_string(s.high_groups) + " groups)";
  const TensorDesc& ws = in[compact(S::in_wscale)];
  if (ws.nb_dims != 2) return "wscale is " + dims_text(ws) + ", not [N, G]";
  const int64_t n = ws.dims[0];
  const int rank = fields_.get(S::attr_lqer_rank, S::default_lqer_rank);
  struct Want {
    int spec;
    int64_t rows, cols;
  };
  const std::vector<Want> wants = {{S::in_weight_low, n, L.w_low_pitch},  {S::in_weight_high, n, L.w_high_pitch},
                                   {S::in_wscale, n, L.groups},           {S::in_weight_sums, n, L.groups},
                                   {S::in_bias, n, -1},                   {S::in_lqer_a, rank, L.a8_pitch},
                                   {S::in_lqer_a_sums, rank, L.groups},   {S::in_lqer_a_scale, rank, -1},
                                   {S::in_lqer_b, n, rank},               {S::in_lqer_b_scale, n, -1}};
  for (const Want& w : wants) {
    const int p = compact(w.spec);
    if (p < 0) continue;
    const TensorDesc& d = in[p];
    const bool fits = w.cols < 0 ? d.nb_dims == 1 && d.dims[0] == w.rows
                                 : d.nb_dims == 2 && d.dims[0] == w.rows && d.dims[1] == w.cols;
    if (!fits)
      return "input " + std::to_string(p) + " is " + dims_text(d) + ", not [" + std::to_string(w.rows) +
             (w.cols < 0 ? "" : ", " + std::to_string(w.cols)) +
             "] (the kernel layout of these attributes; export with this resq-export)";
  }
  if (n % S::gpu_n_multiple)
    return std::to_string(n) + " output features (the GPU GEMM needs a multiple of " +
           std::to_string(S::gpu_n_multiple) + ")";
  return "";
}

ResQMixedLinearParams MixedLinearOp::params(const TensorDesc* in) const {
  const TensorDesc& x = in[compact(S::in_X)];
  ResQMixedLinearParams p{};
  p.shape = shape(x.dims[x.nb_dims - 1]);
  p.tokens = rows_of(x);
  p.n = static_cast<int32_t>(in[compact(S::in_wscale)].dims[0]);
  p.rank = fields_.get(S::attr_lqer_rank, S::default_lqer_rank);
  p.x_dtype = RESQ_F32;
  p.y_dtype = RESQ_F32;
  return p;
}

size_t MixedLinearOp::workspace(const TensorDesc* in, int nb_in) const {
  if (nb_in != expected_inputs()) return 0;
  const ResQMixedLinearParams p = params(in);
  return resq_triton_mixed_linear_workspace(&p);
}

int MixedLinearOp::enqueue(const TensorDesc* in, int nb_in, const void* const* inputs, void* const* outputs,
                           void* workspace, size_t workspace_size, void* stream) const {
  if (nb_in != expected_inputs())
    return triton::fail(RESQ_ERR_INVALID, "got " + std::to_string(nb_in) + " inputs, the attributes imply " +
                                              std::to_string(expected_inputs()));
  ResQMixedLinearParams p = params(in);
  for (int spec = 0; spec < S::kNumInputs; ++spec) {
    const int pos = compact(spec);
    p.in.at[spec] = pos < 0 ? nullptr : inputs[pos];
  }
  p.y = outputs[S::out_Y];
  p.workspace = workspace;
  p.workspace_size = workspace_size;
  const size_t needed = resq_triton_mixed_linear_workspace(&p);
  if (!workspace || workspace_size < needed)
    return triton::fail(RESQ_ERR_INVALID, "a workspace of " + std::to_string(workspace_size) + " bytes, " +
                                              std::to_string(needed) + " needed");
  return launched(resq_triton_mixed_linear(&p, stream));
}

}  // namespace ops
}  // namespace resq
