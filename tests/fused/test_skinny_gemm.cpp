// The batch-invariant decode GEMM (kernels/fused/skinny_gemm.h):
//  - small integer operands give the exact result, bit for bit, for every epilogue (the
//    MMA fragment layout, the k-permutation, the split-K reduction and the tails are right);
//  - random operands stay within one bf16 rounding of the double result plus the FP32
//    accumulation bound 2 gamma_K sum|x w| (tensor-core accumulation truncates instead of
//    rounding to nearest: up to 1 FP32 ulp per add instead of half, Fasi et al. 2021);
//  - the needle: one row's bits are the same alone and at any place of 2..130 rows (two
//    launches above 64 rows), next to random rows: what batch invariance needs (it also
//    crosses the kernel's staging modes: the whole k-range at up to 8 rows, 256-wide chunks
//    above);
//  - the folded RMSNorm (SkinnyNorm) gives the bits of launch_add_rmsnorm followed by the
//    plain GEMM, resid_out included, so a layer may fold it at some batch sizes only.
// GPU tests: they skip without a device. compute-sanitizer: --gtest_filter='*Small*'.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "fused_test_util.h"
#include "kernels/fused/add_rmsnorm.h"
#include "kernels/fused/skinny_gemm.h"

namespace fusecheck::test {
namespace {

using fused::SkinnyEpilogue;
using fused::SkinnyGemm;

double gamma(int k) { return k * std::ldexp(1.0, -24); }
double silu_d(double g) { return g / (1.0 + std::exp(-g)); }

struct Shape {
  int N, K;
};
// K: one step with a tail (72), split tails (1000), several splits (4096); N: not a
// multiple of the 16-row tile or the 64-column block.
const Shape kShapes[] = {{37, 72}, {200, 1000}, {96, 4096}};

std::string name(SkinnyEpilogue e) {
  switch (e) {
    case SkinnyEpilogue::Store: return "store";
    case SkinnyEpilogue::Bias: return "bias";
    case SkinnyEpilogue::Residual: return "residual";
    case SkinnyEpilogue::SwiGlu: return "swiglu";
  }
  return "?";
}

// One launch through SkinnyGemm; W has 2N rows for SwiGlu.
Bits run_skinny(SkinnyGemm& gemm, const Bits& x, const Bits& W, const Bits& bias, const Bits& resid, int M,
                int N, int K, SkinnyEpilogue e) {
  auto dx = to_device(x), dW = to_device(W), db = to_device(bias), dr = to_device(resid);
  auto y = poisoned(std::size_t(M) * N);
  gemm.run(dx.data(), dW.data(), M, N, K, e, db.data(), dr.data(), y.data(), nullptr);
  return to_host(y);
}

TEST(SkinnyGemm, SmallIntegerOperandsGiveTheExactResultForEveryEpilogue) {
  SKIP_WITHOUT_GPU();
  SkinnyGemm gemm;
  for (const Shape s : kShapes)
    for (SkinnyEpilogue e : {SkinnyEpilogue::Store, SkinnyEpilogue::Bias, SkinnyEpilogue::Residual}) {
      for (int M : {1, 5, 64, 70}) {
        const Bits x = integer_bits(std::size_t(M) * s.K, 1 + M, -3, 3),
                   W = integer_bits(std::size_t(s.N) * s.K, 2, -3, 3),
                   bias = integer_bits(s.N, 3, -40, 40), resid = integer_bits(std::size_t(M) * s.N, 4, -40, 40);
        std::vector<double> exact(std::size_t(M) * s.N);
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < s.N; ++n) {
            double acc = e == SkinnyEpilogue::Bias ? val(bias, n) : 0;
            if (e == SkinnyEpilogue::Residual) acc += val(resid, std::size_t(m) * s.N + n);
            for (int k = 0; k < s.K; ++k) acc += val(x, std::size_t(m) * s.K + k) * val(W, std::size_t(n) * s.K + k);
            exact[std::size_t(m) * s.N + n] = acc;
          }
        expect_bits(name(e) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K) + " M=" + std::to_string(M) +
                        " splits=" + std::to_string(SkinnyGemm::splits(s.N, s.K, e)),
                    run_skinny(gemm, x, W, bias, resid, M, s.N, s.K, e), exact);
      }
    }
}

