// Each fused kernel against a double-precision host reference at awkward shapes (odd head
// counts, lengths that are not multiples of any tile, KV lengths 1 and 1025, batch 3),
// with exact small-integer checks where the arithmetic is exact, and reproducibility.
// Tolerances: a kernel output is ONE rounding to bf16 of an FP32 value, so it sits within
// 0.5 bf16 ulp + the FP32 error of the exact value; each test bounds the FP32 error by
// gamma_K * sum|terms| (gamma_K = K * 2^-24, the classic summation bound) and allows 1 ulp.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "fused_test_util.h"
#include "kernels/fused/add_rmsnorm.h"
#include "kernels/fused/attention_decode.h"
#include "kernels/fused/attention_prefill.h"
#include "kernels/fused/fused_layer.h"
#include "kernels/fused/gemm_lt.h"
#include "kernels/fused/norm_gemv.h"
#include "kernels/fused/qk_norm_rope.h"
#include "kernels/fused/silu_mul.h"

namespace fusecheck::test {
namespace {

using namespace fusecheck::fused;

double gamma(int k) { return k * std::ldexp(1.0, -24); }
double silu_d(double g) { return g / (1.0 + std::exp(-g)); }

// Normalized row in double (eps inside the square root), before any rounding.
std::vector<double> rmsnorm_d(const std::vector<double>& s, const Bits& w, double eps) {
  double ss = 0;
  for (double v : s) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / s.size() + eps);
  std::vector<double> out(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) out[i] = s[i] * inv * val(w, i);
  return out;
}

TEST(FusedKernels, AddRmsNormSmallRoundsSumOnceAndNormalizesFp32Sum) {
  SKIP_WITHOUT_GPU();
  const int rows = 3, n = 1000;
  const double eps = 1e-6;
  const Bits x = random_bits(rows * n, 1, -2, 2), d = random_bits(rows * n, 2, -2, 2),
             w = random_bits(n, 3, 0.5f, 1.5f);
  auto dx = to_device(x), dd = to_device(d), dw = to_device(w);
  for (bool with_delta : {true, false}) {
    auto resid = poisoned(rows * n), normed = poisoned(rows * n);
    launch_add_rmsnorm(with_delta ? dd.data() : nullptr, dx.data(), dw.data(), eps, rows, n,
                       resid.data(), normed.data(), nullptr);
    const Bits r = to_host(resid), h = to_host(normed);
    std::vector<double> sum_ref, norm_ref, tol;
    for (int row = 0; row < rows; ++row) {
      std::vector<double> s(n);
      for (int i = 0; i < n; ++i) s[i] = val(x, row * n + i) + (with_delta ? val(d, row * n + i) : 0);
      sum_ref.insert(sum_ref.end(), s.begin(), s.end());
      for (double v : rmsnorm_d(s, w, eps)) {
        norm_ref.push_back(v);
        tol.push_back(bf16_ulp(v));  // one rounding; FP32 norm error ~1e-6 relative
      }
    }
    // The FP32 sum of two bf16 values is exact here, so resid is the exact sum rounded once.
    if (with_delta) expect_bits("resid", r, sum_ref);
    expect_within(with_delta ? "normed(x+delta)" : "normed(x)", h, norm_ref, tol);
  }
}

// x and W small integers: every product and partial sum is an exact FP32 integer, so the
// outputs must equal the exact result rounded once to bf16, bit for bit.
TEST(FusedKernels, GemvResidualSmallIntegerInputsAreExact) {
  SKIP_WITHOUT_GPU();
  const int K = 1000, N = 37;
  for (int rows : {1, 3, 8}) {
    const Bits x = integer_bits(rows * K, 10 + rows, -3, 3), W = integer_bits(N * K, 11, -3, 3),
               resid = integer_bits(rows * N, 12, -50, 50);
    auto dx = to_device(x), dW = to_device(W), dr = to_device(resid);
    auto out = poisoned(rows * N), o = poisoned(rows * N), resid_out = poisoned(rows * N);
    launch_gemv_residual(dx.data(), dW.data(), dr.data(), rows, K, N, out.data(), nullptr);
    launch_gemv_round_residual(dx.data(), dW.data(), dr.data(), rows, K, N, o.data(),
                               resid_out.data(), nullptr);
    std::vector<double> exact(rows * N), exact_o(rows * N), exact_resid(rows * N);
    for (int t = 0; t < rows; ++t)
      for (int j = 0; j < N; ++j) {
        double acc = 0;
        for (int k = 0; k < K; ++k) acc += val(x, t * K + k) * val(W, j * K + k);
        exact[t * N + j] = val(resid, t * N + j) + acc;
        exact_o[t * N + j] = acc;
        exact_resid[t * N + j] = val(resid, t * N + j) + bf16_to_float(double_to_bf16(acc));
      }
    expect_bits("down+residual rows=" + std::to_string(rows), to_host(out), exact);
    expect_bits("o_proj rows=" + std::to_string(rows), to_host(o), exact_o);
    expect_bits("resid_mid rows=" + std::to_string(rows), to_host(resid_out), exact_resid);
  }
}

// Reference for the norm-prologue GEMVs: h = bf16(norm(s)) as the recipe rounds it, then
// dots in double. `flip` allows for an h element that rounds the other way when the FP32
// inv_rms differs from the double one in its last bit (rare: ~2^-16 per element).
struct NormGemvRef {
  std::vector<double> h;      // [rows x K] rounded normalized input
  std::vector<double> h_ulp;  // its bf16 spacing
};
NormGemvRef norm_rows(const Bits& x, const Bits* delta, const Bits& w, int rows, int K, double eps) {
  NormGemvRef r;
  for (int t = 0; t < rows; ++t) {
    std::vector<double> s(K);
    for (int k = 0; k < K; ++k) s[k] = val(x, t * K + k) + (delta ? val(*delta, t * K + k) : 0);
    for (double v : rmsnorm_d(s, w, eps)) {
      r.h.push_back(bf16_to_float(double_to_bf16(v)));
      r.h_ulp.push_back(bf16_ulp(v));
    }
  }
  return r;
}

TEST(FusedKernels, NormQkvGemvSmallMatchesDouble) {
  SKIP_WITHOUT_GPU();
  const int K = 264, N = 7 * 16 + 2 * 16;  // 7 query heads, 1 kv head, head_dim 16
  const double eps = 1e-6;
  for (int rows : {1, 3, 8}) {
    for (bool with_bias : {false, true}) {
      const Bits x = random_bits(rows * K, 20 + rows, -2, 2), w = random_bits(K, 21, 0.5f, 1.5f),
                 W = random_bits(N * K, 22, -0.1f, 0.1f), b = random_bits(N, 23, -0.5f, 0.5f);
      auto dx = to_device(x), dw = to_device(w), dW = to_device(W), db = to_device(b);
      auto out = poisoned(rows * N);
      launch_norm_qkv_gemv(dx.data(), dw.data(), eps, dW.data(), with_bias ? db.data() : nullptr,
                           rows, K, N, out.data(), nullptr);
      const NormGemvRef h = norm_rows(x, nullptr, w, rows, K, eps);
      std::vector<double> ref, tol;
      for (int t = 0; t < rows; ++t)
        for (int j = 0; j < N; ++j) {
          double acc = with_bias ? val(b, j) : 0, mag = 0, flip = 0;
          for (int k = 0; k < K; ++k) {
            const double wv = val(W, j * K + k);
            acc += h.h[t * K + k] * wv;
            mag += std::fabs(h.h[t * K + k] * wv);
            flip = std::max(flip, std::fabs(wv) * h.h_ulp[t * K + k]);
          }
          ref.push_back(acc);
          tol.push_back(bf16_ulp(acc) + gamma(K) * mag + 2 * flip);
        }
      expect_within("qkv rows=" + std::to_string(rows) + (with_bias ? " bias" : ""), to_host(out),
                    ref, tol);
    }
  }
}

TEST(FusedKernels, AddNormGateUpSwigluGemvSmallMatchesDouble) {
  SKIP_WITHOUT_GPU();
  const int K = 264, I = 100;
  const double eps = 1e-5;
  for (int rows : {1, 3, 8}) {
    const Bits x = random_bits(rows * K, 30 + rows, -2, 2), o = random_bits(rows * K, 31, -1, 1),
               w = random_bits(K, 32, 0.5f, 1.5f), W = random_bits(2 * I * K, 33, -0.2f, 0.2f);
    auto dx = to_device(x), dox = to_device(o), dw = to_device(w), dW = to_device(W);
    auto act = poisoned(rows * I);
    launch_add_norm_gate_up_gemv(dx.data(), dox.data(), dw.data(), eps, dW.data(), rows, K, I,
                                 act.data(), nullptr);
    const NormGemvRef h = norm_rows(x, &o, w, rows, K, eps);
    std::vector<double> ref, tol;
    for (int t = 0; t < rows; ++t)
      for (int j = 0; j < I; ++j) {
        double g = 0, u = 0, mg = 0, mu = 0, fg = 0, fu = 0;
        for (int k = 0; k < K; ++k) {
          const double hv = h.h[t * K + k], wg = val(W, j * K + k), wu = val(W, (I + j) * K + k);
          g += hv * wg;
          u += hv * wu;
          mg += std::fabs(hv * wg);
          mu += std::fabs(hv * wu);
          fg = std::max(fg, std::fabs(wg) * h.h_ulp[t * K + k]);
          fu = std::max(fu, std::fabs(wu) * h.h_ulp[t * K + k]);
        }
        const double a = silu_d(g) * u, dg = gamma(K) * mg + 2 * fg, du = gamma(K) * mu + 2 * fu;
        ref.push_back(a);
        // |silu'| <= 1.1: the error in g moves act by at most 1.1 dg |u|.
        tol.push_back(bf16_ulp(a) + 1.1 * dg * std::fabs(u) + std::fabs(silu_d(g)) * du + 1e-6 * std::fabs(a));
      }
    expect_within("act rows=" + std::to_string(rows), to_host(act), ref, tol);
  }
}

// Norm (optional) + RoPE of one head in double at position `pos` (theta 1e6), and the
// tolerance of its bf16 output: one rounding + the FP32 norm/rotation and FP32 table.
std::vector<double> norm_rope_d(std::vector<double> x, const Bits* norm_w, int pos,
                                bool interleaved, std::vector<double>& tol) {
  const int D = static_cast<int>(x.size());
  if (norm_w) x = rmsnorm_d(x, *norm_w, 1e-6);
  std::vector<double> y(D);
  for (int p = 0; p < D / 2; ++p) {
    const int i1 = interleaved ? 2 * p : p, i2 = interleaved ? 2 * p + 1 : p + D / 2;
    const double ang = pos * std::pow(1e6, -2.0 * p / D);
    y[i1] = x[i1] * std::cos(ang) - x[i2] * std::sin(ang);
    y[i2] = x[i2] * std::cos(ang) + x[i1] * std::sin(ang);
  }
  tol.resize(D);
  for (int i = 0; i < D; ++i)
    tol[i] = bf16_ulp(y[i]) + 2e-6 * (std::fabs(x[i]) + std::fabs(x[i ^ 1]) +
                                      std::fabs(x[(i + D / 2) % D]));
  return y;
}

TEST(FusedKernels, QkNormRopeSmallMatchesDoubleAndAppendsCache) {
  SKIP_WITHOUT_GPU();
  const int batch = 3, n = 5, start = 11, capacity = 20, H = 7, KVH = 1;
  for (int D : {16, 128}) {
    for (bool qk_norm : {false, true}) {
      for (bool interleaved : {false, true}) {
        ModelSpec spec;
        spec.head_dim = D;
        spec.rope_dim = D;
        spec.rope_theta = 1e6;
        std::vector<float> cos_t, sin_t;
        rope_tables(spec, capacity, cos_t, sin_t);
        const int W = (H + 2 * KVH) * D, rows = batch * n;
        const Bits qkv = random_bits(rows * W, 40 + D, -2, 2), qn = random_bits(D, 41, 0.5f, 3.f),
                   kn = random_bits(D, 42, 0.5f, 3.f);
        auto dqkv = to_device(qkv), dqn = to_device(qn), dkn = to_device(kn);
        cuda::DeviceBuffer<float> dcos, dsin;
        dcos.upload(cos_t);
        dsin.upload(sin_t);
        auto q_rope = poisoned(rows * H * D), kc = poisoned(batch * KVH * capacity * D),
             vc = poisoned(batch * KVH * capacity * D);
        RopeArgs a;
        a.qkv = dqkv.data();
        a.q_norm_w = qk_norm ? dqn.data() : nullptr;
        a.k_norm_w = qk_norm ? dkn.data() : nullptr;
        a.eps = 1e-6f;
        a.cos_table = dcos.data();
        a.sin_table = dsin.data();
        a.interleaved = interleaved;
        a.batch = batch;
        a.n = n;
        a.start = start;
        a.n_heads = H;
        a.n_kv_heads = KVH;
        a.head_dim = D;
        a.capacity = capacity;
        a.q_rope = q_rope.data();
        a.k_cache = kc.data();
        a.v_cache = vc.data();
        launch_qk_norm_rope(a, nullptr);
        const Bits hq = to_host(q_rope), hk = to_host(kc), hv = to_host(vc);
        std::vector<double> q_ref, q_tol, k_ref, k_tol, v_ref;
        Bits k_got, v_got;
        for (int row = 0; row < rows; ++row) {
          const int b = row / n, pos = start + row % n;
          for (int head = 0; head < H + KVH; ++head) {
            const bool is_q = head < H;
            std::vector<double> x(D), tol;
            for (int i = 0; i < D; ++i) x[i] = val(qkv, row * W + head * D + i);
            const auto y = norm_rope_d(x, qk_norm ? (is_q ? &qn : &kn) : nullptr, pos, interleaved, tol);
            for (int i = 0; i < D; ++i) {
              if (is_q) {
                q_ref.push_back(y[i]);
                q_tol.push_back(tol[i]);
              } else {
                k_ref.push_back(y[i]);
                k_tol.push_back(tol[i]);
                k_got.push_back(hk[((b * KVH) * capacity + pos) * D + i]);
              }
            }
          }
          for (int i = 0; i < D; ++i) {
            v_ref.push_back(val(qkv, row * W + (H + KVH) * D + i));
            v_got.push_back(hv[((b * KVH) * capacity + pos) * D + i]);
          }
        }
        const std::string c = " D=" + std::to_string(D) + (qk_norm ? " qk_norm" : "") +
                              (interleaved ? " interleaved" : " neox");
        expect_within("q_rope" + c, hq, q_ref, q_tol);
        expect_within("k_rope" + c, k_got, k_ref, k_tol);
        expect_bits("v cache" + c, v_got, v_ref);
      }
    }
  }
}

// Attention reference in double: rows [batch*n x H*D]; token t of a sequence at start + t.
std::vector<double> attention_d(const Bits& q, const Bits& kc, const Bits& vc, int batch, int n,
                                int start, int H, int KVH, int D, int cap, double max_v,
                                std::vector<double>& tol) {
  std::vector<double> out;
  const int G = H / KVH;
  for (int b = 0; b < batch; ++b)
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < H; ++h) {
        const int kvh = h / G, len = start + t + 1;
        const long base = (static_cast<long>(b) * KVH + kvh) * cap * D;
        std::vector<double> s(len);
        double m = -1e300;
        for (int p = 0; p < len; ++p) {
          double acc = 0;
          for (int d = 0; d < D; ++d) acc += val(q, ((b * n + t) * H + h) * D + d) * val(kc, base + p * D + d);
          s[p] = acc / std::sqrt(static_cast<double>(D));
          m = std::max(m, s[p]);
        }
        double l = 0;
        for (double& v : s) l += (v = std::exp(v - m));
        for (int d = 0; d < D; ++d) {
          double o = 0;
          for (int p = 0; p < len; ++p) o += s[p] * val(vc, base + p * D + d);
          out.push_back(o / l);
          // one rounding; FP32 exp/sums: relative ~1e-6 of the largest |v|
          tol.push_back(bf16_ulp(o / l) + 1e-5 * max_v);
        }
      }
  return out;
}

