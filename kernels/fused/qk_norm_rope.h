// Kernel 3 of the fused path: per head, q_norm/k_norm (Qwen3; skipped when the weights are
// null) + rotary embedding, and the KV-cache append, in one kernel:
//   q_rope = bf16(rope(q * inv_rms(q) * q_norm_w))   (norm output kept FP32, ONE rounding)
//   k_rope = bf16(rope(k * inv_rms(k) * k_norm_w))   written straight into the K cache
//   v                                                  copied into the V cache (already bf16)
// cos/sin come from a table computed in double on the host and stored FP32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace fusecheck::fused {

struct RopeArgs {
  const __nv_bfloat16* qkv;       // [batch*n x (q_width + 2*kv_width)]: q | k | v
  const __nv_bfloat16* q_norm_w;  // [head_dim] or null
  const __nv_bfloat16* k_norm_w;  // [head_dim] or null
  float eps = 1e-6f;
  const float* cos_table;         // [capacity x head_dim/2]
  const float* sin_table;
  bool interleaved = false;       // pairs (2i, 2i+1) instead of (i, i + d/2)
  int batch = 1, n = 1, start = 0;  // token t of sequence b sits at position start + t
  int n_heads = 0, n_kv_heads = 0, head_dim = 0, capacity = 0;
  __nv_bfloat16* q_rope;          // [batch*n x q_width]
  __nv_bfloat16* k_cache;         // [batch x n_kv_heads x capacity x head_dim]
  __nv_bfloat16* v_cache;         // same layout
};

void launch_qk_norm_rope(const RopeArgs& args, cudaStream_t stream);

}  // namespace fusecheck::fused
