// Kernel 4b: causal GQA flash attention for prefill (see attention_prefill.h): the
// launcher (tensor-core route first) and the FP32 CUDA-core kernel for other head dims.
// 256 threads as 16 x 16: thread (ty, tx) owns query rows 4ty..4ty+3 and, of each 64-key
// tile, keys 4tx..4tx+3 (scores) and output columns g*64 + 4tx..+3 (accumulators), so a
// row's statistics live in the 16 lanes that share ty and reduce with 4 shuffles. Shared
// tiles are FP32 and read with 16-byte loads (Q and K transposed, P transposed).
#include "kernels/fused/attention_prefill.h"

#include <cmath>
#include <stdexcept>

#include "kernels/common/cuda_check.h"
#include "kernels/fused/fused_common.cuh"

namespace fusecheck::fused {
namespace {

constexpr int kThreads = 256;
constexpr int T = 64;       // query rows per block and keys per tile
constexpr int TS = T + 4;   // padded stride of transposed tiles (keeps 16-byte alignment)

template <int DMAX>
constexpr std::size_t smem_floats() {
  return 2 * static_cast<std::size_t>(DMAX) * TS + static_cast<std::size_t>(T) * DMAX +
         static_cast<std::size_t>(T) * TS;
}

template <int DMAX>
__global__ void __launch_bounds__(kThreads) prefill_kernel(PrefillAttentionArgs a, float scale) {
  constexpr int CG = DMAX / 64;  // output column groups of 4 per thread
  extern __shared__ __align__(16) float sm[];
  float* qt = sm;                       // [D][TS]  q transposed
  float* kt = qt + DMAX * TS;           // [D][TS]  k transposed
  float* vs = kt + DMAX * TS;           // [T][D]
  float* pt = vs + T * DMAX;            // [T][TS]  probabilities transposed: pt[key][row]
  const int D = a.head_dim;
  const int q0 = blockIdx.x * T, h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (a.n_heads / a.n_kv_heads);
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const long q_stride = static_cast<long>(a.n_heads) * D;
  const long cache0 = (static_cast<long>(b) * a.n_kv_heads + kvh) * a.capacity * D;

  for (int i = threadIdx.x; i < T * D; i += kThreads) {
    const int r = i / D, d = i % D;
    qt[d * TS + r] = q0 + r < a.n
        ? __bfloat162float(a.q[(static_cast<long>(b) * a.n + q0 + r) * q_stride + h * D + d])
        : 0.f;
  }

  float m[4], l[4], o[4][CG][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int g = 0; g < CG; ++g)
#pragma unroll
      for (int c = 0; c < 4; ++c) o[i][g][c] = 0.f;
  }

  const int last_row = min(q0 + T, a.n) - 1;        // last query row of this block
  const int kv_end = a.start + last_row + 1;        // keys it may see
  for (int k0 = 0; k0 < kv_end; k0 += T) {
    __syncthreads();  // previous tile fully consumed (and q tile written)
    for (int i = threadIdx.x; i < T * D; i += kThreads) {
      const int j = i / D, d = i % D;
      const bool in = k0 + j < kv_end;
      const long at = cache0 + static_cast<long>(k0 + j) * D + d;
      kt[d * TS + j] = in ? __bfloat162float(a.k_cache[at]) : 0.f;
      vs[j * DMAX + d] = in ? __bfloat162float(a.v_cache[at]) : 0.f;
    }
    __syncthreads();

    float s[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) s[i][j] = 0.f;
    for (int d = 0; d < D; ++d) {
      const float4 qv = *reinterpret_cast<const float4*>(qt + d * TS + 4 * ty);
      const float4 kv = *reinterpret_cast<const float4*>(kt + d * TS + 4 * tx);
      const float qa[4] = {qv.x, qv.y, qv.z, qv.w}, ka[4] = {kv.x, kv.y, kv.z, kv.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) s[i][j] = fmaf(qa[i], ka[j], s[i][j]);
    }

    // Online softmax update, rows 4ty+i; masked entries (future keys, padding) weigh 0.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int q_pos = a.start + q0 + 4 * ty + i;
      float tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int k_pos = k0 + 4 * tx + j;
        s[i][j] = k_pos <= q_pos && k_pos < kv_end ? s[i][j] * scale : -INFINITY;
        tile_max = fmaxf(tile_max, s[i][j]);
      }
#pragma unroll
      for (int off = 1; off < 16; off <<= 1)
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, off));
      const float m_new = fmaxf(m[i], tile_max);
      // A row with nothing visible yet keeps m = -inf: its weights are 0, alpha 1.
      const float alpha = m_new == -INFINITY ? 1.f : expf(m[i] - m_new);
      float row_sum = 0.f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float p = s[i][j] == -INFINITY ? 0.f : expf(s[i][j] - m_new);
        s[i][j] = p;
        row_sum += p;
      }
