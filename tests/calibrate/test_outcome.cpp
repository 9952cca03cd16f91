// The outcome rule: figures from per-position data, and each clause of the verdict.
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "harness/calibrate/outcome.h"

namespace fusecheck::calibrate {
namespace {

TEST(CalibrateOutcome, ConfidentAgreementCountsOnlyPositionsAboveTheMarginFloor) {
  const std::vector<double> kl = {1e-4, 2e-4, 3e-4, 4e-4};
  const std::vector<double> margin = {0.01, 2.0, 0.02, 3.0};
  const std::vector<double> match = {0, 1, 0, 1};  // the near-ties flipped
  const EndToEnd e = end_to_end_figures(kl, margin, match, 0.5);
  EXPECT_EQ(e.confident_positions, 2);
  EXPECT_DOUBLE_EQ(e.top1_confident, 1.0);
  EXPECT_DOUBLE_EQ(e.top1_all, 0.5);
  EXPECT_DOUBLE_EQ(e.kl_mean, 2.5e-4);
  EXPECT_FALSE(judge(e, OutcomeRule{0.5, 1e-2, 0.99}).divergent);
}

TEST(CalibrateOutcome, AConfidentFlipMakesAPathDivergent) {
  const std::vector<double> kl = {1e-4, 1e-4};
  const std::vector<double> margin = {2.0, 3.0};
  const std::vector<double> match = {0, 1};
  const Outcome o = judge(end_to_end_figures(kl, margin, match, 0.5), OutcomeRule{0.5, 1e-2, 0.99});
  EXPECT_TRUE(o.divergent);
  EXPECT_NE(o.reason.find("confident top-1"), std::string::npos);
}

TEST(CalibrateOutcome, KlAboveTheLimitMakesAPathDivergent) {
  const std::vector<double> kl = {0.02, 0.03};
  const std::vector<double> margin = {2.0, 3.0};
  const std::vector<double> match = {1, 1};
  const Outcome o = judge(end_to_end_figures(kl, margin, match, 0.5), OutcomeRule{0.5, 1e-2, 0.99});
  EXPECT_TRUE(o.divergent);
  EXPECT_NE(o.reason.find("KL mean"), std::string::npos);
}

TEST(CalibrateOutcome, NonFiniteLogitsMakeAPathDivergent) {
  const std::vector<double> kl = {1e-4, std::numeric_limits<double>::infinity()};
  const std::vector<double> margin = {2.0, 3.0};
  const std::vector<double> match = {1, 0};
  const EndToEnd e = end_to_end_figures(kl, margin, match, 0.5);
  EXPECT_TRUE(e.nonfinite);
  EXPECT_EQ(judge(e, OutcomeRule{}).reason, "non-finite logits");
}

}  // namespace
}  // namespace fusecheck::calibrate
