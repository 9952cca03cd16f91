// The FP8-weight decode GEMV kernel and its four fused forms (see fp8_gemv.h).
#include "kernels/fused/fp8_gemv.h"

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
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
// Shared memory per block: the rows' codes (rows * ld bytes) and, with a norm prologue,
// their bf16 h (rows * K * 2 bytes).
constexpr std::size_t kMaxSmem = 200 * 1024;

enum class Epilogue { Bias, GateUp, RoundResidual, Residual };

struct Fp8GemvArgs {
  const bf16* x;
  const bf16* delta;  // added to x before the norm (gate/up form), or null
  const bf16* norm_w;
  float eps;
  const __nv_fp8_e4m3* W;  // [N' x ld] codes (N' = N, or 2N for GateUp)
  const float* w_scale;    // [N']
  const bf16* bias;
  const bf16* resid;
  bf16* out;
  bf16* resid_out;
  int* bad_row;
  int row0;  // index of this launch's first token row (groups of kMaxGemvTokens)
  int rows, K, ld, N;
};

// 16-byte chunks of codes per lane per row per step: more bytes in flight at few rows
// (R * U 16-byte loads per lane in flight, double-buffered).
template <int NB, int R>
constexpr int kChunksPerStep = R >= 4 ? 2 : NB <= 2 ? 4 : 2;

// Output rows per warp: 2 (default) or 4 (FUSECHECK_FP8_GEMV_ROWS=4: half the blocks, so
// half the per-block prologues, at the price of fewer warps in flight; an A/B switch for
// bench_fused, read once). For the SwiGLU form R / 2 gate rows and their up rows.
int rows_per_warp() {
  static const int r = [] {
    const char* env = std::getenv("FUSECHECK_FP8_GEMV_ROWS");
    return env && std::strcmp(env, "4") == 0 ? 4 : 2;
  }();
  return r;
}

__device__ __forceinline__ float2 e4m3x2_to_float2(unsigned pair) {
  const __half2 hv(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(pair & 0xffffu), __NV_E4M3));
  return __half22float2(hv);
}
__device__ __forceinline__ unsigned word_of(const uint4& v, int k) {
  return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}

__device__ __forceinline__ uint4 load16_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// |x| for the amax, +Inf for NaN and Inf (fmaxf would drop a NaN).
__device__ __forceinline__ float amax_term(float x) {
  const float a = fabsf(x);
  return a <= FLT_MAX ? a : INFINITY;
}

template <int NB, int R, Epilogue E, bool kNorm>
__global__ void __launch_bounds__(kThreads, 1) fp8_gemv_kernel(Fp8GemvArgs a) {
  constexpr int U = kChunksPerStep<NB, R>;
  constexpr int P = E == Epilogue::GateUp ? R / 2 : R;  // output units per warp
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int lane = threadIdx.x & 31;
  const int K = a.K, ld = a.ld, chunks8 = K / 8, chunks16 = ld / 16;
  unsigned char* codes = smem_raw;                                       // [rows x ld]
  bf16* h = reinterpret_cast<bf16*>(smem_raw + static_cast<std::size_t>(a.rows) * ld);  // [rows x K]

  const int unit = blockIdx.x * kWarps + (threadIdx.x >> 5);
  const int n_units = (a.N + P - 1) / P;
  const bool active = unit < n_units;
  int row[R];
  bool live[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    // SwiGLU: gate rows unit*P + p (r = p), their up rows N + unit*P + p (r = P + p).
    const int j = unit * P + (r % P);
    row[r] = E == Epilogue::GateUp && r >= P ? a.N + j : j;
    live[r] = active && j < a.N;
  }
  auto load_step = [&](int base, uint4 (&wv)[R][U]) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = base + u * 32 + lane;
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (c < chunks16 && live[r]) wv[r][u] = load16_stream(a.W + static_cast<long>(row[r]) * ld + c * 16);
    }
  };
  // Weights and their scales only before the wait (the PDL contract, fused_common.cuh).
  uint4 wv[R][U];
  load_step(0, wv);
  float ws[R];
