// bench_tokenizer: encode throughput (MB/s of UTF-8 input, one core) on 1 MB of seeded
// text (English-like words, digits, accented and non-Latin words, emoji, code, runs of
// whitespace) for each kind of vocabulary: the trained byte-level BPEs of
// tests/tokenizer/data (Qwen2, Llama-3, SmolLM, GPT-2 pre-tokenizers; tokenizer.json and
// GGUF), the SentencePiece-style BPE, and stories260K's llama SPM vocabulary when
// $FUSECHECK_MODELS (default ../shared/models) has it. Each tokenizer is validated first:
// decoding its encoding must give the text back, or the benchmark reports an error
// instead of a time. The text's seed is printed.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include <benchmark/benchmark.h>

#include "harness/checkpoint/gguf.h"
#include "harness/checkpoint/mapped_file.h"
#include "harness/tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using fusecheck::tok::Tokenizer;

constexpr std::uint64_t kTextSeed = 20261202;
constexpr std::size_t kTextBytes = 1 << 20;

std::string bench_text() {
  static const char* const words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "ran", "far",
                                      "away", "while", "small", "dog", "barked", "Once", "upon", "time", "there",
                                      "was", "little", "girl", "named", "Lily", "she", "loved", "play", "outside"};
  static const char* const others[] = {"caf\xC3\xA9", "\xD0\x9C\xD0\xBE\xD1\x81\xD0\xBA\xD0\xB2\xD0\xB0",
                                       "\xE6\x9D\xB1\xE4\xBA\xAC", "\xF0\x9F\x9A\x80", "\xF0\x9F\x98\x80",
                                       "for (int i = 0; i < n; ++i) { a[i] += b[i]; }", "x = {'a': [1, 2]}",
                                       "don't", "we'll", "   ", "\n\n", "\t", "12345", "3.14159", ",", ".", "!"};
  std::mt19937_64 rng(kTextSeed);
  std::string text;
  while (text.size() < kTextBytes) {
    const auto r = rng() % 10;
    text += r < 7 ? words[rng() % std::size(words)] : others[rng() % std::size(others)];
    text += rng() % 5 ? " " : "";
  }
  return text;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::unique_ptr<Tokenizer> open(const fs::path& file) {
  if (file.extension() == ".gguf") return fusecheck::tok::load_tokenizer(file);
  return fusecheck::tok::tokenizer_from_json(slurp(file), file.string());
}

void encode(benchmark::State& state, const fs::path& file) {
  static const std::string text = bench_text();
  if (!fs::exists(file)) {
    state.SkipWithError(("absent: " + file.string()).c_str());
    return;
  }
  const auto tokenizer = open(file);
  // Validate, then time: the encoding must be lossless on this text.
  const auto ids = tokenizer->encode(text, false);
  if (tokenizer->decode(ids) != text) {
    state.SkipWithError("decode(encode(text)) differs from the text: not timed");
    return;
  }
  for (auto _ : state) {
    auto out = tokenizer->encode(text, false);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(ids.size());
  state.counters["bytes_per_token"] = static_cast<double>(text.size()) / static_cast<double>(ids.size());
}

fs::path models_dir() {
  const char* env = std::getenv("FUSECHECK_MODELS");
  return env ? fs::path(env) : fs::path(FUSECHECK_SOURCE_DIR) / ".." / "shared" / "models";
}

const int registered = [] {
  std::printf("bench_tokenizer: %zu bytes of text, seed %llu\n", kTextBytes, static_cast<unsigned long long>(kTextSeed));
  const fs::path data = FUSECHECK_TOKENIZER_DATA;
  for (const char* name : {"qwen2", "llama3", "smollm", "gpt2"}) {
    benchmark::RegisterBenchmark(("encode/json/" + std::string(name)).c_str(), encode, data / (std::string(name) + ".tokenizer.json"))
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("encode/gguf/" + std::string(name)).c_str(), encode, data / (std::string(name) + ".vocab.gguf"))
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RegisterBenchmark("encode/json/spm-bpe", encode, data / "spm-bpe.tokenizer.json")->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("encode/gguf/stories260K-spm", encode, models_dir() / "stories260K.gguf")
      ->Unit(benchmark::kMillisecond);
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