TEST(SkinnyGemm, RandomOperandsWithinOneRoundingAndTheAccumulationBound) {
  SKIP_WITHOUT_GPU();
  SkinnyGemm gemm;
  for (const Shape s : kShapes)
    for (SkinnyEpilogue e : {SkinnyEpilogue::Store, SkinnyEpilogue::Residual, SkinnyEpilogue::SwiGlu})
      for (int M : {1, 9, 64}) {
        const int rows_w = e == SkinnyEpilogue::SwiGlu ? 2 * s.N : s.N;
        const Bits x = random_bits(std::size_t(M) * s.K, 10 + M, -2, 2),
                   W = random_bits(std::size_t(rows_w) * s.K, 11, -0.2f, 0.2f), bias = random_bits(s.N, 12, -1, 1),
                   resid = random_bits(std::size_t(M) * s.N, 13, -4, 4);
        std::vector<double> ref, tol;
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < s.N; ++n) {
            auto dot = [&](int row, double& mag) {
              double acc = 0;
              mag = 0;
              for (int k = 0; k < s.K; ++k) {
                const double p = val(x, std::size_t(m) * s.K + k) * val(W, std::size_t(row) * s.K + k);
                acc += p;
                mag += std::fabs(p);
              }
              return acc;
            };
            double mag = 0;
            const double a = dot(n, mag), da = 2 * gamma(s.K) * mag;
            if (e == SkinnyEpilogue::SwiGlu) {
              double mag_u = 0;
              const double u = dot(s.N + n, mag_u), du = 2 * gamma(s.K) * mag_u;
              const double r = silu_d(a) * u;
              ref.push_back(r);
              // |silu'| <= 1.1; FP32 silu and product: a few ulps of r.
              tol.push_back(bf16_ulp(r) + 1.1 * da * std::fabs(u) + std::fabs(silu_d(a)) * du + 1e-6 * std::fabs(r));
            } else {
              const double r = a + (e == SkinnyEpilogue::Residual ? val(resid, std::size_t(m) * s.N + n) : 0);
              ref.push_back(r);
              tol.push_back(bf16_ulp(r) + da);
            }
          }
        expect_within(name(e) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K) + " M=" + std::to_string(M),
                      run_skinny(gemm, x, W, bias, resid, M, s.N, s.K, e), ref, tol);
      }
}

// The needle row (seed 101) alone, then at the first, a middle and the last place of M rows
// whose other rows are random (their own seeds): its output bits never change.
TEST(SkinnyGemm, SmallNeedleRowBitsDoNotDependOnTheRowsAroundIt) {
  SKIP_WITHOUT_GPU();
  SkinnyGemm gemm;
  const Shape shapes[] = {{37, 72}, {96, 4096}, {40, 1000}};
  for (const Shape s : shapes)
    for (SkinnyEpilogue e : {SkinnyEpilogue::Store, SkinnyEpilogue::Bias, SkinnyEpilogue::Residual,
                             SkinnyEpilogue::SwiGlu}) {
      const int rows_w = e == SkinnyEpilogue::SwiGlu ? 2 * s.N : s.N;
      const Bits W = random_bits(std::size_t(rows_w) * s.K, 21, -0.3f, 0.3f), bias = random_bits(s.N, 22, -1, 1);
      const Bits needle = random_bits(s.K, 101, -3, 3), needle_resid = random_bits(s.N, 102, -3, 3);
      const Bits alone = run_skinny(gemm, needle, W, bias, needle_resid, 1, s.N, s.K, e);
      int checked = 0;
      for (int M : {2, 3, 8, 9, 37, 64, 65, 130})
        for (int place : {0, M / 2, M - 1}) {
          Bits x = random_bits(std::size_t(M) * s.K, 200 + M, -3, 3),
               resid = random_bits(std::size_t(M) * s.N, 300 + M, -3, 3);
          std::memcpy(&x[std::size_t(place) * s.K], needle.data(), s.K * 2);
          std::memcpy(&resid[std::size_t(place) * s.N], needle_resid.data(), s.N * 2);
          const Bits y = run_skinny(gemm, x, W, bias, resid, M, s.N, s.K, e);
          ASSERT_EQ(0, std::memcmp(&y[std::size_t(place) * s.N], alone.data(), s.N * 2))
              << name(e) << " N=" << s.N << " K=" << s.K << ": the needle's row differs at place " << place
              << " of " << M << " rows";
          ++checked;
        }
      EXPECT_EQ(checked, 24);
    }
}

