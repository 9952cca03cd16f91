// The real `fusecheck run` (CPU, a tiny synthetic scenario) writes what compare and the
// report read: its file validates, compares clean with itself and with a second run
// (the CPU paths are deterministic), a NaN injected into a copy is caught, and the
// report renders from it with no network reference.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "harness/results/compare.h"
#include "tests/common/test_support.h"
#include "tests/results/fixture.h"

namespace fusecheck::test {
namespace {

namespace fs = std::filesystem;

class RunRoundTrip : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = files_dir();
    scenario_ = dir_ / "roundtrip.yaml";
    std::ofstream(scenario_) << "name: roundtrip\n"
                                "model: {synth: {profile: qwen3-tiny, layers: 2, seed: 0}}\n"
                                "tokens: {seed: 5}\n"
                                "phase: {prefill: 8}\n"
                                "paths: [fused-cuda, standard-cuda]\n"
                                "modes: [isolated, propagated, {perturb: {layer: 0, tap: k, size: 1.0e-3}}]\n"
                                "force_fused: true\n";
  }
  fs::path run(const std::string& name) {
    auto out = dir_ / name;
    auto r = run_fusecheck("run '" + scenario_.string() + "' --device cpu --no-progress --out '" + out.string() + "'");
    EXPECT_LE(r.exit_code, 1) << r.out << r.err;  // 1 = a gate failed, still a full result
    EXPECT_TRUE(fs::exists(out)) << r.err;
    return out;
  }
  fs::path dir_, scenario_;
};

TEST_F(RunRoundTrip, RealRunComparesCleanWithARepeatAndFlagsAnInjectedNaN) {
  auto first = run("first.h5");
  auto second = run("second.h5");
  if (HasFailure()) return;
  auto base = results::ResultsFile::load(first);
  ASSERT_EQ(base.runs().size(), 1u);
  EXPECT_EQ(base.runs()[0].identity().scenario_name, "roundtrip");
  EXPECT_EQ(base.runs()[0].n_layers(), 2);

  auto report = results::compare_files(results::ResultsFile::load(second), base, results::default_rules(), false);
  EXPECT_EQ(report.exit_code(), 0) << results::format_text(report);
  EXPECT_GT(report.runs[0].cells_compared, 0u);

  auto damaged = dir_ / "damaged.h5";
  fs::copy_file(first, damaged);
  std::string label = base.runs()[0].path_labels().front();
  set_cell(damaged, "/paths/" + label + "/propagated/nan_count", 1, tap_index("down"), 7);
  auto bad = results::compare_files(results::ResultsFile::load(damaged), base, results::default_rules(), false);
  EXPECT_EQ(bad.exit_code(), 1);
  ASSERT_FALSE(bad.runs[0].findings.empty());
  EXPECT_EQ(bad.runs[0].findings[0].kind, "nonfinite");
  EXPECT_EQ(bad.runs[0].findings[0].where, label + " propagated L1 down");
}

TEST_F(RunRoundTrip, ReportRendersFromARealRun) {
  auto file = run("run.h5");
  if (HasFailure()) return;
  auto r = run_fusecheck("report '" + file.string() + "' --out '" + (dir_ / "report").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::ifstream f(dir_ / "report" / "roundtrip.html");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string html = ss.str();
  EXPECT_GT(html.size(), 10000u);
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_NE(html.find("Perturbation of relative size"), std::string::npos) << "perturb curve missing";
}

}  // namespace
}  // namespace fusecheck::test
