// `fusecheck check` end to end: the seed's exit codes (0 / 1 / 2, 3 for any error with
// one clear line), the report formats, --export and -v.
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/check/check_fixtures.h"
#include "tests/common/test_support.h"

namespace fusecheck::test {
namespace {

std::string test_name() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string(info->test_suite_name()) + "." + info->name();
}

std::filesystem::path write_fixture(const TinyModel& m) {
  const auto dir = fixture_dir(test_name());
  write_tiny_checkpoint(dir, m);
  return dir;
}

TinyModel benign() {
  TinyModel m;
  m.layers.resize(2);
  return m;
}

// k ratio 15.01 with every max under 10: the seed's WARNING.
TinyModel seed_warning() {
  TinyModel m = benign();
  m.layers[0].k_norm = peaked(8, 0.25f, 3.7525f);
  return m;
}

// Every layer's k_norm has one channel at 100, 400x the rest: R = E = M = 0 for the seed,
// a norm ratio far past its fail point for ours. INCOMPATIBLE for both scorers.
TinyModel incompatible() {
  TinyModel m;
  m.layers.resize(2);
  for (auto& l : m.layers) l.k_norm = peaked(8, 0.25f, 100.0f);
  return m;
}

// The hand-written thresholds (results/thresholds/hand-written.json): the statuses these
// tests expect of the fusecheck scorer are reasoned from them, not from whatever
// calibration the built-in default file holds.
std::string hand() {
  return " --thresholds " + (source_dir() / "results" / "thresholds" / "hand-written.json").string();
}

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n + (!s.empty() && s.back() != '\n');
}

TEST(CheckCli, CompatibleExitsZero) {
  const auto dir = write_fixture(benign());
  const auto r = run_fusecheck("check " + dir.string() + hand());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Status: COMPATIBLE"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Score: 1.00"), std::string::npos) << r.out;
}

TEST(CheckCli, WarningExitsOne) {
  const auto dir = write_fixture(seed_warning());
  const auto r = run_fusecheck("check " + dir.string() + " --scorer braidinfer");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("Status: WARNING"), std::string::npos);
}

TEST(CheckCli, IncompatibleExitsTwoForBothScorers) {
  const auto dir = write_fixture(incompatible());
  const auto seed = run_fusecheck("check " + dir.string() + " --scorer braidinfer");
  EXPECT_EQ(seed.exit_code, 2) << seed.out << seed.err;
  const auto ours = run_fusecheck("check " + dir.string() + hand());
  EXPECT_EQ(ours.exit_code, 2) << ours.out << ours.err;
  EXPECT_NE(ours.out.find("Status: INCOMPATIBLE"), std::string::npos);
}

TEST(CheckCli, ThresholdFlagFollowsTheSeed) {
  // k ratio 15.01: WARNING with the default safe ratio 20; with --threshold 30 (warning
  // ratio 22.5) the ratio term is 1 and the model is COMPATIBLE.
  const auto dir = write_fixture(seed_warning());
  const auto r = run_fusecheck("check " + dir.string() + " --scorer braidinfer --threshold 30");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("--threshold 30"), std::string::npos) << r.out;
}

TEST(CheckCli, MissingModelExitsThreeWithOneLine) {
  const auto r = run_fusecheck("check " + (scratch_dir() / "no-such-model").string());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("no-such-model"), std::string::npos) << r.err;
}

TEST(CheckCli, MalformedConfigExitsThreeNamingTheFile) {
  const auto dir = write_fixture(benign());
  std::ofstream(dir / "config.json") << "{ \"architectures\": [";
  const auto r = run_fusecheck("check " + dir.string());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("config.json"), std::string::npos) << r.err;
}

TEST(CheckCli, NanInANormWeightExitsThreeNamingTheTensor) {
  TinyModel m = benign();
  m.layers[1].k_norm = peaked(8, 1.0f, std::nanf(""));
  const auto dir = write_fixture(m);
  const auto r = run_fusecheck("check " + dir.string());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("model.layers.1.self_attn.k_norm.weight"), std::string::npos) << r.err;
}

TEST(CheckCli, BadFlagValuesExitThree) {
  const auto dir = write_fixture(benign());
  const std::string absent = (fixture_dir(test_name() + ".absent") / "absent.json").string();
  for (const std::string& flags : std::vector<std::string>{"--scorer seed", "--format yaml", "--threshold -2",
                                                           "--thresholds " + absent}) {
    const auto r = run_fusecheck("check " + dir.string() + " " + flags);
    EXPECT_EQ(r.exit_code, 3) << flags;
    EXPECT_EQ(count_lines(r.err), 1) << flags << ": " << r.err;
  }
}