struct AttnCase {
  int batch, H, KVH, D, kv_len;
};

TEST(FusedKernels, DecodeAttentionSmallMatchesDouble) {
  SKIP_WITHOUT_GPU();
  // Chunking: 32 positions while the blocks number at most 1024 (all but the last two
  // cases: 1, 3 and 33 chunks; on a 132-SM H100 the 3-chunk grid merges in the split kernel,
  // the 297-block 33-chunk grid and the 600-block 1500-position one in the combine kernel); 5 x 5 kv heads x 1500 positions takes
  // 64-position chunks (fewer partials than the scratch stride holds); 12 query heads over
  // one kv head take two blocks of 8 heads per chunk.
  for (const AttnCase c : {AttnCase{3, 9, 3, 64, 1}, AttnCase{3, 9, 3, 128, 65},
                           AttnCase{3, 9, 3, 128, 1025}, AttnCase{1, 7, 7, 64, 64},
                           AttnCase{2, 5, 1, 16, 130}, AttnCase{5, 10, 5, 32, 1500},
                           AttnCase{2, 12, 1, 128, 100}}) {
    const int cap = c.kv_len + 3;
    const Bits q = random_bits(c.batch * c.H * c.D, 50, -2, 2),
               kc = random_bits(c.batch * c.KVH * cap * c.D, 51, -2, 2),
               vc = random_bits(c.batch * c.KVH * cap * c.D, 52, -1, 1);
    auto dq = to_device(q), dk = to_device(kc), dv = to_device(vc), out = poisoned(c.batch * c.H * c.D);
    cuda::DeviceBuffer<float> scratch(decode_attention_scratch_floats(c.batch, c.H, c.D, c.kv_len));
    DecodeAttentionArgs a;
    a.q = dq.data();
    a.k_cache = dk.data();
    a.v_cache = dv.data();
    a.batch = c.batch;
    a.n_heads = c.H;
    a.n_kv_heads = c.KVH;
    a.head_dim = c.D;
    a.capacity = cap;
    a.kv_len = c.kv_len;
    a.partial_acc = scratch.data();
    a.partial_ml = scratch.data() + std::size_t(c.batch) * c.H * decode_attention_splits(c.kv_len) * c.D;
    cuda::DeviceBuffer<unsigned int> counters(decode_attention_counters(c.batch, c.H));
    CUDA_CHECK(cudaMemset(counters.data(), 0, counters.size() * sizeof(unsigned int)));
    a.counters = counters.data();
    a.out = out.data();
    launch_decode_attention(a, nullptr);
    const Bits first = to_host(out);
    std::vector<double> tol;
    const auto ref = attention_d(q, kc, vc, c.batch, 1, c.kv_len - 1, c.H, c.KVH, c.D, cap, 1.0, tol);
    const std::string name = "decode attention kv=" + std::to_string(c.kv_len) + " D=" + std::to_string(c.D);
    expect_within(name, first, ref, tol);
    if (c.kv_len == 1) {  // one key: p = 1, the output is v itself, exactly
      std::vector<double> v;
      for (int b = 0; b < c.batch; ++b)
        for (int h = 0; h < c.H; ++h)
          for (int d = 0; d < c.D; ++d) v.push_back(val(vc, ((b * c.KVH + h / (c.H / c.KVH)) * cap) * c.D + d));
      expect_bits(name + " equals v", first, v);
    }
    out.fill_poison();  // same inputs again: the chunks merge in a fixed order, and the
    launch_decode_attention(a, nullptr);  // first launch must have left its counters zero
    EXPECT_TRUE(to_host(out) == first) << name << ": two runs differ";
    EXPECT_EQ(std::vector<unsigned int>(counters.size(), 0u), counters.download())
        << name << ": arrival counters not reset";
  }
}

