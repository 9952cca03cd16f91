// Threshold fitting: cuts at the miss-rate bound, fewest false alarms, geometric
// midpoints; rescoring under thresholds.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "harness/calibrate/calibrate.h"
#include "harness/calibrate/fit.h"
#include "harness/check/check.h"
#include "harness/check/thresholds.h"
#include "tests/common/test_support.h"

namespace fusecheck::calibrate {
namespace {

// The thresholds these tests reason with (results/thresholds/hand-written.json), so a
// calibrated default file does not change them.
const check::Thresholds& hand_written() {
  static const check::Thresholds t =
      check::load_thresholds(test::source_dir() / "results" / "thresholds" / "hand-written.json");
  return t;
}

// A model whose figures are all 1 (the no-outlier value) but the ones given.
FigureMaxima figures(std::initializer_list<std::pair<int, double>> set) {
  FigureMaxima m;
  m.fill(1.0);
  for (const auto& [k, v] : set) m[static_cast<std::size_t>(k)] = v;
  return m;
}
FigureMaxima ratio_only(double r) { return figures({{0, r}}); }

std::array<double, kFigures> no_cuts() {
  std::array<double, kFigures> c;
  c.fill(INFINITY);
  return c;
}

TEST(CalibrateFit, ComponentsMapOntoTheirRamps) {
  EXPECT_EQ(figure_of("k_norm.ratio"), 0);
  EXPECT_EQ(figure_of("final_norm.ratio"), 0);
  EXPECT_EQ(figure_of("attn_norm.gain"), 1);
  EXPECT_EQ(figure_of("qk.amplification"), 2);
  EXPECT_EQ(figure_of("model.amplification"), 3);
  EXPECT_EQ(figure_of("model.qk_depth"), 4);
  EXPECT_EQ(figure_of("mlp.super_weight"), 5);
  EXPECT_EQ(figure_of("final_norm.gain"), 6);  // the final norm's gain has its own ramp
  EXPECT_EQ(figure_of("something.else"), -1);
}

TEST(CalibrateFit, SingleFiguresAreTheMaximaAndTheShareOfAmplifyingLayers) {
  const std::vector<StaticComponent> comps = {
      {"k_norm.ratio", 0, 10.0}, {"attn_norm.ratio", 1, 30.0}, {"attn_norm.gain", 0, 3.0},
      {"qk.amplification", 0, 4.0}, {"qk.amplification", 1, 0.5}, {"qk.amplification", 2, 9.0},
      {"model.amplification", -1, 2.5}, {"model.qk_depth", -1, 3.3}, {"mlp.super_weight", 1, 40.0},
      {"mlp.super_weight", 2, 6.0}, {"final_norm.gain", -1, 16.0}};
  const auto f = single_figures(comps);
  ASSERT_EQ(f.size(), 8u);
  EXPECT_EQ(f[4].first, "qk_depth_amplification");
  EXPECT_DOUBLE_EQ(f[0].second, 30.0);
  EXPECT_DOUBLE_EQ(f[1].second, 3.0);
  EXPECT_DOUBLE_EQ(f[2].second, 9.0);
  EXPECT_DOUBLE_EQ(f[3].second, 2.5);
  EXPECT_DOUBLE_EQ(f[4].second, 3.3);
  EXPECT_DOUBLE_EQ(f[5].second, 40.0);
  EXPECT_DOUBLE_EQ(f[6].second, 16.0);
  EXPECT_NEAR(f[7].second, 2.0 / 3.0, 1e-12);  // 4 and 9 of three layers reach 2
}

// Sidecars from before the figure existed: q/k amplification 4, 0.5 (counts as 1) and 9
// over three layers give the geometric mean (4 * 1 * 9)^(1/3), as the scorer computes it.
// The depth figure as the scorer computes it, in depth order whatever the sidecar's order.
TEST(CalibrateFit, SidecarsGetTheScorersQkDepthFigure) {
  std::vector<StaticComponent> comps = {
      {"qk.amplification", 2, 9.0}, {"qk.amplification", 0, 4.0}, {"qk.amplification", 1, 0.5}};
  const double expected = check::qk_depth_figure(std::vector<double>{4.0, 0.5, 9.0});
  add_qk_depth(comps);
  ASSERT_EQ(comps.size(), 4u);
  EXPECT_EQ(comps[3].name, "model.qk_depth");
  EXPECT_EQ(comps[3].value, expected);
  comps[3].value = 99.0;  // a sidecar's figure computed otherwise (an older fusecheck): replaced
  add_qk_depth(comps);
  ASSERT_EQ(comps.size(), 4u);
  EXPECT_EQ(comps[3].value, expected);
  std::vector<StaticComponent> llama = {{"attn_norm.gain", 0, 2.0}};
  add_qk_depth(llama);  // no q/k norms: no figure
  EXPECT_EQ(llama.size(), 1u);
  // With the final norm's gain in the sidecar, it is the product's last stage (the scorer's
  // figure since issue 22's fourth round): exp(ln 5 / 3) more than without it.
  std::vector<StaticComponent> with_final = {{"qk.amplification", 0, 4.0}, {"qk.amplification", 1, 0.5},
                                             {"qk.amplification", 2, 9.0}, {"final_norm.gain", -1, 5.0}};
  add_qk_depth(with_final);
  ASSERT_EQ(with_final.size(), 5u);
  EXPECT_EQ(with_final[4].value, check::qk_depth_figure(std::vector<double>{4.0, 0.5, 9.0}, 5.0));
  EXPECT_NEAR(with_final[4].value / expected, std::exp(std::log(5.0) / 3.0), 1e-12);
}

TEST(CalibrateFit, NoMissAllowedPutsTheCutJustBelowTheSmallestDivergentValue) {
  // Ratios 2, 4, 8, 16, 32, 100 with labels 0, 0, 1, 0, 1, 1: the cut must sit below 8,
  // at sqrt(4 * 8), flagging 8, 16, 32, 100: one false alarm (16).
  const std::vector<FigureMaxima> m = {ratio_only(2), ratio_only(4), ratio_only(8), ratio_only(16), ratio_only(32),
                                       ratio_only(100)};
  const std::vector<int> l = {0, 0, 1, 0, 1, 1};
  const CutFit fit = fit_cuts(m, l, 0.0);
  EXPECT_DOUBLE_EQ(fit.cuts[0], std::sqrt(32.0));
  for (int k = 1; k < kFigures; ++k) EXPECT_TRUE(std::isinf(fit.cuts[static_cast<std::size_t>(k)])) << k;
  EXPECT_EQ(fit.confusion.true_positive, 3);
  EXPECT_EQ(fit.confusion.false_positive, 1);
  EXPECT_EQ(fit.confusion.false_negative, 0);
}

TEST(CalibrateFit, AnAllowedMissBuysFewerFalseAlarms) {
  // A third of the positives may be missed: leaving out 8 gives a cut at sqrt(16 * 32)
  // and no false alarm.
  const std::vector<FigureMaxima> m = {ratio_only(2), ratio_only(4), ratio_only(8), ratio_only(16), ratio_only(32),
                                       ratio_only(100)};
  const std::vector<int> l = {0, 0, 1, 0, 1, 1};
  const CutFit fit = fit_cuts(m, l, 0.34);
  EXPECT_EQ(fit.allowed_misses, 1);
  EXPECT_DOUBLE_EQ(fit.cuts[0], std::sqrt(16.0 * 32.0));
  EXPECT_EQ(fit.confusion.false_positive, 0);
  EXPECT_EQ(fit.confusion.false_negative, 1);
}

TEST(CalibrateFit, TheFigureThatSeparatesIsTheOneCut) {
  // The norm ratio is useless (same on both classes); the q/k amplification separates.
  const std::vector<FigureMaxima> m = {figures({{0, 5}, {2, 2}}), figures({{0, 5}, {2, 3}}),
                                       figures({{0, 5}, {2, 40}}), figures({{0, 5}, {2, 60}})};
  const std::vector<int> l = {0, 0, 1, 1};
  const CutFit fit = fit_cuts(m, l, 0.0);
  EXPECT_TRUE(std::isinf(fit.cuts[0]));
  EXPECT_DOUBLE_EQ(fit.cuts[2], std::sqrt(3.0 * 40.0));
  EXPECT_EQ(fit.confusion.false_positive, 0);
}

// The depth figure catches what the worst layer does not: two divergent models whose
// largest q/k amplification is like a healthy one's, but many layers amplify.
TEST(CalibrateFit, TheDepthFigureIsCutWhenOnlyItSeparates) {
  const std::vector<FigureMaxima> m = {figures({{2, 30}, {4, 1.2}}), figures({{2, 8}, {4, 1.1}}),
                                       figures({{2, 10}, {4, 4.0}}), figures({{2, 30}, {4, 6.0}})};
  const std::vector<int> l = {0, 0, 1, 1};
  const CutFit fit = fit_cuts(m, l, 0.0);
  EXPECT_DOUBLE_EQ(fit.cuts[4], std::sqrt(1.2 * 4.0));
  EXPECT_TRUE(std::isinf(fit.cuts[2]));
  EXPECT_EQ(fit.confusion.false_positive, 0);
  EXPECT_EQ(fit.confusion.false_negative, 0);
}

// The search against exhaustive enumeration of every combination of useful cuts, on small
// seeded problems over three informative figures (the others constant): the same fewest
// false alarms at the same miss bound.
struct SearchCase {
  std::uint64_t seed;
  double max_miss_rate;
};
class CalibrateFitSearch : public ::testing::TestWithParam<SearchCase> {};

TEST_P(CalibrateFitSearch, FindsTheFewestFalseAlarmsThatExhaustiveSearchFinds) {
  const SearchCase sc = GetParam();
  std::mt19937_64 rng(sc.seed);
  std::vector<FigureMaxima> m;
  std::vector<int> l;
  for (int i = 0; i < 24; ++i) {
    const int label = static_cast<int>(bounded_draw(rng, 2));
    auto value = [&](double shift) { return std::exp(static_cast<double>(bounded_draw(rng, 1000)) / 250.0 + shift * label); };
    m.push_back(figures({{0, value(0.6)}, {2, value(0.9)}, {4, value(0.4)}}));
    l.push_back(label);
  }
  const CutFit fit = fit_cuts(m, l, sc.max_miss_rate);
  // Exhaustive: every figure's cut at +inf or just below a divergent model's value.
  std::array<std::vector<double>, 3> cands;
  const int fig[3] = {0, 2, 4};
  for (int a = 0; a < 3; ++a) {
    cands[a].push_back(INFINITY);
    for (std::size_t i = 0; i < m.size(); ++i) {
      if (l[i] == 1) cands[a].push_back(std::nextafter(m[i][static_cast<std::size_t>(fig[a])], 0.0));
    }
  }
  int best = 1 << 30;
  for (double c0 : cands[0]) {
    for (double c1 : cands[1]) {
      for (double c2 : cands[2]) {
        auto cuts = no_cuts();
        cuts[0] = c0, cuts[2] = c1, cuts[4] = c2;
        int fa = 0, miss = 0;
        for (std::size_t i = 0; i < m.size(); ++i) {
          const bool f = flagged(m[i], cuts);
          fa += f && l[i] == 0;
          miss += !f && l[i] == 1;
        }
        if (miss <= fit.allowed_misses) best = std::min(best, fa);
      }
    }
  }
  EXPECT_LE(fit.confusion.false_negative, fit.allowed_misses) << "seed " << sc.seed;
  EXPECT_EQ(fit.confusion.false_positive, best) << "seed " << sc.seed;
}

INSTANTIATE_TEST_SUITE_P(Seeded, CalibrateFitSearch,
                         ::testing::Values(SearchCase{1, 0.0}, SearchCase{2, 0.0}, SearchCase{3, 0.1},
                                           SearchCase{4, 0.1}, SearchCase{5, 0.2}, SearchCase{6, 0.0},
                                           SearchCase{7, 0.1}, SearchCase{8, 0.2}),
                         [](const auto& info) {
                           return "seed" + std::to_string(info.param.seed) + "_miss" +
                                  std::to_string(static_cast<int>(info.param.max_miss_rate * 100));
                         });

TEST(CalibrateFit, ThresholdsKeepWarnBelowFailAndFillUnneededRamps) {
  const std::vector<FigureMaxima> m = {ratio_only(4), ratio_only(8)};
  CutFit fail, warn;
  fail.cuts = no_cuts();
  fail.cuts[0] = std::sqrt(32.0);
  warn.cuts = fail.cuts;
  const check::Thresholds t = thresholds_from_cuts(fail, warn, m, hand_written());
  EXPECT_DOUBLE_EQ(t.norm_ratio.fail, std::sqrt(32.0));
  EXPECT_DOUBLE_EQ(t.norm_ratio.warn, 0.999 * std::sqrt(32.0));  // a no-miss cut at fail sits just below it
  EXPECT_DOUBLE_EQ(t.qk_amplification.fail, 32.0);  // the baseline's fail: above twice every value seen (2)
  EXPECT_LT(t.qk_amplification.warn, t.qk_amplification.fail);
}

TEST(CalibrateFit, WarnIsTheNoMissCutWhenItLiesBelowFail) {
  const std::vector<FigureMaxima> m = {ratio_only(4), ratio_only(8)};
  CutFit fail, warn;
  fail.cuts = no_cuts();
  fail.cuts[0] = std::sqrt(32.0);
  warn.cuts = no_cuts();
  warn.cuts[0] = 3.0;
  const check::Thresholds t = thresholds_from_cuts(fail, warn, m, hand_written());
  EXPECT_DOUBLE_EQ(t.norm_ratio.warn, 3.0);  // not narrowed or widened by hand
  EXPECT_DOUBLE_EQ(t.norm_ratio.fail, std::sqrt(32.0));
}

// A thresholds file written before the final norm had its own ramp scores its gain on
// hidden_norm_gain, as the scorer does.
TEST(CalibrateFit, RescoreScoresTheFinalNormGainOnTheHiddenRampWithoutItsOwn) {
  check::Thresholds t = hand_written();
  ASSERT_FALSE(t.final_norm_gain.on());
  const std::vector<StaticComponent> c = {{"final_norm.gain", -1, 8.0}};
  EXPECT_NEAR(rescore(c, t), 0.8, 1e-12);  // hidden_norm_gain's warn 8
  t.final_norm_gain = {2.0, 4.0};
  EXPECT_LT(rescore(c, t), 0.5);  // its own ramp: past fail
}

TEST(CalibrateFit, RescoreIsTheWorstRamp) {
  check::Thresholds t = hand_written();
  const std::vector<StaticComponent> c = {{"k_norm.ratio", 0, 16.0}, {"qk.amplification", 0, 2.0}};
  EXPECT_NEAR(rescore(c, t), 0.8, 1e-12);  // k_norm ratio at its warn point
  t.norm_ratio = {2.0, 8.0};
  EXPECT_LT(rescore(c, t), 0.5);  // now past fail
}

}  // namespace
}  // namespace fusecheck::calibrate
