// Each FlashInfer kernel of flashinfer-cuda (kernels/flashinfer/flashinfer_ops.h) against a
// double host reference at awkward shapes: odd head counts (5 kv heads, 15 query heads),
// batch 3, KV lengths 1 and 1025, an activation width that leaves a remainder, inputs read
// from a slice of a wider q|k|v row. Outputs are poisoned (NaN) before every launch, so an
// unwritten element fails; every kernel runs twice and must give the same bits (not
// FusedAddRMSNorm, which works in place). Tolerances: each output is ONE rounding to bf16 of an FP32
// value, so it sits within 1 bf16 ulp of the reference plus the FP32 error of the value,
// bounded per op below with its reason. Every case is small enough for compute-sanitizer.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../fused/fused_test_util.h"
#include "kernels/flashinfer/flashinfer_batch_decode.h"
#include "kernels/flashinfer/flashinfer_ops.h"
#include "reference/flashinfer_decode.h"

namespace fusecheck::test {
namespace {

namespace fi = fusecheck::flashinfer_ops;

double gamma(int k) { return k * std::ldexp(1.0, -24); }
// rsqrt.approx.ftz.f32 / ex2.approx / rcp.approx: relative error below 2^-21 (PTX ISA).
constexpr double kApprox = 0x1p-21;

const bf16* dev(const cuda::DeviceBuffer<bf16>& b) { return b.data(); }

// Runs `launch` again into `out` poisoned, and expects the bits of `first` back: each
// kernel is deterministic run to run (fixed reduction order, no atomics).
template <class Launch>
void expect_repeats(const std::string& what, cuda::DeviceBuffer<bf16>& out, const Bits& first, const Launch& launch) {
  out.fill_poison();
  launch();
  EXPECT_EQ(to_host(out), first) << what << ": two runs differ";
}

// A case name from its parameters ("rows3_cols1000").
template <class... Parts>
std::string fmt_name(const Parts&... parts) {
  std::ostringstream name;
  (name << ... << parts);
  return name.str();
}

// Row-wise RMSNorm reference in double: x * w / sqrt(mean(x^2) + eps).
std::vector<double> rms_norm_ref(const std::vector<double>& x, const Bits& w, int rows, int cols, double eps,
                                 std::vector<double>& tol) {
  std::vector<double> out(x.size());
  tol.resize(x.size());
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int c = 0; c < cols; ++c) ss += x[r * cols + c] * x[r * cols + c];
    const double inv = 1.0 / std::sqrt(ss / cols + eps);
    for (int c = 0; c < cols; ++c) {
      const double y = x[r * cols + c] * inv * val(w, c);
      out[r * cols + c] = y;
      // FP32 sum of cols squares, the approximate rsqrt, two products: then one rounding.
      tol[r * cols + c] = bf16_ulp(y) + std::fabs(y) * (gamma(cols) + kApprox + gamma(3));
    }
  }
  return out;
}

struct NormCase {
  int rows, cols;
};
class FlashInferRmsNorm : public ::testing::TestWithParam<NormCase> {};

TEST_P(FlashInferRmsNorm, SmallMatchesDoubleReference) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  const double eps = 1e-6;
  const Bits x = random_bits(std::size_t(rows) * cols, 11, -3, 3), w = random_bits(cols, 12, 0.5f, 1.5f);
  auto dx = to_device(x), dw = to_device(w), dy = poisoned(x.size());
  const auto launch = [&] { fi::rms_norm(dev(dx), dev(dw), dy.data(), rows, cols, float(eps), nullptr); };
  launch();
  std::vector<double> xd(x.size()), tol;
  for (std::size_t i = 0; i < x.size(); ++i) xd[i] = val(x, i);
  const Bits first = to_host(dy);
  expect_within("RMSNorm", first, rms_norm_ref(xd, w, rows, cols, eps, tol), tol);
  expect_repeats("RMSNorm", dy, first, launch);
}