#pragma unroll
      for (int off = 1; off < 16; off <<= 1)
        row_sum += __shfl_xor_sync(0xffffffffu, row_sum, off);
      m[i] = m_new;
      l[i] = l[i] * alpha + row_sum;
#pragma unroll
      for (int g = 0; g < CG; ++g)
#pragma unroll
        for (int c = 0; c < 4; ++c) o[i][g][c] *= alpha;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j)
      *reinterpret_cast<float4*>(pt + (4 * tx + j) * TS + 4 * ty) =
          make_float4(s[0][j], s[1][j], s[2][j], s[3][j]);
    __syncthreads();

    const int keys = min(T, kv_end - k0);
    for (int j = 0; j < keys; ++j) {
      const float4 pv = *reinterpret_cast<const float4*>(pt + j * TS + 4 * ty);
      const float pa[4] = {pv.x, pv.y, pv.z, pv.w};
#pragma unroll
      for (int g = 0; g < CG; ++g) {
        const int col = g * 64 + 4 * tx;
        if (col >= D) continue;
        const float4 vv = *reinterpret_cast<const float4*>(vs + j * DMAX + col);
        const float va[4] = {vv.x, vv.y, vv.z, vv.w};
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int c = 0; c < 4; ++c) o[i][g][c] = fmaf(pa[i], va[c], o[i][g][c]);
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = q0 + 4 * ty + i;
    if (r >= a.n) continue;
    bf16* out = a.out + (static_cast<long>(b) * a.n + r) * q_stride + h * D;
#pragma unroll
    for (int g = 0; g < CG; ++g)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int col = g * 64 + 4 * tx + c;
        if (col < D) out[col] = round_bf16(o[i][g][c] / l[i]);
      }
  }
}

template <int DMAX>
void launch_dmax(const PrefillAttentionArgs& a, cudaStream_t stream) {
  const std::size_t smem = smem_floats<DMAX>() * sizeof(float);
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(prefill_kernel<DMAX>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
    configured = true;
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.head_dim)));
  const dim3 grid((a.n + T - 1) / T, a.n_heads, a.batch);
  prefill_kernel<DMAX><<<grid, kThreads, smem, stream>>>(a, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_prefill_attention(const PrefillAttentionArgs& a, cudaStream_t stream) {
  if (a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0)
    throw std::invalid_argument("fused prefill attention: n_heads must be a multiple of n_kv_heads");
  if (a.head_dim % 4 != 0 || a.head_dim > 128)
    throw std::invalid_argument("fused prefill attention: head_dim must be a multiple of 4, at most 128");
  if (a.start + a.n > a.capacity)
    throw std::invalid_argument("fused prefill attention: tokens beyond the cache capacity");
  if (a.n <= 0) return;
  if (launch_prefill_attention_tc(a, stream)) return;
  if (a.head_dim <= 64) return launch_dmax<64>(a, stream);
  launch_dmax<128>(a, stream);
}

}  // namespace fusecheck::fused
