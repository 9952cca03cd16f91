// The fused-or-standard decision: INCOMPATIBLE falls back unless forced, WARNING runs
// fused and warns, and the reason always names the verdict.
#include <string>

#include <gtest/gtest.h>

#include "harness/check/fallback.h"

namespace fusecheck::check {
namespace {

CompatibilityResult result_with(Status status, double score) {
  CompatibilityResult r;
  r.status = status;
  r.score = score;
  r.scorer = Scorer::Fusecheck;
  r.reason = "layer 0 k_norm.ratio = 42.30";
  return r;
}

TEST(Fallback, CompatibleRunsFusedWithoutWarning) {
  const auto d = decide_fused_or_standard(result_with(Status::Compatible, 0.95), false);
  EXPECT_TRUE(d.use_fused);
  EXPECT_FALSE(d.warn);
  EXPECT_NE(d.reason.find("COMPATIBLE"), std::string::npos);
}

TEST(Fallback, WarningRunsFusedAndWarns) {
  const auto d = decide_fused_or_standard(result_with(Status::Warning, 0.6), false);
  EXPECT_TRUE(d.use_fused);
  EXPECT_TRUE(d.warn);
  EXPECT_NE(d.reason.find("WARNING"), std::string::npos);
  EXPECT_NE(d.reason.find("0.60"), std::string::npos);
}

TEST(Fallback, IncompatibleRunsStandard) {
  const auto d = decide_fused_or_standard(result_with(Status::Incompatible, 0.1), false);
  EXPECT_FALSE(d.use_fused);
  EXPECT_TRUE(d.warn);
  EXPECT_NE(d.reason.find("standard path"), std::string::npos);
  EXPECT_NE(d.reason.find("--force-fused"), std::string::npos);
  EXPECT_NE(d.reason.find("k_norm.ratio"), std::string::npos);
  EXPECT_NE(d.reason.find("fusecheck scorer"), std::string::npos);
}

TEST(Fallback, ForceFusedOverridesIncompatibleWithAWarning) {
  const auto d = decide_fused_or_standard(result_with(Status::Incompatible, 0.1), true);
  EXPECT_TRUE(d.use_fused);
  EXPECT_TRUE(d.warn);
  EXPECT_NE(d.reason.find("forced"), std::string::npos);
}

TEST(Fallback, ForceFusedChangesNothingForCompatible) {
  const auto d = decide_fused_or_standard(result_with(Status::Compatible, 1.0), true);
  EXPECT_TRUE(d.use_fused);
  EXPECT_FALSE(d.warn);
}

}  // namespace
}  // namespace fusecheck::check