INSTANTIATE_TEST_SUITE_P(Shapes, FlashInferRmsNorm, ::testing::Values(NormCase{3, 1000}, NormCase{1, 1024}, NormCase{5, 4104}),
                         [](const auto& i) { return fmt_name("rows", i.param.rows, "_cols", i.param.cols); });

// The residual is the FP32 sum rounded once (bit for bit); the normalized output is the
// RMSNorm of that FP32 sum, not of its rounding (integers up to 300 plus values in [-2, 2]:
// the rounding of the sum is large enough that normalizing it would miss the tolerance).
TEST(FlashInferFusedAddRmsNorm, SmallRoundsSumOnceAndNormalizesFp32Sum) {
  SKIP_WITHOUT_GPU();
  const int rows = 3, cols = 1000;
  const double eps = 1e-6;
  const Bits x = integer_bits(rows * cols, 21, -300, 300), r = random_bits(rows * cols, 22, -2, 2),
             w = random_bits(cols, 23, 0.5f, 1.5f);
  auto dx = to_device(x), dr = to_device(r), dw = to_device(w);
  fi::fused_add_rms_norm(dx.data(), dr.data(), dev(dw), rows, cols, float(eps), nullptr);
  std::vector<double> sum(x.size()), tol;
  for (std::size_t i = 0; i < x.size(); ++i) sum[i] = double(float(val(x, i)) + float(val(r, i)));  // FP32 sum
  expect_bits("residual", to_host(dr), sum);
  expect_within("normalized", to_host(dx), rms_norm_ref(sum, w, rows, cols, eps, tol), tol);
}

struct HeadCase {
  int heads, head_dim;
};
class FlashInferQkNorm : public ::testing::TestWithParam<HeadCase> {};

// Per-head norm reading heads out of a wider row (the q or k slice of q|k|v).
TEST_P(FlashInferQkNorm, SmallReadsStridedHeadsMatchesDoubleReference) {
  SKIP_WITHOUT_GPU();
  const auto [heads, d] = GetParam();
  const int rows = 3, width = heads * d, stride = width + 3 * d;
  const double eps = 1e-6;
  const Bits x = random_bits(std::size_t(rows) * stride, 31, -4, 4), w = random_bits(d, 32, 0.2f, 3.0f);
  auto dx = to_device(x), dw = to_device(w), dy = poisoned(std::size_t(rows) * width);
  const auto launch = [&] { fi::qk_rms_norm(dev(dx) + d, stride, dev(dw), dy.data(), rows, heads, d, float(eps), nullptr); };
  launch();
  std::vector<double> xd(std::size_t(rows) * width), tol;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < width; ++c) xd[r * width + c] = val(x, std::size_t(r) * stride + d + c);
  const Bits first = to_host(dy);
  expect_within("QKRMSNorm", first, rms_norm_ref(xd, w, rows * heads, d, eps, tol), tol);
  expect_repeats("QKRMSNorm", dy, first, launch);
}

INSTANTIATE_TEST_SUITE_P(Shapes, FlashInferQkNorm, ::testing::Values(HeadCase{5, 64}, HeadCase{15, 128}, HeadCase{1, 128}),
                         [](const auto& i) { return fmt_name("heads", i.param.heads, "_d", i.param.head_dim); });

struct RopeCase {
  int heads, kv_heads, head_dim;
  bool interleaved;
};
class FlashInferRope : public ::testing::TestWithParam<RopeCase> {};

