#include "harness/core/taps.h"

#include <string_view>

namespace fusecheck {

namespace {
constexpr std::array<std::string_view, 19> kTapNames = {
    "attn_norm", "q",        "k",     "v",    "q_normed", "k_normed", "q_rope",
    "k_rope",    "attn",     "o_proj", "resid_mid", "mlp_norm", "gate", "up",
    "act",       "down",     "resid_out", "final_norm", "logits"};
}

std::string_view tap_name(Tap t) { return kTapNames[static_cast<int>(t)]; }

std::optional<Tap> tap_from_name(std::string_view name) {
  for (std::size_t i = 0; i < kTapNames.size(); ++i) {
    if (kTapNames[i] == name) return static_cast<Tap>(i);
  }
  return std::nullopt;
}

}  // namespace fusecheck
