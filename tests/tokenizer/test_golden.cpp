// Agreement with HF tokenizers: every committed test string (unicode, whitespace runs,
// digits, emoji, code, added tokens) encodes to HF's ids and decodes to HF's text, for
// each trained tokenizer.json and for the GGUF vocabulary written from the same tokenizer.
// One test case per file, named after it; the agreement count is printed and recorded.
#include <algorithm>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/checkpoint/gguf.h"
#include "harness/checkpoint/mapped_file.h"
#include "harness/tokenizer/text.h"
#include "harness/tokenizer/tokenizer.h"

namespace fusecheck::tok {
namespace {

const std::filesystem::path kData = FUSECHECK_TOKENIZER_DATA;

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

const nlohmann::json& golden() {
  static const nlohmann::json g = nlohmann::json::parse(slurp(kData / "golden.json"));
  return g;
}

std::unique_ptr<Tokenizer> open_json(const std::string& name) {
  const auto file = kData / (name + ".tokenizer.json");
  return tokenizer_from_json(slurp(file), file.string());
}

std::unique_ptr<Tokenizer> open_gguf(const std::string& name) {
  const auto file = kData / (name + ".vocab.gguf");
  const MappedFile mapped(file);
  return tokenizer_from_gguf(parse_gguf(mapped.bytes(), file.string()).metadata, file.string());
}

// Compares every string (or, with `nfc_stable_only`, those NFC leaves unchanged: a GGUF
// file carries no normalizer) and returns "agreed/compared".
void expect_agreement(const Tokenizer& t, const std::string& name, bool nfc_stable_only) {
  const auto& strings = golden().at("strings");
  const auto& expected = golden().at("encodings").at(name);
  int compared = 0, agreed = 0;
  for (std::size_t i = 0; i < strings.size(); ++i) {
    if (nfc_stable_only && !golden().at("nfc_stable")[i].get<bool>()) continue;
    const std::string text = strings[i].get<std::string>();
    const auto want = expected[i].at("ids").get<std::vector<std::int32_t>>();
    const auto ids = t.encode(text);
    const std::string decoded = t.decode(ids);
    ++compared;
    const bool same = ids == want && decoded == expected[i].at("decoded").get<std::string>();
    agreed += same;
    EXPECT_EQ(ids, want) << "string " << i << ": " << nlohmann::json(text).dump();
    EXPECT_EQ(decoded, expected[i].at("decoded").get<std::string>()) << "string " << i;
  }
  // A golden file with a handful of strings would pass trivially: it holds 300.
  ASSERT_GE(compared, 250);
  std::printf("%s (%s): %d/%d strings agree with HF tokenizers %s\n", t.source().c_str(), t.kind().c_str(), agreed,
              compared, golden().at("tokenizers_version").get<std::string>().c_str());
  ::testing::Test::RecordProperty("agreement", std::to_string(agreed) + "/" + std::to_string(compared));
}

class TokenizerJsonAgreesWithHf : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerJsonAgreesWithHf, OnEveryGoldenString) {
  expect_agreement(*open_json(GetParam()), GetParam(), false);
}

INSTANTIATE_TEST_SUITE_P(Trained, TokenizerJsonAgreesWithHf,
                         ::testing::Values("qwen2", "llama3", "smollm", "gpt2", "spm-bpe", "spm-metaspace"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');  // gtest names: no '-'
                           return name;
                         });

class GgufVocabAgreesWithHf : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufVocabAgreesWithHf, OnEveryGoldenString) {
  expect_agreement(*open_gguf(GetParam()), GetParam(), GetParam() == "qwen2");
}

INSTANTIATE_TEST_SUITE_P(Trained, GgufVocabAgreesWithHf, ::testing::Values("qwen2", "llama3", "smollm", "gpt2"),
                         [](const auto& info) { return info.param; });

TEST(Tokenizer, AddsBosOnlyWhereTheFileSays) {
  // Llama-3's template and add_bos_token put <|begin_of_text|> first; Qwen2 adds none.
  const auto llama3 = open_json("llama3");
  const auto llama3_gguf = open_gguf("llama3");
  const auto qwen2 = open_json("qwen2");
  const std::int32_t bos = *llama3->find("<|begin_of_text|>");
  EXPECT_EQ(llama3->encode("Hello").front(), bos);
  EXPECT_EQ(llama3_gguf->encode("Hello").front(), bos);
  EXPECT_NE(llama3->encode("Hello", false).front(), bos);
  EXPECT_EQ(qwen2->encode("Hello"), qwen2->encode("Hello", false));
  const auto spm = open_json("spm-bpe");
  EXPECT_EQ(spm->encode("Hello").front(), *spm->find("<s>"));
}

TEST(Tokenizer, ByteFallbackSpellsCharactersTheVocabularyLacks) {
  // The training text never holds a snowman (U+2603): it is no piece of the
  // SentencePiece-style tokenizer, so it becomes its three UTF-8 bytes and decodes back.
  const auto spm = open_json("spm-bpe");
  ASSERT_FALSE(spm->find("\xE2\x98\x83"));
  const auto ids = spm->encode("\xE2\x98\x83", false);
  std::vector<std::string> pieces;
  for (const auto id : ids) pieces.push_back(spm->piece(id));
  EXPECT_EQ(pieces, (std::vector<std::string>{"\xE2\x96\x81", "<0xE2>", "<0x98>", "<0x83>"}));
  EXPECT_EQ(spm->decode(ids), "\xE2\x98\x83");
}

TEST(Tokenizer, SentencePieceByteRunsThatFormNoCharacterGiveOneReplacementPerByte) {
  // As HF's ByteFallback decoder (checked with tokenizers 0.21.1): a run of byte tokens
  // that is not UTF-8 gives one U+FFFD per token; a run that is stays.
  const auto spm = open_json("spm-bpe");
  const auto byte = [&](const char* piece) { return *spm->find(piece); };
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(spm->decode({byte("<0xE2>"), byte("<0x98>"), byte("<0x41>")}), fffd + fffd + fffd);
  EXPECT_EQ(spm->decode({byte("<0x98>"), byte("<0x98>")}), fffd + fffd);
  EXPECT_EQ(spm->decode({byte("<0xE2>"), byte("<0x98>"), byte("<0x83>")}), "\xE2\x98\x83");
}

TEST(Tokenizer, ByteLevelBytesThatFormNoCharacterGiveOneReplacementPerIllFormedPart) {
  // As HF's ByteLevel decoder (UTF-8 decoded lossily): E2 98 is one broken character.
  const auto gpt2 = open_json("gpt2");
  const auto byte = [&](unsigned char b) { return *gpt2->find(byte_to_unicode(b)); };
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(gpt2->decode({byte(0xE2), byte(0x98), byte(0x41)}), fffd + "A");
  EXPECT_EQ(gpt2->decode({byte(0x98), byte(0x98)}), fffd + fffd);
  EXPECT_EQ(gpt2->decode({byte(0xED), byte(0xA0), byte(0x80)}), fffd + fffd + fffd);
}

}  // namespace
}  // namespace fusecheck::tok