// q and k rotated at positions 0, 7 and 1024 from an FP32 cos|sin cache.
TEST_P(FlashInferRope, SmallMatchesDoubleReferenceFromFp32Cache) {
  SKIP_WITHOUT_GPU();
  const auto [H, KVH, D, interleaved] = GetParam();
  const int rows = 3, positions = 1025, half = D / 2;
  const std::vector<std::int32_t> pos = {0, 7, 1024};
  std::vector<float> cache(std::size_t(positions) * D);
  for (int p = 0; p < positions; ++p)
    for (int i = 0; i < half; ++i) {
      const float angle = float(p) * std::pow(10000.0f, -2.0f * i / D);
      cache[p * D + i] = std::cos(angle);
      cache[p * D + half + i] = std::sin(angle);
    }
  const Bits q = random_bits(std::size_t(rows) * H * D, 41, -2, 2), k = random_bits(std::size_t(rows) * KVH * D, 42, -2, 2);
  auto dq = to_device(q), dk = to_device(k), dq_out = poisoned(q.size()), dk_out = poisoned(k.size());
  cuda::DeviceBuffer<float> dcache;
  dcache.upload(cache);
  cuda::DeviceBuffer<std::int32_t> dpos;
  dpos.upload(pos);
  fi::rope_cos_sin_cache(dev(dq), std::size_t(H) * D, dev(dk), std::size_t(KVH) * D, dq_out.data(), dk_out.data(),
                         dcache.data(), dpos.data(), rows, H, KVH, D, interleaved, nullptr);
  auto reference = [&](const Bits& x, int heads, std::vector<double>& tol) {
    std::vector<double> out(x.size());
    tol.resize(x.size());
    for (int r = 0; r < rows; ++r)
      for (int h = 0; h < heads; ++h)
        for (int j = 0; j < D; ++j) {
          const std::size_t base = (std::size_t(r) * heads + h) * D;
          const int i = interleaved ? j / 2 : j % half;  // the pair's frequency
          const int partner = interleaved ? (j ^ 1) : (j < half ? j + half : j - half);
          const double sign = interleaved ? (j % 2 == 0 ? -1 : 1) : (j < half ? -1 : 1);
          const double c = cache[pos[r] * D + i], s = cache[pos[r] * D + half + i];
          const double y = val(x, base + j) * c + sign * val(x, base + partner) * s;
          out[base + j] = y;
          // Two FP32 products and a sum (or one FMA): relative 3 * 2^-24 of the terms.
          tol[base + j] = bf16_ulp(y) + gamma(3) * (std::fabs(val(x, base + j) * c) + std::fabs(val(x, base + partner) * s));
        }
    return out;
  };
  std::vector<double> tq, tk;
  const auto rq = reference(q, H, tq);
  const auto rk = reference(k, KVH, tk);
  const Bits q_first = to_host(dq_out), k_first = to_host(dk_out);
  expect_within("q_rope", q_first, rq, tq);
  expect_within("k_rope", k_first, rk, tk);
  dk_out.fill_poison();
  expect_repeats("q_rope", dq_out, q_first, [&] {
    fi::rope_cos_sin_cache(dev(dq), std::size_t(H) * D, dev(dk), std::size_t(KVH) * D, dq_out.data(), dk_out.data(),
                           dcache.data(), dpos.data(), rows, H, KVH, D, interleaved, nullptr);
  });
  EXPECT_EQ(to_host(dk_out), k_first) << "k_rope: two runs differ";
}

INSTANTIATE_TEST_SUITE_P(Shapes, FlashInferRope,
                         ::testing::Values(RopeCase{15, 5, 128, false}, RopeCase{5, 1, 64, false},
                                           RopeCase{15, 5, 128, true}, RopeCase{5, 1, 64, true}),
                         [](const auto& i) {
                           std::ostringstream name;
                           name << "h" << i.param.heads << "_kv" << i.param.kv_heads << "_d" << i.param.head_dim
                                << (i.param.interleaved ? "_interleaved" : "_neox");
                           return name.str();
                         });