// Where the chunks merge changes no bits: the split kernel's last block (merge = 1) and the
// combine kernel (merge = 0) give the same output bit for bit, on the default chunk plan and
// the batch-invariant plan's fixed 128-position chunks (which is why that plan may merge in
// the split kernel at one wave and in the combine kernel above: attention_decode.h). Cases:
// 2 to 33 chunks, head groups of 1, 3 and 12 (two head chunks), head_dim 16 to 128, with
// and without the folded q/k norm + RoPE (whose prologue shares the merge's scratch space).
TEST(FusedKernels, DecodeAttentionMergeInSplitKernelEqualsCombineKernel) {
  SKIP_WITHOUT_GPU();
  int compared = 0;
  for (const int fixed_chunk : {0, 128})
    for (const AttnCase c : {AttnCase{3, 9, 3, 128, 1025}, AttnCase{1, 8, 8, 64, 300}, AttnCase{2, 12, 1, 128, 129},
                             AttnCase{1, 5, 5, 16, 4100}})
      for (const bool fold : {false, true}) {
        const int cap = c.kv_len + 3, W = (c.H + 2 * c.KVH) * c.D;
        const Bits q = random_bits(c.batch * c.H * c.D, 60, -2, 2),
                   kc = random_bits(c.batch * c.KVH * cap * c.D, 61, -2, 2),
                   vc = random_bits(c.batch * c.KVH * cap * c.D, 62, -1, 1),
                   qkv = random_bits(std::size_t(c.batch) * W, 63, -2, 2);
        ModelSpec spec;
        spec.head_dim = c.D;
        spec.rope_dim = c.D;
        spec.rope_theta = 1e6;
        std::vector<float> cos_t, sin_t;
        rope_tables(spec, cap, cos_t, sin_t);
        cuda::DeviceBuffer<float> dcos, dsin;
        dcos.upload(cos_t);
        dsin.upload(sin_t);
        auto dq = to_device(q), dqkv = to_device(qkv);
        cuda::DeviceBuffer<float> scratch(decode_attention_scratch_floats(c.batch, c.H, c.D, c.kv_len));
        cuda::DeviceBuffer<unsigned int> counters(decode_attention_counters(c.batch, c.H));
        CUDA_CHECK(cudaMemset(counters.data(), 0, counters.size() * sizeof(unsigned int)));
        Bits got[2];
        for (const int merge : {0, 1}) {
          auto dk = to_device(kc), dv = to_device(vc), out = poisoned(c.batch * c.H * c.D),
               q_rope = poisoned(c.batch * c.H * c.D);
          DecodeAttentionArgs a;
          a.q = dq.data();
          a.k_cache = dk.data();
          a.v_cache = dv.data();
          a.batch = c.batch;
          a.n_heads = c.H;
          a.n_kv_heads = c.KVH;
          a.head_dim = c.D;
          a.capacity = cap;
          a.kv_len = c.kv_len;
          a.partial_acc = scratch.data();
          a.partial_ml = scratch.data() + std::size_t(c.batch) * c.H * decode_attention_splits(c.kv_len) * c.D;
          a.counters = counters.data();
          a.out = out.data();
          a.fixed_chunk = fixed_chunk;
          a.merge = merge;
          if (fold) {
            a.qkv = dqkv.data();
            a.cos_table = dcos.data();
            a.sin_table = dsin.data();
            a.q_rope = q_rope.data();
          }
          launch_decode_attention(a, nullptr);
          got[merge] = to_host(out);
        }
        const std::string name = "kv=" + std::to_string(c.kv_len) + " heads " + std::to_string(c.H) + "/" +
                                 std::to_string(c.KVH) + " D=" + std::to_string(c.D) + " chunk " +
                                 std::to_string(decode_attention_chunk(c.batch, c.H, c.KVH, c.kv_len, fixed_chunk)) +
                                 (fold ? " folded" : "");
        EXPECT_GT(c.kv_len, decode_attention_chunk(c.batch, c.H, c.KVH, c.kv_len, fixed_chunk)) << name << ": one chunk";
        EXPECT_TRUE(got[0] == got[1]) << name << ": the split kernel's merge differs from the combine kernel's";
        EXPECT_EQ(std::vector<unsigned int>(counters.size(), 0u), counters.download())
            << name << ": arrival counters not reset";
        ++compared;
      }
  EXPECT_EQ(compared, 16);
}