#pragma unroll
  for (int r = 0; r < R; ++r) ws[r] = live[r] ? a.w_scale[row[r]] : 0.f;
  pdl_wait();
  pdl_trigger();

  const bf16* src = a.x;  // the bf16 row the twin quantizes
  float amax[NB];         // per thread, of the rows' values it touched
#pragma unroll
  for (int t = 0; t < NB; ++t) amax[t] = 0.f;
  if constexpr (kNorm) {
    // h = bf16(s * inv_rms(s) * w_norm), s = x (+ delta) in FP32: norm_gemv's prologue.
    __shared__ float ss_part[NB][kWarps];
    float ss[NB];
#pragma unroll
    for (int t = 0; t < NB; ++t) ss[t] = 0.f;
    auto sum8 = [&](int t, int c, float v[8]) {
      to_float8(load8(a.x + static_cast<long>(t) * K + c * 8), v);
      if (a.delta) {
        float d[8];
        to_float8(load8(a.delta + static_cast<long>(t) * K + c * 8), d);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] += d[i];
      }
    };
    for (int c = threadIdx.x; c < chunks8; c += kThreads) {
#pragma unroll
      for (int t = 0; t < NB; ++t) {
        if (t >= a.rows) break;
        float v[8];
        sum8(t, c, v);
#pragma unroll
        for (int i = 0; i < 8; ++i) ss[t] += v[i] * v[i];
      }
    }
#pragma unroll
    for (int t = 0; t < NB; ++t) {
      const float w = warp_sum(ss[t]);
      if (lane == 0) ss_part[t][threadIdx.x >> 5] = w;
    }
    __syncthreads();
    float scale[NB];
#pragma unroll
    for (int t = 0; t < NB; ++t) {
      float total = 0.f;
      for (int i = 0; i < kWarps; ++i) total += ss_part[t][i];
      scale[t] = inv_rms(total, K, a.eps);
    }
    for (int c = threadIdx.x; c < chunks8; c += kThreads) {
      float w[8];
      to_float8(load8(a.norm_w + c * 8), w);
#pragma unroll
      for (int t = 0; t < NB; ++t) {
        if (t >= a.rows) break;
        float v[8];
        sum8(t, c, v);
        Bf16x8 o;
#pragma unroll
        for (int i = 0; i < 4; ++i)
          o.h[i] = __floats2bfloat162_rn(v[2 * i] * scale[t] * w[2 * i], v[2 * i + 1] * scale[t] * w[2 * i + 1]);
        *reinterpret_cast<Bf16x8*>(h + t * K + c * 8) = o;
        float hv[8];  // the amax of the rounded h, in the same pass
        to_float8(o, hv);
#pragma unroll
        for (int i = 0; i < 8; ++i) amax[t] = fmaxf(amax[t], amax_term(hv[i]));
      }
    }
    __syncthreads();
    src = h;
  }

  // The twin's per-token quantization of each row: amax (block reduction, fixed order),
  // s_a = max(amax / 448, floor), codes e4m3(x / s_a) into shared memory, tail zero.
  __shared__ float amax_part[NB][kWarps];
  __shared__ float s_a[NB];
  {
    if constexpr (!kNorm) {
      for (int c = threadIdx.x; c < chunks8; c += kThreads) {
#pragma unroll
        for (int t = 0; t < NB; ++t) {
          if (t >= a.rows) break;
          float v[8];
          to_float8(load8(src + static_cast<long>(t) * K + c * 8), v);
#pragma unroll
          for (int i = 0; i < 8; ++i) amax[t] = fmaxf(amax[t], amax_term(v[i]));
        }
      }
    }
#pragma unroll
    for (int t = 0; t < NB; ++t) {
      const float m = warp_max(amax[t]);
      if (lane == 0) amax_part[t][threadIdx.x >> 5] = m;
    }
    __syncthreads();
    if (threadIdx.x < NB && static_cast<int>(threadIdx.x) < a.rows) {
      const int t = threadIdx.x;
      float m = 0.f;
      for (int i = 0; i < kWarps; ++i) m = fmaxf(m, amax_part[t][i]);
      const bool bad = isinf(m);
      s_a[t] = bad ? __int_as_float(0x7fffffff) : fmaxf(__fdiv_rn(m, 448.0f), kW8a8MinRowScale);
      if (bad && blockIdx.x == 0 && a.bad_row) atomicMin(a.bad_row, a.row0 + t);
    }
    __syncthreads();
    for (int c = threadIdx.x; c < ld / 8; c += kThreads) {
#pragma unroll
      for (int t = 0; t < NB; ++t) {
        if (t >= a.rows) break;
        uint2 word = make_uint2(0u, 0u);
        if (c < chunks8) {
          float v[8];
          to_float8(load8(src + static_cast<long>(t) * K + c * 8), v);
          unsigned char* packed = reinterpret_cast<unsigned char*>(&word);
          const float s = s_a[t];
#pragma unroll
          for (int i = 0; i < 8; ++i) packed[i] = __nv_fp8_e4m3(__fdiv_rn(v[i], s)).__x;
        }
        *reinterpret_cast<uint2*>(codes + static_cast<std::size_t>(t) * ld + c * 8) = word;
      }
    }
    __syncthreads();
  }
  if (!active) return;

  float acc[NB][R];
