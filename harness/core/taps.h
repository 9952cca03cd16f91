// Taps: the named intermediates of a decoder layer (DESIGN.md), in execution order, and
// the host container that carries their values between a path and the metrics.
#pragma once

#include <array>
#include <map>
#include <optional>
#include <string_view>

#include <Eigen/Core>

namespace fusecheck {

enum class Tap {
  attn_norm, q, k, v, q_normed, k_normed, q_rope, k_rope, attn, o_proj, resid_mid,
  mlp_norm, gate, up, act, down, resid_out,
  final_norm, logits,  // after the last layer (Path::head)
};

inline constexpr std::array<Tap, 17> kLayerTaps = {
    Tap::attn_norm, Tap::q, Tap::k, Tap::v, Tap::q_normed, Tap::k_normed, Tap::q_rope,
    Tap::k_rope, Tap::attn, Tap::o_proj, Tap::resid_mid, Tap::mlp_norm, Tap::gate,
    Tap::up, Tap::act, Tap::down, Tap::resid_out};
inline constexpr std::array<Tap, 2> kHeadTaps = {Tap::final_norm, Tap::logits};

std::string_view tap_name(Tap t);
std::optional<Tap> tap_from_name(std::string_view name);

// Values at one tap: rows are tokens (sequence-major: row = b * n_tokens + t), columns
// are the tap's width (hidden, q_width, kv_width, intermediate or vocab). Always double on
// the host so that ref64 keeps its precision; low-precision paths store exactly the
// values they produced (a bf16 value converts to double exactly).
using TapMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using TapSet = std::map<Tap, TapMatrix>;

}  // namespace fusecheck
