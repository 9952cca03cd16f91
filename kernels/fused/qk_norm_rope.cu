// Kernel 3: q/k norm + RoPE + KV-cache append (see qk_norm_rope.h).
#include "kernels/fused/qk_norm_rope.h"

#include <stdexcept>

#include "kernels/common/cuda_check.h"
#include "kernels/fused/fused_common.cuh"

namespace fusecheck::fused {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxPairsPerLane = 4;  // head_dim up to 256

// Grid (token, head group): one warp per head (q heads, then k heads, then v heads), so
// a decode step spreads its heads over many SMs instead of looping inside one block.
__global__ void __launch_bounds__(kThreads) qk_norm_rope_kernel(RopeArgs a) {
  const int token = blockIdx.x;
  const int b = token / a.n, t = token % a.n, pos = a.start + t;
  const int D = a.head_dim, half = D / 2;
  const int q_width = a.n_heads * D, kv_width = a.n_kv_heads * D;
  const bf16* row = a.qkv + static_cast<long>(token) * (q_width + 2 * kv_width);
  const float* cs = a.cos_table + static_cast<long>(pos) * half;
  const float* sn = a.sin_table + static_cast<long>(pos) * half;
  const int lane = threadIdx.x & 31;
  pdl_wait();
  pdl_trigger();

  {
    const int head = blockIdx.y * (kThreads / 32) + (threadIdx.x >> 5);
    if (head >= a.n_heads + 2 * a.n_kv_heads) return;
    const long cache_row =
        ((static_cast<long>(b) * a.n_kv_heads + (head - a.n_heads) % a.n_kv_heads) * a.capacity +
         pos) * D;
    if (head >= a.n_heads + a.n_kv_heads) {  // v: append as is
      const bf16* v = row + q_width + kv_width + (head - a.n_heads - a.n_kv_heads) * D;
      for (int i = lane; i < D; i += 32) a.v_cache[cache_row + i] = v[i];
      return;
    }
    const bool is_q = head < a.n_heads;
    const bf16* x = row + (is_q ? head * D : q_width + (head - a.n_heads) * D);
    const bf16* norm_w = is_q ? a.q_norm_w : a.k_norm_w;
    // Pair p rotates elements (i1, i2): NeoX (p, p + D/2), interleaved (2p, 2p + 1).
    float x1[kMaxPairsPerLane], x2[kMaxPairsPerLane];
    float ss = 0.f;
#pragma unroll
    for (int j = 0; j < kMaxPairsPerLane; ++j) {
      const int p = lane + 32 * j;
      x1[j] = x2[j] = 0.f;
      if (p < half) {
        const int i1 = a.interleaved ? 2 * p : p, i2 = a.interleaved ? 2 * p + 1 : p + half;
        x1[j] = __bfloat162float(x[i1]);
        x2[j] = __bfloat162float(x[i2]);
        ss += x1[j] * x1[j] + x2[j] * x2[j];
      }
    }
    const float scale = norm_w ? inv_rms(warp_sum(ss), D, a.eps) : 1.f;
    bf16* out = is_q ? a.q_rope + static_cast<long>(token) * q_width + head * D
                     : a.k_cache + cache_row;
#pragma unroll
    for (int j = 0; j < kMaxPairsPerLane; ++j) {
      const int p = lane + 32 * j;
      if (p >= half) continue;
      const int i1 = a.interleaved ? 2 * p : p, i2 = a.interleaved ? 2 * p + 1 : p + half;
      float y1 = x1[j], y2 = x2[j];
      if (norm_w) {  // the normalized value stays FP32 (q_normed/k_normed are not rounded)
        y1 = y1 * scale * __bfloat162float(norm_w[i1]);
        y2 = y2 * scale * __bfloat162float(norm_w[i2]);
      }
      out[i1] = round_bf16(y1 * cs[p] - y2 * sn[p]);
      out[i2] = round_bf16(y2 * cs[p] + y1 * sn[p]);
    }
  }
}

}  // namespace

void launch_qk_norm_rope(const RopeArgs& a, cudaStream_t stream) {
  if (a.head_dim % 2 != 0 || a.head_dim > 2 * 32 * kMaxPairsPerLane)
    throw std::invalid_argument("fused rope: head_dim must be even and at most 256");
  const int tokens = a.batch * a.n;
  if (tokens <= 0) return;
  const int warps = kThreads / 32, heads = a.n_heads + 2 * a.n_kv_heads;
  launch_pdl(qk_norm_rope_kernel, dim3(tokens, (heads + warps - 1) / warps), kThreads, 0, stream, a);
}

}  // namespace fusecheck::fused