#pragma unroll
  for (int t = 0; t < NB; ++t)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[t][r] = 0.f;

  for (int base = 0; base < chunks16; base += 32 * U) {
    uint4 cur[R][U];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int u = 0; u < U; ++u) cur[r][u] = wv[r][u];
    if (base + 32 * U < chunks16) load_step(base + 32 * U, wv);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = base + u * 32 + lane;
      if (c >= chunks16) break;
      uint4 act[NB];
#pragma unroll
      for (int t = 0; t < NB; ++t)
        if (t < a.rows) act[t] = *reinterpret_cast<const uint4*>(codes + static_cast<std::size_t>(t) * ld + c * 16);
      // Two codes at a time: weight pairs per row, activation pairs per token, FP32 FMA (each
      // product of two E4M3 values is exact in FP32: fmaf adds it with one rounding).
#pragma unroll
      for (int k = 0; k < 4; ++k) {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          float2 wf[R];
#pragma unroll
          for (int r = 0; r < R; ++r)
            wf[r] = live[r] ? e4m3x2_to_float2(word_of(cur[r][u], k) >> (16 * hh)) : make_float2(0.f, 0.f);
#pragma unroll
          for (int t = 0; t < NB; ++t) {
            if (t >= a.rows) break;
            const float2 af = e4m3x2_to_float2(word_of(act[t], k) >> (16 * hh));
#pragma unroll
            for (int r = 0; r < R; ++r) {
              acc[t][r] = fmaf(wf[r].x, af.x, acc[t][r]);
              acc[t][r] = fmaf(wf[r].y, af.y, acc[t][r]);
            }
          }
        }
      }
    }
  }

#pragma unroll
  for (int t = 0; t < NB; ++t)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[t][r] = warp_sum(acc[t][r]);

  if (lane != 0) return;
  for (int t = 0; t < a.rows && t < NB; ++t) {
    float y[R];
#pragma unroll
    for (int r = 0; r < R; ++r) y[r] = __fmul_rn(s_a[t], __fmul_rn(ws[r], acc[t][r]));
    if constexpr (E == Epilogue::GateUp) {
#pragma unroll
      for (int p = 0; p < P; ++p)
        if (live[p]) a.out[static_cast<long>(t) * a.N + row[p]] = round_bf16(silu(y[p]) * y[P + p]);
    } else {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (!live[r]) continue;
        const long o = static_cast<long>(t) * a.N + row[r];
        if constexpr (E == Epilogue::Bias) {
          a.out[o] = round_bf16(a.bias ? __fadd_rn(y[r], __bfloat162float(a.bias[row[r]])) : y[r]);
        } else if constexpr (E == Epilogue::RoundResidual) {
          const bf16 v = round_bf16(y[r]);
          a.out[o] = v;
          a.resid_out[o] = round_bf16(__fadd_rn(__bfloat162float(a.resid[o]), __bfloat162float(v)));
        } else {
          a.out[o] = round_bf16(__fadd_rn(y[r], __bfloat162float(a.resid[o])));
        }
      }
    }
  }
}

