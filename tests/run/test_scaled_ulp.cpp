// The scaled ULP distance of invariance mode (harness/run/scaled_ulp.h) on constructed
// taps: a reduction order that moves every value of a row by about one ULP of the row's
// magnitude reads ~1 ULP at scale even where a value near zero changes sign (its bit
// distance is ~1e9); values read from another row (garbage) read millions; the sign
// crossings and the bit distance of same-sign pairs are counted apart.
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "harness/run/invariance.h"
#include "harness/run/scaled_ulp.h"
#include "tests/run/fake_path.h"

namespace fusecheck::run {
namespace {

// A row of 257 seeded normals in float (values of a q projection: a few units, some near
// zero), one of them planted at a quarter of the row's ULP above zero.
TapMatrix q_row(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  TapMatrix m(1, 257);
  for (Eigen::Index c = 0; c < m.cols(); ++c) m(0, c) = normal(rng);
  return m;
}

// The row with every value moved by one float ULP of its own magnitude (a reduction in
// another order), alternately up and down.
TapMatrix moved_one_ulp(const TapMatrix& a) {
  TapMatrix b = a;
  for (Eigen::Index c = 0; c < b.cols(); ++c) {
    const auto f = static_cast<float>(a(0, c));
    b(0, c) = std::nextafter(f, c % 2 ? -HUGE_VALF : HUGE_VALF);
  }
  return b;
}

double row_max(const TapMatrix& m) { return m.cwiseAbs().maxCoeff(); }

TEST(UlpAt, IsTheSpacingOfTheDtypeAtTheScale) {
  EXPECT_EQ(ulp_at(1.0, DType::F32), 0x1p-23);
  EXPECT_EQ(ulp_at(1.999, DType::F32), 0x1p-23);
  EXPECT_EQ(ulp_at(2.0, DType::F32), 0x1p-22);
  EXPECT_EQ(ulp_at(3.0, DType::BF16), 0x1p-6);
  EXPECT_EQ(ulp_at(0.75, DType::F64), 0x1p-53);
  EXPECT_EQ(ulp_at(-4.0, DType::F16), 0x1p-8);
  // A row of zeros: the smallest spacing there is.
  EXPECT_EQ(ulp_at(0.0, DType::F32), 0x1p-149);
  EXPECT_EQ(ulp_at(0x1p-140, DType::F32), 0x1p-149);
}

TEST(ScaledUlpBin, PowerOfTwoBinsAboveOne) {
  EXPECT_EQ(scaled_ulp_bin(0.25), 0);
  EXPECT_EQ(scaled_ulp_bin(1.0), 1);
  EXPECT_EQ(scaled_ulp_bin(1.5), 1);
  EXPECT_EQ(scaled_ulp_bin(2.0), 2);
  EXPECT_EQ(scaled_ulp_bin(3.9), 2);
  EXPECT_EQ(scaled_ulp_bin(0x1p23), 24);
  EXPECT_EQ(scaled_ulp_bin(0x1p40), kScaledUlpBins - 1);
  EXPECT_EQ(scaled_ulp_bin(HUGE_VAL), kScaledUlpBins - 1);
  EXPECT_EQ(scaled_ulp_bin_label(0), "<1");
  EXPECT_EQ(scaled_ulp_bin_label(1), "1");
  EXPECT_EQ(scaled_ulp_bin_label(3), "4-7");
  EXPECT_EQ(scaled_ulp_bin_label(24), "2^23-2^24");
}

TEST(ScaledUlp, OneUlpMoveOfANearZeroValueAcrossZeroIsAboutOneUlpAtScale) {
  TapMatrix a = q_row(5);
  const double ulp = ulp_at(row_max(a), DType::F32);
  a(0, 100) = 0.25 * ulp;  // near zero: the reduction's rounding is larger than the value
  TapMatrix b = moved_one_ulp(a);
  b(0, 100) = a(0, 100) - ulp;  // one ULP of the row's scale: -0.75 ULP, across zero
  const TapDiff d = compare_bitwise(a, b, DType::F32);
  EXPECT_EQ(d.dtype, DType::F32);
  EXPECT_EQ(d.differing, a.cols());
  EXPECT_EQ(d.sign_crossings, 1);
  // In bits the crossing is ~1.7e9 ULPs away (both magnitudes' bit patterns added) ...
  EXPECT_GT(d.max_ulp, 1e9);
  // ... in ULPs of the row's scale it is one, and no other value moved by more.
  EXPECT_DOUBLE_EQ(d.max_scaled_ulp, 1.0);
  EXPECT_EQ(d.max_same_sign_ulp, 1);
  std::int64_t counted = 0;
  for (std::int64_t n : d.scaled_ulp_histogram) counted += n;
  EXPECT_EQ(counted, d.differing);
  EXPECT_EQ(d.scaled_ulp_histogram[0] + d.scaled_ulp_histogram[1], d.differing);
}

TEST(ScaledUlp, ValuesOfAnotherRowAreHugeAtScale) {
  const TapMatrix a = q_row(5);
  const TapMatrix garbage = q_row(6);  // what reading another sequence's row would give
  const TapDiff d = compare_bitwise(a, garbage, DType::F32);
  EXPECT_EQ(d.differing, a.cols());
  EXPECT_GT(d.max_scaled_ulp, 0x1p22);
  // Most values land millions of ULPs at scale away, not a few.
  std::int64_t above_2_20 = 0;
  for (int bin = 21; bin < kScaledUlpBins; ++bin) above_2_20 += d.scaled_ulp_histogram[static_cast<std::size_t>(bin)];
  EXPECT_GT(above_2_20, a.cols() / 2);
  EXPECT_GT(d.sign_crossings, a.cols() / 4);
}

TEST(ScaledUlp, ScaleIsEachRowsOwnOnSideA) {
  // Row 0 at scale 1024, row 1 at scale 1: the same absolute move of 2^-23 is 1 ULP at
  // row 1's scale and 1/1024 of one at row 0's.
  TapMatrix a(2, 2), b(2, 2);
  a << 1024.0, 0.5, 1.0, 0.5;
  b = a;
  b(0, 1) = 0.5 + 0x1p-23;
  b(1, 1) = 0.5 + 0x1p-23;
  TapDiff d = compare_bitwise(a.topRows(1), b.topRows(1), DType::F32);
  EXPECT_DOUBLE_EQ(d.max_scaled_ulp, 1.0 / 1024);
  d = compare_bitwise(a.bottomRows(1), b.bottomRows(1), DType::F32);
  EXPECT_DOUBLE_EQ(d.max_scaled_ulp, 1.0);
}

TEST(ScaledUlp, RowOfZerosOnSideATakesSideBsScale) {
  TapMatrix a(1, 2), b(1, 2);
  a << 0.0, 0.0;
  b << 1.0, 0.0;
  const TapDiff d = compare_bitwise(a, b, DType::F32);
  EXPECT_DOUBLE_EQ(d.max_scaled_ulp, 0x1p23);
  EXPECT_EQ(d.sign_crossings, 0);
}

TEST(ScaledUlp, SignedZerosAreNotASignCrossing) {
  TapMatrix a(1, 2), b(1, 2);
  a << 0.0, 1.0;
  b << -0.0, 1.0;
  const TapDiff d = compare_bitwise(a, b, DType::F32);
  EXPECT_EQ(d.differing, 1);
  EXPECT_EQ(d.sign_crossings, 0);
  EXPECT_EQ(d.max_scaled_ulp, 0);
}

TEST(ScaledUlp, NanIsInfinitelyFarAtScale) {
  TapMatrix a(1, 2), b(1, 2);
  a << std::numeric_limits<double>::quiet_NaN(), 1.0;
  b << 1.0, 1.0;
  const TapDiff d = compare_bitwise(a, b, DType::F32);
  EXPECT_TRUE(std::isinf(d.max_scaled_ulp));
  EXPECT_EQ(d.scaled_ulp_histogram[kScaledUlpBins - 1], 1);
}

// Through invariance mode: a path that, inside a batch, hands back the q rows of the
// neighbour next to the needle (a row mix-up) is reported as garbage at scale, where a
// batch-dependent reduction order (test_invariance.cpp) reads a few ULPs.
constexpr test::FakeModel kModel{24, 37, 3};

class RowMixUpPath : public test::FakePath {
 public:
  RowMixUpPath() : FakePath("row-mix-up", kModel, Kind::Float32) {}
  void reset(int batch, int capacity) override {
    FakePath::reset(batch, capacity);
    batch_ = batch;
  }
  TapSet layer(int layer, const TapMatrix& input) override {
    TapSet t = FakePath::layer(layer, input);
    if (batch_ > 1) {
      const Eigen::Index n = input.rows() / batch_;
      TapMatrix& q = t.at(Tap::q);
      TapMatrix rotated(q.rows(), q.cols());
      for (Eigen::Index r = 0; r < q.rows(); ++r) rotated.row(r) = q.row((r + n) % q.rows());
      q = rotated;
    }
    return t;
  }

