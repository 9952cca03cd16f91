// calibrate's per-recipe section (issue 17) on hand-built records: each recipe path's runs
// are labelled by that path's own outcome, and the FP8 key-bound figure is scored alone
// on the runs where it was read. Numbers are worked out in the comments.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness/calibrate/calibrate.h"
#include "harness/check/thresholds.h"
#include "tests/common/test_support.h"

namespace fusecheck::calibrate {
namespace {

constexpr const char* kFused = "emulated-cpu:fused-v1";
constexpr const char* kFp8Kv = "emulated-cpu:fp8-kv";
constexpr const char* kFp8Dynamic = "emulated-cpu:fp8-kv-dynamic";
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

LabelledPath labelled(std::size_t run, const std::string& label, bool divergent) {
  LabelledPath p;
  p.run = run;
  p.label = label;
  p.outcome.divergent = divergent;
  return p;
}

// One record: its k_norm ratio (the fusecheck figure) and FP8 key bound (NaN: not read).
RunRecord record(double k_ratio, double key_bound) {
  RunRecord r;
  r.braidinfer.score = 1.0;  // the seed's formula calls every run COMPATIBLE
  r.braidinfer.status = "COMPATIBLE";
  r.components = {{"k_norm.ratio", 0, k_ratio}};
  r.fp8_key_bound = key_bound;
  return r;
}

// Runs 0-3 by k_norm ratio 3, 8, 32, 100 (hand-written ramps: risk 0, .05, .35, .597);
// key bounds .1, .5, 2 and unread. fused-v1 diverges on 2 and 3; fp8-kv on 0, 2 and 3
// (run 0 on fp8-kv only); fp8-kv-dynamic on 1 only. Run 4 is a held-out family's (not
// in `used`), divergent on fp8-kv: never counted.
Calibration hand_built() {
  Calibration c;
  c.options.bootstrap_resamples = 100;
  c.options.seed = 3;
  c.options.baseline = check::load_thresholds(test::source_dir() / "results" / "thresholds" / "hand-written.json");
  c.runs = {record(3, 0.1), record(8, 0.5), record(32, 2.0), record(100, kNaN), record(50, 4.0)};
  const bool fused[] = {false, false, true, true, false};
  const bool fp8[] = {true, false, true, true, true};
  for (std::size_t i = 0; i < c.runs.size(); ++i) {
    c.paths.push_back(labelled(i, kFused, fused[i]));
    c.paths.push_back(labelled(i, kFp8Kv, fp8[i]));
    if (i < 4) c.paths.push_back(labelled(i, kFp8Dynamic, i == 1));
  }
  c.used = {0, 1, 2, 3};
  c.held_out = {4};
  return c;
}

const RecipeScore& find(const std::vector<RecipeScore>& scores, const std::string& path) {
  for (const auto& s : scores) {
    if (s.path == path) return s;
  }
  throw std::runtime_error("no per-recipe row for " + path);
}

TEST(CalibratePerRecipe, EachPathLabelsTheRunsByItsOwnOutcome) {
  const Calibration c = hand_built();
  EXPECT_EQ(labels_of_path(c.paths, c.runs.size(), kFused), (std::vector<int>{0, 0, 1, 1, 0}));
  EXPECT_EQ(labels_of_path(c.paths, c.runs.size(), kFp8Kv), (std::vector<int>{1, 0, 1, 1, 1}));
  EXPECT_EQ(labels_of_path(c.paths, c.runs.size(), kFp8Dynamic), (std::vector<int>{0, 1, 0, 0, -1}));
}

TEST(CalibratePerRecipe, ARunDivergentOnlyOnFp8KvCountsOnlyForFp8Kv) {
  const auto scores = recipe_scores(hand_built());
  ASSERT_EQ(scores.size(), 3u);
  EXPECT_EQ(find(scores, kFused).fusecheck.runs, 4);       // the held-out run is left out
  EXPECT_EQ(find(scores, kFused).fusecheck.positives, 2);  // runs 2, 3
  EXPECT_EQ(find(scores, kFp8Kv).fusecheck.runs, 4);
  EXPECT_EQ(find(scores, kFp8Kv).fusecheck.positives, 3);  // runs 0, 2, 3
}

// fused-v1: positives .35, .597 beat negatives 0, .05: AUC 1. fp8-kv: positives 0, .35,
// .597 against .05: 2 of 3 pairs won. At the defaults only run 3 (100 > fail 64) is flagged.
TEST(CalibratePerRecipe, TheScoreIsHeldAgainstEachPathsLabels) {
  const auto scores = recipe_scores(hand_built());
  EXPECT_DOUBLE_EQ(find(scores, kFused).fusecheck.auc, 1.0);
  EXPECT_NEAR(find(scores, kFp8Kv).fusecheck.auc, 2.0 / 3.0, 1e-12);
  const Confusion& m = find(scores, kFp8Kv).fusecheck.confusion;
  EXPECT_EQ(m.true_positive, 1);
  EXPECT_EQ(m.false_negative, 2);
  EXPECT_EQ(m.true_negative, 1);
  EXPECT_EQ(m.false_positive, 0);
  EXPECT_DOUBLE_EQ(find(scores, kFp8Kv).braidinfer.auc, 0.5);  // a constant score ranks nothing
}

// Key bounds .1 (divergent), .5 (not), 2 (divergent); run 3's was not read. One of two
// pairs won: AUC 1/2. Above fail 1: run 2 only.
TEST(CalibratePerRecipe, TheFp8KeyBoundIsScoredAloneOnTheRunsWhereItWasRead) {
  const auto scores = recipe_scores(hand_built());  // outlives the reference below
  const RecipeScore& s = find(scores, kFp8Kv);
  EXPECT_EQ(s.fp8_key_bound.runs, 3);
  EXPECT_EQ(s.fp8_key_bound.positives, 2);
  EXPECT_DOUBLE_EQ(s.fp8_key_bound.auc, 0.5);
  ASSERT_TRUE(s.fp8_fail.has_value());
  EXPECT_DOUBLE_EQ(*s.fp8_fail, 1.0);
  EXPECT_EQ(s.fp8_key_bound.confusion.true_positive, 1);
  EXPECT_EQ(s.fp8_key_bound.confusion.false_negative, 1);
  EXPECT_EQ(s.fp8_key_bound.confusion.true_negative, 1);
}

// Dynamic scales follow the keys: the bound is shown, never judged (no predictions).
TEST(CalibratePerRecipe, DynamicScaleRecipesAreNotJudgedByTheKeyBound) {
  const auto scores = recipe_scores(hand_built());  // outlives the reference below
  const RecipeScore& s = find(scores, kFp8Dynamic);
  EXPECT_TRUE(s.fp8);
  EXPECT_FALSE(s.fp8_fail.has_value());
  EXPECT_EQ(s.fp8_key_bound.confusion.true_positive + s.fp8_key_bound.confusion.false_positive, 0);
  // Key bounds .1, .5 (divergent), 2: the divergent run's beats one of two.
  EXPECT_DOUBLE_EQ(s.fp8_key_bound.auc, 0.5);
}

TEST(CalibratePerRecipe, NonFp8PathsHaveNoKeyBoundFigure) {
  const auto scores = recipe_scores(hand_built());  // outlives the reference below
  const RecipeScore& s = find(scores, kFused);
  EXPECT_FALSE(s.fp8);
  EXPECT_EQ(s.fp8_key_bound.runs, 0);
}

TEST(CalibratePerRecipe, PathLabelsNameTheirRecipe) {
  EXPECT_EQ(recipe_of_path("emulated-cpu:fp8-w8a8+fused-v1@0-1"), "fp8-w8a8+fused-v1@0-1");
  EXPECT_TRUE(is_fp8_path("emulated-cpu:fp8-w8a8+fused-v1@0-1"));
  EXPECT_TRUE(is_fp8_path("fused-cuda:fp8-kv-per-head"));
  EXPECT_FALSE(is_fp8_path("emulated-cpu:fused-v1"));
  EXPECT_FALSE(is_fp8_path("fused-cuda"));
  EXPECT_EQ(recipe_of_path("fused-cuda"), "fused-cuda");
}

}  // namespace
}  // namespace fusecheck::calibrate