std::size_t smem_bytes(int rows, int K, int ld, bool norm) {
  return static_cast<std::size_t>(rows) * ld + (norm ? static_cast<std::size_t>(rows) * K * sizeof(bf16) : 0);
}

int round_up16(int k) { return (k + 15) / 16 * 16; }

template <int NB, int R, Epilogue E, bool kNorm>
void launch_nb(const Fp8GemvArgs& a, cudaStream_t stream) {
  constexpr int P = E == Epilogue::GateUp ? R / 2 : R;
  const int n_units = (a.N + P - 1) / P;
  const int blocks = (n_units + kWarps - 1) / kWarps;
  auto kernel = fp8_gemv_kernel<NB, R, E, kNorm>;
  static bool configured = false;  // raise the dynamic shared-memory limit once
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kMaxSmem)));
    configured = true;
  }
  launch_pdl(kernel, blocks, kThreads, smem_bytes(a.rows, a.K, a.ld, kNorm), stream, a);
}

// Groups of kMaxGemvTokens rows, each on the smallest compiled row count that holds it.
template <Epilogue E, bool kNorm>
void launch(Fp8GemvArgs a, const Fp8Weight& W, const char* form, cudaStream_t stream) {
  a.K = W.k;
  a.ld = W.stride();
  if (a.rows <= 0 || !fp8_gemv_supports(a.K, kNorm) || a.ld % 16 != 0 ||
      reinterpret_cast<std::uintptr_t>(W.codes.data()) % 16 != 0) {
    throw std::invalid_argument(std::string("fp8 GEMV (") + form + "): unsupported shape rows=" +
                                std::to_string(a.rows) + " K=" + std::to_string(a.K) + " ld=" + std::to_string(a.ld) +
                                " (K a multiple of 8, ld of 16: pad_fp8_weight_rows)");
  }
  a.W = W.codes.data();
  a.w_scale = W.scales.data();
  const int total = a.rows;
  for (int r0 = 0; r0 < total; r0 += kMaxGemvTokens) {
    Fp8GemvArgs g = a;
    const int n = std::min(kMaxGemvTokens, total - r0);
    const long in_off = static_cast<long>(r0) * a.K, out_off = static_cast<long>(r0) * a.N;
    g.row0 = r0;
    g.rows = n;
    g.x = a.x + in_off;
    if (a.delta) g.delta = a.delta + in_off;
    if (a.resid) g.resid = a.resid + out_off;
    g.out = a.out + out_off;
    if (a.resid_out) g.resid_out = a.resid_out + out_off;
    if (n == 1 && rows_per_warp() == 4) launch_nb<1, 4, E, kNorm>(g, stream);
    else if (n == 1) launch_nb<1, 2, E, kNorm>(g, stream);
    else if (n == 2) launch_nb<2, 2, E, kNorm>(g, stream);
    else if (n <= 4) launch_nb<4, 2, E, kNorm>(g, stream);
    else launch_nb<8, 2, E, kNorm>(g, stream);
  }
}

__global__ void add_residual_kernel(const float* y, const bf16* resid, long count, bf16* out) {
  for (long i = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<long>(gridDim.x) * blockDim.x)
    out[i] = round_bf16(__fadd_rn(y[i], __bfloat162float(resid[i])));
}

__global__ void pad_rows_kernel(const __nv_fp8_e4m3* in, int n, int k, int ld, __nv_fp8_e4m3* out) {
  const long count = static_cast<long>(n) * ld;
  for (long i = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<long>(gridDim.x) * blockDim.x) {
    const long r = i / ld;
    const int c = static_cast<int>(i % ld);
    __nv_fp8_e4m3 v;
    v.__x = 0;
    if (c < k) v = in[r * k + c];
    out[i] = v;
  }
}

}  // namespace

