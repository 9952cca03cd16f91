// Invariance mode on test doubles whose dependence on the batch is known: a path whose
// reduction order depends on the batch size is reported at the layer and tap where that
// order changes; one that shifts a logit by a known number of ULPs in a batch is reported
// with exactly that distance; an invariant path passes every check it can make and says
// n/a for the ones it cannot.
#include <bit>
#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "harness/run/invariance.h"
#include "tests/run/fake_path.h"

namespace fusecheck::run {
namespace {

using test::FakeModel;
using test::FakePath;

const FakeModel kModel{24, 37, 3};

// q of layer `vary_layer` summed in float in an order that depends on the batch (split-K
// with one split per sequence of the batch, as a kernel that sizes its grid by the batch
// would); everything downstream follows from it.
class BatchOrderPath : public FakePath {
 public:
  explicit BatchOrderPath(int vary_layer) : FakePath("batch-order", kModel, Kind::Float32), vary_layer_(vary_layer) {
    std::mt19937_64 rng(7);
    std::normal_distribution<double> normal(0.0, 1.0);
    w_ = TapMatrix(kModel.hidden, kModel.hidden);
    for (auto& v : w_.reshaped()) v = normal(rng);
  }
  void reset(int batch, int capacity) override {
    FakePath::reset(batch, capacity);
    batch_ = batch;
  }
  TapSet layer(int layer, const TapMatrix& input) override {
    TapSet t = FakePath::layer(layer, input);
    if (layer != vary_layer_) return t;
    const TapMatrix& x = t.at(Tap::attn_norm);
    TapMatrix q(x.rows(), w_.cols());
    const int splits = std::min(batch_, static_cast<int>(x.cols()));
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      for (Eigen::Index c = 0; c < w_.cols(); ++c) {
        float total = 0;
        for (int s = 0; s < splits; ++s) {
          float part = 0;
          for (Eigen::Index k = s; k < x.cols(); k += splits) part += static_cast<float>(x(r, k) * w_(k, c));
          total += part;
        }
        q(r, c) = total;
      }
    }
    t[Tap::q] = q;
    t[Tap::resid_out] = (input + 1e-2 * q).cast<float>().cast<double>();
    return t;
  }

 private:
  int vary_layer_;
  int batch_ = 1;
  TapMatrix w_;
};

// Invariant everywhere but the head: in a batch, logits(0, 0) of every sequence moves by
// exactly `ulps` float ULPs (a per-batch scale, as an FP8 scale over the batch would).
class LogitShiftPath : public FakePath {
 public:
  explicit LogitShiftPath(int ulps) : FakePath("logit-shift", kModel, Kind::Float32), ulps_(ulps) {}
  void reset(int batch, int capacity) override {
    FakePath::reset(batch, capacity);
    batch_ = batch;
  }
  TapSet head(const TapMatrix& hidden) override {
    TapSet t = FakePath::head(hidden);
    if (batch_ > 1) {
      for (Eigen::Index r = 0; r < t[Tap::logits].rows(); ++r) {
        const auto f = static_cast<float>(t[Tap::logits](r, 0));
        t[Tap::logits](r, 0) = std::bit_cast<float>(std::bit_cast<std::uint32_t>(f) + static_cast<std::uint32_t>(ulps_));
      }
    }
    return t;
  }

