// fusecheck compare, through the library: a baseline and copies with known damage; the
// comparison must flag exactly what was injected, and nothing on identical runs.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include <gtest/gtest.h>

#include "harness/core/error.h"
#include "harness/results/compare.h"
#include "harness/results/h5_write.h"
#include "harness/results/merge.h"
#include "tests/common/test_support.h"
#include "tests/results/fixture.h"

namespace fusecheck::results {
namespace {

namespace fs = std::filesystem;
using test::FixtureSpec;

class CompareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::scratch_dir();
    base_ = dir_ / "base.h5";
    test::write_fixture_run(base_, FixtureSpec{});
  }
  fs::path copy_of_base(const std::string& name) {
    auto p = dir_ / name;
    fs::copy_file(base_, p, fs::copy_options::overwrite_existing);
    return p;
  }
  CompareReport compare(const fs::path& fresh, const CompareRules& rules = default_rules()) {
    return compare_files(ResultsFile::load(fresh), ResultsFile::load(base_), rules, false);
  }
  static std::set<std::pair<std::string, std::string>> regressions(const CompareReport& r) {
    std::set<std::pair<std::string, std::string>> out;
    for (const auto& run : r.runs) {
      for (const auto& f : run.findings) {
        if (f.severity == Severity::regression) out.insert({f.kind, f.where});
      }
    }
    return out;
  }
  fs::path dir_, base_;
};

TEST_F(CompareTest, IdenticalRunsCompareClean) {
  auto report = compare(copy_of_base("same.h5"));
  ASSERT_EQ(report.runs.size(), 1u);
  const auto& run = report.runs[0];
  EXPECT_EQ(report.exit_code(), 0);
  EXPECT_TRUE(run.findings.empty()) << format_text(report);
  // 2 paths x 2 modes x (4 layers x 17 taps + 2 head taps)
  EXPECT_EQ(run.cells_compared, 2u * 2u * (4u * 17u + 2u));
  EXPECT_EQ(run.count(TimingVerdict::same), run.timings.size());
  EXPECT_EQ(run.timings.size(), 2u * (4u + 4u));  // 2 paths x (4 ops over all layers + 4 layers)
}

TEST_F(CompareTest, NotesWhenNewAndBaselineCameFromDifferentPluginBuilds) {
  const std::string base_build = "fusecheck-cuda 0.1.0+abc sha256:1111 /ci/lib/libfusecheck_cuda.so; env FUSECHECK_FUSED_PDL=<unset>";
  test::set_string_attr(base_, "/", "plugins", base_build);
  auto count_plugin_notes = [&](const fs::path& fresh) {
    int n = 0;
    const auto report = compare(fresh);
    for (const auto& f : report.runs.at(0).findings) n += f.kind == "plugins" && f.severity == Severity::note;
    return n;
  };
  // The same build installed elsewhere is the same build.
  auto moved = copy_of_base("moved.h5");
  test::set_string_attr(moved, "/", "plugins",
                        "fusecheck-cuda 0.1.0+abc sha256:1111 /home/me/lib/libfusecheck_cuda.so; env FUSECHECK_FUSED_PDL=<unset>");
  EXPECT_EQ(count_plugin_notes(moved), 0);
  auto rebuilt = copy_of_base("rebuilt.h5");
  test::set_string_attr(rebuilt, "/", "plugins",
                        "fusecheck-cuda 0.1.0+abc sha256:2222 /ci/lib/libfusecheck_cuda.so; env FUSECHECK_FUSED_PDL=<unset>");
  EXPECT_EQ(count_plugin_notes(rebuilt), 1);
  auto switched = copy_of_base("switched.h5");
  test::set_string_attr(switched, "/", "plugins",
                        "fusecheck-cuda 0.1.0+abc sha256:1111 /ci/lib/libfusecheck_cuda.so; env FUSECHECK_FUSED_PDL=0");
  EXPECT_EQ(count_plugin_notes(switched), 1);
}

