// ResQKVCacheAttention on the Triton cubins, through the launch seam: the launch policy of
// resq_export/kernels/kv_launch.py (kv_attention: U_C on q and k, the append in place, then the prefill
// kernel for S >= KV_PREFILL_MIN_S where its configuration is compiled, else flash-decoding and the
// log-sum-exp combine), its constants compiled in beside the cubins (KV_*), the grids from the
// embedded configurations' tile sizes. The caches, past_length (device memory, never read here) and
// the output are the attention parameters' (resq_params.h); k, v and U_C (nullable) come beside them.
#include <cmath>
#include <string>

#include "resq_params.h"
#include "triton_loader.h"
#include "triton_ops.h"

using resq::triton::arg;
using resq::triton::KernelArg;

namespace {

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
size_t align(size_t v) { return (v + 255) / 256 * 256; }
int policy(const char* name) { return resq::triton::policy_of(name); }

// kv_launch._pow2: the least power of two >= n, at least `least`
int pow2(int n, int least) {
  int p = 1;
  while (p < n) p *= 2;
  return p < least ? least : p;
}

// kv_launch.decode_name: the decode configuration of a layout; "" when none is compiled (kv_launch's
// decode_tile refuses the same layouts, and the engine build before it: ops.json "gpu")
std::string decode_name(const ResQKVShape& s) {
  const int low = s.head_dim - s.high_channels, r = s.high_channels;
  const int block_d = pow2(low, 16), block_r = r ? pow2(r, 16) : 0;
  const int group = s.num_heads / s.num_kv_heads, gp = pow2(group, policy("KV_MIN_GP"));
  const int low_bytes = resq_kv_low_bytes(&s), row_bytes = resq_kv_row_bytes(&s);
  const int al = row_bytes % 4 == 0 && low_bytes % 4 == 0 && block_d >= policy("KV_WIDE_MIN_D") ? 4 : 1;
  const int bits_high = r ? s.high_bits : 8;
  return "kv_decode_g" + std::to_string(gp) + "_d" + std::to_string(block_d) + "_r" + std::to_string(block_r) + "_b" +
         std::to_string(s.kv_bits) + std::to_string(bits_high) + "_al" + std::to_string(al);
}

// kv_launch.prefill_name: kv_prefill.prefill_kernel_name for the plugin's float32 q (D_PAD the next power
// of two >= head_dim, at least 64; the high window the first of kv_prefill.HIGH_PADS (16, 32) or D_PAD
// that holds r, 0 without a high part); "" where the decode kernel serves S (fewer new positions, or no
// such cubin embedded: a 4-bit high part)
std::string prefill_name(const ResQKVShape& s, int64_t seq) {
  if (seq < policy("KV_PREFILL_MIN_S")) return "";
  const int dp = pow2(s.head_dim, 64), r = s.high_channels;
  const int hp = r == 0 ? 0 : r <= 16 ? 16 : r <= 32 ? 32 : dp;
  std::string name = "kv_prefill_d" + std::to_string(dp) + "_r" + std::to_string(hp) + "_k" + std::to_string(s.kv_bits);
  if (hp) name += "_h" + std::to_string(s.high_bits);
  return resq::triton::constexpr_of(name.c_str(), "BLOCK_M") > 0 ? name : "";
}

// kv_launch.n_splits
int n_splits(const ResQKVShape& s, int64_t seq, int32_t capacity) {
  const int64_t programs = static_cast<int64_t>(s.batch) * s.num_kv_heads * seq;
  int64_t want = cdiv(policy("KV_TARGET_PROGRAMS"), programs > 0 ? programs : 1);
  want = want < policy("KV_MAX_SPLITS") ? want : policy("KV_MAX_SPLITS");
  const int64_t tiles = cdiv(capacity, policy("KV_BLOCK_T"));
  want = want < tiles ? want : tiles;
  return static_cast<int>(want > 1 ? want : 1);
}

// The workspace (kv_launch.workspace_bytes), each part 256-byte aligned: q_rot [B, H, S, D] and
// k_rot [B, Hkv, S, D] (with U_C), part_ml [splits, 2, B*H*S], part_acc [splits, B*H*S, D].
struct Plan {
  size_t q_rot, k_rot, ml, acc, total;
  int splits;
};

Plan plan(const ResQKVShape& s, int64_t seq, int32_t capacity, bool rotation, int splits) {
  Plan p{};
  const size_t rows = static_cast<size_t>(s.batch) * s.num_heads * seq, d = s.head_dim;
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t here = at;
    at += align(bytes > 0 ? bytes : 1);
    return here;
  };
  p.q_rot = take(rotation ? rows * d * 4 : 0);
  p.k_rot = take(rotation ? static_cast<size_t>(s.batch) * s.num_kv_heads * seq * d * 4 : 0);
  p.splits = splits > 0 ? splits : n_splits(s, seq, capacity);
  p.ml = take(static_cast<size_t>(p.splits) * 2 * rows * 4);
  p.acc = take(static_cast<size_t>(p.splits) * rows * d * 4);
  p.total = at;
  return p;
}

