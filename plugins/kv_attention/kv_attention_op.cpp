#include "kv_attention_op.h"

#include <stdexcept>

#include "resq_ops.h"
#include "triton_loader.h"
#include "triton_ops.h"

namespace resq {
namespace ops {

namespace S = resq::spec::ResQKVCacheAttention;

namespace {
constexpr int kCaches = 6;  // past_{key,value}_{codes,scales,zeros}, in the spec's order

// a dimension known on both sides (build time may leave one at -1) that differs
bool differs(int64_t got, int64_t want) { return got >= 0 && want >= 0 && got != want; }

std::string expect(const char* what, const TensorDesc& d, const std::string& want) {
  return std::string(what) + " is " + dims_text(d) + ", not " + want;
}

// bytes per element of the t-th cache tensor: the scales are float32, codes and zeros one byte
size_t cache_element_bytes(int t) { return t % 3 == 1 ? 4 : 1; }

size_t elements(const TensorDesc& d) {
  size_t n = 1;
  for (int i = 0; i < d.nb_dims; ++i) n *= static_cast<size_t>(d.dims[i] < 0 ? 0 : d.dims[i]);
  return n;
}
}  // namespace

KVAttentionOp::KVAttentionOp(const Fields& fields) : fields_(fields) {
  fields_.require(S::attr_num_heads);
  fields_.require(S::attr_num_kv_heads);
  fields_.require(S::attr_head_dim);
  const ResQKVShape s = shape(1);  // checked now (the creator) rather than at the first enqueue
  if (resq_kv_check(&s) != RESQ_OK)
    throw std::invalid_argument(
        "attributes outside the op contract (docs/ops.md): num_heads " + std::to_string(s.num_heads) +
        ", num_kv_heads " + std::to_string(s.num_kv_heads) + ", head_dim " + std::to_string(s.head_dim) +
        ", high_channels " + std::to_string(s.high_channels) + ", kv_bits " + std::to_string(s.kv_bits) +
        ", high_bits " + std::to_string(s.high_bits));
  if (s.head_dim > S::gpu_max_head_dim || s.high_channels > S::gpu_max_high_channels ||
      s.num_heads / s.num_kv_heads > S::gpu_max_group)
    throw std::invalid_argument("the GPU attention takes head_dim <= " + std::to_string(S::gpu_max_head_dim) + ", <= " +
                                std::to_string(S::gpu_max_high_channels) + " high channels and <= " +
                                std::to_string(S::gpu_max_group) + " query heads per KV head (ops.json \"gpu\")");
}

// key_rotation, the only optional input, is the last: the TensorRT flavour drops it where the model has
// none, and every other input keeps its spec position
bool KVAttentionOp::input_count_ok(int nb_in) { return nb_in == S::kNumInputs || nb_in == S::kNumInputs - 1; }

int KVAttentionOp::rotation_input(int nb_in) { return nb_in == S::kNumInputs ? S::in_key_rotation : -1; }

int KVAttentionOp::num_outputs() { return S::kNumOutputs; }

ResQKVShape KVAttentionOp::shape(int64_t batch) const {
  ResQKVShape s{};
  s.batch = static_cast<int32_t>(batch);
  s.num_heads = fields_.get(S::attr_num_heads, 0);
  s.num_kv_heads = fields_.get(S::attr_num_kv_heads, 0);
  s.head_dim = fields_.get(S::attr_head_dim, 0);
  s.high_channels = fields_.get(S::attr_high_channels, S::default_high_channels);
  s.kv_bits = fields_.get(S::attr_kv_bits, S::default_kv_bits);
  s.high_bits = fields_.get(S::attr_high_bits, S::default_high_bits);
  return s;
}

std::string KVAttentionOp::check(const TensorDesc* in, int nb_in, const TensorDesc* out, int nb_out) const {
  if (!input_count_ok(nb_in))
    return "got " + std::to_string(nb_in) + " inputs, the op takes " + std::to_string(S::kNumInputs - 1) +
           " (without key_rotation) or " + std::to_string(S::kNumInputs);
  if (nb_out != S::kNumOutputs)
    return "got " + std::to_string(nb_out) + " outputs, the op has " + std::to_string(S::kNumOutputs);
  for (int pos = 0; pos < nb_in; ++pos) {  // every listed input keeps its spec position
    const std::string bad = check_dtype("input", pos, in[pos], S::kInputDTypes[pos]);
    if (!bad.empty()) return bad;
  }
  for (int pos = 0; pos < nb_out; ++pos) {
    const std::string bad = check_dtype("output", pos, out[pos], S::kOutputDTypes[pos]);
    if (!bad.empty()) return bad;
  }
  const ResQKVShape s = shape(1);
  const int64_t h = s.num_heads, hkv = s.num_kv_heads, d = s.head_dim;
  const TensorDesc& q = in[S::in_Q];
  if (q.nb_dims != 4 || differs(q.dims[1], h) || differs(q.dims[3], d))
    return expect("Q", q, "[B, " + std::to_string(h) + ", S, " + std::to_string(d) + "] (num_heads, head_dim)");
  const int64_t batch = q.dims[0], seq = q.dims[2];
  for (int t : {S::in_K, S::in_V}) {
    const TensorDesc& x = in[t];
    if (x.nb_dims != 4 || differs(x.dims[0], batch) || differs(x.dims[1], hkv) || differs(x.dims[2], seq) ||
        differs(x.dims[3], d))
      return expect(t == S::in_K ? "K" : "V", x,
                    "[B, " + std::to_string(hkv) + ", S, " + std::to_string(d) + "] (Q's B and S, num_kv_heads)");
  }
  // the stored row of the contract (resq_kv_row_bytes bytes of codes, one scale and zero point per
  // group): a cache of another layout (v1 wrote one code per byte) is refused, not read wrongly
  const int64_t capacity = in[S::in_past_key_codes].nb_dims == 4 ? in[S::in_past_key_codes].dims[2] : -1;
  for (int t = 0; t < kCaches; ++t) {
    const TensorDesc& c = in[S::in_past_key_codes + t];
    const int64_t last = t % 3 == 0 ? resq_kv_row_bytes(&s) : resq_kv_groups(&s);
    if (c.nb_dims != 4 || differs(c.dims[0], batch) || differs(c.dims[1], hkv) || differs(c.dims[2], capacity) ||
        differs(c.dims[3], last))
      return "cache input " + std::to_string(S::in_past_key_codes + t) + " is " + dims_text(c) + ", not [B, " +
             std::to_string(hkv) + ", L, " + std::to_string(last) + "] (the stored row of op contract v" +
             S::kVersion + "; one capacity L for every cache tensor)";
    const TensorDesc& present = out[S::out_present_key_codes + t];
    bool same = present.nb_dims == c.nb_dims;
    for (int i = 0; same && i < c.nb_dims; ++i) same = !differs(present.dims[i], c.dims[i]);
    if (!same) return "output " + std::to_string(S::out_present_key_codes + t) + " is " + dims_text(present) +
                      ", not its past's " + dims_text(c);
  }
  if (seq >= 0 && capacity >= 0 && seq > capacity)
    return std::to_string(seq) + " new positions do not fit a cache of " + std::to_string(capacity);
  const TensorDesc& len = in[S::in_past_length];
  if (len.nb_dims != 1 || differs(len.dims[0], batch)) return expect("past_length", len, "[B]");
  const int rot = rotation_input(nb_in);
  if (rot >= 0 && (in[rot].nb_dims != 2 || differs(in[rot].dims[0], d) || differs(in[rot].dims[1], d)))
    return expect("key_rotation", in[rot], "[" + std::to_string(d) + ", " + std::to_string(d) + "] (U_C)");
  const TensorDesc& y = out[S::out_Y];
  if (y.nb_dims != 3 || differs(y.dims[0], batch) || differs(y.dims[1], seq) || differs(y.dims[2], h * d))
    return expect("Y", y, "[B, S, " + std::to_string(h * d) + "]");
  return "";
}

size_t KVAttentionOp::workspace(const TensorDesc* in, int nb_in) const {
  if (!input_count_ok(nb_in) || in[S::in_Q].nb_dims != 4 || in[S::in_K].nb_dims != 4) return 0;
  ResQKVAttentionParams bound{};
  bound.shape = shape(in[S::in_Q].dims[0]);
  bound.seq = static_cast<int32_t>(in[S::in_K].dims[2]);
  return resq_triton_kv_attention_workspace(&bound, rotation_input(nb_in) >= 0);
}

// The cache is the outputs' buffers, which TensorRT aliases to the past inputs (ops.json "aliases"):
// the new rows are written in place and nothing else of the cache moves. Where a runtime gives two
// buffers, the past is copied into present first.
int KVAttentionOp::enqueue(const TensorDesc* in, int nb_in, const void* const* inputs, void* const* outputs,
                           void* workspace, size_t workspace_size, void* stream) const {
  // the input count is the only sign of U_C: never guess it (a skipped U_C gives wrong attention
  // without an error)
  if (!input_count_ok(nb_in))
    return triton::fail(RESQ_ERR_INVALID, "got " + std::to_string(nb_in) +
                                              " inputs: the count says whether key_rotation (U_C) is given, and "
                                              "the op takes 10 or 11");
  const TensorDesc& q = in[S::in_Q];
  const TensorDesc& cache = in[S::in_past_key_codes];
  if (q.nb_dims != 4 || cache.nb_dims != 4 || q.dims[0] < 0 || q.dims[2] < 0 || cache.dims[2] < 0)
    return triton::fail(RESQ_ERR_INVALID, "Q " + dims_text(q) + " and the cache " + dims_text(cache) +
                                              " need four known dimensions at enqueue");
  const size_t needed = this->workspace(in, nb_in);
  if (!workspace || workspace_size < needed)
    return triton::fail(RESQ_ERR_INVALID, "a workspace of " + std::to_string(workspace_size) + " bytes, " +
                                              std::to_string(needed) + " needed");
  triton::Launcher& l = triton::launcher();
  for (int t = 0; t < kCaches; ++t) {
    const int past = S::in_past_key_codes + t, present = S::out_present_key_codes + t;
    if (outputs[present] == inputs[past]) continue;
    const int st = l.copy(outputs[present], inputs[past], elements(in[past]) * cache_element_bytes(t),
                          static_cast<cudaStream_t>(stream));
    if (st != RESQ_OK) return launched(st);
  }
  auto cache_of = [&](int first) {
    return ResQKVCache{static_cast<uint8_t*>(outputs[first]), static_cast<float*>(outputs[first + 1]),
                       static_cast<uint8_t*>(outputs[first + 2]), static_cast<int32_t>(cache.dims[2])};
  };
  ResQKVAttentionParams p{};
  p.shape = shape(q.dims[0]);
  p.seq = static_cast<int32_t>(q.dims[2]);
  p.past_length = static_cast<const int32_t*>(inputs[S::in_past_length]);
  p.q = static_cast<const float*>(inputs[S::in_Q]);
  p.k = cache_of(S::out_present_key_codes);
  p.v = cache_of(S::out_present_value_codes);
  p.out = static_cast<float*>(outputs[S::out_Y]);
  p.workspace = workspace;
  p.workspace_size = workspace_size;
  const int rot = rotation_input(nb_in);
  return launched(resq_triton_kv_attention(&p, static_cast<const float*>(inputs[S::in_K]),
                                           static_cast<const float*>(inputs[S::in_V]),
                                           rot >= 0 ? static_cast<const float*>(inputs[rot]) : nullptr, stream));
}

}  // namespace ops
}  // namespace resq
