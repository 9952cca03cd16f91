// A GGUF file's vocabulary as llama.cpp reads it: tokenizer.ggml.model "llama" (SPM:
// pieces with scores, U+2581 for space, <0xNN> byte fallback, a space prefix) or "gpt2"
// (byte-level BPE: pieces, ranked merges "a b", the pre-tokenizer `tokenizer.ggml.pre`
// names). Token types: 3 control (matched in text, decode to nothing), 4 user-defined
// (matched in text). BOS/EOS as add_bos_token/add_eos_token say (llama.cpp's defaults:
// BOS for SPM, none for BPE).
#include <fmt/core.h>

#include "harness/checkpoint/gguf.h"
#include "harness/checkpoint/view_checks.h"
#include "harness/core/error.h"
#include "harness/tokenizer/pretokenizers.h"
#include "harness/tokenizer/tokenizer.h"

namespace fusecheck::tok {

namespace {

enum TokenType : std::int64_t { kUnknown = 2, kControl = 3, kUserDefined = 4 };

class Meta {
 public:
  Meta(const std::map<std::string, GgufValue>& kv, const std::string& file) : kv_(kv), file_(file) {}

  const GgufValue* find(const std::string& key) const {
    const auto it = kv_.find(key);
    return it == kv_.end() ? nullptr : &it->second;
  }
  std::string string_or(const std::string& key, const std::string& fallback) const {
    const GgufValue* v = find(key);
    if (!v) return fallback;
    if (!v->as_string()) throw bad(key, "is not a string");
    return *v->as_string();
  }
  bool bool_or(const std::string& key, bool fallback) const {
    const GgufValue* v = find(key);
    if (!v) return fallback;
    if (const auto* b = std::get_if<bool>(&v->value)) return *b;
    throw bad(key, "is not a bool");
  }
  std::optional<std::int32_t> id(const std::string& key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    const auto i = v->as_int();
    if (!i || *i < 0 || *i > INT32_MAX) throw bad(key, fmt::format("is not a token id ({})", v->to_string()));
    return static_cast<std::int32_t>(*i);
  }
  // An array whose elements are all of `type`; nullptr when the key is absent.
  const std::vector<GgufValue>* array(const std::string& key, GgufType type, const char* type_name) const {
    const GgufValue* v = find(key);
    if (!v) return nullptr;
    const auto* a = v->as_array();
    if (!a || (!a->empty() && v->element_type != type)) throw bad(key, fmt::format("is not an array of {}", type_name));
    return a;
  }
  InputError bad(const std::string& key, const std::string& problem) const {
    return InputError(file_, fmt::format("metadata key '{}' {}", key, problem));
  }