bool policy_present() {
  return policy("KV_BLOCK_T") > 0 && policy("KV_MAX_SPLITS") > 0 && policy("KV_TARGET_PROGRAMS") > 0 &&
         policy("KV_MIN_GP") > 0 && policy("KV_WIDE_MIN_D") > 0 && policy("KV_PREFILL_MIN_S") > 0;
}

}  // namespace

RESQ_TAPI size_t resq_triton_kv_attention_workspace(const ResQKVAttentionParams* p, int rotation) {
  if (!p || resq_kv_check(&p->shape) != RESQ_OK || p->seq < 0 || !policy_present()) return 0;
  // a bound for every batch <= shape.batch and seq <= p->seq: splits x rows <= rows + TARGET x group
  // (n_splits <= TARGET / (B Hkv S) + 1), never above MAX_SPLITS x rows
  const ResQKVShape& s = p->shape;
  const int64_t rows = static_cast<int64_t>(s.batch) * s.num_heads * p->seq;
  int64_t units = rows + static_cast<int64_t>(policy("KV_TARGET_PROGRAMS")) * (s.num_heads / s.num_kv_heads);
  if (units > policy("KV_MAX_SPLITS") * rows) units = policy("KV_MAX_SPLITS") * rows;
  const size_t rot = rotation ? align(static_cast<size_t>(rows) * s.head_dim * 4) +
                                    align(static_cast<size_t>(s.batch) * s.num_kv_heads * p->seq * s.head_dim * 4)
                              : 2 * align(1);
  return rot + align(static_cast<size_t>(units) * 2 * 4) + align(static_cast<size_t>(units) * s.head_dim * 4) + 256;
}

