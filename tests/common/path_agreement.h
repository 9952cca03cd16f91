// What the agreement tests of the bf16 CUDA paths (fused-cuda, flashinfer-cuda) against
// emulated-cpu share: the distance of two bf16 taps and its check against per-tap limits
// (each test keeps its limits and their reasons), the isolated drive of both paths over
// prefill and decode steps, and a run that keeps every tap for a bitwise comparison.
// Header-only: the tests link the path libraries already.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "harness/core/path.h"

namespace fusecheck::test {

// Share of elements more than one bf16 ulp apart (the ulp of `b`'s element), the largest
// distance in those ulps, and relative L2 distance.
struct TapDistance {
  double max_ulp = 0, share_off = 0, rel_l2 = 0;
};
inline TapDistance distance(const TapMatrix& a, const TapMatrix& b) {
  TapDistance d;
  double num = 0, den = 0;
  long off = 0;
  for (Eigen::Index i = 0; i < a.size(); ++i) {
    const double x = a.data()[i], y = b.data()[i];
    num += (x - y) * (x - y);
    den += y * y;
    const double ulps = std::fabs(x - y) / std::ldexp(1.0, std::ilogb(std::max(std::fabs(y), 1e-30)) - 7);
    d.max_ulp = std::max(d.max_ulp, ulps);
    off += !(ulps <= 1.01);
  }
  d.share_off = a.size() > 0 ? static_cast<double>(off) / a.size() : 0;
  d.rel_l2 = den > 0 ? std::sqrt(num / den) : (num > 0 ? 1 : 0);
  return d;
}

// The distances one tap may be from emulated-cpu's: share_off unset leaves it unchecked.
struct TapLimits {
  std::optional<double> share_off;
  double rel_l2 = 0;
};

// Every tap of `got` that `emulated` has too must have its shape and be finite (fatal),
// and lie within `limits(tap)`; at least `min_compared` taps must be compared. `where`
// names the case in failure messages.
inline void expect_taps_within(const TapSet& got, const TapSet& emulated, const std::string& where, int min_compared,
                               const std::function<TapLimits(Tap)>& limits) {
  int compared = 0;
  for (const auto& [tap, m] : got) {
    auto it = emulated.find(tap);
    if (it == emulated.end()) continue;
    ASSERT_EQ(m.rows(), it->second.rows()) << where << " " << tap_name(tap);
    ASSERT_EQ(m.cols(), it->second.cols()) << where << " " << tap_name(tap);
    ASSERT_TRUE(m.allFinite()) << where << " " << tap_name(tap) << " has NaN/Inf";
    const TapDistance d = distance(m, it->second);
    const TapLimits limit = limits(tap);
    if (limit.share_off) {
      EXPECT_LE(d.share_off, *limit.share_off) << where << " " << tap_name(tap);
    }
    EXPECT_LE(d.rel_l2, limit.rel_l2) << where << " " << tap_name(tap);
    ++compared;
  }
  EXPECT_GE(compared, min_compared) << where << ": too few common taps";
}

// Compares the taps of one layer (`prefill`: more than one new token) or of the head
// (`prefill` false); `where` names the case in failure messages.
using TapCheck = std::function<void(const TapSet& got, const TapSet& emulated, bool prefill, const std::string& where)>;

// Sees each layer's taps of `got` after its check: the layer, the batch, the tokens per
// sequence already in the cache before this step (`past`, 0 after a reset), this step's
// new tokens per sequence `n` and the layer's input.
using LayerObserver = std::function<void(int layer, int batch, int past, int n, const TapMatrix& input,
                                         const TapSet& got, const std::string& where)>;

// For each of `batches`: resets both paths to `capacity`, then per step of `steps` (new
// tokens per sequence) embeds random tokens (from `seed`), which must embed identically,
// and checks every layer isolated (both get emulated's input) and the head. `label`
// starts each `where`; `observe`, when given, sees every layer of `got`.
inline void drive_isolated(Path& got, Path& emulated, const ModelSpec& spec, std::initializer_list<int> batches,
                           int capacity, std::initializer_list<int> steps, std::uint64_t seed, const std::string& label,
                           const TapCheck& check, const LayerObserver& observe = {}) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> tok(0, spec.vocab - 1);
  for (const int batch : batches) {
    got.reset(batch, capacity);
    emulated.reset(batch, capacity);
    int past = 0;
    for (int n : steps) {
      std::vector<std::int32_t> ids(batch * n);
      for (auto& t : ids) t = tok(rng);
      const TapMatrix x = emulated.embed(ids);
      ASSERT_TRUE(got.embed(ids) == x) << "embeddings differ";
      TapMatrix h = x;
      for (int l = 0; l < spec.n_layers; ++l) {
        const TapSet g = got.layer(l, h), e = emulated.layer(l, h);
        const std::string where =
            label + " batch " + std::to_string(batch) + " n=" + std::to_string(n) + " layer " + std::to_string(l);
        check(g, e, n > 1, where);
        if (observe) observe(l, batch, past, n, h, g, where);
        h = e.at(Tap::resid_out);
      }
      check(got.head(h), emulated.head(h), false, label + " head n=" + std::to_string(n));
      past += n;
    }
  }
}

// Every tap as the last layer of the last step left it, after `path` ran `steps` (new
// tokens per sequence) of random tokens from seed 21 for `batch` sequences, each layer
// fed its own output.
inline TapSet last_taps_of_run(Path& path, const ModelSpec& spec, int batch, int capacity,
                               std::initializer_list<int> steps) {
  path.reset(batch, capacity);
  TapSet all;
  std::mt19937_64 rng(21);
  std::uniform_int_distribution<int> tok(0, spec.vocab - 1);
  for (int n : steps) {
    std::vector<std::int32_t> ids(batch * n);
    for (auto& t : ids) t = tok(rng);
    TapMatrix h = path.embed(ids);
    for (int l = 0; l < spec.n_layers; ++l) {
      TapSet taps = path.layer(l, h);
      h = taps.at(Tap::resid_out);
      for (auto& [tap, m] : taps) all[tap] = m;
    }
  }
  return all;
}

}  // namespace fusecheck::test
