// Greedy decoding over the Path interface (see greedy.h).
#include "harness/core/greedy.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace fusecheck {

GreedyStep argmax_row(const TapMatrix& logits, Eigen::Index row) {
  GreedyStep s;
  double best = -std::numeric_limits<double>::infinity();
  double second = -std::numeric_limits<double>::infinity();
  Eigen::Index best_id = -1;
  for (Eigen::Index j = 0; j < logits.cols(); ++j) {
    const double v = logits(row, j);
    if (std::isnan(v)) continue;
    if (best_id < 0 || v > best) {
      second = best;
      best = v;
      best_id = j;
    } else if (v > second) {
      second = v;
    }
  }
  if (best_id < 0) {
    // A path whose logits are all NaN has diverged: report it, do not abort the run.
    s.token = kNoToken;
    s.top_logit = std::numeric_limits<double>::quiet_NaN();
    s.margin = std::numeric_limits<double>::quiet_NaN();
    return s;
  }
  s.token = static_cast<std::int32_t>(best_id);
  s.top_logit = best;
  s.margin = best - second;
  return s;
}

namespace {
// Both decodes' argument checks and reset: one sequence with room for the prompt and steps.
void start_greedy(Path& path, std::span<const std::int32_t> prompt, int steps) {
  if (prompt.empty()) throw std::invalid_argument("greedy: the prompt is empty");
  if (steps < 1) throw std::invalid_argument("greedy: steps must be at least 1");
  path.reset(1, static_cast<int>(prompt.size()) + steps);
}
}  // namespace

GreedyResult greedy_decode(Path& path, int n_layers, std::span<const std::int32_t> prompt,
                           int steps, const GreedyObserver& observer) {
  start_greedy(path, prompt, steps);
  GreedyResult result;
  std::vector<std::int32_t> feed(prompt.begin(), prompt.end());
  std::vector<TapSet> layers(static_cast<std::size_t>(n_layers));
  for (int step = 0; step < steps; ++step) {
    TapMatrix hidden = path.embed(feed);
    for (int l = 0; l < n_layers; ++l) {
      layers[l] = path.layer(l, hidden);
      hidden = layers[l].at(Tap::resid_out);
    }
    // Only the last position's logits choose the next token.
    const TapMatrix last = hidden.bottomRows(1);
    TapSet head = path.head(last);
    const GreedyStep s = argmax_row(head.at(Tap::logits), 0);
    if (observer) observer(step, layers, head);
    result.ids.push_back(s.token);
    result.steps.push_back(s);
    if (s.token == kNoToken) break;  // nothing to feed back
    feed.assign(1, s.token);
  }
  return result;
}

GreedyResult greedy_decode_on_device(Path& path, int n_layers, std::span<const std::int32_t> prompt, int steps) {
  if (!path.capabilities().device_taps) return greedy_decode(path, n_layers, prompt, steps);
  if (n_layers < 1) throw std::invalid_argument("greedy: the model has no layers");
  start_greedy(path, prompt, steps);
  GreedyResult result;
  std::vector<std::int32_t> feed(prompt.begin(), prompt.end());
  for (int step = 0; step < steps; ++step) {
    const TapMatrix embedded = path.embed(feed);
    TapInput in{&embedded, nullptr};
    DeviceTap hidden;
    for (int l = 0; l < n_layers; ++l) {
      const DeviceTapSet taps = path.layer_on_device(l, in);
      auto out = taps.find(Tap::resid_out);
      if (out == taps.end()) throw std::logic_error(path.name() + ": layer " + std::to_string(l) + " returned no resid_out");
      hidden = out->second;
      in = TapInput{nullptr, &hidden};
    }
    if (hidden.rows < 1) throw std::logic_error(path.name() + ": the last layer returned no rows");
    // Only the last position's logits choose the next token: a view of its row.
    DeviceTap last = hidden;
    last.data = static_cast<const char*>(hidden.data) +
                static_cast<std::size_t>(hidden.rows - 1) * static_cast<std::size_t>(hidden.row_stride) * dtype_size(hidden.dtype);
    last.rows = 1;
    const DeviceTapSet head = path.head_on_device(TapInput{nullptr, &last});
    auto logits = head.find(Tap::logits);
    if (logits == head.end()) throw std::logic_error(path.name() + ": the head returned no logits");
    const GreedyStep s = argmax_row(path.to_host(logits->second), 0);
    result.ids.push_back(s.token);
    result.steps.push_back(s);
    if (s.token == kNoToken) break;  // nothing to feed back
    feed.assign(1, s.token);
  }
  return result;
}

}  // namespace fusecheck
