// Causal GQA attention over the quantised cache, split-K ("flash decoding"): grid (splits, query
// positions, batch * heads), the keys split by the cache's capacity (the host does not read the
// sequences' lengths, which stay in device memory: a split past a sequence's length returns at once);
// each block runs four warps over a chunk of the keys with an online
// softmax, dequantising K and V on the fly (s * (q - z)); a second kernel merges the splits. One
// lane owns channels lane, lane + 32, ... of the head. Decode (one query) is bound by reading the
// cache: resq_kv_row_bytes per token and head (4-bit codes two per byte) plus a scale and a zero
// point per group, against 2 bytes per channel in FP16. A row is 72 bytes at head_dim 128 (36 at
// 64), too narrow for one wide load per lane, but the rows of one KV head are contiguous: the block
// stages kTile rows of K and of V at a time into shared memory with 16-byte loads and the lanes
// pick their nibbles from there. Prefill uses the same kernel (correct, CUDA cores only; a tensor-core prefill is future
// work, see docs/plugins.md).
#include <cmath>

#include "cuda_common.cuh"
#include "resq_ops.h"

namespace resq {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxChan = 8;  // head_dim <= 256
constexpr int kMinChunk = 64;
constexpr int kTile = 32;          // cached rows staged per step; a multiple of kWarps
constexpr int kMaxRowBytes = 256;  // head_dim 256 at 8 bits
constexpr int kStageBytes = kTile * kMaxRowBytes + 16;  // + the source's misalignment
static_assert(kTile % kWarps == 0, "each warp keeps the keys t0 + warp + kWarps * n");

struct AttnArgs {
  ResQKVShape s;
  int seq, capacity, splits, chunk;
  float scale;
  const int32_t* past_length;  // [B], device
  const float* q;
  const uint8_t *kc, *kz, *vc, *vz;
  const float *ks, *vs;
  float* out;
  float *part_m, *part_l, *part_acc;  // [splits, seq, B*H] (acc: x head_dim), when splits > 1
};

// the row's channel c, dequantised; row points at the staged codes, slot indexes the scales and zeros
__device__ __forceinline__ float dequant(const ResQKVShape& s, const uint8_t* row, const float* scales,
                                         const uint8_t* zeros, int64_t slot, int ng, int c, int low) {
  const int g = ng == 2 && c >= low ? 1 : 0;
  const int q = resq_kv_code(&s, row, c);
  return __fmul_rn(__int2float_rn(q - static_cast<int>(zeros[slot * ng + g])), scales[slot * ng + g]);
}

// Copies the n bytes at src into dst + (src's address mod 16), the block's threads together: the
// 16-byte-aligned middle with one uint4 load each, the ends byte by byte. Returns that offset.
__device__ __forceinline__ int stage_bytes(uint8_t* __restrict__ dst, const uint8_t* __restrict__ src, int n) {
  const int shift = static_cast<int>(reinterpret_cast<uintptr_t>(src) & 15);
  const int head = min((16 - shift) & 15, n);
  const int body = (n - head) & ~15;
  uint8_t* d = dst + shift;
  for (int j = threadIdx.x; j < head; j += blockDim.x) d[j] = src[j];
  for (int j = head + body + threadIdx.x; j < n; j += blockDim.x) d[j] = src[j];
  const uint4* s16 = reinterpret_cast<const uint4*>(src + head);
  uint4* d16 = reinterpret_cast<uint4*>(d + head);  // shift + head is 0 or 16: aligned
  for (int j = threadIdx.x; j < body / 16; j += blockDim.x) d16[j] = __ldg(s16 + j);
  return shift;
}

__global__ void __launch_bounds__(32 * kWarps) kv_attention_kernel(AttnArgs p) {
  __shared__ float sm_m[kWarps], sm_l[kWarps], sm_acc[kWarps][kMaxChan * 32];
  __shared__ __align__(16) uint8_t sm_k[kStageBytes], sm_v[kStageBytes];
  const int split = blockIdx.x, i = blockIdx.y;
  const int64_t bhq = blockIdx.z;  // b * H + h
  const int H = p.s.num_heads, d = p.s.head_dim, ng = resq_kv_groups(&p.s), low = d - p.s.high_channels;
  const int64_t b = bhq / H;
  const int h = static_cast<int>(bhq % H), kvh = h / (H / p.s.num_kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int last = min(p.past_length[b] + i, p.capacity - 1);  // causal: keys 0..last, never past the cache
  const int t0 = split * p.chunk, t1 = min(t0 + p.chunk, last + 1);
  const int64_t base = (b * p.s.num_kv_heads + kvh) * static_cast<int64_t>(p.capacity);

  float qv[kMaxChan], acc[kMaxChan];
  const float* qrow = p.q + (bhq * p.seq + i) * d;
#pragma unroll
  for (int j = 0; j < kMaxChan; ++j) {
    const int c = lane + 32 * j;
    qv[j] = c < d ? qrow[c] : 0.0f;
    acc[j] = 0.0f;
  }
  const int rb = resq_kv_row_bytes(&p.s);
  float m = -INFINITY, l = 0.0f;
  for (int tile = t0; tile < t1; tile += kTile) {  // t0, t1 are the block's: every thread syncs alike
    const int n = min(kTile, t1 - tile);
    const int kshift = stage_bytes(sm_k, p.kc + (base + tile) * rb, n * rb);
    const int vshift = stage_bytes(sm_v, p.vc + (base + tile) * rb, n * rb);
    __syncthreads();
    for (int t = tile + warp; t < tile + n; t += kWarps) {
      const int64_t slot = base + t;
      const uint8_t* krow = sm_k + kshift + (t - tile) * rb;
      const uint8_t* vrow = sm_v + vshift + (t - tile) * rb;
      float dot = 0.0f;
#pragma unroll
      for (int j = 0; j < kMaxChan; ++j) {
        const int c = lane + 32 * j;
        if (c < d) dot += qv[j] * dequant(p.s, krow, p.ks, p.kz, slot, ng, c, low);
      }
      const float score = warp_sum(dot) * p.scale;
      const float m_new = fmaxf(m, score);
      const float corr = __expf(m - m_new), e = __expf(score - m_new);
      l = l * corr + e;
#pragma unroll
      for (int j = 0; j < kMaxChan; ++j) {
        const int c = lane + 32 * j;
        if (c < d) acc[j] = acc[j] * corr + e * dequant(p.s, vrow, p.vs, p.vz, slot, ng, c, low);
      }
      m = m_new;
    }
    __syncthreads();  // the next tile overwrites the staged rows
  }
  // merge the warps
  if (lane == 0) {
    sm_m[warp] = m;
    sm_l[warp] = l;
  }
#pragma unroll
  for (int j = 0; j < kMaxChan; ++j) sm_acc[warp][lane + 32 * j] = acc[j];
  __syncthreads();
  if (warp != 0) return;
  float mt = -INFINITY;
  for (int w = 0; w < kWarps; ++w) mt = fmaxf(mt, sm_m[w]);
  float lt = 0.0f, out[kMaxChan] = {};
  for (int w = 0; w < kWarps; ++w) {
    const float f = sm_m[w] == -INFINITY ? 0.0f : __expf(sm_m[w] - mt);
    lt += sm_l[w] * f;
#pragma unroll
    for (int j = 0; j < kMaxChan; ++j) out[j] += sm_acc[w][lane + 32 * j] * f;
  }
  const int64_t row = static_cast<int64_t>(split) * p.seq * gridDim.z + static_cast<int64_t>(i) * gridDim.z + bhq;
  if (p.splits > 1) {
    if (lane == 0) {
      p.part_m[row] = mt;
      p.part_l[row] = lt;
    }
#pragma unroll
    for (int j = 0; j < kMaxChan; ++j)
      if (lane + 32 * j < d) p.part_acc[row * d + lane + 32 * j] = out[j];
    return;
  }
  float* o = p.out + ((b * p.seq + i) * H + h) * static_cast<int64_t>(d);
#pragma unroll
  for (int j = 0; j < kMaxChan; ++j)
    if (lane + 32 * j < d) o[lane + 32 * j] = out[j] / lt;
}

__global__ void kv_combine_kernel(AttnArgs p, int64_t rows_per_split) {
  const int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;  // i * B*H + bhq
  const int lane = threadIdx.x % 32;
  if (r >= rows_per_split) return;
  const int d = p.s.head_dim, H = p.s.num_heads;
  float mt = -INFINITY;
  for (int sp = 0; sp < p.splits; ++sp) mt = fmaxf(mt, p.part_m[sp * rows_per_split + r]);
  float lt = 0.0f, out[kMaxChan] = {};
  for (int sp = 0; sp < p.splits; ++sp) {
    const float ms = p.part_m[sp * rows_per_split + r];
    const float f = ms == -INFINITY ? 0.0f : __expf(ms - mt);
    lt += p.part_l[sp * rows_per_split + r] * f;
#pragma unroll
    for (int j = 0; j < kMaxChan; ++j)
      if (lane + 32 * j < d) out[j] += p.part_acc[(sp * rows_per_split + r) * d + lane + 32 * j] * f;
  }
  const int64_t bh_total = rows_per_split / p.seq;
  const int i = static_cast<int>(r / bh_total);
  const int64_t bhq = r % bh_total, b = bhq / H;
  const int h = static_cast<int>(bhq % H);
  float* o = p.out + ((b * p.seq + i) * H + h) * static_cast<int64_t>(d);
#pragma unroll
  for (int j = 0; j < kMaxChan; ++j)
    if (lane + 32 * j < d) o[lane + 32 * j] = out[j] / lt;
}

// Split-K partial results take one row per (split, query, batch, head). With splits > 1 only while
// the blocks fill the GPU less than twice, a call has fewer than 4 x SMs rows: kMaxPartialRows covers
// every GPU up to 256 SMs, and a workspace of that size serves every shape of one head_dim.
constexpr int64_t kMaxPartialRows = 1024;

size_t partial_bytes(int64_t rows, int head_dim) {
  return align_up(static_cast<size_t>(rows) * 4) * 2 + align_up(static_cast<size_t>(rows) * head_dim * 4);
}

// enough blocks to fill the GPU twice, no chunk below kMinChunk keys of the capacity, and no more
// partial rows than the workspace holds (fewer splits are as exact, only slower)
int choose_splits(const ResQKVShape* s, int seq, int capacity, size_t workspace_size) {
  const int64_t blocks = static_cast<int64_t>(seq) * s->batch * s->num_heads;
  const int64_t want = (2 * device_sm_count() + blocks - 1) / blocks;
  const int64_t most = (capacity + kMinChunk - 1) / kMinChunk;
  int64_t splits = want < 1 ? 1 : (want > most ? most : want);
  while (splits > 1 && partial_bytes(splits * blocks, s->head_dim) > workspace_size) --splits;
  return static_cast<int>(splits);
}

}  // namespace
}  // namespace resq

