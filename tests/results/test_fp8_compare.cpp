// compare flags new FP8 clipping (harness/results/fp8_compare.h): a k_cache.fp8 or
// v_cache.fp8 saturation count above zero where the baseline had none is a regression;
// clipping already in the baseline, and saturation at non-FP8 points, are not.
#include <cmath>

#include <gtest/gtest.h>

#include "harness/results/fp8_compare.h"

namespace fusecheck::results {
namespace {

// A results tree with one path whose recipe_headroom has the given points and a
// [2 x P] saturation_count (layer 0, then the head).
H5Node run_with(const std::vector<std::string>& points, const std::vector<double>& counts,
                const char* group = "recipe_headroom") {
  H5Value names;
  names.kind = H5Value::Kind::string;
  names.dims = {points.size()};
  names.strings = points;
  H5Value sat;
  sat.kind = H5Value::Kind::number;
  sat.dims = {2, points.size()};
  sat.numbers = counts;
  H5Node headroom;
  headroom.datasets["points"] = names;
  headroom.datasets["saturation_count"] = sat;
  H5Node root;
  root.groups["paths"].groups["emulated-cpu:fp8-kv"].groups[group] = headroom;
  return root;
}

const std::vector<std::string> kPoints = {"attn", "k_cache.fp8", "v_cache.fp8"};

TEST(Fp8Compare, NewClippingIsARegressionNamingLayerAndTap) {
  std::vector<Finding> f;
  compare_fp8_clipping(run_with(kPoints, {0, 12, 0, 0, 0, 0}), run_with(kPoints, {0, 0, 0, 0, 0, 0}), f);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].severity, Severity::regression);
  EXPECT_EQ(f[0].kind, "fp8");
  EXPECT_EQ(f[0].where, "emulated-cpu:fp8-kv L0 k_cache.fp8");
  EXPECT_NE(f[0].detail.find("12"), std::string::npos) << f[0].detail;
}

// Clips during greedy decoding alone (static scales from the prefill, later keys larger):
// recipe_headroom never sees them; greedy_headroom does, and compare names them.
TEST(Fp8Compare, NewClippingDuringGreedyDecodingIsARegressionOfItsOwn) {
  std::vector<Finding> f;
  H5Node fresh = run_with(kPoints, {0, 0, 0, 0, 0, 0});
  fresh.groups["paths"].groups["emulated-cpu:fp8-kv"].groups["greedy_headroom"] =
      run_with(kPoints, {0, 5, 0, 0, 0, 0}, "greedy_headroom").groups["paths"].groups["emulated-cpu:fp8-kv"]
          .groups["greedy_headroom"];
  compare_fp8_clipping(fresh, run_with(kPoints, {0, 0, 0, 0, 0, 0}), f);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].where, "emulated-cpu:fp8-kv greedy L0 k_cache.fp8");
  EXPECT_NE(f[0].detail.find("greedy"), std::string::npos) << f[0].detail;
  // The same clips in the baseline's greedy decoding: nothing new.
  std::vector<Finding> g;
  compare_fp8_clipping(fresh, run_with(kPoints, {0, 2, 0, 0, 0, 0}, "greedy_headroom"), g);
  EXPECT_TRUE(g.empty());
}

TEST(Fp8Compare, ClippingAlreadyInTheBaselineIsNotNew) {
  std::vector<Finding> f;
  compare_fp8_clipping(run_with(kPoints, {0, 40, 0, 0, 0, 0}), run_with(kPoints, {0, 3, 0, 0, 0, 0}), f);
  EXPECT_TRUE(f.empty());
}

TEST(Fp8Compare, SaturationAtOtherPointsIsLeftToTheOtherRules) {
  std::vector<Finding> f;
  compare_fp8_clipping(run_with(kPoints, {5, 0, 0, 0, 0, 0}), run_with(kPoints, {0, 0, 0, 0, 0, 0}), f);
  EXPECT_TRUE(f.empty());
}

TEST(Fp8Compare, APathWithoutBaselineCountsClipsAgainstZero) {
  std::vector<Finding> f;
  compare_fp8_clipping(run_with(kPoints, {0, 0, 7, 0, 0, 0}), H5Node{}, f);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].where, "emulated-cpu:fp8-kv L0 v_cache.fp8");
}