TEST(CheckCli, ThresholdsFileChangesTheVerdictAndIsReported) {
  const auto dir = write_fixture(seed_warning());  // k ratio 15.01
  const auto file = fixture_dir(test_name() + ".thresholds") / "strict.json";
  std::ofstream(file) << R"({"schema": "fusecheck-thresholds/1", "source": "test: strict ratios",
    "created": "2026-11-26", "sweep": "test-sweep-1",
    "status": {"warning_below": 0.8, "incompatible_below": 0.5},
    "fusecheck": {"norm_ratio": {"warn": 4, "fail": 8}, "hidden_norm_gain": {"warn": 8, "fail": 32},
                  "qk_amplification": {"warn": 8, "fail": 32}, "model_amplification": {"warn": 4, "fail": 16}}})";
  const auto r = run_fusecheck("check " + dir.string() + " --format json --thresholds " + file.string());
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["thresholds"]["source"], "test: strict ratios");
  EXPECT_EQ(j["thresholds"]["sweep"], "test-sweep-1");
  EXPECT_EQ(j["thresholds"]["file"], file.string());
}

TEST(CheckCli, JsonHoldsEveryFigureScorerThresholdsAndIdentity) {
  const auto dir = write_fixture(benign());
  const auto r = run_fusecheck("check " + dir.string() + " --format json" + hand());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["scorer"], "fusecheck");
  EXPECT_EQ(j["status"], "COMPATIBLE");
  EXPECT_EQ(j["model"]["path"], dir.string());
  EXPECT_EQ(j["model"]["architecture"], "qwen3");
  EXPECT_EQ(j["model"]["norm_sha256"].get<std::string>().size(), 64u);
  EXPECT_FALSE(j["thresholds"]["source"].get<std::string>().empty());
  ASSERT_EQ(j["layers"].size(), 2u);
  ASSERT_EQ(j["layers"][0]["norms"].size(), 4u);
  for (const char* key : {"role", "tensor", "max", "median", "ratio", "mean", "rms", "peak_gain", "extreme"}) {
    EXPECT_TRUE(j["layers"][0]["norms"][0].contains(key)) << key;
  }
  EXPECT_TRUE(j["layers"][0].contains("amplification"));
  EXPECT_FALSE(j["final_norm"].is_null());
  EXPECT_GT(j["components"].size(), 0u);
}

TEST(CheckCli, VerboseExportWritesTheReportWithLayerDetail) {
  const auto dir = write_fixture(incompatible());
  const auto file = fixture_dir(test_name() + ".export") / "report.txt";
  const auto r = run_fusecheck("check " + dir.string() + " --scorer braidinfer -v --export " + file.string());
  EXPECT_EQ(r.exit_code, 2);
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), r.out);
  EXPECT_NE(ss.str().find("Detailed Layer Analysis:"), std::string::npos);
  EXPECT_NE(ss.str().find("K norm: max=100.000, median=0.250, ratio=400.0"), std::string::npos) << ss.str();
  EXPECT_NE(ss.str().find("EXTREME WEIGHTS DETECTED"), std::string::npos);
}

