// RecipeRounding: the rounding hook of emulated-cpu (see reference/ops.h). Rounds a value
// when the recipe rounds at that point and records every value's overflow headroom, per
// slot (one slot per layer, then one for the head).
#pragma once

#include <array>
#include <map>
#include <string>
#include <vector>

#include "reference/recipe.h"

namespace fusecheck::ref {

class RecipeRounding {
 public:
  static constexpr bool kRounds = true;

  RecipeRounding(const Recipe& recipe, int slots) : recipe_(recipe), acc_(slots) {
    max_finite_ = dtype_max_finite(recipe.format);
    for (auto& slot : acc_) clear_slot(slot, true);
  }

  const Recipe& recipe() const { return recipe_; }
  void select(int slot) { slot_ = slot; }

  float operator()(RoundPoint p, float x) {
    const float r = recipe_.round(x);
    acc_[slot_][static_cast<int>(p)].add(x, r);
    return recipe_.rounds_at(p) ? r : x;
  }
  void measure(RoundPoint p, float x) { acc_[slot_][static_cast<int>(p)].add(x, recipe_.round(x)); }

  // Forgets what was recorded (weights excepted: they are converted once, not per run).
  void clear() {
    for (auto& slot : acc_) clear_slot(slot, false);
  }

  std::map<std::string, Headroom> report(int slot) const {
    std::map<std::string, Headroom> out;
    for (int p = 0; p < kRoundPointCount; ++p) {
      const Headroom& h = acc_.at(slot)[p];
      if (h.n_values > 0) out.emplace(std::string(round_point_name(static_cast<RoundPoint>(p))), h);
    }
    return out;
  }

 private:
  void clear_slot(std::array<Headroom, kRoundPointCount>& slot, bool weights_too) {
    for (int p = 0; p < kRoundPointCount; ++p) {
      if (!weights_too && p == static_cast<int>(RoundPoint::weights)) continue;
      slot[p] = Headroom{};
      slot[p].max_finite = max_finite_;
      slot[p].rounded = recipe_.rounds_at(static_cast<RoundPoint>(p));
    }
  }

  Recipe recipe_;
  double max_finite_ = 0;
  std::vector<std::array<Headroom, kRoundPointCount>> acc_;
  int slot_ = 0;
};

}  // namespace fusecheck::ref
