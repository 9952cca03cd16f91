// Kernel 3: q/k norm + RoPE + KV-cache append (see qk_norm_rope.h).
#include "kernels/fused/qk_norm_rope.h"

#include <stdexcept>

#include "kernels/common/cuda_check.h"
#include "kernels/fused/fused_common.cuh"
#include "kernels/fused/qk_norm_rope.cuh"

namespace fusecheck::fused {
namespace {

constexpr int kThreads = 128;

// Grid (token, head group): one warp per head (q heads, then k heads, then v heads), so
// a decode step spreads its heads over many SMs instead of looping inside one block. The
// per-head arithmetic is norm_rope_head (qk_norm_rope.cuh), shared with the decode
// attention kernel that folds this one in.
__global__ void __launch_bounds__(kThreads) qk_norm_rope_kernel(RopeArgs a) {
  const int token = blockIdx.x;
  const int b = token / a.n, t = token % a.n, pos = a.start + t;
  const int D = a.head_dim, half = D / 2;
  const int q_width = a.n_heads * D, kv_width = a.n_kv_heads * D;
  const bf16* row = a.qkv + static_cast<long>(token) * (q_width + 2 * kv_width);
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
    const RopeLaneTrig tr = load_rope_trig(a.cos_table + static_cast<long>(pos) * half,
                                           a.sin_table + static_cast<long>(pos) * half, half, lane);
    const RopeLaneNorm nw = load_rope_norm(norm_w, half, a.interleaved, lane);
    const RopeLaneX v = load_rope_x(x, half, a.interleaved, lane);
    bf16* out = is_q ? a.q_rope + static_cast<long>(token) * q_width + head * D
                     : a.k_cache + cache_row;
    norm_rope_head(v, norm_w != nullptr, nw, tr, a.eps, D, a.interleaved, lane,
                   [&](int i, bf16 y) { out[i] = y; });
  }
}

}  // namespace

void launch_qk_norm_rope(const RopeArgs& a, cudaStream_t stream) {
  if (a.head_dim % 2 != 0 || a.head_dim > kRopeMaxHeadDim)
    throw std::invalid_argument("fused rope: head_dim must be even and at most 256");
  const int tokens = a.batch * a.n;
  if (tokens <= 0) return;
  const int warps = kThreads / 32, heads = a.n_heads + 2 * a.n_kv_heads;
  launch_pdl(qk_norm_rope_kernel, dim3(tokens, (heads + warps - 1) / warps), kThreads, 0, stream, a);
}

}  // namespace fusecheck::fused