// out = bf16(silu(gate) * up), silu in FP32 (not rounded); 8200 columns leave the
// kernel's scalar remainder loop 8 elements.
TEST(FlashInferSiluAndMul, SmallMatchesDoubleReferenceWithRemainder) {
  SKIP_WITHOUT_GPU();
  const int rows = 3, inter = 8200;
  const Bits gu = random_bits(std::size_t(rows) * 2 * inter, 51, -8, 8);
  auto dgu = to_device(gu), dout = poisoned(std::size_t(rows) * inter);
  const auto launch = [&] { fi::silu_and_mul(dev(dgu), dout.data(), rows, inter, nullptr); };
  launch();
  std::vector<double> ref(std::size_t(rows) * inter), tol(ref.size());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < inter; ++c) {
      const double g = val(gu, std::size_t(r) * 2 * inter + c), u = val(gu, std::size_t(r) * 2 * inter + inter + c);
      const double y = g / (1.0 + std::exp(-g)) * u;
      ref[r * inter + c] = y;
      // __expf: ex2.approx of an FP32 product (2 ulp + the product's rounding, scaled by
      // |g| in the exponent), an IEEE division and a product.
      tol[r * inter + c] = bf16_ulp(y) + std::fabs(y) * (kApprox + std::fabs(g) * 0x1p-23 + gamma(3));
    }
  const Bits first = to_host(dout);
  expect_within("silu_and_mul", first, ref, tol);
  expect_repeats("silu_and_mul", dout, first, launch);
}

struct AttnCase {
  int qo_len, kv_len, heads, kv_heads, head_dim;
};
std::string attn_name(const ::testing::TestParamInfo<AttnCase>& i) {
  const auto& p = i.param;
  std::ostringstream name;
  name << "q" << p.qo_len << "_kv" << p.kv_len << "_h" << p.heads << "_kvh" << p.kv_heads << "_d" << p.head_dim;
  return name.str();
}
class FlashInferAttention : public ::testing::TestWithParam<AttnCase> {};

// Element c of key / value row j of kv head kh, as a double.
using KvAt = std::function<double(int j, int kh, int c)>;

// Causal GQA attention (query t sees keys < kv_len - qo_len + t + 1) in double, for one
// sequence: q rows [qo][H * D] from q_at(t, h, c); writes ref and tol [qo][H][D] at `at`.
// Tolerance: decode keeps P in FP32 (ex2.approx, FP32 sums over kv_len terms); prefill
// rounds P to bf16 for the P.V MMA and its row sum (relative 2^-9 per probability), so
// its bound carries 2^-8 of sum_j p_j |v_j| on top. `chunk`: decode's split-KV chunk in
// keys (0: not split).
void attention_reference(const KvAt& q_at, const KvAt& key, const KvAt& value, int qo, int kv, int H, int KVH, int D,
                         double sm_scale, int chunk, std::vector<double>& ref, std::vector<double>& tol,
                         std::size_t at = 0) {
  const int group = H / KVH;
  for (int t = 0; t < qo; ++t)
    for (int h = 0; h < H; ++h) {
      const int kh = h / group, visible = kv - qo + t + 1;
      std::vector<double> s(visible);
      double m = -INFINITY;
      for (int j = 0; j < visible; ++j) {
        double dot = 0;
        for (int c = 0; c < D; ++c) dot += q_at(t, h, c) * key(j, kh, c);
        s[j] = dot * sm_scale;
        m = std::max(m, s[j]);
      }
      double z = 0;
      for (double& x : s) z += (x = std::exp(x - m));
      for (int c = 0; c < D; ++c) {
        double o = 0, mass = 0, chunk_o = 0, partials = 0;
        for (int j = 0; j < visible; ++j) {
          const double vj = value(j, kh, c);
          o += s[j] / z * vj;
          mass += s[j] / z * std::fabs(vj);
          chunk_o += s[j] / z * vj;
          if ((chunk > 0 && (j + 1) % chunk == 0) || j + 1 == visible) partials += std::fabs(chunk_o), chunk_o = 0;
        }
        const std::size_t i = at + (std::size_t(t) * H + h) * D + c;
        ref[i] = o;
        // Scores: FP32 dot of D terms; softmax and P.V: FP32 over `visible` terms plus the
        // approximate exp2/rcp; prefill's bf16 P adds 2^-8 of the mass.
        // Split-KV decode: chunk c's normalized output o_c is stored as bf16 (tmp is
        // DTypeO*), an error of at most half an ulp, 2^-8 |o_c|; the FP32 merge
        // (cascade.cuh:214-252, 366-467) weighs o_c by w_c = (its share of the softmax
        // mass), so the output moves by at most 2^-8 sum_c w_c |o_c| = 2^-8 sum_c |sum_{j in
        // c} p_j v_j| (`partials`), plus the merge's own exp2 and __fdividef (2 kApprox of
        // the mass). docs/recipes.md, `flashinfer`.
        // Prefill splits long KV the same way (prefill.cuh:2669-2700, bf16 partials in tmp)
        // with chunks that depend on the grid (qo tiles x kv heads), so its partial term
        // takes the chunk-free bound sum_c w_c |o_c| <= mass.
        const bool split = chunk > 0 && kv > chunk;
        const double partial_term = qo == 1 ? 0x1p-8 * partials : 0x1p-8 * mass;
        tol[i] = bf16_ulp(o) + mass * (gamma(D) * 4 + gamma(visible) + 8 * kApprox + (qo > 1 ? 0x1p-8 : 0.0)) +
                 (split ? partial_term + mass * (2 * kApprox + gamma(kv / chunk + 1)) : 0.0);
      }
    }
}