TEST_F(CompareTest, FlagsExactlyTheInjectedRegressions) {
  auto bad = copy_of_base("bad.h5");
  const std::size_t k_normed = test::tap_index("k_normed"), down = test::tap_index("down");
  // 1. Worse divergence at one tap (x3, still under its gate).
  std::string rel = "/paths/fused-cuda/propagated/rel_l2";
  test::set_cell(bad, rel, 2, k_normed, 3 * test::read_cell(base_, rel, 2, k_normed));
  // 2. One layer's attention 30% slower; each run's noise is 2%.
  test::scale_op_time(bad, "fused-cuda", 1, 1, 1.30);
  // 3. A NaN at one tap: the count, the undefined metric, the failing gate.
  std::string iso = "/paths/standard-cuda/isolated/";
  test::set_cell(bad, iso + "nan_count", 3, down, 5);
  test::set_cell(bad, iso + "rel_l2", 3, down, std::nan(""));
  test::set_cell(bad, iso + "gate", 3, down, 0);

  auto report = compare(bad);
  std::set<std::pair<std::string, std::string>> expected = {
      {"divergence", "fused-cuda propagated L2 k_normed"},
      {"timing", "fused-cuda L1"},                        // the layer as a whole
      {"timing", "fused-cuda attention (all layers)"},    // and the op that slowed
      {"nonfinite", "standard-cuda isolated L3 down"},
      {"gate", "standard-cuda isolated L3 down"},
  };
  EXPECT_EQ(regressions(report), expected) << format_text(report);
  EXPECT_EQ(report.exit_code(), 1);
  const auto& run = report.runs[0];
  EXPECT_EQ(run.count(TimingVerdict::slower), 2u);
  EXPECT_EQ(run.count(TimingVerdict::same), run.timings.size() - 2);
}

TEST_F(CompareTest, TimingChangesWithinNoiseAreSame) {
  auto fresh = copy_of_base("jitter.h5");
  test::scale_all_op_times(fresh, 1.015);  // 1.5% slower everywhere; each run spreads 2%
  auto report = compare(fresh);
  const auto& run = report.runs[0];
  EXPECT_EQ(run.count(TimingVerdict::same), run.timings.size()) << format_text(report);
  EXPECT_EQ(report.exit_code(), 0);
}

TEST_F(CompareTest, GrowthUnderTheRuleFactorIsNotFlagged) {
  auto fresh = copy_of_base("small-growth.h5");
  std::string rel = "/paths/fused-cuda/isolated/rel_l2";
  test::set_cell(fresh, rel, 0, 0, 1.2 * test::read_cell(base_, rel, 0, 0));  // limit is x1.25
  EXPECT_EQ(compare(fresh).exit_code(), 0);
}

TEST_F(CompareTest, RulesOverrideTheGrowthFactorPerTap) {
  auto fresh = copy_of_base("logits.h5");
  std::string head = "/paths/fused-cuda/propagated/head/rel_l2";
  test::set_cell(fresh, head, 1, 0, 1.8 * test::read_cell(base_, head, 1, 0));
  EXPECT_EQ(compare(fresh).exit_code(), 1);
  auto rules_file = dir_ / "rules.yaml";
  std::ofstream(rules_file) << "taps:\n  logits:\n    rel_l2: {factor: 2.0}\n";
  auto relaxed = compare(fresh, load_rules(rules_file));
  EXPECT_EQ(relaxed.exit_code(), 0) << format_text(relaxed);
}

TEST_F(CompareTest, ImprovementIsReportedButClean) {
  auto fresh = copy_of_base("better.h5");
  std::string rel = "/paths/fused-cuda/propagated/rel_l2";
  test::set_cell(fresh, rel, 1, 1, 0.25 * test::read_cell(base_, rel, 1, 1));
  auto report = compare(fresh);
  EXPECT_EQ(report.exit_code(), 0);
  EXPECT_EQ(report.runs[0].count(Severity::improvement), 1u);
}

TEST_F(CompareTest, VerdictChangeIsARegression) {
  auto fresh = copy_of_base("verdict.h5");
  test::set_string_attr(fresh, "/crosscheck/fusecheck", "verdict", "miss");
  auto r = regressions(compare(fresh));
  EXPECT_EQ(r, (std::set<std::pair<std::string, std::string>>{{"verdict", "crosscheck fusecheck verdict"}}));
}

TEST_F(CompareTest, LostTapIsACoverageRegression) {
  auto fresh = copy_of_base("lost.h5");
  test::set_cell(fresh, "/paths/fused-cuda/isolated/present", 0, test::tap_index("q_rope"), 0);
  auto r = regressions(compare(fresh));
  EXPECT_EQ(r, (std::set<std::pair<std::string, std::string>>{{"coverage", "fused-cuda isolated L0 q_rope"}}));
}

