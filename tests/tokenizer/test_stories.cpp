// The real trained vocabulary of stories260K.gguf (llama SentencePiece, 512 pieces with
// scores): its author's published greedy ids decode to the published text, and the text
// encodes back to ids that decode to the same text. Skips when the model is absent.
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "harness/tokenizer/tokenizer.h"
#include "tests/common/test_support.h"

namespace fusecheck::tok {
namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Published {
  std::vector<std::int32_t> ids;
  std::string text;
};

Published published(const std::filesystem::path& dir) {
  Published p;
  std::istringstream in(slurp(dir / "stories260K.greedy.ids"));
  for (std::int32_t id; in >> id;) p.ids.push_back(id);
  p.text = slurp(dir / "stories260K.greedy.txt");
  while (!p.text.empty() && p.text.back() == '\n') p.text.pop_back();
  return p;
}

TEST(Stories260KVocabulary, PublishedGreedyIdsDecodeToThePublishedText) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  const auto t = load_tokenizer(*dir / "stories260K.gguf");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->size(), 512u);
  const Published p = published(*dir);
  ASSERT_EQ(p.ids.size(), 256u);
  EXPECT_EQ(t->decode(p.ids), p.text);
}

TEST(Stories260KVocabulary, ThePublishedTextEncodesWithBosAndRoundTrips) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  const auto t = load_tokenizer(*dir / "stories260K.gguf");
  const Published p = published(*dir);
  const auto ids = t->encode(p.text);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 1);  // BOS: llama SPM adds it unless add_bos_token says no
  EXPECT_EQ(t->decode(ids), p.text);
  // The model's own greedy ids are the vocabulary's canonical segmentation of its text.
  EXPECT_EQ(std::vector<std::int32_t>(ids.begin() + 1, ids.end()), p.ids);
}

TEST(Stories260KVocabulary, OnceUponATimeUsesTheSpacePrefixAndMergedPieces) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  const auto t = load_tokenizer(*dir / "stories260K.gguf");
  const auto ids = t->encode("Once upon a time", false);
  const Published p = published(*dir);
  // The published story starts with these words: the same pieces, in the same order.
  ASSERT_GE(p.ids.size(), ids.size());
  EXPECT_EQ(ids, std::vector<std::int32_t>(p.ids.begin(), p.ids.begin() + static_cast<long>(ids.size())));
  EXPECT_EQ(t->piece(ids.front()).rfind("\xE2\x96\x81", 0), 0u) << "first piece starts with U+2581";
}

TEST(Stories260KVocabulary, AContinuationKeepsTheSpaceThatStartsIt) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  const auto t = load_tokenizer(*dir / "stories260K.gguf");
  const Published p = published(*dir);
  // The story goes "Once upon a time, there ...": after the comma the next piece is
  // U+2581 "there", whose space a decode of the continuation alone would drop.
  const std::vector<std::int32_t> prompt = {1, p.ids[0], p.ids[1], p.ids[2], p.ids[3], p.ids[4]};
  const std::vector<std::int32_t> rest(p.ids.begin() + 5, p.ids.end());
  const std::string head = t->decode(prompt);
  ASSERT_EQ(head, "Once upon a time,");
  EXPECT_EQ(t->decode_continuation(prompt, rest), p.text.substr(head.size()));
  EXPECT_EQ(t->decode_continuation(prompt, rest).rfind(" there", 0), 0u);
}

}  // namespace
}  // namespace fusecheck::tok