TEST(CheckCli, VerboseFusecheckMarksExtremeTensors) {
  const auto dir = write_fixture(incompatible());
  const auto r = run_fusecheck("check " + dir.string() + " -v" + hand());
  EXPECT_NE(r.out.find("k_norm     max=100.000, median=0.250, ratio=400.0  EXTREME"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("attn_norm"), std::string::npos);
  EXPECT_NE(r.out.find("Final norm:"), std::string::npos);
}

TEST(CheckCli, MarkdownReport) {
  const auto dir = write_fixture(benign());
  const auto r = run_fusecheck("check " + dir.string() + " --format markdown -v" + hand());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("| Status | **COMPATIBLE** |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("## Per-layer analysis"), std::string::npos);
}

TEST(CheckCli, WithoutDeepTheReportSaysWhatItDidNotRead) {
  const auto dir = write_fixture(benign());
  const auto r = run_fusecheck("check " + dir.string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Deep read: off"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Norm tensors read: 9"), std::string::npos) << r.out;
}

// A synthetic qwen3-tiny with a planted super weight (fusecheck synth --massive-activation:
// layer 1 down_proj, value 128): invisible to the norms, found under --deep.
TEST(CheckCli, DeepFindsAPlantedSuperWeightAndReportsItsReadTime) {
  const auto dir = fixture_dir(test_name());
  std::filesystem::remove_all(dir);
  const auto synth = run_fusecheck("synth qwen3-tiny " + dir.string() + " --layers 2 --seed 3 --massive-activation");
  ASSERT_EQ(synth.exit_code, 0) << synth.err;
  const auto shallow = run_fusecheck("check " + dir.string() + " --format json");
  ASSERT_LT(shallow.exit_code, 3) << shallow.err;
  const auto shallow_json = nlohmann::json::parse(shallow.out);  // kept alive: the loop walks into it
  for (const auto& c : shallow_json["components"]) EXPECT_NE(c["name"], "mlp.super_weight");

  const auto deep = run_fusecheck("check " + dir.string() + " --deep --format json" + hand());
  EXPECT_EQ(deep.exit_code, 2) << deep.out << deep.err;
  const auto j = nlohmann::json::parse(deep.out);
  const auto& layers = j["read"]["deep_read"]["layers"];
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[1]["value"], 128.0);
  EXPECT_GT(layers[1]["figure"].get<double>(), 100 * layers[0]["figure"].get<double>());
  EXPECT_GT(j["read"]["deep_read"]["bytes_read"].get<double>(), 0);

  const auto text = run_fusecheck("check " + dir.string() + " --deep");
  EXPECT_NE(text.out.find("Deep read (--deep): 2 down projections"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("s per GB"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("layer 1 model.layers.1.mlp.down_proj.weight"), std::string::npos) << text.out;
}

TEST(CheckCli, DeepWithTheSeedsScorerIsOneClearError) {
  const auto dir = write_fixture(benign());
  const auto r = run_fusecheck("check " + dir.string() + " --scorer braidinfer --deep");
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("--deep"), std::string::npos) << r.err;
}

TEST(CheckCli, TheReportSaysWhatTheSweepSawOfModelsScoringLikeThis) {
  const auto dir = write_fixture(incompatible());
  const auto file = fixture_dir(test_name() + ".thresholds") / "calibrated.json";
  std::ofstream(file) << R"({"schema": "fusecheck-thresholds/1", "source": "test: a calibration",
    "created": "2026-12-02", "sweep": "test-sweep-2",
    "status": {"warning_below": 0.8, "incompatible_below": 0.5},
    "fusecheck": {"norm_ratio": {"warn": 16, "fail": 64}, "hidden_norm_gain": {"warn": 8, "fail": 32},
                  "qk_amplification": {"warn": 8, "fail": 32}, "model_amplification": {"warn": 4, "fail": 16}},
    "evidence": {"outcome_rule": "KL mean > 0.1 nats", "COMPATIBLE": {"runs": 90, "divergent": 3},
                 "WARNING": {"runs": 12, "divergent": 5}, "INCOMPATIBLE": {"runs": 60, "divergent": 57}}})";
  const auto r = run_fusecheck("check " + dir.string() + " --thresholds " + file.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("Sweep evidence: models scoring like this (INCOMPATIBLE under these thresholds) diverged in "
                       "57 of 60 sweep runs (divergent: KL mean > 0.1 nats)"),
            std::string::npos)
      << r.out;
  // --threshold changes the thresholds: the sweep's counts no longer describe them.
  const auto changed = run_fusecheck("check " + dir.string() + " --thresholds " + file.string() + " --threshold 30");
  EXPECT_EQ(changed.out.find("Sweep evidence"), std::string::npos) << changed.out;
}

TEST(CheckCli, Stories260KBothScorersCompatible) {
  const auto models = models_dir();
  if (!models) GTEST_SKIP() << models_dir_skip_reason();
  const auto model = (*models / "stories260K.gguf").string();
  const auto seed = run_fusecheck("check " + model + " --scorer braidinfer");
  EXPECT_EQ(seed.exit_code, 0);
  EXPECT_NE(seed.out.find("Score: 1.00"), std::string::npos);
  const auto ours = run_fusecheck("check " + model + " -v" + hand());
  EXPECT_EQ(ours.exit_code, 0);
  EXPECT_NE(ours.out.find("final_norm max=4.425"), std::string::npos) << ours.out;
}

}  // namespace
}  // namespace fusecheck::test
