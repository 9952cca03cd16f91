// What the FP8 KV cache commands (kv-age, scale-delivery) share: their options (a model,
// an fp8-kv recipe, a seeded prompt, greedy steps) and the loading of model, recipe and
// prompt. Header-only: two commands of the one binary include it.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "reference/recipe.h"

namespace fusecheck::cli {

struct Fp8KvOptions {
  std::string model;
  std::string recipe = "fp8-kv";
  int prefill = 16;
  int steps = 0;  // each command sets its default
  std::uint64_t seed = 7;
  std::vector<std::int64_t> tokens;  // --tokens: the prompt's ids instead of a seeded draw
};

// MODEL, --recipe, --prefill, --steps (help and range per command), --seed, in that order.
inline void add_fp8_kv_options(CLI::App& sub, Fp8KvOptions& o, const std::string& steps_help,
                               const CLI::Validator& steps_range) {
  sub.add_option("MODEL", o.model, "HF checkpoint directory or .gguf file")->required();
  sub.add_option("--recipe", o.recipe, "fp8-kv, fp8-kv-per-head, fp8-kv-dynamic or fp8-kv-per-head-dynamic");
  CLI::Option* prefill = sub.add_option("--prefill", o.prefill, "seeded prompt tokens")->check(CLI::Range(1, 4096));
  sub.add_option("--steps", o.steps, steps_help)->check(steps_range);
  CLI::Option* seed = sub.add_option("--seed", o.seed, "seed of the prompt tokens");
  sub.add_option("--tokens", o.tokens, "the prompt's token ids, comma-separated (instead of --prefill / --seed)")
      ->delimiter(',')
      ->excludes(prefill)
      ->excludes(seed);
}

struct Fp8KvInputs {
  std::unique_ptr<Checkpoint> ck;
  Recipe recipe;
  std::vector<std::int32_t> prompt;  // o.tokens, or o.prefill tokens drawn from o.seed
};

// What the prompt was, for the commands' first line.
inline std::string prompt_text(const Fp8KvOptions& o) {
  return o.tokens.empty() ? fmt::format("prefill {} (seed {})", o.prefill, o.seed)
                          : fmt::format("prefill {} (the given tokens)", o.tokens.size());
}

// Opens the model and finds the recipe, which must have an FP8 KV cache (InputError if
// not), and draws the prompt.
inline Fp8KvInputs load_fp8_kv_inputs(const Fp8KvOptions& o) {
  Fp8KvInputs in;
  in.ck = Checkpoint::open(o.model);
  in.recipe = find_recipe(o.recipe);
  if (!in.recipe.kv_fp8) {
    throw InputError("", fmt::format("recipe {} has no FP8 KV cache (the fp8-kv recipes do)", o.recipe));
  }
  if (!o.tokens.empty()) {
    if (o.tokens.size() > 4096) throw InputError("", fmt::format("--tokens: {} ids (at most 4096)", o.tokens.size()));
    for (std::size_t i = 0; i < o.tokens.size(); ++i) {
      if (o.tokens[i] < 0 || o.tokens[i] >= in.ck->spec().vocab) {
        throw InputError("", fmt::format("--tokens: id {} at place {} is outside the vocabulary (0 to {})", o.tokens[i],
                                         i, in.ck->spec().vocab - 1));
      }
      in.prompt.push_back(static_cast<std::int32_t>(o.tokens[i]));
    }
    return in;
  }
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<std::int32_t> id(0, in.ck->spec().vocab - 1);
  in.prompt.resize(static_cast<std::size_t>(o.prefill));
  for (auto& t : in.prompt) t = id(rng);
  return in;
}

}  // namespace fusecheck::cli
