// Text in, text out on the CLI: `generate --prompt`, `run MODEL --prompt` and its
// --print-scenario (the printed YAML, run as a scenario, gives the same results), the
// prompt and greedy text in the summary, results file and report, and
// the one-line exit-2 errors for a vocabulary without merges and an empty encoding.
#include <cmath>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "harness/core/error.h"
#include "harness/results/h5_tree.h"
#include "harness/run/scenario.h"
#include "tests/checkpoint/fixtures.h"
#include "tests/common/test_support.h"

namespace fusecheck::tok {
namespace {

std::vector<std::int32_t> published_ids(const std::filesystem::path& dir) {
  std::ifstream in(dir / "stories260K.greedy.ids");
  std::vector<std::int32_t> ids;
  for (std::int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

std::string join(const std::vector<std::int32_t>& ids, std::size_t from, std::size_t to) {
  std::string s;
  for (std::size_t i = from; i < to; ++i) s += (i > from ? " " : "") + std::to_string(ids[i]);
  return s;
}

bool same_value(const results::H5Value& a, const results::H5Value& b) {
  if (a.kind != b.kind || a.dims != b.dims || a.strings != b.strings || a.numbers.size() != b.numbers.size()) return false;
  for (std::size_t i = 0; i < a.numbers.size(); ++i) {
    // Bit-identical runs: equal values, NaN where the other has NaN.
    if (!(a.numbers[i] == b.numbers[i] || (std::isnan(a.numbers[i]) && std::isnan(b.numbers[i])))) return false;
  }
  return true;
}

// Every attribute and dataset under `a` equals the one under `b` (names listed on failure).
void expect_same_tree(const results::H5Node& a, const results::H5Node& b, const std::string& where) {
  ASSERT_EQ(a.groups.size(), b.groups.size()) << where;
  ASSERT_EQ(a.datasets.size(), b.datasets.size()) << where;
  ASSERT_EQ(a.attrs.size(), b.attrs.size()) << where;
  for (const auto& [name, v] : a.attrs) EXPECT_TRUE(b.attrs.count(name) && same_value(v, b.attrs.at(name))) << where << "@" << name;
  for (const auto& [name, v] : a.datasets) {
    EXPECT_TRUE(b.datasets.count(name) && same_value(v, b.datasets.at(name))) << where << "/" << name;
  }
  for (const auto& [name, g] : a.groups) {
    ASSERT_TRUE(b.groups.count(name)) << where << "/" << name;
    expect_same_tree(g, b.groups.at(name), where + "/" + name);
  }
}

TEST(PromptCli, GenerateContinuesATextPromptAsThePublishedStory) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  // "Once upon a time" is how the published greedy story begins: BOS plus its pieces,
  // then greedy decoding must continue with the story's next ids.
  const auto r = test::run_fusecheck("generate " + (*dir / "stories260K.gguf").string() +
                                     " --path ref64-cpu --steps 6 --prompt 'Once upon a time'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto want = published_ids(*dir);
  EXPECT_NE(r.out.find("prompt: \"Once upon a time\"\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("prompt ids: 1 " + join(want, 0, 4) + "\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ids: " + join(want, 4, 10) + "\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("text: , there was"), std::string::npos) << r.out;
}

test::GgufWriter gpt2_model(bool with_merges) {
  test::TinyModel m;
  auto w = test::tiny_gguf(m, "llama", DType::F32, {}, "gpt2", {"<unk>", "<s>", "</s>", "a", "b", "ab", "\xC4\xA0"});
  w.kv_string("tokenizer.ggml.pre", "gpt2");
  if (with_merges) w.kv_string_array("tokenizer.ggml.merges", {"a b"});
  return w;
}

TEST(PromptCli, AVocabularyWithoutMergesExits2WithOneLine) {
  const auto file = test::scratch_dir() / "no-merges.gguf";
  gpt2_model(false).write(file);
  const auto r = test::run_fusecheck("generate " + file.string() + " --prompt ab");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "fusecheck generate: error: " + file.string() +
                       ": metadata key 'tokenizer.ggml.merges' is missing: a gpt2 (BPE) vocabulary needs its merges\n");
}

TEST(PromptCli, APromptThatEncodesToNothingExits2WithOneLine) {
  const auto file = test::scratch_dir() / "gpt2.gguf";
  gpt2_model(true).write(file);
  const auto ok = test::run_fusecheck("generate " + file.string() + " --prompt ab --steps 2");
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("prompt ids: 5\n"), std::string::npos) << ok.out;
  const auto r = test::run_fusecheck("generate " + file.string() + " --prompt ''");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
  EXPECT_NE(r.err.find(file.string() + ": the prompt \"\" encodes to no tokens"), std::string::npos) << r.err;
}

TEST(PromptCli, RunModelPrintsAScenarioThatGivesTheSameResults) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  const auto scratch = test::scratch_dir();
  const std::string model = (*dir / "stories260K.gguf").string();
  const std::string flags = " --prompt 'Once upon a time' --device cpu --no-progress";
  const auto direct = test::run_fusecheck("run " + model + flags + " --out " + (scratch / "direct.h5").string());
  ASSERT_LE(direct.exit_code, 1) << direct.err;
  EXPECT_NE(direct.out.find("prompt: \"Once upon a time\""), std::string::npos) << direct.out;
  EXPECT_NE(direct.out.find("greedy text (16 steps): \", there was"), std::string::npos) << direct.out;

  const auto printed = test::run_fusecheck("run " + model + " --prompt 'Once upon a time' --print-scenario");
  ASSERT_EQ(printed.exit_code, 0) << printed.err;
  EXPECT_NE(printed.out.find("prompt: \"Once upon a time\""), std::string::npos) << printed.out;
  EXPECT_NE(printed.out.find("prefill: 5"), std::string::npos) << printed.out;  // BOS + 4 pieces
  const auto yaml = scratch / "printed.yaml";
  std::ofstream(yaml) << printed.out;
  const auto again = test::run_fusecheck("run " + yaml.string() + " --device cpu --no-progress --out " +
                                         (scratch / "again.h5").string());
  EXPECT_EQ(again.exit_code, direct.exit_code) << again.err;
  // Same metrics, amplification, end-to-end figures and greedy tokens and text; the
  // timing and provenance groups differ by nature.
  const auto a = results::read_h5_tree(scratch / "direct.h5");
  const auto b = results::read_h5_tree(scratch / "again.h5");
  for (const char* group : {"paths", "end_to_end", "reference"}) {
    ASSERT_TRUE(a.group(group)) << group;
    expect_same_tree(*a.group(group), *b.group(group), group);
  }
  for (const char* attr : {"scenario_text", "prompt", "tokenizer", "status"}) {
    EXPECT_EQ(a.attr_string(attr), b.attr_string(attr)) << attr;
  }
  EXPECT_EQ(a.attr_string("prompt"), "Once upon a time");
  ASSERT_TRUE(a.group("end_to_end"));
  EXPECT_EQ(a.group("end_to_end")->attr_string("reference_greedy_text").value_or("").rfind(", there was", 0), 0u);
  // The report shows the prompt and the greedy text.
  const auto report = test::run_fusecheck("report " + (scratch / "direct.h5").string() + " --out " +
                                          (scratch / "report").string());
  ASSERT_EQ(report.exit_code, 0) << report.err;
  std::ifstream html_in(scratch / "report" / "stories260K.html");
  std::stringstream html;
  html << html_in.rdbuf();
  EXPECT_NE(html.str().find("Prompt: <b>Once upon a time</b>"), std::string::npos);
  EXPECT_NE(html.str().find("Greedy text (ref32-cpu): <b>, there was"), std::string::npos);
  // The results file holds the YAML the run used: the printed one.
  std::ifstream written(scratch / "direct.scenario.yaml");
  std::stringstream text;
  text << written.rdbuf();
  EXPECT_EQ(text.str(), printed.out);
}

TEST(PromptCli, ScenarioPromptIsReadAndExclusiveWithIds) {
  const auto sc = run::parse_scenario("model: {path: m.gguf}\ntokens: {prompt: \"Hi there\"}\nphase: {prefill: 3}\n"
                                      "paths: [ref32-cpu]\n", "s.yaml");
  EXPECT_EQ(sc.tokens.prompt, "Hi there");
  EXPECT_TRUE(sc.tokens.ids.empty());
  try {
    run::parse_scenario("model: {path: m.gguf}\ntokens: {prompt: a, ids: [1]}\nphase: {prefill: 1}\npaths: [ref32-cpu]\n",
                        "s.yaml");
    ADD_FAILURE() << "prompt and ids together were accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("give one of 'ids', 'prompt' or 'seed'/'count'"), std::string::npos) << e.what();
  }
}

TEST(PromptCli, AScenarioPromptOfTheWrongLengthExits2NamingTheKey) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  const auto yaml = test::scratch_dir() / "short.yaml";
  std::ofstream(yaml) << "model: {path: " << (*dir / "stories260K.gguf").string()
                      << "}\ntokens: {prompt: \"Once upon a time\"}\nphase: {prefill: 3}\npaths: [ref32-cpu]\n";
  const auto r = test::run_fusecheck("run " + yaml.string() + " --device cpu --no-progress");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "fusecheck run: error: " + yaml.string() +
                       ": tokens.prompt: encodes to 5 tokens (BOS included) but the phase needs 3\n");
}