// The folded RMSNorm against the two kernels it replaces (launch_add_rmsnorm, then the
// GEMM on its normed rows), bit for bit: attn_norm before QKV (no delta, Store and Bias) and
// residual add + mlp_norm before gate/up (delta, resid_out, SwiGlu), at 1, 2, 5 and 8 rows
// (1 and 2 at K = 4096), on a K of one split (72, 1000) and of several (4096), x large
// enough that the sum of squares rounds.
TEST(SkinnyGemm, SmallFoldedNormGivesTheSeparateKernelsBits) {
  SKIP_WITHOUT_GPU();
  SkinnyGemm gemm;
  const Shape shapes[] = {{37, 72}, {200, 1000}, {96, 4096}};
  int checked = 0;
  for (const Shape s : shapes)
    for (SkinnyEpilogue e : {SkinnyEpilogue::Store, SkinnyEpilogue::Bias, SkinnyEpilogue::SwiGlu})
      for (int M : {1, 2, 5, 8}) {
        // K = 4096 takes two rows (the layer folds up to BatchInvariantPlan::skinny_norm_rows
        // = 2): five whole FP32 rows (80 KB) exceed the kernel's shared-memory budget.
        if (s.K == 4096 && M > 2) {
          EXPECT_FALSE(SkinnyGemm::norm_fold_supported(M, s.N, s.K, e)) << "M=" << M << " K=4096";
          continue;
        }
        const bool with_delta = e == SkinnyEpilogue::SwiGlu;
        ASSERT_TRUE(SkinnyGemm::norm_fold_supported(M, s.N, s.K, e)) << s.N << "x" << s.K << " M=" << M;
        const int rows_w = e == SkinnyEpilogue::SwiGlu ? 2 * s.N : s.N;
        const Bits x = random_bits(std::size_t(M) * s.K, 400 + M, -40, 40),
                   d = random_bits(std::size_t(M) * s.K, 500 + M, -8, 8), nw = random_bits(s.K, 41, 0.2f, 2.f),
                   W = random_bits(std::size_t(rows_w) * s.K, 42, -0.3f, 0.3f), bias = random_bits(s.N, 43, -1, 1);
        auto dx = to_device(x), dd = to_device(d), dnw = to_device(nw), dW = to_device(W), db = to_device(bias);
        // The two kernels.
        auto normed = poisoned(std::size_t(M) * s.K), resid2 = poisoned(std::size_t(M) * s.K),
             y2 = poisoned(std::size_t(M) * s.N);
        fused::launch_add_rmsnorm(with_delta ? dd.data() : nullptr, dx.data(), dnw.data(), 1e-6f, M, s.K,
                                  resid2.data(), normed.data(), nullptr);
        gemm.run(normed.data(), dW.data(), M, s.N, s.K, e, db.data(), nullptr, y2.data(), nullptr);
        // The fold.
        auto resid1 = poisoned(std::size_t(M) * s.K), y1 = poisoned(std::size_t(M) * s.N);
        fused::SkinnyNorm nm;
        nm.delta = with_delta ? dd.data() : nullptr;
        nm.weight = dnw.data();
        nm.eps = 1e-6f;
        nm.resid_out = with_delta ? resid1.data() : nullptr;
        gemm.run(dx.data(), dW.data(), M, s.N, s.K, e, db.data(), nullptr, y1.data(), nullptr, &nm);
        const std::string what = name(e) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K) +
                                 " M=" + std::to_string(M) + " splits=" + std::to_string(SkinnyGemm::splits(s.N, s.K, e));
        const Bits a = to_host(y1), b = to_host(y2);
        ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 2)) << what << ": the folded norm's output differs";
        if (with_delta) {
          const Bits r1 = to_host(resid1), r2 = to_host(resid2);
          ASSERT_EQ(0, std::memcmp(r1.data(), r2.data(), r1.size() * 2)) << what << ": resid_out differs";
        }
        ++checked;
      }
  EXPECT_EQ(checked, 30);
  // Beyond kSkinnyNormMaxRows the fold is refused with a message.
  EXPECT_FALSE(SkinnyGemm::norm_fold_supported(fused::kSkinnyNormMaxRows + 1, 37, 72, SkinnyEpilogue::Store));
  fused::SkinnyNorm nm;
  auto dummy = poisoned(16 * 72);
  nm.weight = dummy.data();
  try {
    gemm.run(dummy.data(), dummy.data(), fused::kSkinnyNormMaxRows + 1, 8, 72, SkinnyEpilogue::Store, nullptr,
             nullptr, dummy.data(), nullptr, &nm);
    FAIL() << "a folded norm over 9 rows was accepted";
  } catch (const std::invalid_argument& err) {
    EXPECT_NE(std::string(err.what()).find("folded RMSNorm"), std::string::npos) << err.what();
  }
}