// FlashInfer's split-KV single decode chunk: max(ceil(kv_len / max_chunks), 256) keys
// (decode.cuh:709-712), max_chunks = resident blocks / kv heads. On an H200 (132 SMs, one
// block per SM at least) max_chunks >= 16 for the <= 8 kv heads here, so the chunk is 256
// for every kv_len <= 4096 this test uses.
constexpr int kDecodeChunk = 256;

TEST_P(FlashInferAttention, SmallMatchesDoubleReferenceAndRepeatsBitwise) {
  SKIP_WITHOUT_GPU();
  // Plain variables, not a structured binding: the lambdas below capture them (clang
  // refuses captured structured bindings).
  const int qo = GetParam().qo_len, kv = GetParam().kv_len, H = GetParam().heads, KVH = GetParam().kv_heads,
            D = GetParam().head_dim;
  const Bits q = random_bits(std::size_t(qo) * H * D, 61, -1, 1), k = random_bits(std::size_t(kv) * KVH * D, 62, -1, 1),
             v = random_bits(std::size_t(kv) * KVH * D, 63, -1, 1);
  auto dq = to_device(q), dk = to_device(k), dv = to_device(v), dout = poisoned(q.size());
  cuda::DeviceBuffer<bf16> ws(fi::attention_workspace_elems(qo, kv, H, D));
  fi::AttentionArgs a;
  a.q = dq.data(), a.k = dk.data(), a.v = dv.data(), a.out = dout.data();
  a.qo_len = qo, a.kv_len = kv, a.n_heads = H, a.n_kv_heads = KVH, a.head_dim = D;
  a.sm_scale = float(1.0 / std::sqrt(double(D)));
  fi::attention(a, ws.data(), nullptr);
  const Bits first = to_host(dout);

  std::vector<double> ref(q.size()), tol(q.size());
  const auto q_at = [&](int t, int h, int c) { return val(q, (std::size_t(t) * H + h) * D + c); };
  const auto kv_at = [&](const Bits& m) {
    return [&m, KVH, D](int j, int kh, int c) { return val(m, (std::size_t(j) * KVH + kh) * D + c); };
  };
  // Single decode splits only past 256 keys; prefill's chunks are bounded chunk-free.
  const int chunk = kv > kDecodeChunk ? kDecodeChunk : 0;
  attention_reference(q_at, kv_at(k), kv_at(v), qo, kv, H, KVH, D, a.sm_scale, chunk, ref, tol);
  expect_within("attention", first, ref, tol);

  expect_repeats("attention", dout, first, [&] { fi::attention(a, ws.data(), nullptr); });
}

INSTANTIATE_TEST_SUITE_P(Decode, FlashInferAttention,
                         ::testing::Values(AttnCase{1, 1, 15, 5, 128}, AttnCase{1, 1025, 15, 5, 128},
                                           AttnCase{1, 1025, 5, 5, 64}, AttnCase{1, 300, 16, 8, 64}),
                         attn_name);