TEST(PromptCli, RunModelRefusesConflictingPhaseFlags) {
  // Checked before the model is opened: the flags alone are contradictory.
  const auto both = test::run_fusecheck("run m.gguf --prefill 4 --decode 8:2 --print-scenario");
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_EQ(both.err, "fusecheck run: error: --prefill: give --prefill or --decode, not both\n");
  const auto bad = test::run_fusecheck("run m.gguf --decode 8 --print-scenario");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(bad.err, "fusecheck run: error: --decode: '8' is not KV:STEPS with both at least 1 (e.g. 64:4)\n");
}

TEST(PromptCli, RunModelPrintsSeededTokensAndADecodePhaseWithoutAPrompt) {
  const auto r = test::run_fusecheck("run m.gguf --decode 8:2 --paths fused-cuda --ref64 --print-scenario");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("tokens: {seed: 1}\nphase: {decode: {kv_len: 8, steps: 2}}\npaths: [fused-cuda]\n"
                       "reference: {path: auto, ref64: true}\n"), std::string::npos) << r.out;
}

TEST(PromptCli, ModelFlagsWithAScenarioFileAreRefused) {
  const auto r = test::run_fusecheck("run " + (test::source_dir() / "scenarios/demo.yaml").string() + " --prompt hi");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("go with a MODEL, not a scenario file"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace fusecheck::tok