// A results tree with one path whose kv_age holds buckets 0, 1, 2-3 with these errors.
H5Node kv_age_run(const std::vector<double>& errors) {
  auto numbers = [](std::vector<double> v) {
    H5Value x;
    x.kind = H5Value::Kind::number;
    x.dims = {v.size()};
    x.numbers = std::move(v);
    return x;
  };
  H5Node kv;
  kv.datasets["age_lo"] = numbers({0, 1, 2});
  kv.datasets["age_hi"] = numbers({0, 1, 3});
  kv.datasets["rel_error"] = numbers(errors);
  H5Node root;
  root.groups["paths"].groups["emulated-cpu:fp8-kv"].groups["kv_age"] = kv;
  return root;
}

TEST(KvAgeCompare, AYoungBucketGrowingBeyondTheFactorIsARegressionNamingTheAges) {
  std::vector<Finding> f;
  compare_kv_age(kv_age_run({0.2, 0.05, 0.04}), kv_age_run({0.1, 0.05, 0.04}), f);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].severity, Severity::regression);
  EXPECT_EQ(f[0].kind, "fp8");
  EXPECT_EQ(f[0].where, "emulated-cpu:fp8-kv kv_age 0-0");
  EXPECT_NE(f[0].detail.find("x2.00"), std::string::npos) << f[0].detail;
}

TEST(KvAgeCompare, GrowthWithinTheFactorOrADropIsNotAFinding) {
  std::vector<Finding> f;
  compare_kv_age(kv_age_run({0.12, 0.01, 0.04}), kv_age_run({0.1, 0.05, 0.04}), f);
  EXPECT_TRUE(f.empty());
}

TEST(KvAgeCompare, NanIsARegressionAndAMissingBaselineIsNot) {
  std::vector<Finding> f;
  compare_kv_age(kv_age_run({std::nan(""), 0.05, 0.04}), kv_age_run({0.1, 0.05, 0.04}), f);
  EXPECT_EQ(f.size(), 1u);
  f.clear();
  compare_kv_age(kv_age_run({0.3, 0.3, 0.3}), H5Node{}, f);
  EXPECT_TRUE(f.empty());
}

// A results tree with one path whose scale_delivery verdict is `verdict` (none: no group).
H5Node scale_delivery_run(const std::string& verdict) {
  H5Node root;
  H5Node& p = root.groups["paths"].groups["emulated-cpu:fp8-kv"];
  if (verdict.empty()) return root;
  H5Value v;
  v.kind = H5Value::Kind::string;
  v.strings = {verdict};
  H5Value limit;
  limit.kind = H5Value::Kind::number;
  limit.numbers = {0.01};
  p.groups["scale_delivery"].attrs["verdict"] = v;
  p.groups["scale_delivery"].attrs["limit"] = limit;
  return root;
}

TEST(ScaleDeliveryCompare, APassThatNowFailsIsARegressionAndAFailureKeptIsNot) {
  std::vector<Finding> f;
  compare_scale_delivery(scale_delivery_run("fail"), scale_delivery_run("pass"), f);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].severity, Severity::regression);
  EXPECT_EQ(f[0].kind, "fp8");
  EXPECT_EQ(f[0].where, "emulated-cpu:fp8-kv scale_delivery");
  EXPECT_NE(f[0].detail.find("fail (baseline: pass)"), std::string::npos) << f[0].detail;
  f.clear();
  compare_scale_delivery(scale_delivery_run("inconclusive"), scale_delivery_run("pass"), f);
  EXPECT_EQ(f.size(), 1u);
  f.clear();
  compare_scale_delivery(scale_delivery_run("fail"), scale_delivery_run("fail"), f);
  EXPECT_TRUE(f.empty());
  compare_scale_delivery(scale_delivery_run("pass"), scale_delivery_run("fail"), f);
  EXPECT_TRUE(f.empty());
  // A check the baseline did not run that fails now is a finding; a pass is not.
  compare_scale_delivery(scale_delivery_run("fail"), scale_delivery_run(""), f);
  EXPECT_EQ(f.size(), 1u);
  f.clear();
  compare_scale_delivery(scale_delivery_run("pass"), H5Node{}, f);
  EXPECT_TRUE(f.empty());
}

}  // namespace
}  // namespace fusecheck::results
