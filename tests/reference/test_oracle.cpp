// The oracle: from BOS at position 0, greedy decoding on stories260K (a real trained
// Llama-architecture GGUF model) with ref32-cpu and ref64-cpu reproduces the 256 token ids
// its author published and their decoded text. Skips only when the models folder is absent.
#include <fstream>
#include <iterator>
#include <sstream>

#include <gtest/gtest.h>

#include "harness/core/checkpoint.h"
#include "harness/core/greedy.h"
#include "reference/decoder_path.h"
#include "tests/common/test_support.h"

namespace fusecheck::ref {
namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::vector<std::int32_t> expected_ids(const std::filesystem::path& dir) {
  std::istringstream in(slurp(dir / "stories260K.greedy.ids"));
  std::vector<std::int32_t> ids;
  for (std::int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

template <class P>
void expect_oracle(const char* name) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  const auto ckpt = Checkpoint::open(*dir / "stories260K.gguf");
  const std::vector<std::int32_t> want = expected_ids(*dir);
  ASSERT_EQ(want.size(), 256u);
  P path(*ckpt, name);
  const std::vector<std::int32_t> bos = {1};
  const GreedyResult got = greedy_decode(path, ckpt->spec().n_layers, bos, 256);
  ASSERT_EQ(got.ids.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got.ids[i], want[i]) << name << ": first mismatch at step " << i;
  }
  std::string text = slurp(*dir / "stories260K.greedy.txt");
  while (!text.empty() && text.back() == '\n') text.pop_back();
  EXPECT_EQ(ckpt->decode(std::vector<int>(got.ids.begin(), got.ids.end())), text);
}

TEST(Oracle, Ref32ReproducesTheStories260KGreedyIdsAndText) { expect_oracle<Ref32Path>("ref32-cpu"); }
TEST(Oracle, Ref64ReproducesTheStories260KGreedyIdsAndText) { expect_oracle<Ref64Path>("ref64-cpu"); }

TEST(Oracle, GenerateCommandPrintsTheOracleIdsAndText) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  const auto r = test::run_fusecheck("generate " + (*dir / "stories260K.gguf").string() +
                                     " --path ref64-cpu --steps 8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto want = expected_ids(*dir);
  std::string ids;
  for (int i = 0; i < 8; ++i) ids += (i ? " " : "") + std::to_string(want[i]);
  EXPECT_NE(r.out.find("ids: " + ids + "\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("text: Once upon a time"), std::string::npos) << r.out;
}

TEST(Oracle, GenerateRejectsABadPromptWithOneLine) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  const auto r = test::run_fusecheck("generate " + (*dir / "stories260K.gguf").string() +
                                     " --prompt-ids 1,x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--prompt-ids"), std::string::npos) << r.err;
}

TEST(Oracle, GenerateReportsHeadroomOnlyForTheEmulatedPath) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  const std::string model = (*dir / "stories260K.gguf").string();
  const auto r = test::run_fusecheck("generate " + model + " --path emulated-cpu --recipe hf-fp16 --steps 4 --headroom");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("headroom (hf-fp16"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  L4 "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  head "), std::string::npos) << r.out;
  const auto bad = test::run_fusecheck("generate " + model + " --path ref32-cpu --headroom");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--headroom"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace fusecheck::ref