struct FoldCase {
  int batch, H, KVH, D, kv_len;
  bool qk_norm, interleaved;
  std::string name() const {
    return "fold b=" + std::to_string(batch) + " heads=" + std::to_string(H) + "/" +
           std::to_string(KVH) + " D=" + std::to_string(D) + " kv=" + std::to_string(kv_len) +
           (qk_norm ? " qk_norm" : "") + (interleaved ? " interleaved" : " neox");
  }
};

// Decode attention with q/k norm + RoPE + KV append folded in (DecodeAttentionArgs::qkv)
// against the two-kernel sequence it replaces (qk_norm_rope, then decode attention on
// q_rope), bit for bit: q_rope, both whole caches and the attention output. Then against
// double references: q_rope and the new K row (norm + rotation), the new V row (exact),
// every other cache position untouched, and the attention output computed in double from
// the kernel's bf16 q_rope and cache (the recipe scores with the rounded q_rope). Shapes:
// KV length 1 (output = v exactly), 65, 66 (head_dim 8: the new row shares its 32-byte
// sector with an earlier position), 130, 1025 (the new position opens its chunk), 700 and
// 1015 (it sits in a later warp, step and loop iteration of the last chunk: 32- and
// 64-position chunks); batch 1 (chunks merged in the split kernel on an H100), 2-3 and 8
// (1024 blocks: combine kernel); 12 heads over 1 kv head (two head chunks of 8: only chunk
// 0 writes the caches), 9 over 3, 5 over 5, 16 over 8; head_dim 8, 16, 64, 128; NeoX and
// interleaved; with and without norm weights. Each case runs twice (same bits) and must
// leave the arrival counters zero.
TEST(FusedKernels, DecodeAttentionRopeFoldSmallMatchesTwoKernelsAndDouble) {
  SKIP_WITHOUT_GPU();
  const FoldCase base[] = {{3, 9, 3, 64, 1, true, false},     {3, 12, 1, 128, 65, false, true},
                           {3, 5, 5, 128, 1025, true, true},  {1, 9, 3, 128, 1025, false, false},
                           {1, 12, 1, 64, 700, true, false},  {2, 5, 5, 16, 130, false, true},
                           {3, 9, 3, 8, 66, true, true},      {2, 12, 1, 8, 1, false, false},
                           {8, 16, 8, 128, 1015, true, false}};
  std::vector<FoldCase> cases;
  for (const FoldCase& c : base) {
    cases.push_back(c);
    cases.push_back({c.batch, c.H, c.KVH, c.D, c.kv_len, !c.qk_norm, !c.interleaved});
  }
  std::uint64_t seed = 90;
  for (const FoldCase& c : cases) {
    const std::string name = c.name();
    const int cap = c.kv_len + 3, last = c.kv_len - 1, D = c.D, G = c.H / c.KVH;
    const int W = (c.H + 2 * c.KVH) * D, QW = c.H * D;
    const std::size_t cache_n = std::size_t(c.batch) * c.KVH * cap * D, q_n = std::size_t(c.batch) * QW;
    ModelSpec spec;
    spec.head_dim = D;
    spec.rope_dim = D;
    spec.rope_theta = 1e6;
    std::vector<float> cos_t, sin_t;
    rope_tables(spec, cap, cos_t, sin_t);
    const Bits qkv = random_bits(std::size_t(c.batch) * W, ++seed, -2, 2),
               qn = random_bits(D, ++seed, 0.5f, 3.f), kn = random_bits(D, ++seed, 0.5f, 3.f),
               kc0 = random_bits(cache_n, ++seed, -2, 2), vc0 = random_bits(cache_n, ++seed, -1, 1);
    auto dqkv = to_device(qkv), dqn = to_device(qn), dkn = to_device(kn);
    cuda::DeviceBuffer<float> dcos, dsin;
    dcos.upload(cos_t);
    dsin.upload(sin_t);
    cuda::DeviceBuffer<float> scratch(decode_attention_scratch_floats(c.batch, c.H, D, c.kv_len));
    cuda::DeviceBuffer<unsigned int> counters(decode_attention_counters(c.batch, c.H));
    CUDA_CHECK(cudaMemset(counters.data(), 0, counters.size() * sizeof(unsigned int)));
    DecodeAttentionArgs da;
    da.q = nullptr;
    da.k_cache = da.v_cache = nullptr;
    da.out = nullptr;
    da.batch = c.batch;
    da.n_heads = c.H;
    da.n_kv_heads = c.KVH;
    da.head_dim = D;
    da.capacity = cap;
    da.kv_len = c.kv_len;
    da.partial_acc = scratch.data();
    da.partial_ml = scratch.data() + std::size_t(c.batch) * c.H * decode_attention_splits(c.kv_len) * D;
    da.counters = counters.data();

    // The two-kernel sequence.
    auto k2 = to_device(kc0), v2 = to_device(vc0), q2 = poisoned(q_n), out2 = poisoned(q_n);
    RopeArgs ra;
    ra.qkv = dqkv.data();
    ra.q_norm_w = c.qk_norm ? dqn.data() : nullptr;
    ra.k_norm_w = c.qk_norm ? dkn.data() : nullptr;
    ra.eps = 1e-6f;
    ra.cos_table = dcos.data();
    ra.sin_table = dsin.data();
    ra.interleaved = c.interleaved;
    ra.batch = c.batch;
    ra.n = 1;
    ra.start = last;
    ra.n_heads = c.H;
    ra.n_kv_heads = c.KVH;
    ra.head_dim = D;
    ra.capacity = cap;
    ra.q_rope = q2.data();
    ra.k_cache = k2.data();
    ra.v_cache = v2.data();
    launch_qk_norm_rope(ra, nullptr);
    DecodeAttentionArgs two = da;
    two.q = q2.data();
    two.k_cache = k2.data();
    two.v_cache = v2.data();
    two.out = out2.data();
    launch_decode_attention(two, nullptr);

    // Folded.
    auto k1 = to_device(kc0), v1 = to_device(vc0), q1 = poisoned(q_n), out1 = poisoned(q_n);
    DecodeAttentionArgs fold = da;
    fold.q = nullptr;
    fold.k_cache = k1.data();
    fold.v_cache = v1.data();
    fold.out = out1.data();
    RopeArgs fold_ra = ra;  // the same inputs, this run's q_rope output
    fold_ra.q_rope = q1.data();
    fold_rope(fold, fold_ra);
    launch_decode_attention(fold, nullptr);
    const Bits hq = to_host(q1), hk = to_host(k1), hv = to_host(v1), hout = to_host(out1);
    EXPECT_EQ(std::vector<unsigned int>(counters.size(), 0u), counters.download())
        << name << ": arrival counters not reset";

    EXPECT_TRUE(hq == to_host(q2)) << name << ": q_rope differs from the two-kernel sequence";
    EXPECT_TRUE(hk == to_host(k2)) << name << ": K cache differs from the two-kernel sequence";
    EXPECT_TRUE(hv == to_host(v2)) << name << ": V cache differs from the two-kernel sequence";
    EXPECT_TRUE(hout == to_host(out2)) << name << ": attention differs from the two-kernel sequence";

    // Double references.
    std::vector<double> q_ref, q_tol, k_ref, k_tol, v_ref;
    Bits k_got, v_got;
    int touched = 0;
    for (int b = 0; b < c.batch; ++b) {
      for (int h = 0; h < c.H + c.KVH; ++h) {
        std::vector<double> x(D), tol;
        for (int i = 0; i < D; ++i) x[i] = val(qkv, std::size_t(b) * W + h * D + i);
        const bool is_q = h < c.H;
        const auto y = norm_rope_d(x, c.qk_norm ? (is_q ? &qn : &kn) : nullptr, last, c.interleaved, tol);
        for (int i = 0; i < D; ++i) {
          if (is_q) {
            q_ref.push_back(y[i]);
            q_tol.push_back(tol[i]);
          } else {
            k_ref.push_back(y[i]);
            k_tol.push_back(tol[i]);
            k_got.push_back(hk[((std::size_t(b) * c.KVH + h - c.H) * cap + last) * D + i]);
          }
        }
      }
      for (int h = 0; h < c.KVH; ++h)
        for (int i = 0; i < D; ++i) {
          v_ref.push_back(val(qkv, std::size_t(b) * W + QW + c.KVH * D + h * D + i));
          v_got.push_back(hv[((std::size_t(b) * c.KVH + h) * cap + last) * D + i]);
        }
      for (int h = 0; h < c.KVH; ++h)
        for (int p = 0; p < cap; ++p) {
          if (p == last) continue;
          const std::size_t at = ((std::size_t(b) * c.KVH + h) * cap + p) * D;
          for (int i = 0; i < D; ++i) touched += hk[at + i] != kc0[at + i] || hv[at + i] != vc0[at + i];
        }
    }
    expect_within("q_rope " + name, hq, q_ref, q_tol);
    expect_within("k_rope " + name, k_got, k_ref, k_tol);
    expect_bits("v cache " + name, v_got, v_ref);
    EXPECT_EQ(touched, 0) << name << ": cache positions other than kv_len-1 changed";
    std::vector<double> tol;
    const auto ref = attention_d(hq, hk, hv, c.batch, 1, last, c.H, c.KVH, D, cap, 1.0, tol);
    expect_within("attention " + name, hout, ref, tol);
    if (c.kv_len == 1) {  // one key: the output is the new v itself, exactly
      std::vector<double> v;
      for (int b = 0; b < c.batch; ++b)
        for (int h = 0; h < c.H; ++h)
          for (int d = 0; d < D; ++d)
            v.push_back(val(qkv, std::size_t(b) * W + QW + c.KVH * D + (h / G) * D + d));
      expect_bits("attention " + name + " equals v", hout, v);
    }

    // Again on the same inputs (the new row is rewritten with the same bits).
    q1.fill_poison();
    out1.fill_poison();
    launch_decode_attention(fold, nullptr);
    EXPECT_TRUE(to_host(out1) == hout && to_host(q1) == hq && to_host(k1) == hk &&
                to_host(v1) == hv)
        << name << ": two runs differ";
    EXPECT_EQ(std::vector<unsigned int>(counters.size(), 0u), counters.download())
        << name << ": arrival counters not reset after the second run";
  }
}

