// Sizes of a run checked against the model and the machine before anything is allocated:
// tokens per sequence (and greedy steps) against the model's context length, and an
// estimate of the memory the run's path instances need against what the host (and, on
// cuda, the device) has. A scenario with batch 1e9 or prefill 5000 on a 4096-token model
// is refused in milliseconds with the limit and the estimate, instead of ending in
// std::bad_alloc after gigabytes or running silently past the context.
#pragma once

#include <cstdint>
#include <string>

#include "harness/checkpoint/profiles.h"
#include "harness/core/model_spec.h"
#include "harness/run/scenario.h"

namespace fusecheck::run {

// Bytes the run may use; 0: unknown, not checked.
struct MemoryLimits {
  std::uint64_t host_bytes = 0;
  std::string host_source;    // where the figure comes from, for the message
  std::uint64_t device_bytes = 0;
  std::string device_source;
};

// MemAvailable (/proc/meminfo), lowered to what the cgroup still allows when it sets a
// limit (memory.max - memory.current, cgroup v2).
MemoryLimits host_memory_limits();

// Peak bytes the run's path instances hold at once: KV caches, hidden states, one layer's
// taps (as doubles on the host), attention scores and logits; on cuda also the device
// copies of the weights. Weights converted on the host are not counted (they do not grow
// with the scenario's sizes and stay under the reference cache budget).
struct MemoryEstimate {
  std::uint64_t host_bytes = 0;
  std::uint64_t device_bytes = 0;
  int instances = 0;  // path instances (reference, ref64 pair, each path per mode, perturbed)
};
MemoryEstimate estimate_run_memory(const Scenario& sc, const ModelSpec& spec, const std::string& device,
                                   bool ref64);

// The FP64 path of the noise floor (`reference: {ref64: true}`, --ref64) on `device`:
// ref64-cuda on cuda, ref64-cpu (the CPU oracle) otherwise.
std::string ref64_path_for(const std::string& device);

// The shape a synthetic profile will have, so that sizes are checked before minutes of
// writing a checkpoint.
ModelSpec profile_shape(const SynthProfile& profile, int layers);

// Throws InputError naming the scenario file, the key (and its line), the limit and the
// estimate. `model` names the model in messages ("qwen3-tiny", a path).
void check_run_size(const Scenario& sc, const ModelSpec& spec, const std::string& model,
                    const std::string& device, bool ref64, const MemoryLimits& limits);

// "1.5 GiB": bytes in binary units for messages.
std::string format_bytes(std::uint64_t bytes);

}  // namespace fusecheck::run
