// compute_metrics after issue 18's host work (sums apart, in element order; the rest in
// ranges merged exactly) gives the same bits as the loop it replaced (kept verbatim in
// metrics_before.h), and TapMetricsInParts gives those bits whatever the number of parts;
// likewise next_token_agreement.
// Seeded data in every dtype, at an awkward size, with the cases the loop special-cases:
// NaN and Inf in the path, non-finite and zero reference values, an all-zero reference,
// distances across zero and beyond the histogram's exact bins.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness/core/dtype.h"
#include "harness/run/metrics.h"
#include "tests/run/metrics_before.h"

namespace fusecheck::run {
namespace {

enum class Data { typical, nonfinite_path, nonfinite_ref, zeros_in_ref, all_zero_ref, far_apart };

struct Case {
  DType dtype;
  Data data;
  int rows, cols;
};

std::string data_name(Data d) {
  switch (d) {
    case Data::typical: return "typical";
    case Data::nonfinite_path: return "nonfinite_path";
    case Data::nonfinite_ref: return "nonfinite_ref";
    case Data::zeros_in_ref: return "zeros_in_ref";
    case Data::all_zero_ref: return "all_zero_ref";
    case Data::far_apart: return "far_apart";
  }
  return "?";
}

std::string case_name(const testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return std::string(dtype_name(c.dtype)) + "_" + data_name(c.data) + "_" + std::to_string(c.rows) + "x" +
         std::to_string(c.cols);
}

// A float-exact reference and a path near it (rounded to the dtype, plus an error of a
// few of its ULPs), then the case's special values at seeded places.
struct Pair {
  TapMatrix ref, path;
};
Pair make_case(const Case& c) {
  std::mt19937_64 rng(0x18d0 + static_cast<std::uint64_t>(c.data) * 16 + static_cast<std::uint64_t>(c.dtype));
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_int_distribution<Eigen::Index> where(0, Eigen::Index(c.rows) * c.cols - 1);
  Pair p{TapMatrix(c.rows, c.cols), TapMatrix(c.rows, c.cols)};
  const double step = c.dtype == DType::BF16 ? 0x1p-8 : c.dtype == DType::F16 ? 0x1p-11 : 0x1p-24;
  for (Eigen::Index i = 0; i < p.ref.size(); ++i) {
    const double r = static_cast<float>(normal(rng) * 3.0);
    p.ref.data()[i] = r;
    p.path.data()[i] = static_cast<float>(r * (1.0 + step * normal(rng)));
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  switch (c.data) {
    case Data::typical: break;
    case Data::nonfinite_path:
      for (int k = 0; k < 5; ++k) p.path.data()[where(rng)] = nan;
      for (int k = 0; k < 3; ++k) p.path.data()[where(rng)] = (k % 2 ? -inf : inf);
      break;
    case Data::nonfinite_ref:
      for (int k = 0; k < 4; ++k) p.ref.data()[where(rng)] = (k % 2 ? nan : -inf);
      break;
    case Data::zeros_in_ref:
      for (int k = 0; k < 40; ++k) p.ref.data()[where(rng)] = (k % 2 ? -0.0 : 0.0);
      break;
    case Data::all_zero_ref:
      p.ref.setZero();
      break;
    case Data::far_apart:
      for (int k = 0; k < 60; ++k) {
        const Eigen::Index i = where(rng);
        p.path.data()[i] = -p.ref.data()[i] * std::ldexp(1.0, k % 20);  // across zero, up to 2^19 x
      }
      break;
  }
  return p;
}

void expect_same_bits(const TapMetrics& a, const TapMetrics& b, const std::string& what) {
  for (const auto& f : kMetricFields) {
    const double x = a.*(f.member), y = b.*(f.member);
    EXPECT_EQ(0, std::memcmp(&x, &y, sizeof x)) << what << ": " << f.name << " " << x << " vs " << y;
  }
}

class FastMetrics : public testing::TestWithParam<Case> {};

TEST_P(FastMetrics, ComputeMetricsEqualsTheLoopItReplacedBitForBit) {
  const Pair p = make_case(GetParam());
  const Tolerance tol = default_tolerance(GetParam().dtype);
  expect_same_bits(compute_metrics(p.ref, p.path, GetParam().dtype, tol),
                   before::compute_metrics(p.ref, p.path, GetParam().dtype, tol), "compute_metrics");
}

TEST_P(FastMetrics, AnyNumberOfPartsGivesTheSameBits) {
  const Pair p = make_case(GetParam());
  const Tolerance tol = default_tolerance(GetParam().dtype);
  const TapMetrics whole = before::compute_metrics(p.ref, p.path, GetParam().dtype, tol);
  for (int parts : {2, 3, 7, 64}) {
    TapMetricsInParts split(p.ref, p.path, GetParam().dtype, tol, parts);
    split.sums();
    for (int k = split.parts() - 1; k >= 0; --k) split.range(k);  // any order
    expect_same_bits(split.finish(), whole, std::to_string(parts) + " parts");
  }
}

// 97 x 131: both prime, so no part boundary falls on a row.
INSTANTIATE_TEST_SUITE_P(
    SeededTaps, FastMetrics,
    testing::Values(Case{DType::BF16, Data::typical, 97, 131}, Case{DType::BF16, Data::nonfinite_path, 97, 131},
                    Case{DType::BF16, Data::nonfinite_ref, 97, 131}, Case{DType::BF16, Data::zeros_in_ref, 97, 131},
                    Case{DType::BF16, Data::all_zero_ref, 97, 131}, Case{DType::BF16, Data::far_apart, 97, 131},
                    Case{DType::F16, Data::typical, 97, 131}, Case{DType::F16, Data::far_apart, 97, 131},
                    Case{DType::F16, Data::nonfinite_path, 97, 131}, Case{DType::F32, Data::typical, 97, 131},
                    Case{DType::F32, Data::zeros_in_ref, 97, 131}, Case{DType::F32, Data::far_apart, 97, 131},
                    Case{DType::F64, Data::typical, 97, 131}, Case{DType::F64, Data::nonfinite_ref, 97, 131},
                    Case{DType::BF16, Data::typical, 1, 1}),
    case_name);

// Logits [rows x vocab] with the special rows next_token_agreement handles: a tie for the
// reference's top-1, a row the path copies exactly (KL rounds to about 0), NaN and Inf
// path rows, a reference row holding -Inf (masked logits).
Pair make_logits(int rows, int vocab, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 3.0);
  Pair p{TapMatrix(rows, vocab), TapMatrix(rows, vocab)};
  for (Eigen::Index i = 0; i < p.ref.size(); ++i) {
    const double r = static_cast<float>(normal(rng));
    p.ref.data()[i] = r;
    p.path.data()[i] = bf16_to_float(double_to_bf16(r + 0.05 * normal(rng)));
  }
  p.ref(0, 3) = p.ref(0, 7) = 40.0;  // tie at the top
  p.path.row(1) = p.ref.row(1);     // identical row
  p.path(2, 5) = std::numeric_limits<double>::quiet_NaN();
  p.path(3, vocab - 1) = std::numeric_limits<double>::infinity();
  p.ref(4, 0) = -std::numeric_limits<double>::infinity();
  return p;
}

void expect_same_bits(const std::vector<double>& a, const std::vector<double>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(double))) << what;
}