void pad_fp8_weight_rows(Fp8Weight& w, cudaStream_t stream) {
  const int ld = round_up16(w.k);
  if (w.stride() == ld) return;
  if (w.stride() != w.k) throw std::invalid_argument("pad_fp8_weight_rows: the weight is already padded");
  cuda::DeviceBuffer<__nv_fp8_e4m3> padded(static_cast<std::size_t>(w.n) * ld);
  const long count = static_cast<long>(w.n) * ld;
  const int blocks = static_cast<int>(std::min<long>((count + 255) / 256, 4096));
  pad_rows_kernel<<<blocks, 256, 0, stream>>>(w.codes.data(), w.n, w.k, ld, padded.data());
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaStreamSynchronize(stream));
  w.codes = std::move(padded);
  w.ld = ld;
}

bool fp8_gemv_supports(int K, bool normalizes) {
  return K > 0 && K % 8 == 0 && smem_bytes(kMaxGemvTokens, K, round_up16(K), normalizes) <= kMaxSmem;
}

void launch_fp8_norm_qkv_gemv(const bf16* x, const bf16* norm_w, float eps, const Fp8Weight& W, const bf16* bias,
                              int rows, bf16* out, int* bad_row, cudaStream_t stream) {
  Fp8GemvArgs a{};
  a.x = x;
  a.norm_w = norm_w;
  a.eps = eps;
  a.bias = bias;
  a.out = out;
  a.bad_row = bad_row;
  a.rows = rows;
  a.N = W.n;
  launch<Epilogue::Bias, true>(a, W, "attn_norm+qkv", stream);
}

void launch_fp8_gemv_round_residual(const bf16* x, const Fp8Weight& W, const bf16* resid_in, int rows, bf16* o,
                                    bf16* resid_out, int* bad_row, cudaStream_t stream) {
  Fp8GemvArgs a{};
  a.x = x;
  a.resid = resid_in;
  a.out = o;
  a.resid_out = resid_out;
  a.bad_row = bad_row;
  a.rows = rows;
  a.N = W.n;
  launch<Epilogue::RoundResidual, false>(a, W, "o_proj+residual", stream);
}

void launch_fp8_add_norm_gate_up_gemv(const bf16* x, const bf16* delta, const bf16* norm_w, float eps,
                                      const Fp8Weight& W_gate_up, int rows, bf16* act, int* bad_row,
                                      cudaStream_t stream) {
  if (W_gate_up.n % 2 != 0) throw std::invalid_argument("fp8 GEMV (gate_up): the weight needs 2I rows");
  Fp8GemvArgs a{};
  a.x = x;
  a.delta = delta;
  a.norm_w = norm_w;
  a.eps = eps;
  a.out = act;
  a.bad_row = bad_row;
  a.rows = rows;
  a.N = W_gate_up.n / 2;
  launch<Epilogue::GateUp, true>(a, W_gate_up, "add+mlp_norm+gate_up", stream);
}

void launch_fp8_gemv_residual(const bf16* x, const Fp8Weight& W, const bf16* resid, int rows, bf16* out,
                              int* bad_row, cudaStream_t stream) {
  Fp8GemvArgs a{};
  a.x = x;
  a.resid = resid;
  a.out = out;
  a.bad_row = bad_row;
  a.rows = rows;
  a.N = W.n;
  launch<Epilogue::Residual, false>(a, W, "down+residual", stream);
}

void launch_add_residual_fp32(const float* y, const bf16* resid, long count, bf16* out, cudaStream_t stream) {
  if (count <= 0) throw std::invalid_argument("add_residual_fp32: count must be positive");
  const int blocks = static_cast<int>(std::min<long>((count + 255) / 256, 8192));
  add_residual_kernel<<<blocks, 256, 0, stream>>>(y, resid, count, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fusecheck::fused