using namespace resq;

RESQ_KAPI size_t resq_cuda_kv_attention_workspace(const ResQKVAttentionParams* p) {
  if (!p) return 0;
  const ResQKVShape* s = &p->shape;
  if (resq_kv_check(s) != RESQ_OK || p->seq <= 0) return 0;
  return partial_bytes(kMaxPartialRows, s->head_dim);  // the same for every seq and capacity (see above)
}

RESQ_KAPI int resq_cuda_kv_attention(const ResQKVAttentionParams* p, void* stream) {
  if (!p || p->k.capacity != p->v.capacity) return RESQ_ERR_INVALID;
  const ResQKVShape* s = &p->shape;
  const float* q = p->q;
  const int32_t seq = p->seq, capacity = p->k.capacity;
  const int32_t* past_length = p->past_length;
  const uint8_t *k_codes = p->k.codes, *k_zeros = p->k.zeros, *v_codes = p->v.codes, *v_zeros = p->v.zeros;
  const float *k_scales = p->k.scales, *v_scales = p->v.scales;
  float* out = p->out;
  void* workspace = p->workspace;
  const size_t workspace_size = p->workspace_size;
  if (resq_kv_check(s) != RESQ_OK || !q || !out || !k_codes || !k_scales || !k_zeros || !v_codes || !v_scales ||
      !v_zeros)
    return RESQ_ERR_INVALID;
  if (!past_length || seq <= 0 || seq > capacity) return RESQ_ERR_INVALID;
  static_assert(kMaxChan * 32 == spec::ResQKVCacheAttention::gpu_max_head_dim, "ops.json's gpu.max_head_dim");
  if (s->head_dim > spec::ResQKVCacheAttention::gpu_max_head_dim || seq > 65535) return RESQ_ERR_UNSUPPORTED;  // seq: gridDim.y
  if (resq_kv_row_bytes(s) > kMaxRowBytes) return RESQ_ERR_UNSUPPORTED;  // never at head_dim <= 256: guards kStageBytes
  AttnArgs a{};
  a.s = *s;
  a.seq = seq;
  a.capacity = capacity;
  a.past_length = past_length;
  a.splits = choose_splits(s, seq, capacity, workspace ? workspace_size : 0);
  a.chunk = (capacity + a.splits - 1) / a.splits;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(s->head_dim)));
  a.q = q;
  a.kc = k_codes;
  a.ks = k_scales;
  a.kz = k_zeros;
  a.vc = v_codes;
  a.vs = v_scales;
  a.vz = v_zeros;
  a.out = out;
  if (a.splits > 1) {
    const size_t rows = static_cast<size_t>(a.splits) * seq * s->batch * s->num_heads;
    char* w = static_cast<char*>(workspace);
    a.part_m = reinterpret_cast<float*>(w);
    a.part_l = reinterpret_cast<float*>(w + align_up(rows * 4));
    a.part_acc = reinterpret_cast<float*>(w + 2 * align_up(rows * 4));
  }
  cudaStream_t st = as_stream(stream);
  const dim3 grid(a.splits, seq, s->batch * s->num_heads);
  kv_attention_kernel<<<grid, 32 * kWarps, 0, st>>>(a);
  if (a.splits > 1) {
    const int64_t rows = static_cast<int64_t>(seq) * s->batch * s->num_heads;
    kv_combine_kernel<<<static_cast<unsigned>((rows * 32 + 255) / 256), 256, 0, st>>>(a, rows);
  }
  return launch_status();
}