INSTANTIATE_TEST_SUITE_P(Prefill, FlashInferAttention,
                         ::testing::Values(AttnCase{7, 7, 15, 5, 128}, AttnCase{33, 1025, 15, 5, 128},
                                           AttnCase{65, 65, 3, 1, 64}, AttnCase{17, 40, 16, 8, 64}),
                         attn_name);

struct BatchDecodeCase {
  int heads, kv_heads, head_dim;
};
class FlashInferBatchDecode : public ::testing::TestWithParam<BatchDecodeCase> {};

// Batch 8 with a different KV length per sequence (1 key; one page exactly; a page and a
// key; 8 pages, the plan's smallest chunk, exactly; one key past it; 300; 1025; 2000) over a
// page pool in which the sequences' pages lie in reverse order with a free page between
// them; every slot not in a sequence holds 1e4 (a wrong page read shows), the slots the
// append must write hold NaN. The last row of each sequence arrives through
// AppendPagedKVCache from rows 8 elements wider than the kv width; then one
// BatchDecodeWithPagedKVCache over the plan. Checked against the double reference (the
// plan's chunk in its bound), against the twin (reference/flashinfer_decode.h, batch
// layout, the plan's chunk) within the agreement bounds of the path test (share > 1 ulp
// <= 0.5%, relative L2 <= 1e-3), and run twice bit for bit.
TEST_P(FlashInferBatchDecode, SmallBatch8DifferentKvLengthsMatchesReferenceAndTwin) {
  SKIP_WITHOUT_GPU();
  const int H = GetParam().heads, KVH = GetParam().kv_heads, D = GetParam().head_dim;  // captured below
  const int B = 8, P = fi::kPageSize, width = KVH * D, stride = width + 8;
  const std::vector<int> lens = {1, 16, 17, 128, 129, 300, 1025, 2000};
  std::vector<int> pages(B), first_page(B);
  int pool_pages = 0;
  for (int b = B - 1; b >= 0; --b) {  // reverse order, one free page after each sequence
    pages[b] = (lens[b] + P - 1) / P;
    first_page[b] = pool_pages;
    pool_pages += pages[b] + 1;
  }
  const std::size_t page_elems = std::size_t(P) * width;
  const std::uint16_t far = double_to_bf16(1e4), nan = 0xFFFF;
  Bits k_pool(std::size_t(pool_pages) * page_elems, far), v_pool = k_pool;
  std::vector<Bits> k(B), v(B);  // each sequence dense [len][width]
  Bits k_new(std::size_t(B) * stride), v_new(k_new.size());
  auto slot = [&](int b, int j) { return std::size_t(first_page[b]) * page_elems + std::size_t(j) * width; };
  for (int b = 0; b < B; ++b) {
    k[b] = random_bits(std::size_t(lens[b]) * width, 300 + b, -1, 1);
    v[b] = random_bits(std::size_t(lens[b]) * width, 400 + b, -1, 1);
    for (int j = 0; j < lens[b]; ++j) {
      const bool appended = j == lens[b] - 1;
      for (int c = 0; c < width; ++c) {
        const std::size_t from = std::size_t(j) * width + c;
        k_pool[slot(b, j) + c] = appended ? nan : k[b][from];
        v_pool[slot(b, j) + c] = appended ? nan : v[b][from];
        if (appended) k_new[std::size_t(b) * stride + c] = k[b][from], v_new[std::size_t(b) * stride + c] = v[b][from];
      }
    }
  }
  const Bits q = random_bits(std::size_t(B) * H * D, 65, -1, 1);
  auto dk = to_device(k_pool), dv = to_device(v_pool), dk_new = to_device(k_new), dv_new = to_device(v_new),
       dq = to_device(q), dout = poisoned(q.size());
  const float sm_scale = float(1.0 / std::sqrt(double(D)));
  fi::BatchDecode decode(H, KVH, D);
  decode.plan(lens, first_page, /*n_new=*/1, nullptr);
  const fi::DecodePlanSummary plan = decode.summary();
  std::printf("[ plan ] h%d kvh%d d%d: split_kv %d, kv_chunk %d keys, padded batch %d\n", H, KVH, D,
              int(plan.split_kv), plan.kv_chunk_tokens, plan.padded_batch);
  // 2000 keys over a floor of 8 pages: the plan must split here (the case exists to cover it).
  ASSERT_TRUE(plan.split_kv) << "the plan did not split 2000 keys";
  ASSERT_GE(plan.kv_chunk_tokens, 128);
  ASSERT_EQ(plan.kv_chunk_tokens % P, 0);
  const fi::PagedKv cache{dk.data(), dv.data()};
  decode.append(cache, dk_new.data(), stride, dv_new.data(), stride, nullptr);
  decode.run(cache, dq.data(), dout.data(), sm_scale, nullptr);
  const Bits first = to_host(dout);

  std::vector<double> ref(q.size()), tol(q.size()), twin(q.size());
  const int group = H / KVH;
  for (int b = 0; b < B; ++b) {
    const auto q_at = [&](int, int h, int c) { return val(q, (std::size_t(b) * H + h) * D + c); };
    const auto kv_at = [&](const Bits& m) {
      return [&m, width, D](int j, int kh, int c) { return val(m, std::size_t(j) * width + kh * D + c); };
    };
    attention_reference(q_at, kv_at(k[b]), kv_at(v[b]), 1, lens[b], H, KVH, D, sm_scale,
                        plan.split_kv ? plan.kv_chunk_tokens : 0, ref, tol, std::size_t(b) * H * D);
    std::vector<float> kf(k[b].size()), vf(v[b].size()), qh(D), out(D);
    for (std::size_t i = 0; i < kf.size(); ++i) kf[i] = float(val(k[b], i)), vf[i] = float(val(v[b], i));
    for (int h = 0; h < H; ++h) {
      const int kh = h / group;
      for (int c = 0; c < D; ++c) qh[c] = float(val(q, (std::size_t(b) * H + h) * D + c));
      const auto row = [&](const std::vector<float>& m) {
        return [&m, width, kh, D](std::int64_t j) { return m.data() + j * width + kh * D; };
      };
      ref::flashinfer_decode_head(qh.data(), row(kf), row(vf), lens[b], D, group, sm_scale,
                                  plan.split_kv ? plan.kv_chunk_tokens : 0, [](float x) { return round_to_bf16(x); },
                                  out.data(), ref::FlashInferDecodeKernel::batch_paged);
      for (int c = 0; c < D; ++c) twin[(std::size_t(b) * H + h) * D + c] = round_to_bf16(out[c]);
    }
  }
  expect_within("batch decode", first, ref, tol);
  double diff2 = 0, twin2 = 0;
  long off = 0;
  for (std::size_t i = 0; i < twin.size(); ++i) {
    const double got = val(first, i), d = got - twin[i];
    diff2 += d * d, twin2 += twin[i] * twin[i];
    if (!(std::fabs(d) <= bf16_ulp(twin[i]))) ++off;
  }
  ASSERT_GT(twin2, 0) << "the twin is all zeros";
  const double share = double(off) / double(twin.size()), rel_l2 = std::sqrt(diff2 / twin2);
  std::printf("[ twin ] h%d kvh%d d%d: share > 1 ulp %.6f, rel L2 %.3e\n", H, KVH, D, share, rel_l2);
  EXPECT_LE(share, 0.005) << "batch decode vs twin: share of elements more than 1 ulp apart";
  EXPECT_LE(rel_l2, 1e-3) << "batch decode vs twin: relative L2";

  expect_repeats("batch decode", dout, first, [&] { decode.run(cache, dq.data(), dout.data(), sm_scale, nullptr); });
}