// One prefill attention case: seeded inputs on the device (cache capacity start + n + 3,
// so the kernel must not read past its keys) and a launcher that poisons the output first.
struct PrefillCase {
  int batch, n, start, H, KVH, D;
  std::string name() const {
    return "prefill attention b=" + std::to_string(batch) + " n=" + std::to_string(n) +
           " start=" + std::to_string(start) + " heads=" + std::to_string(H) + "/" +
           std::to_string(KVH) + " D=" + std::to_string(D);
  }
  int capacity() const { return start + n + 3; }
};

struct PrefillRun {
  explicit PrefillRun(const PrefillCase& c_)
      : c(c_),
        q(random_bits(std::size_t(c.batch) * c.n * c.H * c.D, 60, -2, 2)),
        kc(random_bits(std::size_t(c.batch) * c.KVH * c.capacity() * c.D, 61, -2, 2)),
        vc(random_bits(std::size_t(c.batch) * c.KVH * c.capacity() * c.D, 62, -1, 1)),
        dq(to_device(q)), dk(to_device(kc)), dv(to_device(vc)),
        out(poisoned(std::size_t(c.batch) * c.n * c.H * c.D)) {}
  Bits launch() {
    out.fill_poison();
    PrefillAttentionArgs a;
    a.q = dq.data();
    a.k_cache = dk.data();
    a.v_cache = dv.data();
    a.batch = c.batch;
    a.n = c.n;
    a.start = c.start;
    a.n_heads = c.H;
    a.n_kv_heads = c.KVH;
    a.head_dim = c.D;
    a.capacity = c.capacity();
    a.out = out.data();
    launch_prefill_attention(a, nullptr);
    return to_host(out);
  }
  // attention_d's per-element tolerance: one rounding (1 bf16 ulp) + 1e-5 of max|v| = 1
  // for the FP32 exponentials and sums. Tensor-core FP32 accumulation over <= 400 keys in
  // 16-key groups and the online rescaling stay near 1e-6 of the row's max |v|.
  std::vector<double> reference(std::vector<double>& tol) const {
    return attention_d(q, kc, vc, c.batch, c.n, c.start, c.H, c.KVH, c.D, c.capacity(), 1.0, tol);
  }
  PrefillCase c;
  Bits q, kc, vc;
  cuda::DeviceBuffer<bf16> dq, dk, dv, out;
};