TEST_F(CompareTest, EndToEndKlGrowthAndEarlierGreedyMismatchAreRegressions) {
  auto fresh = copy_of_base("e2e.h5");
  {
    H5Writer w(fresh, true);
    w.attr("/end_to_end/fused-cuda", "kl_mean", 1e-3);
    w.attr("/end_to_end/standard-cuda", "greedy_first_mismatch", 17LL);
  }
  auto r = regressions(compare(fresh));
  EXPECT_EQ(r, (std::set<std::pair<std::string, std::string>>{{"end_to_end", "fused-cuda end-to-end"},
                                                              {"end_to_end", "standard-cuda end-to-end"}}));
}

TEST_F(CompareTest, DifferentDeviceIsRefusedSayingWhatDiffers) {
  auto cpu = dir_ / "cpu.h5";
  FixtureSpec spec;
  spec.device = "cpu";
  test::write_fixture_run(cpu, spec);
  try {
    compare(cpu);
    FAIL() << "expected a refusal";
  } catch (const InputError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("device: 'cpu' vs 'cuda'"), std::string::npos) << what;
    EXPECT_NE(what.find("--allow-mismatch"), std::string::npos) << what;
  }
  auto report = compare_files(ResultsFile::load(cpu), ResultsFile::load(base_), default_rules(), true);
  EXPECT_FALSE(report.runs[0].identity_differences.empty());
}

TEST_F(CompareTest, SameCheckpointInAnotherFolderIsComparableButNotAnotherCheckpoint) {
  FixtureSpec here, there, other;
  here.profile = there.profile = other.profile = "";
  here.model_path = "/work/shared/models/stories260K.gguf";
  there.model_path = "/srv/ci/models/stories260K.gguf";
  other.model_path = "/work/shared/models/stories15M.gguf";
  test::write_fixture_run(dir_ / "here.h5", here);
  test::write_fixture_run(dir_ / "there.h5", there);
  test::write_fixture_run(dir_ / "other.h5", other);
  auto load = [&](const char* f) { return ResultsFile::load(dir_ / f); };
  EXPECT_EQ(compare_files(load("there.h5"), load("here.h5"), default_rules(), false).exit_code(), 0);
  EXPECT_THROW(compare_files(load("other.h5"), load("here.h5"), default_rules(), false), InputError);
}

TEST_F(CompareTest, MergedShardsPairByScenario) {
  FixtureSpec a, b;
  a.scenario = "alpha";
  b.scenario = "beta";
  b.seed = 99;
  test::write_fixture_run(dir_ / "alpha.h5", a);
  test::write_fixture_run(dir_ / "beta.h5", b);
  EXPECT_EQ(merge_results({dir_ / "alpha.h5", dir_ / "beta.h5"}, dir_ / "base-merged.h5"), 2u);
  // The new side arrives in the other order and one shard is a merged file itself.
  merge_results({dir_ / "beta.h5"}, dir_ / "beta-merged.h5");
  merge_results({dir_ / "beta-merged.h5", dir_ / "alpha.h5"}, dir_ / "new-merged.h5");
  auto report = compare_files(ResultsFile::load(dir_ / "new-merged.h5"), ResultsFile::load(dir_ / "base-merged.h5"),
                              default_rules(), false);
  ASSERT_EQ(report.runs.size(), 2u);
  EXPECT_EQ(report.exit_code(), 0) << format_text(report);

  // A scenario missing from the new side is a regression.
  auto partial = compare_files(ResultsFile::load(dir_ / "beta-merged.h5"), ResultsFile::load(dir_ / "base-merged.h5"),
                               default_rules(), false);
  EXPECT_EQ(partial.exit_code(), 1);
  ASSERT_EQ(partial.unpaired.size(), 1u);
  EXPECT_EQ(partial.unpaired[0].where, "alpha");
}

TEST_F(CompareTest, MergeRefusesTwoRunsOfOneScenario) {
  EXPECT_THROW(merge_results({base_, copy_of_base("again.h5")}, dir_ / "dup.h5"), InputError);
  EXPECT_FALSE(fs::exists(dir_ / "dup.h5"));
}

TEST_F(CompareTest, MarkdownSummaryListsRegressionsInATable) {
  auto bad = copy_of_base("md.h5");
  std::string rel = "/paths/fused-cuda/propagated/rel_l2";
  test::set_cell(bad, rel, 0, 0, 10 * test::read_cell(base_, rel, 0, 0));
  auto md = format_markdown(compare(bad));
  EXPECT_NE(md.find("| REGRESSION | divergence | fused-cuda propagated L0 attn_norm |"), std::string::npos) << md;
}

}  // namespace
}  // namespace fusecheck::results
