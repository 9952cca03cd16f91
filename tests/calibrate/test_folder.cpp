// `fusecheck calibrate` end to end on a small synthetic results folder whose labels and
// scores are chosen so that AUC, confusion matrices, fitted cuts and held-out folds can
// be worked out by hand (the numbers are derived in the comments).
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/calibrate/calibrate.h"
#include "harness/check/thresholds.h"
#include "harness/results/h5_write.h"
#include "tests/common/test_support.h"

namespace fusecheck::calibrate {
namespace {

constexpr int kLayers = 2;
constexpr int kPositions = 4;
const std::vector<std::string> kTaps = {"attn_norm", "q", "k", "v", "q_normed", "k_normed", "q_rope", "k_rope", "attn",
                                        "o_proj", "resid_mid", "mlp_norm", "gate", "up", "act", "down", "resid_out"};

// One run: its largest k_norm ratio (the only figure above 1), family, outcome and seed.
// Each run has an fp8-kv path too, divergent where fused-v1 is and where marked.
struct FakeRun {
  std::string name;
  std::string family;
  double k_ratio;
  bool divergent;
  int seed;
  bool diverges_on_fp8_only = false;
};

// Family A: ratios 3, 8, 32; family B: 4, 16, 100. Divergent: 8, 32, 100. Seed 0: 3, 32,
// 16; seed 1: 8, 4, 100.
const std::vector<FakeRun> kRuns = {{"a1", "A", 3, false, 0}, {"a2", "A", 8, true, 1},  {"a3", "A", 32, true, 0},
                                    {"b1", "B", 4, false, 1}, {"b2", "B", 16, false, 0, true},
                                    {"b3", "B", 100, true, 1}};
// A held-out family whose outcomes run against the design families' (5 divergent, 50
// fine): fitted on, it would pull the cut below 5.
const std::vector<FakeRun> kHeldOutRuns = {{"c1", "C", 5, true, 0}, {"c2", "C", 50, false, 0}};

constexpr const char* kFusedLabel = "emulated-cpu:fused-v1";
constexpr const char* kFp8Label = "emulated-cpu:fp8-kv";

void write_path(results::H5Writer& w, const FakeRun& r, const std::string& label, const std::string& role,
                bool divergent) {
  const std::string p = "/paths/" + label;
  w.group(p);
  w.attr(p, "role", role);
  w.attr(p, "dtype", "BF16");
  const double u = std::ldexp(1.0, -8);
  w.numbers(p + "/amplification/local_error", {kLayers}, {r.k_ratio * u, u});
  w.numbers(p + "/amplification/propagated_error", {kLayers}, {r.k_ratio * u, 2 * r.k_ratio * u});
  w.attr(p + "/amplification", "logits_propagated_error", 3 * r.k_ratio * u);
  const std::string e = "/end_to_end/" + label;
  // Divergent: KL 0.1 nats everywhere (> the 0.01 limit); otherwise 1e-4 and every
  // confident position keeps its top-1.
  w.numbers(e + "/kl", {kPositions}, std::vector<double>(kPositions, divergent ? 0.1 : 1e-4));
  w.numbers(e + "/ref_margin", {kPositions}, std::vector<double>(kPositions, 2.0));
  w.numbers(e + "/top1_match", {kPositions}, std::vector<double>(kPositions, 1.0));
}

void write_run(const std::filesystem::path& dir, const FakeRun& r) {
  results::H5Writer w(dir / (r.name + ".h5"));
  w.attr("/", "format", "fusecheck-run");
  w.attr("/", "format_version", 1LL);
  w.attr("/", "scenario_name", "cal-" + r.name);
  w.attr("/", "scenario_text",
         "description: calibration size=test family=" + r.family + " seed=" + std::to_string(r.seed) + "\n");
  w.attr("/", "device", "cpu");
  w.attr("/", "n_layers", static_cast<long long>(kLayers));
  w.attr("/", "measured_rows", static_cast<long long>(kPositions));
  w.attr("/", "model_path", "(none)");
  w.strings("/taps", kTaps);
  w.strings("/head_taps", {"final_norm", "logits"});
  for (const char* scorer : {"braidinfer", "fusecheck"}) {
    const std::string g = std::string("/static/") + scorer;
    w.group(g);
    w.attr(g, "score", 1.0);  // braidinfer calls every run COMPATIBLE: AUC 1/2
    w.attr(g, "status", "COMPATIBLE");
    w.attr(g, "estimated_amplification", r.k_ratio);
    w.numbers(g + "/layer_figure", {kLayers}, {r.k_ratio, 1.0});
  }
  w.group("/end_to_end");
  w.attr("/end_to_end", "greedy_steps", 0LL);
  write_path(w, r, kFusedLabel, "fused", r.divergent);
  write_path(w, r, kFp8Label, "other", r.divergent || r.diverges_on_fp8_only);
  nlohmann::json check = {{"scorer", "fusecheck"},
                          {"components", {{{"name", "k_norm.ratio"}, {"layer", 0}, {"value", r.k_ratio}},
                                          {{"name", "qk.amplification"}, {"layer", 0}, {"value", 1.0}}}}};
  std::ofstream(dir / (r.name + ".check.json")) << check.dump();
}

std::filesystem::path write_folder(bool with_held_out = false) {
  const auto dir = test::scratch_dir() / (with_held_out ? "results-held-out" : "results");
  std::filesystem::create_directories(dir);
  for (const auto& r : kRuns) write_run(dir, r);
  if (with_held_out) {
    for (const auto& r : kHeldOutRuns) write_run(dir, r);
  }
  return dir;
}

Calibration run_calibration(bool with_held_out = false) {
  CalibrateOptions o;
  o.bootstrap_resamples = 200;
  o.seed = 5;
  if (with_held_out) o.held_out_families = {"C"};
  // The hand counts below use the hand-written ramps (norm ratio 16 / 64), whatever the
  // built-in default file holds.
  o.baseline = check::load_thresholds(test::source_dir() / "results" / "thresholds" / "hand-written.json");
  return calibrate(load_results_dir(write_folder(with_held_out)), o);
}

TEST(CalibrateFolder, LabelsFollowTheOutcomeRule) {
  const Calibration c = run_calibration();
  ASSERT_EQ(c.used.size(), 6u);
  EXPECT_EQ(c.labels, (std::vector<int>{0, 1, 1, 0, 0, 1}));  // a1 a2 a3 b1 b2 b3
  EXPECT_EQ(c.runs[0].family, "A");
}

// Default norm-ratio ramp (warn 16, fail 64): risk = 1 - score = 0, .05, .35 (A) and 0, .2,
// .597 (B). Divergent .05, .35, .597 against 0, 0, .2: 2 + 3 + 3 = 8 of 9 pairs won.
TEST(CalibrateFolder, AucOfTheDefaultScoreMatchesTheHandCount) {
  const Calibration c = run_calibration();
  EXPECT_NEAR(c.fusecheck.auc, 8.0 / 9.0, 1e-12);
  EXPECT_DOUBLE_EQ(c.braidinfer.auc, 0.5);  // a constant score ranks nothing
  EXPECT_LE(c.fusecheck.auc_interval.low, c.fusecheck.auc);
  EXPECT_GE(c.fusecheck.auc_interval.high, c.fusecheck.auc);
}

TEST(CalibrateFolder, ConfusionAtTheDefaultThresholdsFlagsOnlyThePastFailRun) {
  const Confusion& m = run_calibration().fusecheck.confusion;  // only 100 > fail 64
  EXPECT_EQ(m.true_positive, 1);
  EXPECT_EQ(m.false_negative, 2);
  EXPECT_EQ(m.false_positive, 0);
  EXPECT_EQ(m.true_negative, 3);
}

// No miss allowed (5% of 3 divergent runs rounds down to 0): the norm-ratio cut sits
// between 4 and 8, at sqrt(32), and flags 8, 16, 32, 100: one false alarm (16).
TEST(CalibrateFolder, FittedThresholdSitsBelowTheSmallestDivergentRatio) {
  const Calibration c = run_calibration();
  EXPECT_DOUBLE_EQ(c.thresholds.norm_ratio.fail, std::sqrt(32.0));
  EXPECT_DOUBLE_EQ(c.thresholds.norm_ratio.warn, 0.999 * std::sqrt(32.0));  // the no-miss cut is fail's
  const Confusion& m = c.fitted.confusion;
  EXPECT_EQ(m.true_positive, 3);
  EXPECT_EQ(m.false_positive, 1);
  EXPECT_EQ(m.true_negative, 2);
  EXPECT_EQ(m.false_negative, 0);
}

// Hold out A: fit on B (4, 16 fine; 100 divergent) -> fail sqrt(1600) = 40, warn just
// below, so A's 8 and 32 are missed; risks 0 (3: below sqrt(warn)), .026, .176 (the ramp
// ranks below warn). Hold out B: fit on A -> fail sqrt(24), warn just below; B's 16 is a
// false alarm, 100 a hit; risks .149, .872, 1. Pooled out-of-fold: divergent .026, .176, 1
// against 0, .149, .872: 6 of 9 pairs.
TEST(CalibrateFolder, EachFamilyLeftOutIsFittedWithoutItself) {
  const Calibration c = run_calibration();
  const auto& folds = c.by_family.folds;
  ASSERT_EQ(folds.size(), 2u);
  EXPECT_EQ(folds[0].key, "A");
  EXPECT_DOUBLE_EQ(folds[0].thresholds.norm_ratio.fail, 40.0);
  EXPECT_EQ(folds[0].fusecheck.confusion.false_negative, 2);
  EXPECT_DOUBLE_EQ(folds[0].fusecheck.auc, 1.0);  // 8 and 32 both rank above 3, below warn
  EXPECT_DOUBLE_EQ(folds[0].braidinfer.auc, 0.5);  // the seed's constant score on the same runs
  EXPECT_DOUBLE_EQ(folds[1].thresholds.norm_ratio.fail, std::sqrt(24.0));
  EXPECT_EQ(folds[1].fusecheck.confusion.true_positive, 1);
  EXPECT_EQ(folds[1].fusecheck.confusion.false_positive, 1);
  EXPECT_NEAR(c.by_family.pooled.auc, 6.0 / 9.0, 1e-12);
  EXPECT_LE(c.by_family.pooled.auc_interval.low, c.by_family.pooled.auc);
  EXPECT_GE(c.by_family.pooled.auc_interval.high, c.by_family.pooled.auc);
}

// Leave seed 0 out: fit on 8 (div), 4, 100 (div) -> cut sqrt(4 * 8); seed 0's 32 is a hit,
// 16 a false alarm, 3 fine. Leave seed 1 out: fit on 3, 32 (div), 16 -> cut sqrt(16 * 32);
// seed 1's 8 is missed.
TEST(CalibrateFolder, EachSeedLeftOutIsFittedWithoutItself) {
  const Calibration c = run_calibration();
  const auto& folds = c.by_seed.folds;
  ASSERT_EQ(folds.size(), 2u);
  EXPECT_EQ(folds[0].key, "0");
  EXPECT_DOUBLE_EQ(folds[0].thresholds.norm_ratio.fail, std::sqrt(32.0));
  EXPECT_EQ(folds[0].fusecheck.confusion.true_positive, 1);
  EXPECT_EQ(folds[0].fusecheck.confusion.false_positive, 1);
  EXPECT_EQ(folds[1].key, "1");
  EXPECT_DOUBLE_EQ(folds[1].thresholds.norm_ratio.fail, std::sqrt(512.0));
  EXPECT_EQ(folds[1].fusecheck.confusion.false_negative, 1);
  EXPECT_EQ(c.by_seed.pooled.runs, 6);
}

TEST(CalibrateFolder, AHeldOutFamilyIsScoredButNeverFitted) {
  const Calibration c = run_calibration(true);
  EXPECT_EQ(c.used.size(), 6u);
  EXPECT_EQ(c.held_out.size(), 2u);
  EXPECT_DOUBLE_EQ(c.thresholds.norm_ratio.fail, std::sqrt(32.0));  // as without C
  ASSERT_EQ(c.held_out_families.size(), 1u);
  const HeldOutFold& f = c.held_out_families[0];
  EXPECT_EQ(f.key, "C");
  EXPECT_EQ(f.fusecheck.confusion.false_negative, 1);  // 5 < sqrt(32)
  EXPECT_EQ(f.fusecheck.confusion.false_positive, 1);  // 50 flagged
  EXPECT_DOUBLE_EQ(f.fusecheck.auc, 0.0);
  ASSERT_TRUE(c.held_out_all.has_value());
  EXPECT_EQ(c.held_out_all->fusecheck.runs, 2);
  for (const auto& fold : c.by_family.folds) EXPECT_NE(fold.key, "C");  // not a design family
}

// Fitted fail sqrt(32), warn just below (no lower no-miss cut): ratios 3 and 4 and the
// held-out 5 (diverged) are COMPATIBLE, none WARNING, 8, 16, 32, 100 INCOMPATIBLE (3
// diverged).
TEST(CalibrateFolder, TheThresholdsFileSaysWhatEachStatusDidOnTheSweep) {
  const Calibration c = run_calibration(true);
  const check::Thresholds t = check::parse_thresholds(thresholds_file_json(c), "fitted");
  ASSERT_TRUE(t.evidence.has_value());
  EXPECT_EQ((*t.evidence)[0].runs, 3);
  EXPECT_EQ((*t.evidence)[0].divergent, 1);
  EXPECT_EQ((*t.evidence)[1].runs, 0);
  EXPECT_EQ((*t.evidence)[2].runs, 5);
  EXPECT_EQ((*t.evidence)[2].divergent, 3);
  EXPECT_NE(t.outcome_rule.find("KL mean > 0.01"), std::string::npos) << t.outcome_rule;
}

TEST(CalibrateFolder, ThresholdsFileRoundTripsThroughTheCheckLoader) {
  const Calibration c = run_calibration();
  const check::Thresholds t = check::parse_thresholds(thresholds_file_json(c), "fitted");
  EXPECT_DOUBLE_EQ(t.norm_ratio.fail, std::sqrt(32.0));
  EXPECT_EQ(t.sweep, c.identity);
  EXPECT_EQ(t.created.size(), 10u);  // YYYY-MM-DD
  EXPECT_FALSE(t.source.empty());
}

TEST(CalibrateFolder, CliWritesThresholdsThatCheckReads) {
  const auto dir = write_folder();
  const auto out = test::scratch_dir() / "fitted.json";
  const auto r = test::run_fusecheck("calibrate " + dir.string() + " --bootstrap 100 --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("leave one family out"), std::string::npos);
  EXPECT_NE(r.out.find("leave one seed out"), std::string::npos);
  auto models = test::models_dir();
  if (!models) GTEST_SKIP() << test::models_dir_skip_reason();
  const auto chk = test::run_fusecheck("check " + (*models / "stories260K.gguf").string() + " --thresholds " +
                                       out.string() + " --format json");
  EXPECT_LT(chk.exit_code, 3) << chk.err;
  EXPECT_NE(chk.out.find("fusecheck calibrate"), std::string::npos);  // the thresholds' source
}

// The GPU machine's system Python has no numpy: the report must still render its tables
// and say what it left out. `python3 -S` hides the site packages (numpy, matplotlib).
TEST(CalibrateFolder, TheReportRendersItsTablesWithoutNumpy) {
  if (!std::filesystem::exists("/usr/bin/python3")) GTEST_SKIP() << "no /usr/bin/python3";
  const Calibration c = run_calibration(true);
  const auto data = test::scratch_dir() / "calibration.json";
  const auto html = test::scratch_dir() / "calibration.html";
  std::ofstream(data) << report_data(c).dump();
  const std::string cmd = "/usr/bin/python3 -S " + (test::source_dir() / "scripts" / "calibration-report").string() +
                          " " + data.string() + " --out " + html.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(html);
  const std::string page((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(page.find("Figures left out: No module named"), std::string::npos);
  EXPECT_NE(page.find("Held-out families (never fitted on)"), std::string::npos);
  EXPECT_NE(page.find("<td>C</td>"), std::string::npos);  // the held-out family's row
  EXPECT_NE(page.find("Leave one family out, leave one seed out"), std::string::npos);
  EXPECT_NE(page.find("<h2>Per recipe</h2>"), std::string::npos);
  EXPECT_NE(page.find("<td>emulated-cpu:fp8-kv</td>"), std::string::npos);
  EXPECT_EQ(page.find("<img"), std::string::npos);
}

TEST(CalibrateFolder, AReportWhoseDataWouldOverwriteTheThresholdsIsRefused) {
  const auto dir = write_folder();
  const auto out = test::scratch_dir() / "same.json";
  std::filesystem::remove(out);
  const auto r = test::run_fusecheck("calibrate " + dir.string() + " --bootstrap 10 --out " + out.string() +
                                     " --report " + (test::scratch_dir() / "same.html").string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("same file"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));  // refused before anything is written
}

// The fp8-kv path diverges on a2, a3, b2 (only there), b3: risks .05, .35, .2, .597 against
// 0, 0 (a1, b1): every pair won. At the defaults only b3 (100 > fail 64) is flagged.
TEST(CalibrateFolder, EachRecipePathIsScoredAgainstItsOwnOutcomes) {
  const Calibration c = run_calibration();
  ASSERT_EQ(c.per_recipe.size(), 2u);
  const RecipeScore& fp8 = c.per_recipe[0];
  const RecipeScore& fused = c.per_recipe[1];
  EXPECT_EQ(fp8.path, kFp8Label);
  EXPECT_TRUE(fp8.fp8);
  EXPECT_EQ(fp8.fusecheck.runs, 6);
  EXPECT_EQ(fp8.fusecheck.positives, 4);
  EXPECT_DOUBLE_EQ(fp8.fusecheck.auc, 1.0);
  EXPECT_EQ(fp8.fusecheck.confusion.true_positive, 1);
  EXPECT_EQ(fp8.fusecheck.confusion.false_negative, 3);
  EXPECT_EQ(fp8.fusecheck.confusion.true_negative, 2);
  EXPECT_EQ(fp8.fp8_key_bound.runs, 0);  // no checkpoint to read the bound from
  EXPECT_EQ(fused.path, kFusedLabel);
  EXPECT_FALSE(fused.fp8);
  EXPECT_EQ(fused.fusecheck.positives, 3);
  EXPECT_DOUBLE_EQ(fused.fusecheck.auc, c.fusecheck.auc);  // the headline's labels and score
  EXPECT_DOUBLE_EQ(fused.braidinfer.auc, c.braidinfer.auc);
}

TEST(CalibrateFolder, TheFitStaysOnTheFusedLabels) {
  EXPECT_EQ(run_calibration().labels, (std::vector<int>{0, 1, 1, 0, 0, 1}));  // b2 diverged on fp8-kv only
}

TEST(CalibrateFolder, ThePerRecipeSectionComesLastInTheSummaryAndInTheThresholdsFile) {
  const Calibration c = run_calibration();
  const std::string text = summary_text(c);
  const auto singles = text.find("single weights-only figures");
  const auto section = text.find("per recipe");
  ASSERT_NE(section, std::string::npos) << text;
  EXPECT_GT(section, singles);
  EXPECT_NE(text.find("emulated-cpu:fp8-kv", section), std::string::npos);
  const auto j = nlohmann::json::parse(thresholds_file_json(c));
  const auto& recipes = j.at("calibration").at("per_recipe");
  ASSERT_EQ(recipes.size(), 2u);
  EXPECT_EQ(recipes[0].at("path"), kFp8Label);
  EXPECT_EQ(recipes[0].at("fusecheck_default").at("divergent"), 4);
  EXPECT_EQ(recipes[0].at("fp8_key_bound").at("fail"), 1.0);
  EXPECT_FALSE(recipes[1].contains("fp8_key_bound"));
}

TEST(CalibrateFolder, AFolderWithoutResultsIsOneClearError) {
  const auto empty = test::scratch_dir() / "empty";
  std::filesystem::create_directories(empty);
  const auto r = test::run_fusecheck("calibrate " + empty.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no *.h5 results files"), std::string::npos);
}

TEST(CalibrateFolder, AFileThatIsNotAResultsFileIsNamedInTheError) {
  const auto dir = write_folder();
  std::ofstream(dir / "zz-broken.h5") << "not an HDF5 file";
  const auto r = test::run_fusecheck("calibrate " + dir.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("zz-broken.h5"), std::string::npos) << r.err;
}

TEST(CalibrateFolder, AMalformedCheckSidecarIsNamedInTheError) {
  const auto dir = write_folder();
  std::ofstream(dir / "a1.check.json") << "{\"scorer\": \"braidinfer\"}";
  const auto r = test::run_fusecheck("calibrate " + dir.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("a1.check.json"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace fusecheck::calibrate