// head_dim 64 and 128 take the tensor-core kernel, 16 the FP32 one. Odd lengths (37, 130,
// 1), starts 0 / 5 / 64 (diagonal tiles straddling two key tiles), odd head groups, and
// n >= 300 (six key tiles per late query tile, masked diagonal).
const PrefillCase kPrefillCases[] = {
    {3, 37, 0, 9, 3, 64},   {3, 37, 5, 9, 3, 128},  {1, 130, 5, 4, 2, 128}, {1, 130, 64, 4, 2, 64},
    {2, 37, 64, 5, 5, 128}, {1, 1, 9, 3, 1, 128},   {2, 1, 64, 4, 2, 64},   {2, 333, 17, 6, 2, 128},
    {1, 300, 0, 4, 4, 64},  {2, 70, 64, 5, 5, 16}};

// Restores the default 3-part P split when a test that changed it ends.
struct PvSplitGuard {
  explicit PvSplitGuard(int parts) { set_prefill_attention_pv_split(parts); }
  ~PvSplitGuard() { set_prefill_attention_pv_split(3); }
};

TEST(FusedKernels, PrefillAttentionSmallMatchesDouble) {
  SKIP_WITHOUT_GPU();
  for (const PrefillCase& c : kPrefillCases) {
    PrefillRun run(c);
    std::vector<double> tol;
    const auto ref = run.reference(tol);
    expect_within(c.name(), run.launch(), ref, tol);
  }
}

