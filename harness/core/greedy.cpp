// Greedy decoding over the Path interface (see greedy.h).
#include "harness/core/greedy.h"

#include <cmath>
#include <limits>
#include <stdexcept>

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

GreedyResult greedy_decode(Path& path, int n_layers, std::span<const std::int32_t> prompt,
                           int steps, const GreedyObserver& observer) {
  if (prompt.empty()) throw std::invalid_argument("greedy: the prompt is empty");
  if (steps < 1) throw std::invalid_argument("greedy: steps must be at least 1");
  path.reset(1, static_cast<int>(prompt.size()) + steps);
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

}  // namespace fusecheck