TEST(FastNextTokenAgreement, EqualsTheCodeItReplacedBitForBit) {
  const Pair p = make_logits(9, 1031, 0x18d);
  const NextTokenAgreement now = next_token_agreement(p.ref, p.path);
  const NextTokenAgreement old = before::next_token_agreement(p.ref, p.path);
  expect_same_bits(now.kl, old.kl, "kl");
  expect_same_bits(now.ref_margin, old.ref_margin, "ref_margin");
  EXPECT_EQ(now.top1_match, old.top1_match);
  expect_same_bits({now.kl_mean, now.kl_p99, now.top1_agreement}, {old.kl_mean, old.kl_p99, old.top1_agreement},
                   "summary");
  EXPECT_TRUE(std::isinf(now.kl[2]) && std::isinf(now.kl[3]));  // the cases were exercised
  EXPECT_EQ(now.ref_margin[0], 0.0);
}

TEST(FastMetricsParts, RangeBeforeSumsIsALogicError) {
  const TapMatrix m = TapMatrix::Constant(3, 5, 1.5);
  TapMetricsInParts split(m, m, DType::BF16, default_tolerance(DType::BF16), 2);
  EXPECT_THROW(split.range(0), std::logic_error);
}

TEST(FastMetricsParts, ShapeMismatchIsALogicError) {
  const TapMatrix a = TapMatrix::Constant(3, 5, 1.5), b = TapMatrix::Constant(5, 3, 1.5);
  EXPECT_THROW(TapMetricsInParts(a, b, DType::BF16, default_tolerance(DType::BF16), 2), std::logic_error);
}

}  // namespace
}  // namespace fusecheck::run
