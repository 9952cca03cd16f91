// Size checks of a run against the model's context and the machine's memory (see
// run_limits.h).
#include "harness/run/run_limits.h"

#include <algorithm>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/core.h>

#include "harness/core/error.h"

namespace fusecheck::run {

namespace {

// A number from a one-line file such as /sys/fs/cgroup/memory.max; nullopt for "max",
// a missing file or anything else.
std::optional<std::uint64_t> read_number_file(const std::string& file) {
  std::ifstream in(file);
  std::uint64_t v = 0;
  if (in >> v) return v;
  return std::nullopt;
}

// Doubles: a scenario of 1e9 x 1e9 tokens must not overflow the estimate.
struct Bytes {
  double host = 0, device = 0;
};

bool runs_on_device(const std::string& name, const std::string& device) {
  return device == "cuda" && name.size() > 5 && name.compare(name.size() - 5, 5, "-cuda") == 0;
}

}  // namespace

std::string ref64_path_for(const std::string& device) { return device == "cuda" ? "ref64-cuda" : "ref64-cpu"; }

std::string format_bytes(std::uint64_t bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) v /= 1024, ++u;
  return u == 0 ? fmt::format("{} bytes", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

MemoryLimits host_memory_limits() {
  MemoryLimits m;
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    std::istringstream fields(line);
    std::string name;
    std::uint64_t kib = 0;
    if (fields >> name >> kib && name == "MemAvailable:") {
      m.host_bytes = kib * 1024;
      m.host_source = "MemAvailable in /proc/meminfo";
    }
  }
  const auto max = read_number_file("/sys/fs/cgroup/memory.max");
  const auto used = read_number_file("/sys/fs/cgroup/memory.current");
  if (max && used) {
    const std::uint64_t left = *max > *used ? *max - *used : 0;
    if (m.host_bytes == 0 || left < m.host_bytes) {
      m.host_bytes = left;
      m.host_source = "left under the cgroup's memory.max";
    }
  }
  return m;
}

ModelSpec profile_shape(const SynthProfile& p, int layers) {
  ModelSpec s;
  s.architecture = p.model_type;
  s.n_layers = layers;
  s.hidden = p.hidden;
  s.n_heads = p.heads;
  s.n_kv_heads = p.kv_heads;
  s.head_dim = p.head_dim;
  s.intermediate = p.intermediate;
  s.vocab = p.vocab;
  s.max_position = p.max_position;
  s.tied_embeddings = p.tied;
  return s;
}

MemoryEstimate estimate_run_memory(const Scenario& sc, const ModelSpec& spec, const std::string& device,
                                   bool ref64) {
  const double batch = sc.batch;
  const double per_seq = sc.phase.tokens_per_sequence();
  const bool decode = sc.phase.kind == Phase::Decode;
  const double chunk_rows = batch * sc.phase.prefill_len;  // the largest call: the (kv) prefill
  const double measured_rows = decode ? batch * sc.phase.decode_steps : chunk_rows;
  const double L = spec.n_layers, h = spec.hidden, qw = spec.q_width(), kw = spec.kv_width();
  const double I = spec.intermediate, vocab = spec.vocab;
  // The 17 layer taps: attn_norm, o_proj, resid_mid, mlp_norm, down, resid_out are hidden
  // wide; q, q_normed, q_rope, attn q wide; k, v, k_normed, k_rope kv wide; gate, up, act.
  const double tap_width = 6 * h + 4 * qw + 4 * kw + 3 * I;

  Bytes total;
  int instances = 0;
  // One instance of a path: `kv_bytes` per cached value where its KV cache lives.
  auto add = [&](const std::string& name, double kv_bytes) {
    ++instances;
    const bool on_device = runs_on_device(name, device);
    const double kv = L * std::max(batch * per_seq, per_seq + sc.greedy_steps) * kw * 2 * kv_bytes;
    const double scores = sc.phase.prefill_len * per_seq * 8.0;  // one head of one sequence
    (on_device ? total.device : total.host) += kv + scores;
    // Taps and logits on the device: FP64 for ref64-cuda, FP32 or narrower for the others.
    const double act_bytes = name.rfind("ref64-", 0) == 0 ? 8 : 4;
    if (on_device) total.device += (chunk_rows * tap_width + measured_rows * vocab) * act_bytes;
    // On the host as doubles: every chunk's hidden state in and out, the current layer's
    // taps (a call's and the measured ones), the final norm and logits of measured rows.
    total.host += (2 * batch * per_seq * h + (chunk_rows + measured_rows) * tap_width +
                   measured_rows * (h + vocab)) * 8;
  };
  // Bytes per cached K or V value: FP64 for ref64, bf16 for the low-precision CUDA paths.
  auto kv_bytes_of = [&](const std::string& name) {
    if (name.rfind("ref64-", 0) == 0) return 8.0;
    return runs_on_device(name, device) && name != "ref32-cuda" ? 2.0 : 4.0;
  };

  const std::string reference = sc.reference == "auto" ? (device == "cuda" ? "ref32-cuda" : "ref32-cpu") : sc.reference;
  add(reference, kv_bytes_of(reference));
  std::set<std::string> device_paths;
  if (ref64 || sc.ref64) {
    const std::string r64 = ref64_path_for(device);
    add(r64, 8);
    add(r64, 8);
    if (runs_on_device(r64, device)) device_paths.insert(r64);
  }
  if (runs_on_device(reference, device)) device_paths.insert(reference);
  for (const auto& p : sc.paths) {
    const int modes = int(sc.modes.isolated) + int(sc.modes.propagated);
    for (int m = 0; m < modes; ++m) add(p.name, kv_bytes_of(p.name));
    if (runs_on_device(p.name, device)) device_paths.insert(p.name);
  }
  if (sc.modes.perturb) add(reference, kv_bytes_of(reference));
  // On the device, each CUDA path keeps one copy of the weights (shared by its instances):
  // FP32 for ref32-cuda and ref64-cuda (exact for every stored format but F64), bf16 for
  // the others. Each ref64-cuda instance widens one layer's matrices (or a slice of at
  // least 16M values of lm_head) to FP64 in a scratch of its own.
  const double layer_params = 2 * h * qw + 2 * h * kw + 3 * h * I;
  const double params = L * layer_params + vocab * h * (spec.tied_embeddings ? 1 : 2);
  for (const auto& name : device_paths) {
    total.device += params * (name == "ref32-cuda" || name == "ref64-cuda" ? 4 : 2);
    if (name == "ref64-cuda") total.device += 2 * std::max(layer_params, std::min(vocab * h, 16777216.0)) * 8;
  }

  auto clamp = [](double v) { return v >= 1.8e19 ? UINT64_MAX : static_cast<std::uint64_t>(v); };
  return {clamp(total.host), clamp(total.device), instances};
}

namespace {

// Invariance mode's batch check holds every instance of one path at once: the needle
// alone and each batch at each place (docs/invariance.md). Memory grows with sequences,
// so they are estimated as one propagated run of that path with all of them in a batch.
void check_invariance_size(const Scenario& sc, const ModelSpec& spec, const std::string& device,
                           const MemoryLimits& limits) {
  Scenario largest = sc;
  largest.batch = 1;
  for (int b : sc.modes.invariance->batch_sizes) largest.batch += b * static_cast<int>(std::set<int>{0, b / 2, b - 1}.size());
  largest.batch = std::max(largest.batch, sc.batch);
  largest.modes = ModeSpec{false, true, std::nullopt, std::nullopt};
  largest.ref64 = false;
  largest.greedy_steps = 0;
  for (const auto& p : sc.paths) {
    largest.paths = {p};
    largest.reference = p.name;
    const MemoryEstimate need = estimate_run_memory(largest, spec, device, false);
    const std::string what =
        fmt::format("invariance: {} with the batch check's {} sequences at once ({} tokens each)", p.label(),
                    largest.batch, sc.phase.tokens_per_sequence());
    if (limits.host_bytes > 0 && need.host_bytes > limits.host_bytes) {
      throw InputError(sc.where("invariance.batch_sizes"),
                       fmt::format("{} needs about {} of host memory; {} is available ({})", what,
                                   format_bytes(need.host_bytes), format_bytes(limits.host_bytes), limits.host_source));
    }
    if (limits.device_bytes > 0 && need.device_bytes > limits.device_bytes) {
      throw InputError(sc.where("invariance.batch_sizes"),
                       fmt::format("{} needs about {} of device memory; the device has {} ({})", what,
                                   format_bytes(need.device_bytes), format_bytes(limits.device_bytes),
                                   limits.device_source));
    }
  }
}

}  // namespace

void check_run_size(const Scenario& sc, const ModelSpec& spec, const std::string& model, const std::string& device,
                    bool ref64, const MemoryLimits& limits) {
  const long long per_seq = sc.phase.tokens_per_sequence();
  const std::string phase_key = sc.phase.kind == Phase::Prefill ? "phase.prefill" : "phase.decode.kv_len";
  const std::string phase_text =
      sc.phase.kind == Phase::Prefill
          ? fmt::format("prefill {}", sc.phase.prefill_len)
          : fmt::format("kv_len {} + {} decode steps", sc.phase.prefill_len, sc.phase.decode_steps);
  if (spec.max_position > 0) {
    if (per_seq > spec.max_position) {
      throw InputError(sc.where(phase_key), fmt::format("{} tokens per sequence ({}) are past the context length "
                                                        "{} of {}", per_seq, phase_text, spec.max_position, model));
    }
    if (per_seq + sc.greedy_steps > spec.max_position) {
      throw InputError(sc.where("end_to_end.greedy_steps"),
                       fmt::format("{} greedy steps after {} tokens make {}, past the context length {} of {}",
                                   sc.greedy_steps, per_seq, per_seq + sc.greedy_steps, spec.max_position, model));
    }
  }
  if (sc.modes.perturb && sc.modes.perturb->layer >= spec.n_layers) {
    throw InputError(sc.where("modes.perturb.layer"), fmt::format("perturb layer {} is past the model's {} layers",
                                                                  sc.modes.perturb->layer, spec.n_layers));
  }
  const MemoryEstimate need = estimate_run_memory(sc, spec, device, ref64);
  const std::string what = fmt::format("{} sequences x {} ({} path instances; KV caches, hidden states, taps and "
                                       "logits, weights not counted)", sc.batch, phase_text, need.instances);
  const std::string key = sc.batch > 1 ? "batch" : phase_key;
  if (limits.host_bytes > 0 && need.host_bytes > limits.host_bytes) {
    throw InputError(sc.where(key), fmt::format("{} needs about {} of host memory; {} is available ({})", what,
                                                format_bytes(need.host_bytes), format_bytes(limits.host_bytes),
                                                limits.host_source));
  }
  if (limits.device_bytes > 0 && need.device_bytes > limits.device_bytes) {
    throw InputError(sc.where(key), fmt::format("{} needs about {} of device memory; the device has {} ({})", what,
                                                format_bytes(need.device_bytes), format_bytes(limits.device_bytes),
                                                limits.device_source));
  }
  if (sc.modes.invariance) check_invariance_size(sc, spec, device, limits);
}

}  // namespace fusecheck::run