 private:
  const std::map<std::string, GgufValue>& kv_;
  const std::string& file_;
};

}  // namespace

namespace {

std::unique_ptr<Tokenizer> read_gguf_vocab(const std::map<std::string, GgufValue>& metadata, const std::string& file) {
  const Meta meta(metadata, file);
  TokenizerConfig c;
  c.source = file;
  const std::string model = meta.string_or("tokenizer.ggml.model", "");
  if (model != "llama" && model != "gpt2") {
    throw meta.bad("tokenizer.ggml.model", fmt::format("'{}' is not supported (fusecheck reads 'llama' (SPM) and "
                                                       "'gpt2' (byte-level BPE) vocabularies)", model));
  }
  const auto* tokens = meta.array("tokenizer.ggml.tokens", GgufType::String, "strings");
  if (!tokens || tokens->empty()) throw meta.bad("tokenizer.ggml.tokens", "is missing or empty");
  for (const GgufValue& t : *tokens) c.pieces.push_back(*t.as_string());

  if (const auto* types = meta.array("tokenizer.ggml.token_type", GgufType::I32, "int32")) {
    if (types->size() != c.pieces.size()) {
      throw meta.bad("tokenizer.ggml.token_type", fmt::format("has {} entries for {} tokens", types->size(), c.pieces.size()));
    }
    for (std::size_t i = 0; i < types->size(); ++i) {
      const std::int64_t t = *(*types)[i].as_int();
      const auto id = static_cast<std::int32_t>(i);
      if (t == kControl || t == kUserDefined || t == kUnknown) c.added.push_back(id);
      if (t == kControl) c.special.push_back(id);
    }
  }
  const bool spm = model == "llama";
  if (spm) {
    c.kind = "gguf llama (SentencePiece)";
    c.model = MergeModel::Spm;
    c.byte_fallback = true;
    const auto* scores = meta.array("tokenizer.ggml.scores", GgufType::F32, "float32");
    if (scores && scores->size() != c.pieces.size()) {
      throw meta.bad("tokenizer.ggml.scores", fmt::format("has {} entries for {} tokens", scores->size(), c.pieces.size()));
    }
    c.scores.assign(c.pieces.size(), 0.0f);
    for (std::size_t i = 0; scores && i < scores->size(); ++i) c.scores[i] = static_cast<float>(*(*scores)[i].as_double());
    if (meta.bool_or("tokenizer.ggml.add_space_prefix", true)) {
      c.normalize.push_back({NormalizeStep::Kind::Prepend, "", " "});
      c.strip_leading_space = true;
    }
    c.normalize.push_back({NormalizeStep::Kind::Replace, " ", "\xE2\x96\x81"});
  } else {
    const std::string pre = meta.string_or("tokenizer.ggml.pre", "default");
    c.kind = fmt::format("gguf gpt2 (byte-level BPE, pre-tokenizer {})", pre);
    c.byte_level = true;
    const auto* merges = meta.array("tokenizer.ggml.merges", GgufType::String, "strings");
    if (!merges) throw meta.bad("tokenizer.ggml.merges", "is missing: a gpt2 (BPE) vocabulary needs its merges");
    for (std::size_t i = 0; i < merges->size(); ++i) {
      const std::string& m = *(*merges)[i].as_string();
      // The first space after the first character separates the parts (llama.cpp).
      const std::size_t space = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
      if (space == std::string::npos) {
        throw meta.bad("tokenizer.ggml.merges", fmt::format("entry {} ('{}') is not two pieces separated by a space", i, m));
      }
      c.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
    }
    const auto known = gguf_pre_tokenizer(pre);
    if (!known) {
      throw meta.bad("tokenizer.ggml.pre", fmt::format("'{}' is not a pre-tokenizer fusecheck knows ({})", pre,
                                                       known_gguf_pre_tokenizers()));
    }
    c.pre_split = known->splits;
    c.ignore_merges = known->ignore_merges;
  }
  const auto bos = meta.id("tokenizer.ggml.bos_token_id");
  const auto eos = meta.id("tokenizer.ggml.eos_token_id");
  if (meta.bool_or("tokenizer.ggml.add_bos_token", spm)) {
    if (!bos) throw meta.bad("tokenizer.ggml.add_bos_token", "is true but tokenizer.ggml.bos_token_id is missing");
    c.prefix.push_back(*bos);
  }
  if (meta.bool_or("tokenizer.ggml.add_eos_token", false)) {
    if (!eos) throw meta.bad("tokenizer.ggml.add_eos_token", "is true but tokenizer.ggml.eos_token_id is missing");
    c.suffix.push_back(*eos);
  }
  // BOS and EOS decode to nothing even where the file does not mark them as control.
  for (const auto& id : {bos, eos}) {
    if (id) c.special.push_back(*id);
  }
  if (const auto unk = meta.id("tokenizer.ggml.unknown_token_id")) c.unk_id = *unk;
  return std::make_unique<Tokenizer>(std::move(c));
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_gguf(const std::map<std::string, GgufValue>& metadata,
                                               const std::string& file) {
  // Pieces and names from the file appear in messages: keep them one printable line.
  return with_printable_errors([&] { return read_gguf_vocab(metadata, file); });
}

}  // namespace fusecheck::tok
