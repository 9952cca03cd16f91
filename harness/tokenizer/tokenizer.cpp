// The encode/decode pipeline of every vocabulary (tokenizer.h): validation of the config,
// added-token splitting, normalizers, pre-tokenizer splits, the merge loop, BOS/EOS.
#include "harness/tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unordered_set>

#include <fmt/core.h>

#include "harness/checkpoint/gguf.h"
#include "harness/checkpoint/mapped_file.h"
#include "harness/checkpoint/view_checks.h"
#include "harness/core/error.h"
#include "harness/tokenizer/merge.h"
#include "harness/tokenizer/text.h"

namespace fusecheck::tok {

namespace {

constexpr std::string_view kMetaSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

std::uint64_t pair_key(std::int32_t left, std::int32_t right) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) | static_cast<std::uint32_t>(right);
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  std::size_t pos = 0;
  for (std::size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out.append(to);
  }
  out.append(s, pos);
  s = std::move(out);
}

}  // namespace

struct Tokenizer::Impl {
  std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>> ids;
  std::unordered_map<std::uint64_t, PairMerge> merges;  // (left, right) -> rank, joined id
  std::vector<std::unique_ptr<Regex>> splits;           // one per SplitStep (null: metaspace/literal)
  std::array<std::int32_t, 256> byte_ids{};             // <0xNN> token of each byte, -1 if none
  // Added tokens by their first byte, longest first (leftmost-longest matching).
  std::array<std::vector<std::pair<std::string_view, std::int32_t>>, 256> added_by_first_byte;
  std::vector<bool> is_special;
  // Ids of short pieces already merged: text repeats its words, and the merge loop is
  // most of the encode time (HF keeps such a cache too). Bounded; shared by threads.
  std::mutex cache_mutex;
  std::unordered_map<std::string, std::vector<std::int32_t>, StringHash, std::equal_to<>> cache;
};

namespace {
constexpr std::size_t kCachedPieceBytes = 64;
constexpr std::size_t kCacheEntries = 1 << 17;
}  // namespace

