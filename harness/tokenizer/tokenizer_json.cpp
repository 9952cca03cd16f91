// A Hugging Face tokenizer.json (the `tokenizers` library's serialization) with a BPE
// model: byte-level (Qwen2/Qwen3, Llama-3, SmolLM, GPT-2) or SentencePiece-style with
// byte fallback (Llama-2, Mistral). Normalizers NFC/Prepend/Replace, pre-tokenizers
// Split/ByteLevel/Digits/Metaspace, TemplateProcessing for BOS/EOS. Anything else the
// file asks for is refused by name rather than silently tokenized differently.
#include <nlohmann/json.hpp>
#include <fmt/core.h>

#include "harness/checkpoint/view_checks.h"
#include "harness/core/error.h"
#include "harness/tokenizer/pretokenizers.h"
#include "harness/tokenizer/tokenizer.h"

namespace fusecheck::tok {

namespace {

using nlohmann::json;

class Reader {
 public:
  explicit Reader(const std::string& file) : file_(file) {}

  InputError bad(const std::string& where, const std::string& problem) const {
    return InputError(file_, fmt::format("{}: {}", where, problem));
  }
  const json& member(const json& obj, const char* key, const std::string& where) const {
    if (!obj.is_object() || !obj.contains(key)) throw bad(where, fmt::format("has no '{}'", key));
    return obj.at(key);
  }
  std::string string(const json& obj, const char* key, const std::string& where) const {
    const json& v = member(obj, key, where);
    if (!v.is_string()) throw bad(where, fmt::format("'{}' is not a string", key));
    return v.get<std::string>();
  }
  bool flag(const json& obj, const char* key, bool fallback, const std::string& where) const {
    if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
    if (!obj.at(key).is_boolean()) throw bad(where, fmt::format("'{}' is not true or false", key));
    return obj.at(key).get<bool>();
  }
  std::string type(const json& obj, const std::string& where) const {
    if (!obj.is_object()) throw bad(where, "is not an object");
    return string(obj, "type", where);
  }
  // {"String": "x"} or {"Regex": "x"}: the pattern of Split and Replace.
  std::pair<bool, std::string> pattern(const json& obj, const std::string& where) const {
    const json& p = member(obj, "pattern", where);
    if (p.is_object() && p.contains("String") && p.at("String").is_string()) return {false, p.at("String").get<std::string>()};
    if (p.is_object() && p.contains("Regex") && p.at("Regex").is_string()) return {true, p.at("Regex").get<std::string>()};
    throw bad(where, "'pattern' is neither {\"String\": ...} nor {\"Regex\": ...}");
  }

