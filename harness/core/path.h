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

#include "harness/core/dtype.h"
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

// A tap left in device memory (device taps, docs/gpu.md "Tap metrics on the device"):
// [rows x cols] in the path's own dtype, row r at data + r * row_stride elements. Valid
// until the next call on the path that returned it. `domain` names the code that can read
// it (a plug-in): two taps of one domain and device can be compared by either's path.
struct DeviceTap {
  const void* data = nullptr;
  DType dtype = DType::F32;
  std::int64_t rows = 0, cols = 0, row_stride = 0;
  int device = 0;
  const void* domain = nullptr;
};
using DeviceTapSet = std::map<Tap, DeviceTap>;

// Where a path's device taps live: the code that reads them (a plug-in) and the device.
// Paths of one domain can take each other's device taps as input and measure them.
struct DeviceDomain {
  const void* code = nullptr;  // null: no device taps
  int device = -1;
  bool operator==(const DeviceDomain&) const = default;
};

// The input of a layer or head on the device route: host rows or a device tap (exactly one).
struct TapInput {
  const TapMatrix* host = nullptr;
  const DeviceTap* device = nullptr;
  std::int64_t rows() const { return host ? host->rows() : device->rows; }
  std::int64_t cols() const { return host ? host->cols() : device->cols; }
};

// The metrics of a (reference, path) pair of device taps, defined as run::compute_metrics
// defines them (the same field names), plus the plain relative L2 (relative_l2: no element
// skipped) of path against reference and, given an FP64 truth, of both against it.
struct DeviceTapSummary {
  double max_abs, max_rel, rel_l2, cosine, ulp_p50, ulp_p99, ulp_max, frac_outside;
  double nan_count, inf_count, ref_nonfinite, ref_norm, headroom, overflow_count, saturation_count;
  double plain_rel_l2, truth_rel_l2_path, truth_rel_l2_ref;
};

// Per position of two logits taps: what run::next_token_agreement computes per position.
struct DeviceNextToken {
  std::vector<double> kl, ref_margin;
  std::vector<int> top1_match;
};

// What a path can do beyond running layers. The harness asks a path (capabilities())
// instead of casting it to a concrete type: a path that says it cannot is skipped or
// refused with a message; an exception from a path that says it can is a bug.
struct PathCapabilities {
  bool perturbation = false;  // set_perturbation works (reference paths)
  bool headroom = false;      // headroom() reports its recipe's rounding points (emulated paths)
  bool device_taps = false;   // layer_on_device / head_on_device and the device metrics work
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

  // Device taps (capabilities().device_taps; on any other path these are a bug, logic_error).
  // layer() and head() again, with taps left on the device; the input may be host rows or
  // a device tap on this path's device (its own resid_out of the previous call included).
  // Calls of layer()/head() and of these may alternate; each call invalidates the taps of
  // the last.
  virtual DeviceDomain device_domain() const { return {}; }
  virtual DeviceTapSet layer_on_device(int layer, const TapInput& input);
  virtual DeviceTapSet head_on_device(const TapInput& hidden);
  // A device tap of this path's domain as host rows (F64).
  virtual TapMatrix to_host(const DeviceTap& tap);
  // Metrics of two device taps of this path's domain on one device; `truth` optional.
  // `dtype`, atol and rtol as compute_metrics takes them.
  virtual DeviceTapSummary device_metrics(const DeviceTap& ref, const DeviceTap& path, const DeviceTap* truth,
                                          DType dtype, double atol, double rtol);
  virtual DeviceNextToken device_next_token(const DeviceTap& ref_logits, const DeviceTap& path_logits);
};

}  // namespace fusecheck
