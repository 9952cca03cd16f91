// Invariance mode through `fusecheck run` on a tiny synthetic Qwen3 (CPU): the scenario
// keys and their errors, the /invariance group written and read back, the validator's
// requirement, the summary's certificate, and `compare` judging a lost invariance a
// regression and a gained one a note.
#include <filesystem>
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>
#include <hdf5.h>

#include "harness/core/error.h"
#include "harness/results/compare.h"
#include "harness/results/h5_write.h"
#include "harness/results/invariance_results.h"
#include "harness/results/validate.h"
#include "harness/checkpoint/profiles.h"
#include "harness/run/run_command.h"
#include "harness/run/run_limits.h"
#include "harness/run/scenario.h"
#include "tests/common/test_support.h"

namespace fusecheck::run {
namespace {

const char* kTiny = R"(
name: tiny-invariance
model: {synth: {profile: qwen3-tiny, layers: 2, seed: 3}}
tokens: {seed: 11}
phase: {prefill: 6}
paths: [ref32-cpu, fused-cuda]
modes: [invariance]
invariance: {batch_sizes: [2, 3], kv_chunks: [2, 4], decode_steps: 2}
timing: false
force_fused: true
)";

std::filesystem::path run_tiny(const std::filesystem::path& dir, std::string* summary = nullptr) {
  const auto file = dir / "scenario.yaml";
  std::ofstream(file) << kTiny;
  RunOptions o;
  o.scenario = file;
  o.device = "cpu";
  o.results_dir = dir / "runs";
  o.out = dir / "tiny.h5";
  o.progress = false;
  o.argv = {"fusecheck", "run", file.string()};
  const auto outcome = run_scenario(o);
  if (summary) *summary = outcome.summary;
  return *o.out;
}

// One run shared by the tests below (a CPU run of two layers takes a few seconds).
const std::filesystem::path& tiny_file() {
  static const std::filesystem::path file = run_tiny(test::scratch_dir());
  return file;
}

const results::InvarianceCell* find(const std::vector<results::InvarianceCell>& cells, const std::string& path,
                                    const std::string& check) {
  for (const auto& c : cells) {
    if (c.path == path && c.check == check) return &c;
  }
  return nullptr;
}

TEST(InvarianceScenario, ModeAloneBringsPropagatedAndDefaultChecks) {
  const Scenario sc = parse_scenario(kTiny, "s.yaml");
  ASSERT_TRUE(sc.modes.invariance.has_value());
  EXPECT_TRUE(sc.modes.propagated);
  EXPECT_FALSE(sc.modes.isolated);
  EXPECT_EQ(sc.modes.invariance->checks.size(), std::size(kInvarianceChecks));
  EXPECT_EQ(sc.modes.invariance->batch_sizes, (std::vector<int>{2, 3}));
  EXPECT_EQ(sc.modes.invariance->kv_chunks, (std::vector<int>{2, 4}));
  EXPECT_EQ(sc.modes.invariance->decode_steps, 2);
}

struct BadBlock {
  const char* name;
  const char* block;
  const char* expected;  // in the error
};

class InvarianceScenarioError : public ::testing::TestWithParam<BadBlock> {};

void PrintTo(const BadBlock& b, std::ostream* os) { *os << b.name; }

TEST_P(InvarianceScenarioError, NamesTheKeyAndTheProblem) {
  const std::string text = std::string("model: {path: m.gguf}\nphase: {prefill: 6}\npaths: [ref32-cpu]\n") +
                           "modes: [invariance]\n" + GetParam().block + "\n";
  try {
    parse_scenario(text, "s.yaml");
    FAIL() << "accepted: " << GetParam().block;
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("s.yaml:5"), std::string::npos) << what;
    EXPECT_NE(what.find(GetParam().expected), std::string::npos) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Blocks, InvarianceScenarioError,
    ::testing::Values(BadBlock{"unknown_check", "invariance: {checks: [batch, colour]}", "unknown check 'colour'"},
                      BadBlock{"check_twice", "invariance: {checks: [batch, batch]}", "listed twice"},
                      BadBlock{"batch_of_one", "invariance: {batch_sizes: [1]}", "invariance.batch_sizes[0]"},
                      BadBlock{"batch_too_large", "invariance: {batch_sizes: [2, 100000]}", "at most 256"},
                      BadBlock{"one_run", "invariance: {runs: 1}", "invariance.runs"},
                      BadBlock{"chunk_past_needle", "invariance: {kv_chunks: [6]}", "leaves nothing"},
                      BadBlock{"decode_all", "invariance: {decode_steps: 6}", "below the phase's 6 tokens"},
                      BadBlock{"unknown_key", "invariance: {sizes: [2]}", "unknown key 'sizes'"},
                      BadBlock{"not_a_map", "invariance: [batch]", "expected a mapping"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(InvarianceScenario, LargestBatchIsCheckedAgainstMemoryBeforeTheRun) {
  const std::string text =
      "model: {path: m.gguf}\nphase: {prefill: 64}\npaths: [ref32-cpu]\nmodes: [invariance]\n"
      "invariance:\n  batch_sizes: [2, 256]\n";
  const Scenario sc = parse_scenario(text, "s.yaml");
  const ModelSpec spec = profile_shape(synth_profile("llama-tiny"), 2);
  // Room for the scenario's own run (batch 1) with margin, not for 256 sequences.
  MemoryLimits limits;
  limits.host_bytes = 4 * estimate_run_memory(sc, spec, "cpu", false).host_bytes;
  limits.host_source = "test";
  try {
    check_run_size(sc, spec, "llama-tiny", "cpu", false, limits);
    FAIL() << "a batch of 256 fitted in " << limits.host_bytes << " bytes";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("s.yaml:6: invariance.batch_sizes"), std::string::npos) << what;
    // 1 alone + 2 x 2 (batch 2 at first, last) + 3 x 256 (first, middle, last) sequences.
    EXPECT_NE(what.find("batch check's 773 sequences"), std::string::npos) << what;
  }
}

TEST(InvarianceScenario, BlockWithoutTheModeIsRefused) {
  const std::string text =
      "model: {path: m.gguf}\nphase: {prefill: 6}\npaths: [ref32-cpu]\nmodes: [propagated]\ninvariance: {runs: 2}\n";
  EXPECT_THROW(parse_scenario(text, "s.yaml"), InputError);
}

TEST(InvarianceRun, ResultsFileHoldsEveryPathAndCheck) {
  const auto file = results::ResultsFile::load(tiny_file());
  ASSERT_EQ(file.runs().size(), 1u);
  const auto& run = file.runs().front();
  EXPECT_NO_THROW(results::validate_run(run));
  EXPECT_EQ(run.attr("modes"), "propagated,invariance");
  const auto cells = results::read_invariance(run);
  EXPECT_EQ(cells.size(), 2 * std::size(kInvarianceChecks));
  // Whatever Eigen's product blocking does with the row count (docs/invariance.md), the
  // same run twice and taps on or off give the same bits.
  for (const char* check : {"run_to_run", "taps_on_off"}) {
    const auto* c = find(cells, "ref32-cpu", check);
    ASSERT_NE(c, nullptr) << check;
    EXPECT_EQ(c->status, "invariant") << check << ": " << c->reason;
  }
  for (const auto& c : cells) {
    if (c.status != "differs") continue;
    EXPECT_GE(c.first_layer, 0) << c.path << " " << c.check;
    EXPECT_LE(c.first_layer, 2) << c.path << " " << c.check;  // 2 layers; 2 = the head
    EXPECT_FALSE(c.first_tap.empty()) << c.path << " " << c.check;
    EXPECT_GT(c.max_ulp, 0) << c.path << " " << c.check;
    ASSERT_TRUE(c.first_scaled_ulp.has_value()) << c.path << " " << c.check;
    EXPECT_GT(*c.first_scaled_ulp, 0) << c.path << " " << c.check;
    EXPECT_FALSE(c.first_scaled_ulp_dtype.empty()) << c.path << " " << c.check;
    EXPECT_TRUE(c.sign_crossings.has_value()) << c.path << " " << c.check;
  }
  const auto* graph = find(cells, "emulated-cpu:fused-v1", "cuda_graph");
  ASSERT_NE(graph, nullptr);
  EXPECT_EQ(graph->status, "n/a");
  EXPECT_NE(graph->reason.find("CPU path"), std::string::npos);
}

TEST(InvarianceRun, SummaryPrintsTheCertificate) {
  std::string summary;
  run_tiny(test::scratch_dir(), &summary);
  EXPECT_NE(summary.find("Invariance (bitwise"), std::string::npos) << summary;
  EXPECT_NE(summary.find("prefill_vs_decode"), std::string::npos);
  EXPECT_NE(summary.find("ref32-cpu"), std::string::npos);
  // A cell that differs shows the scaled distance; its detail lines all three figures.
  if (summary.find(" NO ") != std::string::npos) {
    EXPECT_NE(summary.find("ulp@scale"), std::string::npos) << summary;
    EXPECT_NE(summary.find("sign crossings"), std::string::npos) << summary;
    EXPECT_NE(summary.find("scaled ulps:"), std::string::npos) << summary;
  }
}

TEST(InvarianceRun, ReportShowsThePathsByChecksTable) {
  const auto out = test::scratch_dir() / "report";
  const auto r = test::run_fusecheck("report " + test::quoted(tiny_file()) + " --out " + test::quoted(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(out / "tiny-invariance.html");
  const std::string html((std::istreambuf_iterator<char>(in)), {});
  const auto at = html.find("<h2>Invariance certificate</h2>");
  ASSERT_NE(at, std::string::npos);
  for (const char* column : {"<th>batch</th>", "<th>run_to_run</th>", "<th>taps_on_off</th>"}) {
    EXPECT_NE(html.find(column, at), std::string::npos) << column;
  }
  EXPECT_NE(html.find("<td>ref32-cpu</td>", at), std::string::npos);
  EXPECT_NE(html.find("CPU path: no CUDA graphs", at), std::string::npos);
  // A cell that differs shows the scaled distance beside the bit distance.
  if (html.find("<span class='bad'>NO</span>", at) != std::string::npos) {
    EXPECT_NE(html.find("ulp@scale", at), std::string::npos);
    EXPECT_NE(html.find("sign crossings", at), std::string::npos);
  }
}

TEST(InvarianceRun, ValidatorRefusesAFileWithoutTheCertificate) {
  const auto dir = test::scratch_dir();
  const auto copy = dir / "no-invariance.h5";
  std::filesystem::copy_file(tiny_file(), copy);
  // Rename the status of one cell's group away: the simplest damage the writer allows is
  // an unknown status.
  {
    results::H5Writer w(copy, true);
    w.attr("/invariance/ref32-cpu/batch", "status", std::string("maybe"));
  }
  const auto file = results::ResultsFile::load(copy);
  EXPECT_THROW(results::validate_run(file.runs().front()), InputError);
}

std::vector<results::Finding> invariance_findings_between(const std::filesystem::path& fresh_file,
                                                          const std::filesystem::path& base);

TEST(InvarianceRun, FileWithoutTheScaledDistanceStillReads) {
  // A file written before the scaled distance: its cells hold the bit distance only.
  const auto copy = test::scratch_dir() / "before-scaled.h5";
  std::filesystem::copy_file(tiny_file(), copy);
  const auto cells_now = results::read_invariance(results::ResultsFile::load(tiny_file()).runs().front());
  {
    const hid_t f = H5Fopen(copy.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    for (const auto& c : cells_now) {
      const std::string g = "/invariance/" + c.path + "/" + c.check;
      for (const char* a : {"first_scaled_ulp", "first_scaled_ulp_dtype", "first_scaled_ulp_histogram",
                            "max_scaled_ulp", "sign_crossings", "max_same_sign_ulp"}) {
        ASSERT_GE(H5Adelete_by_name(f, g.c_str(), a, H5P_DEFAULT), 0) << g << " " << a;
      }
    }
    H5Fclose(f);
  }
  const auto old = results::ResultsFile::load(copy);
  EXPECT_NO_THROW(results::validate_run(old.runs().front()));
  const auto cells = results::read_invariance(old.runs().front());
  ASSERT_EQ(cells.size(), cells_now.size());
  for (const auto& c : cells) {
    EXPECT_FALSE(c.first_scaled_ulp.has_value());
    EXPECT_FALSE(c.sign_crossings.has_value());
  }
  EXPECT_TRUE(invariance_findings_between(tiny_file(), copy).empty());
}

TEST(InvarianceRun, ValidatorRefusesANegativeScaledDistanceOrCount) {
  for (const char* attr : {"first_scaled_ulp", "sign_crossings"}) {
    const auto copy = test::scratch_dir() / (std::string("bad-") + attr + ".h5");
    std::filesystem::copy_file(tiny_file(), copy);
    {
      results::H5Writer w(copy, true);
      w.attr("/invariance/ref32-cpu/batch", attr, -1.0);
    }
    const auto file = results::ResultsFile::load(copy);
    try {
      results::validate_run(file.runs().front());
      ADD_FAILURE() << attr << " = -1 was accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(attr), std::string::npos) << e.what();
    }
  }
}

// A baseline whose cell says `status`, everything else equal to the fresh run.
std::filesystem::path baseline_with(const std::string& path, const std::string& check, const std::string& status) {
  const auto copy = test::scratch_dir() / "baseline.h5";
  std::filesystem::copy_file(tiny_file(), copy);
  results::H5Writer w(copy, true);
  const std::string g = "/invariance/" + path + "/" + check;
  w.attr(g, "status", status);
  if (status == "differs") {
    w.attr(g, "first_layer", 1LL);
    w.attr(g, "first_tap", std::string("q"));
  }
  return copy;
}

std::vector<results::Finding> invariance_findings_between(const std::filesystem::path& fresh_file,
                                                          const std::filesystem::path& base) {
  const auto fresh = results::ResultsFile::load(fresh_file);
  const auto old = results::ResultsFile::load(base);
  const auto report = results::compare_files(fresh, old, results::CompareRules{}, false);
  std::vector<results::Finding> out;
  for (const auto& f : report.runs.front().findings) {
    if (f.kind == "invariance") out.push_back(f);
  }
  return out;
}

std::vector<results::Finding> invariance_findings(const std::filesystem::path& base) {
  return invariance_findings_between(tiny_file(), base);
}

TEST(InvarianceCompare, LosingAnInvarianceIsARegression) {
  const auto cells = results::read_invariance(results::ResultsFile::load(tiny_file()).runs().front());
  const auto* run_to_run = find(cells, "ref32-cpu", "run_to_run");
  ASSERT_NE(run_to_run, nullptr);
  ASSERT_EQ(run_to_run->status, "invariant");
  // The run certified ref32-cpu's run_to_run; a copy that lost it is the fresh side.
  const auto base = tiny_file();
  const auto fresh_copy = baseline_with("ref32-cpu", "run_to_run", "differs");
  const auto report = results::compare_files(results::ResultsFile::load(fresh_copy), results::ResultsFile::load(base),
                                             results::CompareRules{}, false);
  int regressions = 0;
  for (const auto& f : report.runs.front().findings) {
    if (f.kind != "invariance") continue;
    EXPECT_EQ(f.severity, results::Severity::regression);
    EXPECT_EQ(f.where, "ref32-cpu invariance run_to_run");
    ++regressions;
  }
  EXPECT_EQ(regressions, 1);
  EXPECT_EQ(report.exit_code(), 1);
}

TEST(InvarianceCompare, GainingAnInvarianceIsANote) {
  const auto findings = invariance_findings(baseline_with("ref32-cpu", "run_to_run", "differs"));
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].severity, results::Severity::note);
  EXPECT_NE(findings[0].detail.find("gained"), std::string::npos);
}

TEST(InvarianceCompare, OtherBitsFromTheSameScenarioAreANote) {
  const auto copy = test::scratch_dir() / "other-bits.h5";
  std::filesystem::copy_file(tiny_file(), copy);
  const auto run = results::ResultsFile::load(tiny_file());
  const auto print = run.runs().front().root().group("invariance/ref32-cpu")->attr_string("fingerprint");
  ASSERT_TRUE(print.has_value());
  ASSERT_EQ(print->size(), 16u);
  {
    results::H5Writer w(copy, true);
    w.attr("/invariance/ref32-cpu", "fingerprint", std::string("0123456789abcdef"));
  }
  const auto findings = invariance_findings(copy);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].severity, results::Severity::note);
  EXPECT_EQ(findings[0].where, "ref32-cpu invariance fingerprint");
}

TEST(InvarianceCompare, SameCertificateGivesNoFinding) {
  EXPECT_TRUE(invariance_findings(tiny_file()).empty());
}

}  // namespace
}  // namespace fusecheck::run
