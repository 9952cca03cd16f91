// Tokenizer: text to token ids and back, for the vocabularies real checkpoints carry:
// a GGUF file's `tokenizer.ggml.*` keys (llama SPM with scores; gpt2-style byte-level BPE
// with merges and the pre-tokenizer its `tokenizer.ggml.pre` names) and a Hugging Face
// tokenizer.json (byte-level BPE as Qwen2/Qwen3/Llama-3/SmolLM ship; SentencePiece-style
// BPE with byte fallback as Llama-2/Mistral ship). Both readers build the same pipeline
// (docs/tokenizers.md): split out added tokens, normalize, pre-tokenize, merge, add
// BOS/EOS as the file says. Every file is untrusted: problems are one-line InputErrors.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace fusecheck {
struct GgufValue;
}

namespace fusecheck::tok {

// One normalizer step, applied in order to each stretch of text between added tokens.
struct NormalizeStep {
  enum class Kind { Nfc, Prepend, Replace } kind = Kind::Nfc;
  std::string from;  // Replace: the literal to replace
  std::string to;    // Prepend: the prefix (only before non-empty text); Replace: replacement
};

// One pre-tokenizer step: splits every piece further; matches and the gaps between them
// both become pieces (HF's "isolated" behaviour).
struct SplitStep {
  enum class Kind { Regex, Literal, MetaspaceSplit } kind = Kind::Regex;
  std::string pattern;  // PCRE2 (UTF, Unicode classes) or a literal
};

enum class MergeModel {
  Bpe,  // merges ranked as listed: the lowest-ranked adjacent pair merges first
  Spm,  // llama.cpp's SentencePiece: the adjacent pair whose joined piece scores highest
};

struct TokenizerConfig {
  std::string source;                 // file named in errors
  std::string kind;                   // printable: "gguf llama (SPM)", "tokenizer.json BPE (byte-level)"
  std::vector<std::string> pieces;    // id -> piece
  MergeModel model = MergeModel::Bpe;
  std::vector<std::pair<std::string, std::string>> merges;  // Bpe, in rank order
  std::vector<float> scores;          // Spm, one per piece
  bool ignore_merges = false;         // Bpe: a whole pre-token in the vocabulary is one token
  bool byte_level = false;            // GPT-2 byte-to-unicode mapping before the merges
  bool byte_fallback = false;         // unknown characters become <0xNN> tokens
  std::optional<std::int32_t> unk_id;
  bool fuse_unk = false;              // consecutive unknown characters give one unk
  std::vector<NormalizeStep> normalize;
  std::vector<SplitStep> pre_split;
  // Metaspace pre-tokenizer (HF): spaces become U+2581 and, when `metaspace_prepend`, the
  // first stretch of text gets one in front.
  bool metaspace = false;
  bool metaspace_prepend = false;
  std::vector<std::int32_t> added;    // ids matched literally in the text before anything else
  std::vector<std::int32_t> special;  // ids that decode to nothing (control tokens)
  std::vector<std::int32_t> prefix;   // BOS as the file says (add_bos_token / template)
  std::vector<std::int32_t> suffix;   // EOS as the file says
  bool strip_leading_space = false;   // decoding drops the one space the encoder prepended
};

class Tokenizer {
 public:
  // Validates the config (every merge's parts and result in the vocabulary, ids in
  // range, regexes compile) and builds the lookup tables. Throws InputError(source, ...).
  explicit Tokenizer(TokenizerConfig config);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Ids of `text` with the file's BOS/EOS when `add_special`. Text that is not valid
  // UTF-8 is an InputError naming `what` (e.g. "--prompt").
  std::vector<std::int32_t> encode(std::string_view text, bool add_special = true,
                                   const std::string& what = "text") const;
  // Text of `ids`, control tokens left out; bytes that form no character become U+FFFD.
  // An id outside the vocabulary is an InputError.
  std::string decode(const std::vector<std::int32_t>& ids) const;
  // Text that `generated` adds after `prompt`: decoded together, so a space the decoder
  // drops at the start of a text and bytes of one character split across the two stay.
  std::string decode_continuation(const std::vector<std::int32_t>& prompt,
                                  const std::vector<std::int32_t>& generated) const;

  const std::string& source() const { return config_.source; }
  const std::string& kind() const { return config_.kind; }
  std::size_t size() const { return config_.pieces.size(); }
  const std::string& piece(std::int32_t id) const { return config_.pieces.at(static_cast<std::size_t>(id)); }
  std::optional<std::int32_t> find(std::string_view piece) const;

 private:
  struct Impl;
  void encode_stretch(std::string_view text, bool first, std::vector<std::int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<std::int32_t>& out) const;  // cached
  void merge_piece(std::string_view piece, std::vector<std::int32_t>& out) const;

  TokenizerConfig config_;
  std::unique_ptr<Impl> impl_;
};

// From a GGUF file's metadata (tokenizer.ggml.model "llama" or "gpt2"). `file` names it.
std::unique_ptr<Tokenizer> tokenizer_from_gguf(const std::map<std::string, GgufValue>& metadata,
                                               const std::string& file);
// From the text of a Hugging Face tokenizer.json. `file` names it.
std::unique_ptr<Tokenizer> tokenizer_from_json(std::string_view text, const std::string& file);

// The tokenizer of a checkpoint: a GGUF file's vocabulary, or tokenizer.json in (or
// beside) a HF checkpoint directory. nullptr when the checkpoint carries none.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model);

// A prompt for generation: the ids of `text` with the file's BOS/EOS (a file that adds
// none, as Qwen2's, gets none). InputError naming the tokenizer file when the text gives
// no token or an id is past `vocab` (the model's embedding rows).
std::vector<std::int32_t> encode_prompt(const Tokenizer& tokenizer, const std::string& text, int vocab);

}  // namespace fusecheck::tok