TEST(FusedKernels, PrefillAttentionSmallTwoRunsAreBitwiseIdentical) {
  SKIP_WITHOUT_GPU();
  // Each output element is one thread's fixed sequence of mma and FP32 operations (no
  // atomics, no split over blocks): the same inputs give the same bits.
  for (const PrefillCase& c : kPrefillCases) {
    PrefillRun run(c);
    const Bits first = run.launch();
    EXPECT_TRUE(run.launch() == first) << c.name() << ": two runs differ";
  }
}

TEST(FusedKernels, PrefillAttentionSmallSingleKeyIsV) {
  SKIP_WITHOUT_GPU();
  // One token at position 0 sees key 0 alone: p = 1, so the output is v_0 exactly (the
  // split gives hi = 1, mid = lo = 0; 1 * v is exact and l = 1).
  for (const int D : {64, 128, 16}) {
    PrefillRun run(PrefillCase{3, 1, 0, 6, 3, D});
    const Bits got = run.launch();
    std::vector<double> v;
    for (int b = 0; b < 3; ++b)
      for (int h = 0; h < 6; ++h)
        for (int d = 0; d < D; ++d)
          v.push_back(val(run.vc, (std::size_t(b * 3 + h / 2) * run.c.capacity()) * D + d));
    expect_bits(run.c.name() + " equals v", got, v);
  }
}