// GQA 3 at head_dim 128 (odd head counts), group 1 at 64 (tiles of 4 keys), group 8 at 64
// (128 threads, not single decode's 512).
INSTANTIATE_TEST_SUITE_P(Shapes, FlashInferBatchDecode,
                         ::testing::Values(BatchDecodeCase{15, 5, 128}, BatchDecodeCase{5, 5, 64},
                                           BatchDecodeCase{16, 2, 64}),
                         [](const auto& i) {
                           return fmt_name("h", i.param.heads, "_kvh", i.param.kv_heads, "_d", i.param.head_dim);
                         });

// The page table the plan uploads (no GPU needed): pages of 16 from each sequence's first
// page, the last page's fill, and the appended rows at each sequence's last positions.
TEST(FlashInferPageTable, PagesFromFirstPageLastPageFillAndAppendPositions) {
  const fi::PageTable t = fi::page_table({1, 16, 17, 40}, {9, 0, 4, 6}, 1);
  EXPECT_EQ(t.indptr, (std::vector<std::int32_t>{0, 1, 2, 4, 7}));
  EXPECT_EQ(t.indices, (std::vector<std::int32_t>{9, 0, 4, 5, 6, 7, 8}));
  EXPECT_EQ(t.last_page_len, (std::vector<std::int32_t>{1, 16, 1, 8}));
  EXPECT_EQ(t.batch_indices, (std::vector<std::int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(t.positions, (std::vector<std::int32_t>{0, 15, 16, 39}));
  const fi::PageTable prefill = fi::page_table({3, 33}, {0, 1}, 3);
  EXPECT_EQ(prefill.batch_indices, (std::vector<std::int32_t>{0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(prefill.positions, (std::vector<std::int32_t>{0, 1, 2, 30, 31, 32}));
  EXPECT_EQ(prefill.last_page_len, (std::vector<std::int32_t>{3, 1}));
}

TEST(FlashInferPageTable, InconsistentInputIsRefused) {
  EXPECT_THROW(fi::page_table({}, {}, 1), std::invalid_argument);
  EXPECT_THROW(fi::page_table({4, 4}, {0}, 1), std::invalid_argument);
  EXPECT_THROW(fi::page_table({4}, {0}, 0), std::invalid_argument);
  EXPECT_THROW(fi::page_table({2}, {0}, 3), std::invalid_argument);   // fewer keys than new rows
  EXPECT_THROW(fi::page_table({4}, {-1}, 1), std::invalid_argument);
}

// A batch decode for a head dim FlashInfer was not instantiated for is refused at once.
TEST(FlashInferBatchDecodeShape, UnsupportedHeadDimIsRefusedNamingIt) {
  try {
    fi::BatchDecode decode(8, 2, 96);
    FAIL() << "head_dim 96 was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim 96"), std::string::npos) << e.what();
  }
}

// A shape the instantiated kernels cannot run is refused with its numbers, not launched.
TEST(FlashInferAttentionShape, UnsupportedHeadDimIsRefusedNamingIt) {
  SKIP_WITHOUT_GPU();
  fi::AttentionArgs a;
  a.qo_len = 1, a.kv_len = 4, a.n_heads = 2, a.n_kv_heads = 1, a.head_dim = 96;
  try {
    fi::attention(a, nullptr, nullptr);
    FAIL() << "head_dim 96 was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim 96"), std::string::npos) << e.what();
  }
}

// GQA group 5 (5 heads over 1 kv head): decode's DISPATCH_GQA_GROUP_SIZE (utils.cuh:142-165)
// has no such instance, so the launcher refuses it for decode and prefill alike.
TEST(FlashInferAttentionShape, UnsupportedGqaGroupIsRefusedNamingIt) {
  SKIP_WITHOUT_GPU();
  fi::AttentionArgs a;
  a.qo_len = 65, a.kv_len = 65, a.n_heads = 5, a.n_kv_heads = 1, a.head_dim = 64;
  try {
    fi::attention(a, nullptr, nullptr);
    FAIL() << "GQA group 5 was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("heads 5/1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fusecheck::test
