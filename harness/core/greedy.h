// Greedy decoding over any Path: prefill the prompt, then feed each argmax token back one
// at a time through the KV cache. Used by `fusecheck generate`, the oracle test and the
// harness's end-to-end checks, for CPU and GPU paths alike.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "harness/core/path.h"

namespace fusecheck {

// The token of a step whose logits were all NaN; decoding stops after it.
inline constexpr std::int32_t kNoToken = -1;

struct GreedyStep {
  std::int32_t token = 0;   // argmax of the logits (lowest id on ties, as torch.argmax),
                            // kNoToken when every logit is NaN
  double top_logit = 0;
  double margin = 0;        // top logit minus the runner-up: small margins flip first
};

struct GreedyResult {
  std::vector<std::int32_t> ids;  // the generated tokens (prompt excluded); ends early with
                                  // kNoToken if a step's logits were all NaN
  std::vector<GreedyStep> steps;
};

// Called after each forward with the step index and the layer outputs (resid_out of
// every layer, then the head's taps), e.g. to dump hidden states. May be empty.
using GreedyObserver = std::function<void(int step, const std::vector<TapSet>& layers, const TapSet& head)>;

// `steps` forwards (the prompt's prefill is the first) give `steps` new tokens. Throws
// std::invalid_argument for an empty prompt or steps < 1.
GreedyResult greedy_decode(Path& path, int n_layers, std::span<const std::int32_t> prompt,
                           int steps, const GreedyObserver& observer = {});

// greedy_decode without the observer, on the device route when the path offers device
// taps (capabilities().device_taps): each layer's output stays on the device as the next
// layer's input and only the last position's logits row comes back, so a step costs no
// hidden-state round trips (docs/gpu.md). The same tokens as greedy_decode: the same calls
// on the same data, the argmax on the host. Other paths: greedy_decode.
GreedyResult greedy_decode_on_device(Path& path, int n_layers, std::span<const std::int32_t> prompt, int steps);

// Index of the largest value of one row of logits (first on ties); NaN never wins; a row
// of NaN gives kNoToken.
GreedyStep argmax_row(const TapMatrix& logits, Eigen::Index row);

}  // namespace fusecheck