 private:
  const std::string& file_;
};

void read_normalizer(const Reader& r, const json& n, TokenizerConfig& c) {
  if (n.is_null()) return;
  const std::string where = "normalizer";
  const std::string type = r.type(n, where);
  if (type == "Sequence") {
    const json& list = r.member(n, "normalizers", where);
    if (!list.is_array()) throw r.bad(where, "'normalizers' is not a list");
    for (const json& item : list) read_normalizer(r, item, c);
  } else if (type == "NFC") {
    c.normalize.push_back({NormalizeStep::Kind::Nfc, "", ""});
  } else if (type == "Prepend") {
    c.normalize.push_back({NormalizeStep::Kind::Prepend, "", r.string(n, "prepend", where)});
  } else if (type == "Replace") {
    const auto [is_regex, pattern] = r.pattern(n, where);
    if (is_regex) throw r.bad(where, "Replace with a regex pattern is not supported");
    c.normalize.push_back({NormalizeStep::Kind::Replace, pattern, r.string(n, "content", where)});
  } else {
    throw r.bad(where, fmt::format("'{}' is not supported (NFC, Prepend, Replace, Sequence)", type));
  }
}

void read_pre_tokenizer(const Reader& r, const json& p, TokenizerConfig& c) {
  if (p.is_null()) return;
  const std::string where = "pre_tokenizer";
  const std::string type = r.type(p, where);
  if (c.byte_level) throw r.bad(where, fmt::format("'{}' after ByteLevel is not supported", type));
  if (type == "Sequence") {
    const json& list = r.member(p, "pretokenizers", where);
    if (!list.is_array()) throw r.bad(where, "'pretokenizers' is not a list");
    for (const json& item : list) read_pre_tokenizer(r, item, c);
  } else if (type == "ByteLevel") {
    if (r.flag(p, "add_prefix_space", false, where)) throw r.bad(where, "ByteLevel add_prefix_space is not supported");
    if (r.flag(p, "use_regex", true, where)) c.pre_split.push_back({SplitStep::Kind::Regex, kGpt2Regex});
    c.byte_level = true;
  } else if (type == "Split") {
    const std::string behavior = r.string(p, "behavior", where);
    if (behavior != "Isolated" || r.flag(p, "invert", false, where)) {
      throw r.bad(where, fmt::format("Split with behavior '{}'{} is not supported (Isolated only)", behavior,
                                     r.flag(p, "invert", false, where) ? " and invert" : ""));
    }
    const auto [is_regex, pattern] = r.pattern(p, where);
    c.pre_split.push_back({is_regex ? SplitStep::Kind::Regex : SplitStep::Kind::Literal, pattern});
  } else if (type == "Digits") {
    c.pre_split.push_back({SplitStep::Kind::Regex, r.flag(p, "individual_digits", false, where) ? R"(\p{N})" : R"(\p{N}+)"});
  } else if (type == "Metaspace") {
    if (r.string(p, "replacement", where) != "\xE2\x96\x81") throw r.bad(where, "Metaspace replacement other than U+2581");
    const std::string scheme = p.contains("prepend_scheme") ? r.string(p, "prepend_scheme", where) : "always";
    if (scheme != "first" && scheme != "never" && scheme != "always") {
      throw r.bad(where, fmt::format("Metaspace prepend_scheme '{}' is unknown", scheme));
    }
    if (scheme == "always") throw r.bad(where, "Metaspace prepend_scheme 'always' is not supported (first, never)");
    c.metaspace = true;
    c.metaspace_prepend = scheme == "first";
    c.strip_leading_space = c.metaspace_prepend;
    if (r.flag(p, "split", true, where)) c.pre_split.push_back({SplitStep::Kind::MetaspaceSplit, ""});
  } else {
    throw r.bad(where, fmt::format("'{}' is not supported (ByteLevel, Split, Digits, Metaspace, Sequence)", type));
  }
}

void read_post_processor(const Reader& r, const json& p, std::vector<std::int32_t>& prefix,
                         std::vector<std::int32_t>& suffix) {
  if (p.is_null()) return;
  const std::string where = "post_processor";
  const std::string type = r.type(p, where);
  if (type == "ByteLevel") return;  // offsets only
  if (type == "Sequence") {
    const json& list = r.member(p, "processors", where);
    if (!list.is_array()) throw r.bad(where, "'processors' is not a list");
    for (const json& item : list) read_post_processor(r, item, prefix, suffix);
    return;
  }
  if (type != "TemplateProcessing") {
    throw r.bad(where, fmt::format("'{}' is not supported (TemplateProcessing, ByteLevel, Sequence)", type));
  }
  const json& single = r.member(p, "single", where);
  const json& specials = r.member(p, "special_tokens", where);
  if (!single.is_array()) throw r.bad(where, "'single' is not a list");
  bool seen_sequence = false;
  for (const json& item : single) {
    if (item.is_object() && item.contains("Sequence")) {
      if (seen_sequence) throw r.bad(where, "'single' names the sequence twice");
      seen_sequence = true;
      continue;
    }
    if (!item.is_object() || !item.contains("SpecialToken")) throw r.bad(where, "a 'single' item is neither Sequence nor SpecialToken");
    const std::string name = r.string(item.at("SpecialToken"), "id", where);
    if (!specials.is_object() || !specials.contains(name)) {
      throw r.bad(where, fmt::format("special token '{}' is not in 'special_tokens'", name));
    }
    const json& ids = r.member(specials.at(name), "ids", where);
    if (!ids.is_array()) throw r.bad(where, fmt::format("special token '{}' has no id list", name));
    for (const json& id : ids) {
      if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() > INT32_MAX) {
        throw r.bad(where, fmt::format("special token '{}' has a bad id", name));
      }
      (seen_sequence ? suffix : prefix).push_back(static_cast<std::int32_t>(id.get<std::int64_t>()));
    }
  }
  if (!seen_sequence) throw r.bad(where, "'single' has no Sequence");
}

TokenizerConfig read_config(std::string_view text, const std::string& file) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    throw InputError(file, fmt::format("not valid JSON (byte {})", e.byte));
  }
  const Reader r(file);
  if (!doc.is_object()) throw r.bad("top level", "is not an object");
  TokenizerConfig c;
  c.source = file;
  const json& model = r.member(doc, "model", "top level");
  const std::string model_type = model.is_object() && model.contains("type") ? r.type(model, "model") : "BPE";
  if (model_type != "BPE") throw r.bad("model", fmt::format("type '{}' is not supported (BPE only)", model_type));
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model.at(key).is_null() && model.at(key) != "") {
      throw r.bad("model", fmt::format("'{}' is not supported", key));
    }
  }
  if (model.contains("dropout") && !model.at("dropout").is_null() && model.at("dropout") != 0 && model.at("dropout") != 1) {
    throw r.bad("model", "BPE dropout is random: not supported");
  }
  c.byte_fallback = r.flag(model, "byte_fallback", false, "model");
  c.fuse_unk = r.flag(model, "fuse_unk", false, "model");
  c.ignore_merges = r.flag(model, "ignore_merges", false, "model");

  const json& vocab = r.member(model, "vocab", "model");
  if (!vocab.is_object() || vocab.empty()) throw r.bad("model.vocab", "is not a non-empty object");
  std::vector<std::optional<std::string>> pieces;
  const auto place = [&](std::int64_t id, const std::string& piece, const std::string& where) {
    // Ids index tables: bounded by the entries the file has, so no huge allocation.
    if (id < 0 || id >= static_cast<std::int64_t>(vocab.size() + 1024 * 1024)) {
      throw r.bad(where, fmt::format("id {} of '{}' is out of range", id, piece));
    }
    if (pieces.size() <= static_cast<std::size_t>(id)) pieces.resize(static_cast<std::size_t>(id) + 1);
    auto& slot = pieces[static_cast<std::size_t>(id)];
    if (slot && *slot != piece) throw r.bad(where, fmt::format("id {} is both '{}' and '{}'", id, *slot, piece));
    slot = piece;
  };
  for (const auto& [piece, id] : vocab.items()) {
    if (!id.is_number_integer()) throw r.bad("model.vocab", fmt::format("'{}' has no integer id", piece));
    place(id.get<std::int64_t>(), piece, "model.vocab");
  }
  if (doc.contains("added_tokens") && !doc.at("added_tokens").is_null()) {
    const json& added = doc.at("added_tokens");
    if (!added.is_array()) throw r.bad("added_tokens", "is not a list");
    for (const json& a : added) {
      const json& id = r.member(a, "id", "added_tokens");
      if (!id.is_number_integer()) throw r.bad("added_tokens", "an id is not an integer");
      const std::string content = r.string(a, "content", "added_tokens");
      place(id.get<std::int64_t>(), content, "added_tokens");
      c.added.push_back(static_cast<std::int32_t>(id.get<std::int64_t>()));
      if (r.flag(a, "special", false, "added_tokens")) c.special.push_back(c.added.back());
    }
  }
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    if (!pieces[i]) throw r.bad("model.vocab", fmt::format("id {} has no piece (ids must be 0..{} without gaps)", i, pieces.size() - 1));
    c.pieces.push_back(std::move(*pieces[i]));
  }

  if (!model.contains("merges")) throw r.bad("model", "has no 'merges': a BPE vocabulary needs its merges");
  const json& merges = model.at("merges");
  if (!merges.is_array()) throw r.bad("model.merges", "is not a list");
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const std::size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 >= s.size()) {
        throw r.bad("model.merges", fmt::format("entry {} ('{}') is not two pieces separated by a space", i, s));
      }
      c.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      c.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      throw r.bad("model.merges", fmt::format("entry {} is neither \"a b\" nor [\"a\", \"b\"]", i));
    }
  }
  if (model.contains("unk_token") && !model.at("unk_token").is_null()) {
    const std::string unk = r.string(model, "unk_token", "model");
    const auto it = vocab.find(unk);
    if (it == vocab.end()) throw r.bad("model.unk_token", fmt::format("'{}' is not in the vocabulary", unk));
    c.unk_id = static_cast<std::int32_t>(it->get<std::int64_t>());
  }

  read_normalizer(r, doc.value("normalizer", json()), c);
  read_pre_tokenizer(r, doc.value("pre_tokenizer", json()), c);
  read_post_processor(r, doc.value("post_processor", json()), c.prefix, c.suffix);
  // The decoder mirrors the encoder: byte-level text maps back through GPT-2's table;
  // otherwise U+2581 is a space, <0xNN> a byte, and a Strip(start) drops the one space the
  // normalizer prepended.
  const json decoder = doc.value("decoder", json());
  const auto strips = [&](const json& d) {
    return d.is_object() && d.value("type", "") == "Strip" && d.value("content", "") == " " && d.value("start", 0) >= 1;
  };
  if (strips(decoder)) c.strip_leading_space = true;
  if (decoder.is_object() && decoder.value("type", "") == "Sequence" && decoder.contains("decoders") &&
      decoder.at("decoders").is_array()) {
    for (const json& d : decoder.at("decoders")) {
      if (strips(d)) c.strip_leading_space = true;
    }
  }
  c.kind = c.byte_level ? "tokenizer.json BPE (byte-level)"
                        : c.byte_fallback ? "tokenizer.json BPE (SentencePiece-style, byte fallback)"
                                          : "tokenizer.json BPE";
  return c;
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_json(std::string_view text, const std::string& file) {
  // Pieces and names from the file appear in messages: keep them one printable line.
  return with_printable_errors([&] {
    TokenizerConfig config;
    try {
      config = read_config(text, file);
    } catch (const nlohmann::json::exception& e) {
      // A value of the wrong JSON type where the reader expected another.
      throw InputError(file, fmt::format("unexpected JSON structure ({})", e.what()));
    }
    return std::make_unique<Tokenizer>(std::move(config));
  });
}

}  // namespace fusecheck::tok
