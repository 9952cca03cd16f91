// Path: one implementation of the decoder that exposes taps (DESIGN.md). The harness
// drives every path the same way, layer by layer, so that it can feed a path either its
// own output (propagated mode) or the reference's input to the layer (isolated mode).
// Paths are created by name through the registry (harness/core/path_registry.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "harness/core/headroom.h"
#include "harness/core/taps.h"

namespace fusecheck {

class Checkpoint;

struct PathOptions {
  std::string recipe;        // emulated-cpu: "hf-bf16", "fused-v1", ...; empty = default
  int device_index = 0;      // CUDA paths
  std::uint64_t seed = 0;    // for anything random a path does (logged by the caller)
};

// A relative perturbation injected at one tap of one layer (perturb mode): the tap's
// values x become x + rel * rms(x) * n with n ~ N(0,1) from `seed`, then the layer goes on.
struct Perturbation {
  int layer = 0;
  Tap tap = Tap::k;
  double relative_size = 1e-3;
  std::uint64_t seed = 0;
};

// One timed op of a layer (GPU paths; CPU paths time whole layers and say so).
struct OpTiming {
  std::string op;            // "attn_norm+qkv", "rope", "attention", ...
  double median_ms = 0;      // median over repetitions
  double p10_ms = 0, p90_ms = 0;
  int repetitions = 0;
  double bytes = 0;          // minimum bytes the op must move (reads + writes)
  double flops = 0;
};

// What invariance mode (harness/run/invariance.h) may vary about how a path runs.
struct ExecutionTraits {
  // KV lengths at which the path's split of the KV cache changes for this batch (split-KV
  // chunk edges); chunked prefills are cut on both sides of each.
  std::vector<int> kv_split_boundaries;
  // Kernel switches the path reads from the environment once per process ("NAME=VALUE"
  // turns one off): they cannot be flipped inside one run, so the report names them.
  std::vector<std::string> switches;
};

struct TimingOptions {
  int warmup = 3;
  int repetitions = 20;
  bool cold_l2 = false;      // flush L2 before each repetition
  bool graph = true;         // capture the layer in a CUDA graph (decode)
};

// What a path can do beyond running layers. The harness asks a path (capabilities())
// instead of casting it to a concrete type: a path that says it cannot is skipped or
// refused with a message; an exception from a path that says it can is a bug.
struct PathCapabilities {
  bool perturbation = false;  // set_perturbation works (reference paths)
  bool headroom = false;      // headroom() reports its recipe's rounding points (emulated paths)
};

class Path {
 public:
  virtual ~Path() = default;
  virtual std::string name() const = 0;          // "ref64-cpu", "fused-cuda", ...
  virtual std::string device() const = 0;        // "cpu" or the GPU's name
  virtual std::vector<Tap> taps() const = 0;     // taps this path exposes (resid_out always)

  // Starts `batch` new sequences with room for `capacity` tokens each; clears KV caches.
  virtual void reset(int batch, int capacity) = 0;
  // Embedding rows for tokens laid out [batch][n] (row = b * n + t).
  virtual TapMatrix embed(std::span<const std::int32_t> tokens) = 0;
  // Runs decoder layer `layer` on `input` ([batch * n x hidden]); the n rows of sequence b
  // take the next n positions of that sequence in this layer's KV cache, which grows by n.
  // Returns the taps it exposes; resid_out is the layer's output.
  virtual TapSet layer(int layer, const TapMatrix& input) = 0;
  // Final norm and lm_head on the last hidden state: taps final_norm and logits.
  virtual TapSet head(const TapMatrix& hidden) = 0;

  // A hint that the caller reads only `taps` (resid_out always) from layer() until told
  // otherwise (nullopt: every tap again), e.g. while greedy decoding. A path may return
  // more; a GPU path skips downloading the rest. The default ignores it.
  virtual void keep_taps(std::optional<std::vector<Tap>> taps) { (void)taps; }
  virtual PathCapabilities capabilities() const { return {}; }
  // Perturb mode: the injection itself; calling it on a path without the perturbation
  // capability is a bug (logic_error).
  virtual void set_perturbation(std::optional<Perturbation> p);
  // Invariance mode: what the path declares about its execution at `batch` sequences of up
  // to `max_kv` tokens. The default declares nothing (no splits, no switches).
  virtual ExecutionTraits execution_traits(int batch, int max_kv) const {
    (void)batch, (void)max_kv;
    return {};
  }
  // Overflow headroom at every rounding point of `layer` (n_layers: the head) since
  // reset(); empty for a path without the headroom capability.
  virtual std::map<std::string, Headroom> headroom(int layer) const;
  // Per-op timing of one layer at the current batch and phase shape: `n_new` new tokens
  // per sequence over a KV cache of `kv_len`. Empty when the path does not time ops.
  virtual std::vector<OpTiming> time_layer(int layer, int n_new, int kv_len,
                                           const TimingOptions& opts);
};

}  // namespace fusecheck
