// A CPU-only `fusecheck run` of a tiny synthetic Qwen3: the HDF5 file it writes is read
// back and checked (ref32 against ref64 at FP32 accuracy, emulated bf16 errors in their
// band, amplification defined, every layer and tap present, provenance set); and the
// command's exit codes for bad input.
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "harness/core/error.h"
#include "harness/results/h5_tree.h"
#include "harness/run/driver.h"
#include "harness/run/run_command.h"
#include "tests/common/test_support.h"

namespace fusecheck::run {
namespace {

const char* kTiny = R"(
name: tiny
model: {synth: {profile: qwen3-tiny, layers: 2, seed: 3}}
tokens: {seed: 11}
batch: 2
phase: {prefill: 6}
paths: [standard-cuda, fused-cuda]
reference: {ref64: true}
modes: [isolated, propagated, {perturb: {layer: 0, tap: k, size: 0.001}}]
end_to_end: {greedy_steps: 3}
force_fused: true
)";

std::filesystem::path write_scenario(const std::filesystem::path& dir, const std::string& text) {
  const auto file = dir / "scenario.yaml";
  std::ofstream(file) << text;
  return file;
}

struct TinyRun {
  RunOutcome outcome;
  results::H5Node root;
};

TinyRun run_tiny(const std::string& text) {
  const auto dir = test::scratch_dir();
  RunOptions o;
  o.scenario = write_scenario(dir, text);
  o.device = "cpu";
  o.results_dir = dir / "runs";
  o.out = dir / "tiny.h5";
  o.progress = false;
  o.argv = {"fusecheck", "run", o.scenario.string()};
  TinyRun r{run_scenario(o), {}};
  r.root = results::read_h5_tree(*o.out);
  return r;
}

// Every present cell of a [layers x 17] table, checked by `pred`.
template <class Pred>
void for_each_cell(const results::H5Node& root, const std::string& group, const std::string& metric, Pred pred) {
  const auto* values = root.dataset(group + "/" + metric);
  const auto* present = root.dataset(group + "/present");
  ASSERT_TRUE(values && present) << group;
  for (std::size_t i = 0; i < values->numbers.size(); ++i) {
    if (present->numbers[i] == 1) pred(i / 17, i % 17, values->numbers[i]);
  }
}

TEST(EndToEnd, CpuRunWritesAResultsFileWithEveryFigure) {
  const auto r = run_tiny(kTiny);
  const auto& root = r.root;
  EXPECT_EQ(root.attr_string("format"), "fusecheck-run");
  EXPECT_EQ(root.attr_number("n_layers"), 2);

  // Provenance.
  for (const char* a : {"git_sha", "date_utc", "argv", "scenario_text", "device", "device_name",
                        "library_versions", "cpu_model", "fusecheck_version", "model_path"}) {
    ASSERT_TRUE(root.attr_string(a)) << a;
    EXPECT_FALSE(root.attr_string(a)->empty()) << a;
  }
  EXPECT_EQ(root.attr_string("device"), "cpu");
  EXPECT_EQ(root.attr_number("seed_tokens"), 11);
  EXPECT_NE(root.attr_string("scenario_text")->find("qwen3-tiny"), std::string::npos);
  EXPECT_NE(root.attr_string("substitutions")->find("fused-cuda -> emulated-cpu:fused-v1"), std::string::npos);

  // Every layer and every tap present for the reference and both emulated paths
  // (qwen3 has q_norm/k_norm, so all 17 layer taps exist).
  for (const std::string g : {"reference/noise_floor/propagated", "paths/emulated-cpu:hf-bf16/isolated",
                              "paths/emulated-cpu:fused-v1/propagated"}) {
    const auto* present = root.dataset(g + "/present");
    ASSERT_TRUE(present) << g;
    EXPECT_EQ(present->dims, (std::vector<std::uint64_t>{2, 17}));
    for (double p : present->numbers) EXPECT_EQ(p, 1) << g;
  }

  // ref32 against ref64: FP32 accuracy (float rounding ~6e-8 per op; a layer's chain of
  // GEMMs, norms and softmax stays below 1e-5 relative).
  for_each_cell(root, "reference/noise_floor/propagated", "rel_l2", [](std::size_t l, std::size_t c, double v) {
    EXPECT_LT(v, 1e-5) << l << " " << c;
  });
  EXPECT_LT(root.dataset("reference/noise_floor/propagated/head/rel_l2")->numbers[1], 1e-5);

  // Emulated bf16 against ref32: a bf16 rounding is 2^-9 relative at most; a tap
  // carries one to a few of them (more after attention on outlier k_norm weights), so
  // relative L2 sits between 1e-4 and 5e-2.
  for (const std::string p : {"emulated-cpu:hf-bf16", "emulated-cpu:fused-v1"}) {
    for_each_cell(root, "paths/" + p + "/isolated", "rel_l2", [&](std::size_t l, std::size_t c, double v) {
      EXPECT_GT(v, 1e-4) << p << " " << l << " " << c;
      EXPECT_LT(v, 5e-2) << p << " " << l << " " << c;
    });
    // And far above ref32's own floor.
    for_each_cell(root, "paths/" + p + "/isolated", "noise_floor_ratio", [&](std::size_t l, std::size_t c, double v) {
      EXPECT_GT(v, 10) << p << " " << l << " " << c;
    });
    const auto* amp = root.dataset("paths/" + p + "/amplification/amplification");
    ASSERT_TRUE(amp);
    ASSERT_EQ(amp->numbers.size(), 2u);
    for (double a : amp->numbers) EXPECT_TRUE(std::isfinite(a) && a > 0) << p;
    const auto* e2e = root.group("end_to_end/" + p);
    ASSERT_TRUE(e2e);
    EXPECT_TRUE(e2e->attr_number("kl_mean"));
    EXPECT_TRUE(e2e->attr_number("top1_agreement"));
    EXPECT_TRUE(e2e->attr_number("greedy_first_mismatch"));
  }
  EXPECT_TRUE(root.dataset("perturb/sensitivity"));
  EXPECT_TRUE(root.dataset("static/braidinfer/layer_figure"));
  EXPECT_TRUE(root.dataset("static/fusecheck/layer_figure"));
  ASSERT_TRUE(root.group("crosscheck/fusecheck"));
  EXPECT_TRUE(root.group("crosscheck/fusecheck")->attr_string("verdict"));
  EXPECT_TRUE(root.dataset("timing/ref32-cpu/layer_ms"));
  EXPECT_EQ(r.outcome.exit_code, root.attr_number("gate_failures") == 0 ? 0 : 1);
  EXPECT_NE(r.outcome.summary.find("VERDICT"), std::string::npos);
}

TEST(EndToEnd, WithoutForceFusedAnIncompatibleModelRunsStandardAndRecordsIt) {
  std::string text = kTiny;
  text.replace(text.find("force_fused: true"), 17, "force_fused: false");
  const auto r = run_tiny(text);
  const bool incompatible = r.root.group("static/fusecheck")->attr_string("status") == "INCOMPATIBLE";
  EXPECT_EQ(r.root.attr_number("fallback_applied"), incompatible ? 1 : 0);
  EXPECT_EQ(r.root.group("paths")->groups.count("emulated-cpu:fused-v1"), incompatible ? 0u : 1u);
  EXPECT_FALSE(r.root.attr_string("fallback_reason")->empty());
}

// --check-json: the run writes what `fusecheck check MODEL --deep --format json` prints
// for its model (scripts/sweep keeps it beside each point instead of a second process),
// equal but for the read timings.
TEST(EndToEnd, CheckJsonIsWhatCheckDeepPrints) {
  const auto dir = test::scratch_dir();
  const auto scenario = write_scenario(dir, kTiny);
  const auto out = dir / "cj.h5", check_json = dir / "cj.check.json";
  const auto r = test::run_fusecheck("run " + test::quoted(scenario) + " --device cpu --no-progress --out " +
                                     test::quoted(out) + " --check-json " + test::quoted(check_json));
  ASSERT_LE(r.exit_code, 1) << r.err;
  ASSERT_TRUE(std::filesystem::exists(check_json));
  EXPECT_FALSE(std::filesystem::exists(check_json.string() + ".tmp"));
  const auto model = results::read_h5_tree(out).attr_string("model_path");
  ASSERT_TRUE(model.has_value());
  const auto c = test::run_fusecheck("check " + test::quoted(*model) + " --deep --format json");
  ASSERT_LE(c.exit_code, 2) << c.err;
  auto without_timings = [](nlohmann::json j) {
    j.erase("read");
    return j;
  };
  std::ifstream in(check_json);
  const nlohmann::json written = nlohmann::json::parse(in), printed = nlohmann::json::parse(c.out);
  EXPECT_TRUE(written.at("read").at("deep").get<bool>());
  EXPECT_EQ(without_timings(written), without_timings(printed));
  // An empty name is refused.
  const auto bad = test::run_fusecheck("run " + test::quoted(scenario) + " --device cpu --no-progress --out " +
                                       test::quoted(dir / "cj2.h5") + " --check-json ''");
  EXPECT_EQ(bad.exit_code, 2) << bad.out << bad.err;
  EXPECT_NE(bad.err.find("--check-json"), std::string::npos) << bad.err;
}

TEST(EndToEnd, BadScenarioExitsTwoWithOneLineNamingTheFile) {
  // run_fusecheck() empties the test's scratch folder, so the scenario lives beside it.
  const auto dir = test::scratch_dir().parent_path() / "EndToEnd.BadScenario-input";
  std::filesystem::create_directories(dir);
  const auto file = write_scenario(dir, "model: {synth: {profile: qwen3-tiny}}\nphase: {prefill: 4}\npaths: [nope]\n");
  const auto r = test::run_fusecheck("run --device cpu " + file.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(file.string()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("unknown path 'nope'"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(EndToEnd, UnknownSynthProfileIsAnInputError) {
  const auto dir = test::scratch_dir();
  RunOptions o;
  o.scenario = write_scenario(dir, "model: {synth: {profile: gpt-9}}\nphase: {prefill: 4}\npaths: [ref32-cpu]\n");
  o.device = "cpu";
  o.results_dir = dir;
  EXPECT_THROW(run_scenario(o), InputError);
}

}  // namespace
}  // namespace fusecheck::run
