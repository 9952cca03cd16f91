// The pre-tokenizer regexes of the common byte-level BPE families, one home for each:
// GGUF's `tokenizer.ggml.pre` names select them, and HF's ByteLevel(use_regex) uses GPT-2's.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "harness/tokenizer/tokenizer.h"

namespace fusecheck::tok {

// GPT-2's split (also HF ByteLevel with use_regex: true).
extern const char* const kGpt2Regex;

struct KnownPreTokenizer {
  std::vector<SplitStep> splits;
  bool ignore_merges = false;  // Llama-3: a pre-token already in the vocabulary is kept whole
};

// The splits of a `tokenizer.ggml.pre` value; nullopt for a name fusecheck does not know.
std::optional<KnownPreTokenizer> gguf_pre_tokenizer(const std::string& name);
// The names gguf_pre_tokenizer knows, comma-separated (for error messages).
std::string known_gguf_pre_tokenizers();

}  // namespace fusecheck::tok