 private:
  int ulps_;
  int batch_ = 1;
};

InvarianceInput input(int n = 9) {
  InvarianceInput in;
  in.n_layers = kModel.layers;
  for (int t = 0; t < n; ++t) in.needle.push_back((3 * t + 1) % kModel.vocab);
  std::mt19937_64 rng(11);
  for (int b = 0; b < 7; ++b) {
    std::vector<std::int32_t> ids;
    for (int t = 0; t < n; ++t) ids.push_back(static_cast<std::int32_t>(rng() % kModel.vocab));
    in.neighbours.push_back(ids);
  }
  in.phase_chunks = {n};
  in.spec.kv_chunks = {3, 5};
  return in;
}

const InvarianceOutcome& outcome(const PathInvariance& p, InvarianceCheck c) {
  for (const auto& o : p.outcomes) {
    if (o.check == c) return o;
  }
  throw std::logic_error("check not run");
}

template <typename P, typename... Args>
InstanceMaker maker(Args... args) {
  return [=] { return std::make_unique<P>(args...); };
}

TEST(Invariance, BatchDependentReductionIsReportedAtItsLayerAndTap) {
  const auto p = run_invariance(input(), "batch-order", DType::F32, maker<BatchOrderPath>(1));
  const auto& batch = outcome(p, InvarianceCheck::batch);
  EXPECT_EQ(batch.status, InvarianceStatus::differs);
  EXPECT_EQ(batch.first_layer, 1);
  ASSERT_TRUE(batch.first_tap.has_value());
  EXPECT_EQ(*batch.first_tap, Tap::q);
  EXPECT_GE(batch.first_row, 0);
  EXPECT_GT(batch.max_ulp, 0);
  EXPECT_EQ(batch.max_ulp_dtype, "F32");
  // Another summation order: a few ULPs of the row's scale, not garbage.
  EXPECT_EQ(batch.first_scaled_ulp_dtype, "F32");
  EXPECT_GT(batch.first_scaled_ulp, 0);
  EXPECT_LT(batch.first_scaled_ulp, 16);
  EXPECT_GT(batch.variants_differing, 0);
  EXPECT_GT(batch.elements_differing, 0);
}

TEST(Invariance, DecodeLayoutComparesOnlyItsDecodeSteps) {
  auto in = input();
  in.phase_chunks = {6, 1, 1, 1};
  in.compare_from = 6;
  in.spec.checks = {InvarianceCheck::batch};
  const auto p = run_invariance(in, "batch-order", DType::F32, maker<BatchOrderPath>(1));
  const auto& batch = outcome(p, InvarianceCheck::batch);
  EXPECT_EQ(batch.status, InvarianceStatus::differs);
  EXPECT_EQ(batch.first_layer, 1);
  EXPECT_GE(batch.first_row, 6);
  // Per variant: the layer taps (attn_norm, q, act, resid_out: 4 x 24 values) of the 3
  // decoded rows over 3 layers, and the head (final_norm 24 + logits 37) of the last
  // position only: the last call holds one token.
  EXPECT_EQ(batch.elements_compared, static_cast<std::int64_t>(batch.variants) * (3 * 3 * 4 * 24 + 24 + 37));
}

TEST(Invariance, BatchDependentPathStaysInvariantToWhatDoesNotChangeItsOrder) {
  const auto p = run_invariance(input(), "batch-order", DType::F32, maker<BatchOrderPath>(1));
  EXPECT_EQ(outcome(p, InvarianceCheck::run_to_run).status, InvarianceStatus::invariant);
  EXPECT_EQ(outcome(p, InvarianceCheck::kv_chunking).status, InvarianceStatus::invariant);
  EXPECT_EQ(outcome(p, InvarianceCheck::prefill_vs_decode).status, InvarianceStatus::invariant);
  EXPECT_EQ(outcome(p, InvarianceCheck::taps_on_off).status, InvarianceStatus::invariant);
}

TEST(Invariance, KnownUlpShiftInTheHeadIsReportedExactly) {
  const auto p = run_invariance(input(), "logit-shift", DType::F32, maker<LogitShiftPath>(3));
  const auto& batch = outcome(p, InvarianceCheck::batch);
  EXPECT_EQ(batch.status, InvarianceStatus::differs);
  EXPECT_EQ(batch.first_layer, kModel.layers);  // the head
  EXPECT_EQ(*batch.first_tap, Tap::logits);
  EXPECT_EQ(batch.first_row, 1);  // the head sees the last 8 of the 9 positions
  EXPECT_EQ(batch.max_ulp, 3);
  EXPECT_EQ(batch.max_ulp_dtype, "F32");
  // One logit per position the head saw, in every variant.
  EXPECT_EQ(batch.elements_differing, static_cast<std::int64_t>(batch.variants) * 8);
}

TEST(Invariance, InvariantPathPassesEveryCheckItCanMake) {
  const auto p = run_invariance(input(), "bf16", DType::BF16,
                                maker<FakePath>(std::string("bf16"), kModel, FakePath::Kind::Bf16));
  EXPECT_EQ(p.device, "cpu");
  for (const auto& o : p.outcomes) {
    if (o.check == InvarianceCheck::cuda_graph || o.check == InvarianceCheck::switches) {
      EXPECT_EQ(o.status, InvarianceStatus::not_applicable) << invariance_check_name(o.check);
      EXPECT_FALSE(o.reason.empty());
      EXPECT_EQ(o.variants, 0);
      continue;
    }
    EXPECT_EQ(o.status, InvarianceStatus::invariant) << invariance_check_name(o.check) << ": " << o.reason;
    EXPECT_GT(o.variants, 0) << invariance_check_name(o.check);
    EXPECT_GT(o.elements_compared, 0) << invariance_check_name(o.check);
  }
}

TEST(Invariance, EveryVariantIsCounted) {
  const auto p = run_invariance(input(), "bf16", DType::BF16,
                                maker<FakePath>(std::string("bf16"), kModel, FakePath::Kind::Bf16));
  // batch sizes 2, 3, 8 at first, middle, last: {0,1}, {0,1,2}, {0,4,7}.
  EXPECT_EQ(outcome(p, InvarianceCheck::batch).variants, 8);
  EXPECT_EQ(outcome(p, InvarianceCheck::run_to_run).variants, 2);  // runs 2 and 3 against run 1
  EXPECT_EQ(outcome(p, InvarianceCheck::kv_chunking).variants, 2);
  EXPECT_EQ(outcome(p, InvarianceCheck::prefill_vs_decode).variants, 1);
}

TEST(Invariance, AskedChecksOnlyInTableOrder) {
  auto in = input();
  in.spec.checks = {InvarianceCheck::run_to_run, InvarianceCheck::taps_on_off};
  const auto p = run_invariance(in, "bf16", DType::BF16,
                                maker<FakePath>(std::string("bf16"), kModel, FakePath::Kind::Bf16));
  ASSERT_EQ(p.outcomes.size(), 2u);
  EXPECT_EQ(p.outcomes[0].check, InvarianceCheck::run_to_run);
  EXPECT_EQ(p.outcomes[1].check, InvarianceCheck::taps_on_off);
}

TEST(Invariance, PathThatRefusesALayoutIsNotApplicableWithTheReason) {
  struct NoBatch : FakePath {
    NoBatch() : FakePath("no-batch", kModel, Kind::Float32) {}
    void reset(int batch, int capacity) override {
      if (batch > 1) throw std::invalid_argument("batch > 1 not supported");
      FakePath::reset(batch, capacity);
    }
  };
  const auto p = run_invariance(input(), "no-batch", DType::F32, [] { return std::make_unique<NoBatch>(); });
  const auto& batch = outcome(p, InvarianceCheck::batch);
  EXPECT_EQ(batch.status, InvarianceStatus::not_applicable);
  EXPECT_NE(batch.reason.find("batch > 1 not supported"), std::string::npos);
}

TEST(Invariance, TapWithTheWrongRowCountIsRefusedNotReadPastItsEnd) {
  struct ShortTap : FakePath {
    ShortTap() : FakePath("short-tap", kModel, Kind::Float32) {}
    TapSet layer(int layer, const TapMatrix& input) override {
      TapSet t = FakePath::layer(layer, input);
      TapMatrix first_row = t[Tap::act].topRows(1);  // a copy: assigning a block of itself would read freed memory
      t[Tap::act] = std::move(first_row);
      return t;
    }
  };
  auto in = input();
  in.spec.checks = {InvarianceCheck::run_to_run};
  const auto p = run_invariance(in, "short-tap", DType::F32, [] { return std::make_unique<ShortTap>(); });
  const auto& o = outcome(p, InvarianceCheck::run_to_run);
  EXPECT_EQ(o.status, InvarianceStatus::not_applicable);
  EXPECT_NE(o.reason.find("1 rows of act for 9 input rows"), std::string::npos) << o.reason;
}

TEST(CompareBitwise, Bf16ValuesAreMeasuredInBf16Ulps) {
  TapMatrix a(1, 2), b(1, 2);
  a << 1.0, -3.0;
  b << 1.0 + 2 * 0x1p-7, -3.0;  // two bf16 ULPs above 1
  const TapDiff d = compare_bitwise(a, b, DType::BF16);
  EXPECT_EQ(d.dtype, DType::BF16);
  EXPECT_EQ(d.differing, 1);
  EXPECT_EQ(d.first_row, 0);
  EXPECT_EQ(d.max_ulp, 2);
}

TEST(CompareBitwise, ValuesOutsideBf16FallBackToF32) {
  TapMatrix a(2, 1), b(2, 1);
  a << 0.5, 1.0f + 0x1p-20f;
  b << 0.5, 1.0f + 0x1p-22f;
  const TapDiff d = compare_bitwise(a, b, DType::BF16);
  EXPECT_EQ(d.dtype, DType::F32);
  EXPECT_EQ(d.first_row, 1);
  EXPECT_EQ(d.max_ulp, 6);  // 2^-20 - 2^-22 = 6 * 2^-23, the F32 ULP at 1
}

TEST(CompareBitwise, SignedZerosDifferInBitsAtZeroUlps) {
  TapMatrix a(1, 1), b(1, 1);
  a << 0.0;
  b << -0.0;
  const TapDiff d = compare_bitwise(a, b, DType::BF16);
  EXPECT_EQ(d.differing, 1);
  EXPECT_EQ(d.max_ulp, 0);
}

TEST(CompareBitwise, NanAgainstANumberIsTheLargestDistance) {
  TapMatrix a(1, 2), b(1, 2);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  a << nan, 2.0;
  b << 1.0, 2.0;
  const TapDiff d = compare_bitwise(a, b, DType::F32);
  EXPECT_EQ(d.differing, 1);
  EXPECT_TRUE(std::isinf(d.max_ulp));
}

TEST(CompareBitwise, IdenticalNansAreEqual) {
  TapMatrix a(1, 1);
  a << std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(compare_bitwise(a, a, DType::F32).differing, 0);
}

}  // namespace
}  // namespace fusecheck::run