Tokenizer::Tokenizer(TokenizerConfig config) : config_(std::move(config)), impl_(std::make_unique<Impl>()) {
  const std::string& src = config_.source;
  const auto n = static_cast<std::int64_t>(config_.pieces.size());
  if (n == 0) throw InputError(src, "the vocabulary is empty");
  const auto check_id = [&](std::int64_t id, const std::string& what) {
    if (id < 0 || id >= n) throw InputError(src, fmt::format("{} {} is outside the vocabulary (0..{})", what, id, n - 1));
  };
  impl_->ids.reserve(config_.pieces.size());
  for (std::int64_t i = 0; i < n; ++i) impl_->ids.emplace(config_.pieces[static_cast<std::size_t>(i)], static_cast<std::int32_t>(i));
  impl_->byte_ids.fill(-1);
  for (unsigned b = 0; b < 256; ++b) {
    if (const auto it = impl_->ids.find(fmt::format("<0x{:02X}>", b)); it != impl_->ids.end()) impl_->byte_ids[b] = it->second;
  }
  if (config_.model == MergeModel::Spm && config_.scores.size() != config_.pieces.size()) {
    throw InputError(src, fmt::format("{} scores for {} pieces", config_.scores.size(), config_.pieces.size()));
  }
  impl_->merges.reserve(config_.merges.size());
  for (std::size_t rank = 0; rank < config_.merges.size(); ++rank) {
    const auto& [left, right] = config_.merges[rank];
    const auto l = impl_->ids.find(left), r = impl_->ids.find(right), joined = impl_->ids.find(left + right);
    if (l == impl_->ids.end() || r == impl_->ids.end() || joined == impl_->ids.end()) {
      throw InputError(src, fmt::format("merge {} ('{}' '{}') joins pieces that are not in the vocabulary", rank,
                                        left, right));
    }
    // A pair listed twice keeps its first (best) rank, as HF and llama.cpp do.
    impl_->merges.emplace(pair_key(l->second, r->second), PairMerge{static_cast<double>(rank), joined->second});
  }
  if (config_.unk_id) check_id(*config_.unk_id, "unknown-token id");
  for (const auto id : config_.prefix) check_id(id, "BOS id");
  for (const auto id : config_.suffix) check_id(id, "EOS id");
  impl_->is_special.assign(config_.pieces.size(), false);
  for (const auto id : config_.special) {
    check_id(id, "special token id");
    impl_->is_special[static_cast<std::size_t>(id)] = true;
  }
  for (const auto id : config_.added) {
    check_id(id, "added token id");
    const std::string& content = config_.pieces[static_cast<std::size_t>(id)];
    if (content.empty()) throw InputError(src, fmt::format("added token {} is empty", id));
    impl_->added_by_first_byte[static_cast<unsigned char>(content[0])].emplace_back(content, id);
  }
  for (auto& bucket : impl_->added_by_first_byte) {
    std::stable_sort(bucket.begin(), bucket.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }
  for (const SplitStep& step : config_.pre_split) {
    impl_->splits.push_back(step.kind == SplitStep::Kind::Regex ? std::make_unique<Regex>(step.pattern, src) : nullptr);
  }
}

Tokenizer::~Tokenizer() = default;

std::optional<std::int32_t> Tokenizer::find(std::string_view piece) const {
  const auto it = impl_->ids.find(piece);
  return it == impl_->ids.end() ? std::nullopt : std::optional(it->second);
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text, bool add_special, const std::string& what) const {
  if (!valid_utf8(text)) throw InputError(what, "is not valid UTF-8");
  std::vector<std::int32_t> out;
  if (add_special) out = config_.prefix;
  std::size_t stretch = 0;
  bool first = true;
  for (std::size_t i = 0; i < text.size();) {
    std::int32_t hit = -1;
    std::size_t hit_len = 0;
    for (const auto& [content, id] : impl_->added_by_first_byte[static_cast<unsigned char>(text[i])]) {
      if (text.compare(i, content.size(), content) == 0) {
        hit = id;
        hit_len = content.size();
        break;
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    if (i > stretch) encode_stretch(text.substr(stretch, i - stretch), first, out);
    first = false;
    out.push_back(hit);
    i += hit_len;
    stretch = i;
  }
  if (stretch < text.size()) encode_stretch(text.substr(stretch), first, out);
  if (add_special) out.insert(out.end(), config_.suffix.begin(), config_.suffix.end());
  return out;
}

void Tokenizer::encode_stretch(std::string_view text, bool first, std::vector<std::int32_t>& out) const {
  std::string s(text);
  for (const NormalizeStep& step : config_.normalize) {
    switch (step.kind) {
      case NormalizeStep::Kind::Nfc: s = nfc(s); break;
      case NormalizeStep::Kind::Prepend: if (!s.empty()) s.insert(0, step.to); break;
      case NormalizeStep::Kind::Replace: replace_all(s, step.from, step.to); break;
    }
  }
  if (config_.metaspace) {
    replace_all(s, " ", kMetaSpace);
    if (config_.metaspace_prepend && first && s.compare(0, kMetaSpace.size(), kMetaSpace) != 0) s.insert(0, kMetaSpace);
  }
  std::vector<std::string_view> pieces = {s}, next;
  for (std::size_t k = 0; k < config_.pre_split.size(); ++k) {
    next.clear();
    for (const std::string_view p : pieces) {
      if (impl_->splits[k]) {
        impl_->splits[k]->split(p, next);
        continue;
      }
      // Literal (isolated) or metaspace (each U+2581 starts a new piece).
      const std::string& lit = config_.pre_split[k].kind == SplitStep::Kind::Literal ? config_.pre_split[k].pattern
                                                                                        : std::string(kMetaSpace);
      const bool isolated = config_.pre_split[k].kind == SplitStep::Kind::Literal;
      std::size_t start = 0;
      for (std::size_t hit = p.find(lit); hit != std::string_view::npos && !lit.empty(); hit = p.find(lit, hit + lit.size())) {
        if (isolated) {
          if (hit > start) next.push_back(p.substr(start, hit - start));
          next.push_back(p.substr(hit, lit.size()));
          start = hit + lit.size();
        } else if (hit > start) {
          next.push_back(p.substr(start, hit - start));
          start = hit;
        }
      }
      if (start < p.size()) next.push_back(p.substr(start));
    }
    std::swap(pieces, next);
  }
  std::string mapped;
  for (const std::string_view p : pieces) {
    if (!config_.byte_level) {
      encode_piece(p, out);
      continue;
    }
    mapped.clear();
    for (const char c : p) mapped += byte_to_unicode(static_cast<unsigned char>(c));
    encode_piece(mapped, out);
  }
}

void Tokenizer::encode_piece(std::string_view piece, std::vector<std::int32_t>& out) const {
  if (piece.empty()) return;
  const bool cacheable = piece.size() <= kCachedPieceBytes;
  if (cacheable) {
    const std::lock_guard lock(impl_->cache_mutex);
    if (const auto it = impl_->cache.find(piece); it != impl_->cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const std::size_t first = out.size();
  merge_piece(piece, out);
  if (cacheable) {
    const std::lock_guard lock(impl_->cache_mutex);
    if (impl_->cache.size() < kCacheEntries) {
      impl_->cache.emplace(std::string(piece), std::vector<std::int32_t>(out.begin() + static_cast<long>(first), out.end()));
    }
  }
}

void Tokenizer::merge_piece(std::string_view piece, std::vector<std::int32_t>& out) const {
  if (config_.ignore_merges) {
    if (const auto it = impl_->ids.find(piece); it != impl_->ids.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<Symbol> symbols;
  for (std::size_t i = 0; i < piece.size();) {
    const auto len = std::min(utf8_length(static_cast<unsigned char>(piece[i])), piece.size() - i);
    const auto it = impl_->ids.find(piece.substr(i, len));
    symbols.push_back({static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(len),
                       it == impl_->ids.end() ? -1 : it->second});
    i += len;
  }
  if (config_.model == MergeModel::Bpe) {
    merge_symbols(symbols, [&](const Symbol& l, const Symbol& r) -> std::optional<PairMerge> {
      if (l.id < 0 || r.id < 0) return std::nullopt;
      const auto it = impl_->merges.find(pair_key(l.id, r.id));
      return it == impl_->merges.end() ? std::nullopt : std::optional(it->second);
    });
  } else {
    merge_symbols(symbols, [&](const Symbol& l, const Symbol& r) -> std::optional<PairMerge> {
      const auto it = impl_->ids.find(piece.substr(l.begin, l.len + r.len));
      if (it == impl_->ids.end()) return std::nullopt;
      return PairMerge{-static_cast<double>(config_.scores[static_cast<std::size_t>(it->second)]), it->second};
    });
  }
  bool last_was_unk = false;
  for (const Symbol& s : symbols) {
    if (s.len == 0) continue;
    if (s.id >= 0) {
      out.push_back(s.id);
      last_was_unk = false;
      continue;
    }
    const std::string_view bytes = piece.substr(s.begin, s.len);
    const bool have_bytes = config_.byte_fallback &&
        std::all_of(bytes.begin(), bytes.end(), [&](char c) { return impl_->byte_ids[static_cast<unsigned char>(c)] >= 0; });
    if (have_bytes) {
      for (const char c : bytes) out.push_back(impl_->byte_ids[static_cast<unsigned char>(c)]);
      last_was_unk = false;
    } else if (config_.unk_id) {
      if (!(config_.fuse_unk && last_was_unk)) out.push_back(*config_.unk_id);
      last_was_unk = true;
    }
    // Without byte fallback or an unknown token the character is dropped, as HF does.
  }
}

std::string Tokenizer::decode(const std::vector<std::int32_t>& ids) const {
  std::string text;
  // SentencePiece byte tokens in a row form characters; a run that is not UTF-8 gives
  // one U+FFFD per byte token (HF's ByteFallback decoder).
  std::string run;
  std::size_t run_tokens = 0;
  const auto flush_run = [&] {
    if (valid_utf8(run)) {
      text += run;
    } else {
      for (std::size_t k = 0; k < run_tokens; ++k) text += "\xEF\xBF\xBD";
    }
    run.clear();
    run_tokens = 0;
  };
  for (const std::int32_t id : ids) {
    if (id < 0 || static_cast<std::size_t>(id) >= config_.pieces.size()) {
      throw InputError(config_.source, fmt::format("token id {} is outside the vocabulary (0..{})", id,
                                                   config_.pieces.size() - 1));
    }
    if (impl_->is_special[static_cast<std::size_t>(id)]) continue;
    const std::string& piece = config_.pieces[static_cast<std::size_t>(id)];
    if (config_.byte_level) {
      for (std::size_t i = 0; i < piece.size();) {
        const auto len = std::min(utf8_length(static_cast<unsigned char>(piece[i])), piece.size() - i);
        const std::string_view ch(piece.data() + i, len);
        if (const auto b = unicode_to_byte(ch)) text += static_cast<char>(*b);
        else text += ch;
        i += len;
      }
    } else if (const auto b = byte_token_value(piece)) {
      run += static_cast<char>(*b);
      ++run_tokens;
    } else {
      flush_run();
      std::string part = piece;
      replace_all(part, kMetaSpace, " ");
      text += part;
    }
  }
  flush_run();
  if (config_.strip_leading_space && !text.empty() && text[0] == ' ') text.erase(0, 1);
  // Byte-level pieces may stop inside a character: maximal ill-formed parts become U+FFFD.
  return to_valid_utf8(text);
}

std::string Tokenizer::decode_continuation(const std::vector<std::int32_t>& prompt,
                                           const std::vector<std::int32_t>& generated) const {
  std::vector<std::int32_t> all = prompt;
  all.insert(all.end(), generated.begin(), generated.end());
  const std::string whole = decode(all), head = decode(prompt);
  return whole.compare(0, head.size(), head) == 0 ? whole.substr(head.size()) : decode(generated);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path dir;
  if (fs::is_directory(model, ec)) {
    dir = model;
  } else if (model.filename() == "config.json" || model.extension() == ".safetensors") {
    dir = model.parent_path().empty() ? fs::path(".") : model.parent_path();
  }
  if (!dir.empty()) {
    const fs::path file = dir / "tokenizer.json";
    if (!fs::is_regular_file(file, ec)) return nullptr;
    std::ifstream in(file, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (!in && !in.eof()) throw InputError(file.string(), "cannot be read");
    return tokenizer_from_json(text.str(), file.string());
  }
  const MappedFile mapped(model);
  const GgufContents contents = parse_gguf(mapped.bytes(), model.string());
  if (contents.metadata.count("tokenizer.ggml.model") == 0) return nullptr;
  return tokenizer_from_gguf(contents.metadata, model.string());
}

namespace {

std::vector<std::int32_t> checked_prompt(const Tokenizer& tokenizer, const std::string& text, int vocab) {
  const std::vector<std::int32_t> ids = tokenizer.encode(text, true, "--prompt");
  if (ids.empty()) {
    throw InputError(tokenizer.source(), fmt::format("the prompt \"{}\" encodes to no tokens (and the tokenizer adds "
                                                     "no BOS): give a non-empty prompt or --prompt-ids", text));
  }
  for (const auto id : ids) {
    if (id >= vocab) {
      throw InputError(tokenizer.source(), fmt::format("the prompt encodes to token {} ('{}'), past the model's {} "
                                                       "embedding rows", id, tokenizer.piece(id), vocab));
    }
  }
  return ids;
}

}  // namespace

std::vector<std::int32_t> encode_prompt(const Tokenizer& tokenizer, const std::string& text, int vocab) {
  return with_printable_errors([&] { return checked_prompt(tokenizer, text, vocab); });
}

}  // namespace fusecheck::tok
