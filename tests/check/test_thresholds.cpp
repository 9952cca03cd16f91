// The thresholds file (default, parsing, errors), the seed's --threshold flag and the
// log-space ramp that turns a figure into a component score.
#include <cmath>
#include <fstream>
#include <limits>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/check/thresholds.h"
#include "harness/core/error.h"
#include "tests/common/test_support.h"

namespace fusecheck::check {
namespace {

void expect_same_values(const Thresholds& a, const Thresholds& b) {
  EXPECT_EQ(a.source, b.source);
  EXPECT_EQ(a.created, b.created);
  EXPECT_EQ(a.sweep, b.sweep);
  EXPECT_EQ(a.status.warning_below, b.status.warning_below);
  EXPECT_EQ(a.status.incompatible_below, b.status.incompatible_below);
  for (auto [ra, rb] : {std::pair{a.norm_ratio, b.norm_ratio}, std::pair{a.hidden_norm_gain, b.hidden_norm_gain},
                        std::pair{a.qk_amplification, b.qk_amplification},
                        std::pair{a.model_amplification, b.model_amplification},
                        std::pair{a.qk_depth_amplification, b.qk_depth_amplification},
                        std::pair{a.super_weight, b.super_weight}}) {
    EXPECT_EQ(ra.warn, rb.warn);
    EXPECT_EQ(ra.fail, rb.fail);
  }
}

std::string valid_json() { return thresholds_to_json(default_thresholds()); }

TEST(Thresholds, BuiltInDefaultsAreTheCommittedFile) {
  const auto file = test::source_dir() / "results" / "thresholds" / "default.json";
  expect_same_values(load_thresholds(file), default_thresholds());
  EXPECT_FALSE(default_thresholds().source.empty());
  EXPECT_NE(default_thresholds().file.find("built in"), std::string::npos);
}

TEST(Thresholds, DefaultsPlaceEveryRampsWarnBelowItsFail) {
  const Thresholds& t = default_thresholds();
  for (const Ramp& r : {t.norm_ratio, t.hidden_norm_gain, t.qk_amplification, t.model_amplification,
                        t.qk_depth_amplification, t.super_weight}) {
    EXPECT_GT(r.warn, 1.0);
    EXPECT_GT(r.fail, r.warn);
  }
}

TEST(Thresholds, FileFormRoundTrips) {
  Thresholds t = default_thresholds();
  t.source = "calibration sweep";
  t.sweep = "sweep-2026-11-26-abc";
  t.qk_amplification = Ramp{5.5, 40.25};
  expect_same_values(parse_thresholds(thresholds_to_json(t), "round-trip"), t);
}

TEST(Thresholds, MissingRampIsRejectedNamingIt) {
  std::string text = valid_json();
  const auto at = text.find("\"qk_amplification\"");
  text.replace(at, std::string("\"qk_amplification\"").size(), "\"qk_amplificaton\"");
  try {
    parse_thresholds(text, "t.json");
    FAIL() << "a misspelt ramp was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("t.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("qk_amplificaton"), std::string::npos) << e.what();
  }
}

TEST(Thresholds, FailNotAboveWarnIsRejected) {
  Thresholds t = default_thresholds();
  t.norm_ratio = Ramp{20, 20};
  EXPECT_THROW(parse_thresholds(thresholds_to_json(t), "t.json"), InputError);
}

TEST(Thresholds, NonJsonAndWrongSchemaAreRejected) {
  EXPECT_THROW(parse_thresholds("{ not json", "t.json"), InputError);
  std::string text = valid_json();
  text.replace(text.find("fusecheck-thresholds/1"), 22, "fusecheck-thresholds/9");
  EXPECT_THROW(parse_thresholds(text, "t.json"), InputError);
}

TEST(Thresholds, MissingFileIsAnInputError) {
  EXPECT_THROW(load_thresholds(test::scratch_dir() / "absent.json"), InputError);
}

TEST(ThresholdFlag, SetsSeedSafeAndWarningRatiosAndOurRatioRamp) {
  Thresholds t = default_thresholds();
  apply_threshold_flag(t, 12.0);
  EXPECT_EQ(t.braidinfer.safe_ratio, 12.0);
  EXPECT_EQ(t.braidinfer.warning_ratio, 9.0);
  EXPECT_EQ(t.norm_ratio.fail, 12.0);
  EXPECT_EQ(t.norm_ratio.warn, 9.0);
  EXPECT_NE(t.overrides.find("--threshold 12"), std::string::npos);
}

// Files written before the depth and super-weight figures existed (the committed
// calibrated-*.json): still valid, and those figures are not scored under them.
TEST(Thresholds, AFileWithoutTheNewerRampsLeavesThemOff) {
  auto j = nlohmann::json::parse(valid_json());
  j["fusecheck"].erase("qk_depth_amplification");
  j["fusecheck"].erase("super_weight");
  const Thresholds t = parse_thresholds(j.dump(), "old.json");
  EXPECT_FALSE(t.qk_depth_amplification.on());
  EXPECT_FALSE(t.super_weight.on());
  EXPECT_EQ(ramp_score(1e9, t.super_weight, t.status), 1.0);
  EXPECT_EQ(nlohmann::json::parse(thresholds_to_json(t))["fusecheck"].count("super_weight"), 0u);
}

nlohmann::json with_evidence() {
  auto j = nlohmann::json::parse(valid_json());
  j["evidence"] = {{"outcome_rule", "KL mean > 0.1 nats"},
                   {"COMPATIBLE", {{"runs", 80}, {"divergent", 2}}},
                   {"WARNING", {{"runs", 10}, {"divergent", 4}}},
                   {"INCOMPATIBLE", {{"runs", 50}, {"divergent", 47}}}};
  return j;
}

TEST(Thresholds, SweepEvidenceRoundTrips) {
  const Thresholds t = parse_thresholds(with_evidence().dump(), "cal.json");
  ASSERT_TRUE(t.evidence.has_value());
  EXPECT_EQ((*t.evidence)[2].runs, 50);
  EXPECT_EQ((*t.evidence)[2].divergent, 47);
  EXPECT_EQ(t.outcome_rule, "KL mean > 0.1 nats");
  const Thresholds back = parse_thresholds(thresholds_to_json(t), "again");
  EXPECT_EQ((*back.evidence)[0].runs, 80);
  EXPECT_EQ(back.outcome_rule, t.outcome_rule);
}

TEST(Thresholds, EvidenceWithImpossibleCountsIsRejectedNamingTheStatus) {
  for (const auto& [key, value] : {std::pair{"divergent", nlohmann::json(90)}, std::pair{"runs", nlohmann::json(-1)},
                                   std::pair{"runs", nlohmann::json("many")}}) {
    auto j = with_evidence();
    j["evidence"]["COMPATIBLE"][key] = value;
    try {
      parse_thresholds(j.dump(), "cal.json");
      FAIL() << key << " = " << value.dump() << " was accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("evidence.COMPATIBLE"), std::string::npos) << e.what();
    }
  }
}

TEST(ThresholdFlag, DropsTheSweepEvidenceOfTheThresholdsItChanges) {
  Thresholds t = parse_thresholds(with_evidence().dump(), "cal.json");
  apply_threshold_flag(t, 12.0);
  EXPECT_FALSE(t.evidence.has_value());
}

TEST(ThresholdFlag, NonPositiveIsRejected) {
  Thresholds t = default_thresholds();
  EXPECT_THROW(apply_threshold_flag(t, 0.0), InputError);
  EXPECT_THROW(apply_threshold_flag(t, -3.0), InputError);
}

TEST(RampScore, HitsTheStatusCutoffsExactlyAtWarnAndFail) {
  const StatusCutoffs c;
  const Ramp r{8, 32};
  EXPECT_EQ(ramp_score(8, r, c), 0.8);
  EXPECT_EQ(ramp_score(32, r, c), 0.5);
  EXPECT_DOUBLE_EQ(ramp_score(16, r, c), 0.65);  // log-midpoint: halfway between the cutoffs
}

TEST(RampScore, ClampsToZeroAndOne) {
  const StatusCutoffs c;
  const Ramp r{8, 32};
  EXPECT_EQ(ramp_score(1, r, c), 1.0);
  EXPECT_EQ(ramp_score(1e6, r, c), 0.0);
  EXPECT_EQ(ramp_score(std::numeric_limits<double>::infinity(), r, c), 0.0);
}

// A fitted band can be narrow (the GPU sweep's q/k depth ramp: warn 2.812, fail 2.815):
// the score still ranks models on both sides of it, so a model of figure 2.65 is riskier
// than one of 2.5, and 4 riskier than 3.
TEST(RampScore, KeepsRankingBelowWarnAndPastFailOfANarrowBand) {
  const StatusCutoffs c;
  const Ramp r{2.812, 2.815};
  EXPECT_EQ(ramp_score(std::sqrt(2.812), r, c), 1.0);  // 1 up to sqrt(warn)
  EXPECT_GT(ramp_score(2.5, r, c), ramp_score(2.65, r, c));
  EXPECT_GT(ramp_score(2.65, r, c), c.warning_below);
  EXPECT_LT(ramp_score(3.0, r, c), c.incompatible_below);
  EXPECT_GT(ramp_score(3.0, r, c), ramp_score(4.0, r, c));
  EXPECT_GT(ramp_score(4.0, r, c), 0.0);
  EXPECT_EQ(ramp_score(2.815 * 2.815, r, c), 0.0);  // 0 from fail^2 on
}

TEST(RampScore, IsContinuousAndNonIncreasing) {
  const StatusCutoffs c;
  const Ramp r{8, 32};
  double previous = ramp_score(1.0, r, c);
  for (double v = 1.0; v < 1000.0; v *= 1.001) {
    const double s = ramp_score(v, r, c);
    EXPECT_LE(s, previous);
    // Slope in log space is 0.3 / ln 4 per unit of ln v: a 0.1% step moves it < 3e-4.
    EXPECT_LT(previous - s, 3e-4) << "at " << v;
    previous = s;
  }
}

}  // namespace
}  // namespace fusecheck::check
