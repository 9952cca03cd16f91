// Text in, text out on the CLI: `generate --prompt`, `run MODEL --prompt` and its
// --print-scenario (the printed YAML, run as a scenario, gives the same results), and
// the one-line exit-2 errors for a vocabulary without merges and an empty encoding.
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

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

// Lines of `text` without those that change from run to run (times, file names).
std::string stable_lines(const std::string& text) {
  std::istringstream in(text);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("time (wall", 0) == 0 || line.rfind("results:", 0) == 0 || line.rfind("fusecheck run", 0) == 0) continue;
    out += line + "\n";
  }
  return out;
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
  EXPECT_EQ(stable_lines(again.out), stable_lines(direct.out));
  // The results file holds the YAML the run used: the printed one.
  std::ifstream written(scratch / "direct.scenario.yaml");
  std::stringstream text;
  text << written.rdbuf();
  EXPECT_EQ(text.str(), printed.out);
}

TEST(PromptCli, ModelFlagsWithAScenarioFileAreRefused) {
  const auto r = test::run_fusecheck("run " + (test::source_dir() / "scenarios/demo.yaml").string() + " --prompt hi");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("go with a MODEL, not a scenario file"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace fusecheck::tok
