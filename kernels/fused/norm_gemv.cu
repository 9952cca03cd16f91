// The decode GEMV kernel and its three fused forms (see norm_gemv.h).
#include "kernels/fused/norm_gemv.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/fused/fused_common.cuh"

namespace fusecheck::fused {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Per (token rows NB, rows per warp R): 16-byte chunks per lane per row per step (U) and
// the resident blocks per SM the register allocation must allow. R = 3 at one token row
// (the QKV projection): 6144 rows are 2048 warps, one wave at 2 blocks of 8 warps per SM
// on 132 SMs; R = 2 took 3072 warps, 1.45 waves at the 103 registers it needs, and
// capping it to 3 blocks per SM (80 registers, U = 3) made the o_proj GEMV slower
// (H100, bench_fused).
template <int NB, int R>
constexpr int kChunksPerStep = R >= 3 ? 2 : NB <= 2 ? 4 : 2;
template <int NB, int R>
constexpr int kMinBlocks = R >= 3 ? 2 : 1;
// Normalized rows live in shared memory as bf16: rows * K * 2 bytes.
constexpr std::size_t kMaxNormSmem = 200 * 1024;

// L2 prefetch of the o_proj weights before the PDL wait (FUSECHECK_GEMV_L2PF=0 turns it
// off; an A/B switch for the benchmarks, read once).
bool l2_prefetch_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("FUSECHECK_GEMV_L2PF");
    return !(env && std::strcmp(env, "0") == 0);
  }();
  return on;
}

// One bulk prefetch of `bytes` (a multiple of 16, 16-byte aligned) into L2 (sm_90).
__device__ __forceinline__ void prefetch_l2(const void* p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}

enum class Epilogue { Bias, GateUp, RoundResidual, Residual };

struct GemvArgs {
  const bf16* x;
  const bf16* delta;   // added to x before the norm (K5), or null
  const bf16* norm_w;
  float eps;
  const bf16* W;
  const bf16* bias;
  const bf16* resid;
  bf16* out;
  bf16* resid_out;     // RoundResidual: bf16(resid + out)
  int rows, K, N;
  bool stage;          // copy x into shared memory first (non-norm forms, when it fits)
  bool l2_prefetch;    // o_proj form: ask the warp's rows into L2 before the PDL wait
};

// Warp j of the grid owns R output rows (or, for GateUp, gate row j and up row j) for all
// `rows` tokens: each weight byte is read by exactly one warp, once. Weight loads are
// double-buffered: the first step is issued before the prologue (so the norm's reduction
// overlaps the weight stream) and each step's loads are in flight during the previous
// step's FMAs. The token rows (normalized, or copied when `stage`) sit in shared memory.
template <int NB, int R, Epilogue E, bool kNorm>
__global__ void __launch_bounds__(kThreads, kMinBlocks<NB, R>) gemv_kernel(GemvArgs a) {
  constexpr int U = kChunksPerStep<NB, R>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int lane = threadIdx.x & 31;
  const int K = a.K, chunks = K / 8;

  const int unit = blockIdx.x * kWarps + (threadIdx.x >> 5);
  const int n_units = E == Epilogue::GateUp ? a.N : (a.N + R - 1) / R;
  const bool active = unit < n_units;
  int row[R];
  bool live[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    row[r] = E == Epilogue::GateUp ? unit + r * a.N : unit * R + r;
    live[r] = active && (E == Epilogue::GateUp || row[r] < a.N);
  }
  auto load_step = [&](int base, Bf16x8 (&wv)[R][U]) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = base + u * 32 + lane;
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (c < chunks && live[r])
          wv[r][u] = load8_stream(a.W + static_cast<long>(row[r]) * K + c * 8);
    }
  };
  // o_proj form: the warp's whole weight slice is asked into L2 before the wait (weights
  // only), so that DRAM streams it while the latency-bound attention before it still runs;
  // the register loads below then mostly hit L2. H100, bench_fused decode b1 (same call):
  // qwen3-8b layer 147.3 -> 141.5 us, llama-3-8b 162.1 -> 157.9 us. Not used for the
  // other forms: there the kernel before is itself streaming weights, and the same
  // prefetch made those layers slower (QKV, gate/up and down; whole slices larger than L2
  // evict themselves before use, see docs/fused-kernels.md).
  if constexpr (E == Epilogue::RoundResidual) {
    if (a.l2_prefetch && lane == 0 && active)  // rows unit*R ... : one contiguous range
      prefetch_l2(a.W + static_cast<long>(row[0]) * K, min(R, a.N - row[0]) * K * 2);
  }
  Bf16x8 wv[R][U];
  load_step(0, wv);  // weights only: allowed before pdl_wait()
  // The norm weight chunks of the prologue's second pass, also fetched before the wait
  // (a weight): their DRAM latency then overlaps the wait and the first pass instead of
  // following the block reduction. kNormPre chunks per thread (K up to 4096 at 256
  // threads); any further chunks are loaded in the pass.
  constexpr int kNormPre = kNorm ? 2 : 0;
  Bf16x8 nw[kNormPre > 0 ? kNormPre : 1];