TEST(FusedKernels, PrefillAttentionSmallTwoPartSplitStaysWithinTolerance) {
  SKIP_WITHOUT_GPU();
  // hi + lo misses P by at most 2^-16 P, so the output by at most 2^-16 max|v| (1.5e-5;
  // with random signs the errors cancel to far under the 1e-5 of the tolerance). The count
  // of outputs whose bf16 rounding it flips against the exact 3-part split, and the largest
  // change (absolute; max|v| = 1), are printed for the record.
  for (const PrefillCase& c : kPrefillCases) {
    if (c.D != 64 && c.D != 128) continue;
    PrefillRun run(c);
    const Bits exact = run.launch();
    PvSplitGuard two(2);
    const Bits got = run.launch();
    std::vector<double> tol;
    const auto ref = run.reference(tol);
    expect_within(c.name() + " (2-part P)", got, ref, tol);
    int flipped = 0;
    double max_diff = 0;
    for (std::size_t i = 0; i < got.size(); ++i)
      if (got[i] != exact[i]) {
        ++flipped;
        max_diff = std::max(max_diff, std::fabs(double(bf16_to_float(got[i])) - bf16_to_float(exact[i])));
      }
    std::printf("%s: 2-part vs 3-part split: %d of %zu outputs differ, by at most %.2g\n",
                c.name().c_str(), flipped, got.size(), max_diff);
  }
}

TEST(FusedKernels, LtGemmSmallFusesBiasAndResidualBeforeOneRounding) {
  SKIP_WITHOUT_GPU();
  const int M = 37, N = 40, K = 264;
  const Bits X = random_bits(M * K, 70, -2, 2), W = random_bits(N * K, 71, -0.2f, 0.2f),
             b = random_bits(N, 72, -1, 1), R = random_bits(M * N, 73, -4, 4);
  auto dX = to_device(X), dW = to_device(W), db = to_device(b), dR = to_device(R);
  LtGemm gemm;
  for (int mode = 0; mode < 3; ++mode) {  // 0: +bias, 1: +residual, 2: FP32 output
    auto y = poisoned(M * N);
    cuda::DeviceBuffer<float> y32(M * N);
    y32.fill_poison();
    gemm.run(dX.data(), dW.data(), M, N, K, mode == 2 ? static_cast<void*>(y32.data()) : y.data(),
             mode == 2, mode == 0 ? db.data() : nullptr, mode == 1 ? dR.data() : nullptr, nullptr);
    std::vector<double> ref, tol;
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        double acc = mode == 0 ? val(b, j) : mode == 1 ? val(R, i * N + j) : 0, mag = 0;
        for (int k = 0; k < K; ++k) {
          acc += val(X, i * K + k) * val(W, j * K + k);
          mag += std::fabs(val(X, i * K + k) * val(W, j * K + k));
        }
        ref.push_back(acc);
        tol.push_back((mode == 2 ? 0 : bf16_ulp(acc)) + gamma(K) * mag);
      }
    if (mode == 2) {
      CUDA_CHECK(cudaDeviceSynchronize());
      const auto got = y32.download();
      int bad = 0;
      for (std::size_t i = 0; i < ref.size(); ++i) bad += !(std::fabs(got[i] - ref[i]) <= tol[i]);
      EXPECT_EQ(bad, 0) << "FP32-output GEMM: " << bad << " elements out of tolerance";
    } else {
      expect_within(mode == 0 ? "gemm+bias" : "gemm+residual", to_host(y), ref, tol);
    }
  }
}

TEST(FusedKernels, SiluMulSmallMatchesDouble) {
  SKIP_WITHOUT_GPU();
  const int rows = 3, I = 101;
  std::vector<float> gu(rows * 2 * I);
  std::mt19937_64 rng(80);
  std::uniform_real_distribution<float> u(-6, 6);
  for (float& v : gu) v = u(rng);
  cuda::DeviceBuffer<float> dgu;
  dgu.upload(gu);
  auto act = poisoned(rows * I);
  launch_silu_mul(dgu.data(), rows, I, act.data(), nullptr);
  std::vector<double> ref, tol;
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < I; ++j) {
      const double a = silu_d(gu[r * 2 * I + j]) * gu[r * 2 * I + I + j];
      ref.push_back(a);
      tol.push_back(bf16_ulp(a) + 1e-6 * std::fabs(a));  // FP32 expf/division: ~1e-7 relative
    }
  expect_within("swiglu", to_host(act), ref, tol);
}

}  // namespace
}  // namespace fusecheck::test
