// Pre-tokenizer regexes by family (pretokenizers.h), written as the published
// tokenizer.json files of each family give them; tests/tokenizer checks every one
// against HF tokenizers on the same text.
#include "harness/tokenizer/pretokenizers.h"

#include <array>
#include <utility>

namespace fusecheck::tok {

const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

// Llama-3: case-insensitive contractions, letters with one leading non-letter, digits in
// threes, newlines kept with the punctuation before them.
const char* const kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2 (and Qwen3): as Llama-3, but every digit alone.
const char* const kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

SplitStep regex(const char* pattern) { return {SplitStep::Kind::Regex, pattern}; }

}  // namespace

std::optional<KnownPreTokenizer> gguf_pre_tokenizer(const std::string& name) {
  // "default": files converted before llama.cpp wrote the key; GPT-2's split is the
  // byte-level BPE baseline (docs/tokenizers.md says so).
  if (name == "gpt2" || name == "default") return KnownPreTokenizer{{regex(kGpt2Regex)}, false};
  if (name == "llama3" || name == "llama-bpe" || name == "llama-v3") return KnownPreTokenizer{{regex(kLlama3Regex)}, true};
  if (name == "qwen2") return KnownPreTokenizer{{regex(kQwen2Regex)}, false};
  // SmolLM (StarCoder family): every digit alone, then GPT-2's split.
  if (name == "smollm" || name == "starcoder") return KnownPreTokenizer{{regex(R"(\p{N})"), regex(kGpt2Regex)}, false};
  return std::nullopt;
}

std::string known_gguf_pre_tokenizers() { return "gpt2, default, llama3, llama-bpe, llama-v3, qwen2, smollm, starcoder"; }

}  // namespace fusecheck::tok
