// Per-layer recipes (docs/recipes.md, "Per-layer recipes"): a recipe for every layer, written
// BASE[+RECIPE@FIRST[-LAST]]...: BASE for the head and every layer no override names, e.g.
// "fp8-w8a8+fused-v1@0-2" (FP8 everywhere but layers 0-2 in bf16). Only the syntax lives
// here (the scenario reader checks it without knowing the recipes); the emulated path
// resolves the names and checks the layers against the model (reference/recipe.h).
#pragma once

#include <algorithm>
#include <charconv>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>

#include "harness/core/error.h"

namespace fusecheck {

struct LayerRecipe {
  int first = 0, last = 0;  // inclusive
  std::string recipe;
};

struct RecipeMix {
  std::string base;
  std::vector<LayerRecipe> layers;  // sorted by first layer, never overlapping

  bool mixed() const { return !layers.empty(); }
  // The recipe of `layer` (the head: any layer no override names).
  const std::string& at(int layer) const {
    for (const auto& l : layers) {
      if (layer >= l.first && layer <= l.last) return l.recipe;
    }
    return base;
  }
  // The canonical spelling (overrides by first layer), used in path labels.
  std::string text() const {
    std::string s = base;
    for (const auto& l : layers) {
      s += "+" + l.recipe + "@" + std::to_string(l.first);
      if (l.last != l.first) s += "-" + std::to_string(l.last);
    }
    return s;
  }
};

// Layers above this are refused before any model is read (no model has that many).
inline constexpr int kMaxMixLayer = 9999;

namespace detail {
inline bool is_recipe_name(std::string_view s) {
  return !s.empty() && s.size() <= 64 &&
         std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
         });
}

inline int parse_layer(std::string_view s, std::string_view whole) {
  int v = -1;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size() || v < 0 || v > kMaxMixLayer) {
    throw InputError("", fmt::format("recipe mix '{}': layer '{}' is not a number in 0..{}",
                                     whole.substr(0, 200), s.substr(0, 20), kMaxMixLayer));
  }
  return v;
}
}  // namespace detail

// Adds `recipe` for layers first..last; InputError on a bad name, an empty range or an
// overlap with an earlier override.
inline void add_layer_recipe(RecipeMix& mix, int first, int last, const std::string& recipe,
                             std::string_view whole) {
  if (!detail::is_recipe_name(recipe)) {
    throw InputError("", fmt::format("recipe mix '{}': '{}' is not a recipe name", whole.substr(0, 200),
                                     std::string_view(recipe).substr(0, 64)));
  }
  if (first > last) {
    throw InputError("", fmt::format("recipe mix '{}': layers {}-{} are an empty range", whole.substr(0, 200),
                                     first, last));
  }
  for (const auto& l : mix.layers) {
    if (first <= l.last && l.first <= last) {
      throw InputError("", fmt::format("recipe mix '{}': layers {}-{} ({}) overlap layers {}-{} ({})",
                                       whole.substr(0, 200), first, last, recipe, l.first, l.last, l.recipe));
    }
  }
  mix.layers.push_back({first, last, recipe});
  std::sort(mix.layers.begin(), mix.layers.end(),
            [](const LayerRecipe& a, const LayerRecipe& b) { return a.first < b.first; });
}

// Parses "BASE[+RECIPE@FIRST[-LAST]]..."; a plain recipe name is a mix without overrides.
inline RecipeMix parse_recipe_mix(std::string_view text) {
  RecipeMix mix;
  std::size_t pos = text.find('+');
  mix.base = std::string(text.substr(0, pos));
  if (!detail::is_recipe_name(mix.base)) {
    throw InputError("", fmt::format("recipe mix '{}': '{}' is not a recipe name (BASE[+RECIPE@FIRST[-LAST]]...)",
                                     text.substr(0, 200), std::string_view(mix.base).substr(0, 64)));
  }
  while (pos != std::string_view::npos) {
    const std::size_t next = text.find('+', pos + 1);
    const std::string_view item = text.substr(pos + 1, next == std::string_view::npos ? next : next - pos - 1);
    const std::size_t at = item.find('@');
    if (at == std::string_view::npos) {
      throw InputError("", fmt::format("recipe mix '{}': '{}' names no layers (RECIPE@FIRST[-LAST])",
                                       text.substr(0, 200), item.substr(0, 80)));
    }
    const std::string_view range = item.substr(at + 1);
    const std::size_t dash = range.find('-');
    const int first = detail::parse_layer(range.substr(0, dash), text);
    const int last = dash == std::string_view::npos ? first : detail::parse_layer(range.substr(dash + 1), text);
    add_layer_recipe(mix, first, last, std::string(item.substr(0, at)), text);
    pos = next;
  }
  return mix;
}

}  // namespace fusecheck