RESQ_TAPI int resq_triton_kv_attention(const ResQKVAttentionParams* p, const float* k, const float* v,
                                       const float* rotation, void* stream_ptr) {
  if (!p || resq_kv_check(&p->shape) != RESQ_OK || p->seq < 0 || p->seq > p->k.capacity || !p->past_length ||
      !p->q || !k || !v || !p->out || !p->k.codes || !p->k.scales || !p->k.zeros || !p->v.codes || !p->v.scales ||
      !p->v.zeros || p->k.capacity != p->v.capacity)
    return resq::triton::fail(RESQ_ERR_INVALID, "kv_attention: a shape outside the contract, S beyond the "
                                                "capacity or a null pointer");
  if (!policy_present())  // a library built without kv_launch's policy
    return resq::triton::fail(RESQ_ERR_UNSUPPORTED, "kv_attention: kv_launch's policy is not compiled in");
  if (p->seq == 0) return RESQ_OK;
  const ResQKVShape& s = p->shape;
  const std::string decode = decode_name(s);
  if (resq::triton::constexpr_of(decode.c_str(), "BLOCK_T") <= 0)
    return resq::triton::fail(RESQ_ERR_UNSUPPORTED, "kv_attention: no cubin " + decode + " embedded");
  const int32_t seq = p->seq, capacity = p->k.capacity, d = s.head_dim, h = s.num_heads, hkv = s.num_kv_heads,
                high = s.high_channels, row_bytes = resq_kv_row_bytes(&s), low_bytes = resq_kv_low_bytes(&s);
  const Plan w = plan(s, seq, capacity, rotation != nullptr, 0);
  if (!p->workspace || p->workspace_size < w.total)
    return resq::triton::fail(RESQ_ERR_INVALID, "kv_attention: a workspace of " + std::to_string(p->workspace_size) +
                                                    " bytes, " + std::to_string(w.total) + " needed");
  auto* ws = static_cast<char*>(p->workspace);
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  resq::triton::Launcher& l = resq::triton::launcher();
  const float* q = p->q;

  // 1. U_C on q and k (float32, the contract's GPU order)
  if (rotation) {
    const int br = resq::triton::constexpr_of("kv_rotate", "BLOCK_R"), bc = resq::triton::constexpr_of("kv_rotate", "BLOCK_C");
    if (br <= 0 || bc <= 0) return resq::triton::fail(RESQ_ERR_UNSUPPORTED, "kv_attention: no cubin kv_rotate embedded");
    const float* srcs[2] = {p->q, k};
    float* dsts[2] = {reinterpret_cast<float*>(ws + w.q_rot), reinterpret_cast<float*>(ws + w.k_rot)};
    const int32_t rows[2] = {s.batch * h * seq, s.batch * hkv * seq};
    for (int i = 0; i < 2; ++i) {
      const KernelArg args[] = {arg(srcs[i]), arg(rotation), arg(dsts[i]), arg(rows[i]), arg(d)};
      const int st = l.launch("kv_rotate", dim3(static_cast<unsigned>(cdiv(rows[i], br)), static_cast<unsigned>(cdiv(d, bc)), 1),
                              stream, args, 5);
      if (st != RESQ_OK) return st;
    }
    q = dsts[0];
    k = dsts[1];
  }
  // 2. the new K and V rows quantised into the caches at past_length[b] (program_id(2): K, V)
  const std::string append = "kv_append_b" + std::to_string(s.kv_bits) + std::to_string(high ? s.high_bits : 8);
  const int bt = resq::triton::constexpr_of(append.c_str(), "BLOCK_T");
  if (bt <= 0) return resq::triton::fail(RESQ_ERR_UNSUPPORTED, "kv_attention: no cubin " + append + " embedded");
  {
    const KernelArg args[] = {arg(k), arg(v), arg(p->past_length), arg(p->k.codes), arg(p->k.scales), arg(p->k.zeros),
                              arg(p->v.codes), arg(p->v.scales), arg(p->v.zeros), arg(seq), arg(hkv), arg(capacity),
                              arg(d), arg(high), arg(row_bytes), arg(low_bytes)};
    const int st = l.launch(append.c_str(), dim3(static_cast<unsigned>(cdiv(seq, bt)), static_cast<unsigned>(s.batch * hkv), 2),
                            stream, args, static_cast<int>(sizeof args / sizeof args[0]));
    if (st != RESQ_OK) return st;
  }
  const float qk_scale = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(d)));
  // 3. attention. Prefill (kv_launch.prefill_attention): one program per BLOCK_M rows of a (sequence, KV
  // head)'s GQA group x S positions, causal over the cache rows 0 .. past_length[b] + s; the workspace's
  // decode parts stay unused (one plan for every S).
  const std::string prefill = prefill_name(s, seq);
  if (!prefill.empty()) {
    const int bm = resq::triton::constexpr_of(prefill.c_str(), "BLOCK_M");
    const KernelArg args[] = {arg(q), arg(p->k.codes), arg(p->k.scales), arg(p->k.zeros), arg(p->v.codes),
                              arg(p->v.scales), arg(p->v.zeros), arg(p->past_length), arg(p->out), arg(seq),
                              arg(capacity), arg(h), arg(hkv), arg(d), arg(high), arg(qk_scale)};
    const int64_t tiles = cdiv(static_cast<int64_t>(seq) * (h / hkv), bm);
    return l.launch(prefill.c_str(), dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(s.batch * hkv), 1), stream,
                    args, static_cast<int>(sizeof args / sizeof args[0]));
  }
  // Decode: flash-decoding over `splits` chunks of each sequence's real length, then the combine.
  const int32_t al = resq::triton::constexpr_of(decode.c_str(), "ALIGN");
  const int32_t splits = w.splits, row_units = row_bytes / al, low_units = low_bytes / al;
  void* ml = ws + w.ml;
  void* acc = ws + w.acc;
  {
    const KernelArg args[] = {arg(q), arg(p->k.codes), arg(p->k.scales), arg(p->k.zeros), arg(p->v.codes),
                              arg(p->v.scales), arg(p->v.zeros), arg(p->past_length), arg(ml), arg(acc), arg(seq),
                              arg(h), arg(hkv), arg(capacity), arg(d), arg(high), arg(row_units), arg(low_units),
                              arg(splits), arg(qk_scale)};
    const int st = l.launch(decode.c_str(), dim3(static_cast<unsigned>(splits), static_cast<unsigned>(s.batch * hkv),
                                                 static_cast<unsigned>(seq)),
                            stream, args, static_cast<int>(sizeof args / sizeof args[0]));
    if (st != RESQ_OK) return st;
  }
  const int cbd = resq::triton::constexpr_of("kv_combine", "BLOCK_D"), cbs = resq::triton::constexpr_of("kv_combine", "BLOCK_S");
  if (cbd <= 0 || cbs < splits)
    return resq::triton::fail(RESQ_ERR_UNSUPPORTED, "kv_attention: no cubin kv_combine for " + std::to_string(splits) +
                                                        " splits embedded");
  const int32_t n_rows = s.batch * h * seq;
  const KernelArg args[] = {arg(ml), arg(acc), arg(p->out), arg(n_rows), arg(seq), arg(h), arg(d), arg(splits)};
  return l.launch("kv_combine", dim3(static_cast<unsigned>(n_rows), static_cast<unsigned>(cdiv(d, cbd)), 1), stream,
                  args, static_cast<int>(sizeof args / sizeof args[0]));
}