TEST(SkinnyGemm, SplitCountStaysWithinItsBoundsAndSplitsNarrowWeights) {
  SKIP_WITHOUT_GPU();
  // A weight of 4096 x 4096 on a GPU with dozens of SMs: a few splits, each at least 256 wide.
  const int s = SkinnyGemm::splits(4096, 4096, SkinnyEpilogue::Store);
  EXPECT_GE(s, 1);
  EXPECT_LE(s, 4096 / 256);
  // One 64-wide step cannot be split.
  EXPECT_EQ(SkinnyGemm::splits(64, 64, SkinnyEpilogue::Store), 1);
  // The shapes the exactness and needle tests use to exercise the split-K reduction: two
  // column blocks over K = 4096 split (up to 16 ways at 4 blocks per SM on 8 SMs or more);
  // a wrong reduction there shows as a wrong integer sum or a needle row that moves.
  EXPECT_GT(SkinnyGemm::splits(96, 4096, SkinnyEpilogue::Store), 1);
  EXPECT_GT(SkinnyGemm::splits(96, 4096, SkinnyEpilogue::SwiGlu), 1);
}

TEST(SkinnyGemm, ShapesItCannotTakeAreRefusedWithAMessage) {
  EXPECT_FALSE(fused::skinny_supports(64, 12));
  EXPECT_FALSE(fused::skinny_supports(0, 64));
  EXPECT_TRUE(fused::skinny_supports(37, 72));
  SkinnyGemm gemm;
  try {
    gemm.run(nullptr, nullptr, 1, 64, 12, SkinnyEpilogue::Store, nullptr, nullptr, nullptr, nullptr);
    FAIL() << "K = 12 was accepted";
  } catch (const std::invalid_argument& err) {
    EXPECT_NE(std::string(err.what()).find("multiple of 8"), std::string::npos) << err.what();
  }
}

}  // namespace
}  // namespace fusecheck::test