 private:
  int batch_ = 1;
};

TEST(ScaledUlp, RowMixUpInABatchReadsAsGarbage) {
  InvarianceInput in;
  in.n_layers = kModel.layers;
  for (int t = 0; t < 9; ++t) in.needle.push_back((3 * t + 1) % kModel.vocab);
  std::mt19937_64 rng(11);
  for (int b = 0; b < 7; ++b) {
    std::vector<std::int32_t> ids;
    for (int t = 0; t < 9; ++t) ids.push_back(static_cast<std::int32_t>(rng() % kModel.vocab));
    in.neighbours.push_back(ids);
  }
  in.phase_chunks = {9};
  in.spec.checks = {InvarianceCheck::batch};
  const auto p = run_invariance(in, "row-mix-up", DType::F32, [] { return std::make_unique<RowMixUpPath>(); });
  const InvarianceOutcome& o = p.outcomes.at(0);
  EXPECT_EQ(o.status, InvarianceStatus::differs);
  EXPECT_EQ(o.first_layer, 0);
  ASSERT_TRUE(o.first_tap.has_value());
  EXPECT_EQ(*o.first_tap, Tap::q);
  EXPECT_EQ(o.first_scaled_ulp_dtype, "F32");
  EXPECT_GT(o.first_scaled_ulp, 0x1p20);
  EXPECT_GE(o.max_scaled_ulp, o.first_scaled_ulp);
}

}  // namespace
}  // namespace fusecheck::run
