// Bad vocabularies and bad text: each is one InputError naming the file and the problem
// (exit 2 at the CLI), never a crash or a silently different tokenization.
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/checkpoint/gguf.h"
#include "harness/core/error.h"
#include "harness/tokenizer/tokenizer.h"
#include "tests/checkpoint/fixtures.h"

namespace fusecheck::tok {
namespace {

const std::filesystem::path kData = FUSECHECK_TOKENIZER_DATA;

nlohmann::json trained(const std::string& name) {
  std::ifstream in(kData / (name + ".tokenizer.json"));
  return nlohmann::json::parse(in);
}

// The message of the InputError `f` throws ("" when it throws none).
template <class F>
std::string input_error(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

std::map<std::string, GgufValue> gguf_metadata(const test::GgufWriter& w) {
  const auto bytes = w.bytes();
  return parse_gguf(bytes, "vocab.gguf").metadata;
}

test::GgufWriter gpt2_vocab(bool with_merges, const std::string& pre = "gpt2") {
  test::GgufWriter w;
  w.kv_string("tokenizer.ggml.model", "gpt2");
  w.kv_string("tokenizer.ggml.pre", pre);
  w.kv_string_array("tokenizer.ggml.tokens", {"a", "b", "ab", "\xC4\xA0"});
  if (with_merges) w.kv_string_array("tokenizer.ggml.merges", {"a b"});
  return w;
}

TEST(TokenizerBadInput, GgufBpeWithoutMergesNamesTheMissingKey) {
  const auto meta = gguf_metadata(gpt2_vocab(false));
  const std::string msg = input_error([&] { tokenizer_from_gguf(meta, "vocab.gguf"); });
  EXPECT_EQ(msg, "vocab.gguf: metadata key 'tokenizer.ggml.merges' is missing: a gpt2 (BPE) vocabulary needs its merges");
}

TEST(TokenizerBadInput, GgufBpeWithMergesEncodes) {
  // The same vocabulary with its merge is accepted: "ab" joins.
  const auto t = tokenizer_from_gguf(gguf_metadata(gpt2_vocab(true)), "vocab.gguf");
  EXPECT_EQ(t->encode("ab"), std::vector<std::int32_t>{2});
  EXPECT_EQ(t->encode("ba"), (std::vector<std::int32_t>{1, 0}));
}

TEST(TokenizerBadInput, GgufUnknownPreTokenizerIsRefusedByName) {
  const auto meta = gguf_metadata(gpt2_vocab(true, "no-such-pre"));
  const std::string msg = input_error([&] { tokenizer_from_gguf(meta, "vocab.gguf"); });
  EXPECT_NE(msg.find("vocab.gguf: metadata key 'tokenizer.ggml.pre' 'no-such-pre' is not a pre-tokenizer"),
            std::string::npos) << msg;
}

TEST(TokenizerBadInput, GgufUnsupportedModelIsRefusedByName) {
  test::GgufWriter w;
  w.kv_string("tokenizer.ggml.model", "bert");
  w.kv_string_array("tokenizer.ggml.tokens", {"a"});
  const std::string msg = input_error([&] { tokenizer_from_gguf(gguf_metadata(w), "vocab.gguf"); });
  EXPECT_NE(msg.find("'bert' is not supported"), std::string::npos) << msg;
}

TEST(TokenizerBadInput, JsonWithoutMergesNamesTheMissingKey) {
  auto j = trained("qwen2");
  j["model"].erase("merges");
  const std::string msg = input_error([&] { tokenizer_from_json(j.dump(), "tokenizer.json"); });
  EXPECT_EQ(msg, "tokenizer.json: model: has no 'merges': a BPE vocabulary needs its merges");
}

TEST(TokenizerBadInput, JsonMergeOfPiecesOutsideTheVocabularyIsRefused) {
  auto j = trained("qwen2");
  j["model"]["merges"].push_back(nlohmann::json::array({"zz\xE2\x82\xAC", "q"}));
  const std::string msg = input_error([&] { tokenizer_from_json(j.dump(), "tokenizer.json"); });
  EXPECT_NE(msg.find("tokenizer.json: merge "), std::string::npos) << msg;
  EXPECT_NE(msg.find("joins pieces that are not in the vocabulary"), std::string::npos) << msg;
}

TEST(TokenizerBadInput, JsonUnsupportedModelAndPreTokenizerAreRefusedByName) {
  auto unigram = trained("qwen2");
  unigram["model"]["type"] = "Unigram";
  EXPECT_EQ(input_error([&] { tokenizer_from_json(unigram.dump(), "t.json"); }),
            "t.json: model: type 'Unigram' is not supported (BPE only)");
  auto bert = trained("qwen2");
  bert["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  EXPECT_NE(input_error([&] { tokenizer_from_json(bert.dump(), "t.json"); }).find("'BertPreTokenizer' is not supported"),
            std::string::npos);
}

TEST(TokenizerBadInput, JsonOfTheWrongShapeIsAnInputError) {
  EXPECT_EQ(input_error([&] { tokenizer_from_json("{\"model\": 3", "t.json"); }).rfind("t.json: not valid JSON", 0), 0u);
  auto j = trained("qwen2");
  j["model"]["vocab"]["a"] = "not an id";
  EXPECT_EQ(input_error([&] { tokenizer_from_json(j.dump(), "t.json"); }), "t.json: model.vocab: 'a' has no integer id");
}

TEST(TokenizerBadInput, TextThatIsNotUtf8IsRefused) {
  const auto t = tokenizer_from_gguf(gguf_metadata(gpt2_vocab(true)), "vocab.gguf");
  EXPECT_EQ(input_error([&] { t->encode("a\xFF", true, "--prompt"); }), "--prompt: is not valid UTF-8");
  EXPECT_EQ(input_error([&] { t->encode("\xED\xA0\x80", true, "--prompt"); }), "--prompt: is not valid UTF-8");
}

TEST(TokenizerBadInput, APromptThatEncodesToNothingNamesTheTokenizerFile) {
  // gpt2-style vocabularies add no BOS: an empty prompt gives no token at all.
  const auto t = tokenizer_from_gguf(gguf_metadata(gpt2_vocab(true)), "vocab.gguf");
  const std::string msg = input_error([&] { encode_prompt(*t, "", 4); });
  EXPECT_EQ(msg.rfind("vocab.gguf: the prompt \"\" encodes to no tokens", 0), 0u) << msg;
  EXPECT_EQ(encode_prompt(*t, "ab", 4), std::vector<std::int32_t>{2});
}

TEST(TokenizerBadInput, APromptPastTheModelsEmbeddingRowsIsRefused) {
  const auto t = tokenizer_from_gguf(gguf_metadata(gpt2_vocab(true)), "vocab.gguf");
  const std::string msg = input_error([&] { encode_prompt(*t, "ab", 2); });
  EXPECT_NE(msg.find("token 2 ('ab'), past the model's 2 embedding rows"), std::string::npos) << msg;
}

TEST(TokenizerBadInput, DecodingAnIdOutsideTheVocabularyIsRefused) {
  const auto t = tokenizer_from_gguf(gguf_metadata(gpt2_vocab(true)), "vocab.gguf");
  EXPECT_EQ(input_error([&] { t->decode({4}); }), "vocab.gguf: token id 4 is outside the vocabulary (0..3)");
}

}  // namespace
}  // namespace fusecheck::tok