#pragma unroll
  for (int i = 0; i < kNormPre; ++i) {
    const int c = threadIdx.x + i * kThreads;
    if (c < chunks) nw[i] = load8(a.norm_w + c * 8);
  }
  pdl_wait();
  pdl_trigger();

  const bf16* xsrc = a.x;
  bf16* h = reinterpret_cast<bf16*>(smem_raw);
  if constexpr (kNorm) {
    // Prologue: s = x (+ delta) in FP32, normalized once per block and rounded once to
    // bf16 (the recipe's attn_norm / mlp_norm), kept in shared memory for every warp.
    // All token rows in one pass: per-thread partial sums of squares for every row, one
    // block reduction (fixed order), then the normalize-and-round pass.
    __shared__ float scratch[NB][kWarps];
    auto sum8 = [&](int t, int c, float v[8]) {
      to_float8(load8(a.x + static_cast<long>(t) * K + c * 8), v);
      if (a.delta) {
        float d[8];
        to_float8(load8(a.delta + static_cast<long>(t) * K + c * 8), d);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] += d[i];
      }
    };
    // Pass 1 reads x (+ delta) from global memory once and parks the FP32 sum's bf16
    // inputs in shared memory (h, as raw x, then overwritten in place by pass 2: each
    // thread rewrites exactly the chunks it read, so no barrier is needed in between).
    float ss[NB];
#pragma unroll
    for (int t = 0; t < NB; ++t) ss[t] = 0.f;
    for (int c = threadIdx.x; c < chunks; c += kThreads) {
#pragma unroll
      for (int t = 0; t < NB; ++t) {
        if (t >= a.rows) break;
        float v[8];
        if (a.delta) {
          sum8(t, c, v);
        } else {
          const Bf16x8 raw = load8(a.x + static_cast<long>(t) * K + c * 8);
          *reinterpret_cast<Bf16x8*>(h + t * K + c * 8) = raw;
          to_float8(raw, v);
        }
#pragma unroll
        for (int i = 0; i < 8; ++i) ss[t] += v[i] * v[i];
      }
    }
#pragma unroll
    for (int t = 0; t < NB; ++t) {
      const float w = warp_sum(ss[t]);
      if (lane == 0) scratch[t][threadIdx.x >> 5] = w;
    }
    __syncthreads();
    float scale[NB];
#pragma unroll
    for (int t = 0; t < NB; ++t) {
      float total = 0.f;
      for (int i = 0; i < kWarps; ++i) total += scratch[t][i];
      scale[t] = inv_rms(total, K, a.eps);
    }
    auto normalize = [&](int c, const Bf16x8& wraw) {
      float w[8];
      to_float8(wraw, w);
#pragma unroll
      for (int t = 0; t < NB; ++t) {
        if (t >= a.rows) break;
        float v[8];
        if (a.delta) {
          sum8(t, c, v);
        } else {
          to_float8(*reinterpret_cast<const Bf16x8*>(h + t * K + c * 8), v);
        }
        Bf16x8 o;
#pragma unroll
        for (int i = 0; i < 4; ++i)
          o.h[i] = __floats2bfloat162_rn(v[2 * i] * scale[t] * w[2 * i],
                                         v[2 * i + 1] * scale[t] * w[2 * i + 1]);
        *reinterpret_cast<Bf16x8*>(h + t * K + c * 8) = o;
      }
    };
#pragma unroll
    for (int i = 0; i < kNormPre; ++i) {
      const int c = threadIdx.x + i * kThreads;
      if (c < chunks) normalize(c, nw[i]);
    }
    for (int c = threadIdx.x + kNormPre * kThreads; c < chunks; c += kThreads)
      normalize(c, load8(a.norm_w + c * 8));
    __syncthreads();
    xsrc = h;
  } else if (a.stage) {
    for (int i = threadIdx.x; i < a.rows * chunks; i += kThreads)
      *reinterpret_cast<Bf16x8*>(h + i * 8) = load8(a.x + static_cast<long>(i) * 8);
    __syncthreads();
    xsrc = h;
  }
  if (!active) return;

  float acc[NB][R];
#pragma unroll
  for (int t = 0; t < NB; ++t)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[t][r] = 0.f;

  for (int base = 0; base < chunks; base += 32 * U) {
    Bf16x8 cur[R][U];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int u = 0; u < U; ++u) cur[r][u] = wv[r][u];
    if (base + 32 * U < chunks) load_step(base + 32 * U, wv);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = base + u * 32 + lane;
      if (c >= chunks) break;
      float w[R][8];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (live[r]) to_float8(cur[r][u], w[r]);
      }
#pragma unroll
      for (int t = 0; t < NB; ++t) {
        if (t >= a.rows) break;
        float xv[8];
        to_float8(load8(xsrc + static_cast<long>(t) * K + c * 8), xv);
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[t][r] = fmaf(w[r][i], xv[i], acc[t][r]);
      }
    }
  }

#pragma unroll
  for (int t = 0; t < NB; ++t)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[t][r] = warp_sum(acc[t][r]);

  if (lane != 0) return;
  for (int t = 0; t < a.rows && t < NB; ++t) {
    if constexpr (E == Epilogue::GateUp) {
      a.out[static_cast<long>(t) * a.N + unit] = round_bf16(silu(acc[t][0]) * acc[t][1]);
    } else {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (!live[r]) continue;
        const long o = static_cast<long>(t) * a.N + row[r];
        if constexpr (E == Epilogue::Bias) {
          a.out[o] = round_bf16(acc[t][r] + (a.bias ? __bfloat162float(a.bias[row[r]]) : 0.f));
        } else if constexpr (E == Epilogue::RoundResidual) {
          const bf16 v = round_bf16(acc[t][r]);
          a.out[o] = v;
          a.resid_out[o] = round_bf16(__bfloat162float(a.resid[o]) + __bfloat162float(v));
        } else {
          a.out[o] = round_bf16(acc[t][r] + __bfloat162float(a.resid[o]));
        }
      }
    }
  }
}

template <int NB, int R, Epilogue E, bool kNorm>
void launch_nb(const GemvArgs& a, cudaStream_t stream) {
  const int n_units = E == Epilogue::GateUp ? a.N : (a.N + R - 1) / R;
  const int blocks = (n_units + kWarps - 1) / kWarps;
  const std::size_t rows_bytes = static_cast<std::size_t>(a.rows) * a.K * sizeof(bf16);
  GemvArgs args = a;
  args.stage = !kNorm && rows_bytes <= kMaxNormSmem;
  args.l2_prefetch = l2_prefetch_enabled();
  const std::size_t smem = kNorm || args.stage ? rows_bytes : 0;
  auto kernel = gemv_kernel<NB, R, E, kNorm>;
  static bool configured = false;  // raise the dynamic shared-memory limit once
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(kMaxNormSmem)));
    configured = true;
  }
  launch_pdl(kernel, blocks, kThreads, smem, stream, args);
}

// Picks the smallest compiled token count >= rows (accumulators live in registers).
template <int R, Epilogue E, bool kNorm>
void launch(const GemvArgs& a, cudaStream_t stream) {
  if (!gemv_supports(a.rows, a.K, kNorm))
    throw std::invalid_argument("fused GEMV: unsupported shape rows=" + std::to_string(a.rows) +
                                " K=" + std::to_string(a.K));
  if (a.rows == 1) return launch_nb<1, R, E, kNorm>(a, stream);
  if (a.rows == 2) return launch_nb<2, R, E, kNorm>(a, stream);
  if (a.rows <= 4) return launch_nb<4, R, E, kNorm>(a, stream);
  return launch_nb<8, R, E, kNorm>(a, stream);
}

}  // namespace

bool gemv_supports(int rows, int K, bool normalizes) {
  return rows >= 1 && rows <= kMaxGemvTokens && K > 0 && K % 8 == 0 &&
         (!normalizes || static_cast<std::size_t>(rows) * K * sizeof(bf16) <= kMaxNormSmem);
}

void launch_norm_qkv_gemv(const bf16* x, const bf16* norm_w, float eps, const bf16* W,
                          const bf16* bias, int rows, int K, int N, bf16* out,
                          cudaStream_t stream) {
  const GemvArgs a{x, nullptr, norm_w, eps, W, bias, nullptr, out, nullptr, rows, K, N, false};
  if (rows == 1 && gemv_supports(rows, K, true)) return launch_nb<1, 3, Epilogue::Bias, true>(a, stream);
  launch<2, Epilogue::Bias, true>(a, stream);
}

void launch_gemv_round_residual(const bf16* x, const bf16* W, const bf16* resid_in, int rows,
                                int K, int N, bf16* o, bf16* resid_out, cudaStream_t stream) {
  launch<2, Epilogue::RoundResidual, false>(
      {x, nullptr, nullptr, 0.f, W, nullptr, resid_in, o, resid_out, rows, K, N, false}, stream);
}

void launch_add_norm_gate_up_gemv(const bf16* x, const bf16* delta, const bf16* norm_w,
                                  float eps, const bf16* W_gate_up, int rows, int K, int I,
                                  bf16* act, cudaStream_t stream) {
  launch<2, Epilogue::GateUp, true>(
      {x, delta, norm_w, eps, W_gate_up, nullptr, nullptr, act, nullptr, rows, K, I, false}, stream);
}

void launch_gemv_residual(const bf16* x, const bf16* W, const bf16* resid, int rows, int K,
                          int N, bf16* out, cudaStream_t stream) {
  launch<2, Epilogue::Residual, false>(
      {x, nullptr, nullptr, 0.f, W, nullptr, resid, out, nullptr, rows, K, N, false}, stream);
}

}  // namespace fusecheck::fused
