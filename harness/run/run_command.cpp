// The whole `fusecheck run` pipeline (see run_command.h).
#include "harness/run/run_command.h"

#include <unistd.h>

#include <Eigen/Core>
#include <H5public.h>
#include <fmt/core.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>

#include "harness/check/check.h"
#include "harness/check/fallback.h"
#include "harness/check/report.h"
#include "harness/checkpoint/synth.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "harness/core/hash.h"
#include "harness/core/path_registry.h"
#include "harness/core/untrusted.h"
#include "harness/core/version.h"
#include "harness/paths/plugin_loader.h"
#include "harness/run/crosscheck.h"
#include "harness/run/host_memory.h"
#include "harness/run/kv_age_mode.h"
#include "harness/run/scale_delivery_mode.h"
#include "harness/run/run_limits.h"
#include "harness/run/run_output.h"
#include "harness/run/run_writer.h"
#include "harness/run/summary.h"
#include "harness/tokenizer/tokenizer.h"

namespace fusecheck::run {

namespace {

std::string utc_now(const char* format) {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

std::string shell_join(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    const bool plain = !a.empty() && a.find_first_not_of(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,+") == std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string synth_options_text(const SynthModel& m) {
  std::string s = fmt::format("layers={};seed={};dtype={}", m.layers ? std::to_string(*m.layers) : "default",
                              m.seed, m.dtype);
  for (const auto& [k, v] : m.overrides) s += fmt::format(";{}={}", k, v);
  return s;
}

double parse_number(const std::string& where, const std::string& text) {
  try {
    std::size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw InputError(where, "expected a number, got '" + text + "'");
}

int parse_int(const std::string& where, const std::string& text) {
  const double v = parse_number(where, text);
  if (v != static_cast<int>(v)) throw InputError(where, "expected an integer, got '" + text + "'");
  return static_cast<int>(v);
}

// Scenario `model.synth` -> the synth writer's options; every override key is checked.
SynthOptions synth_options(const Scenario& sc) {
  const SynthModel& m = *sc.model.synth;
  SynthOptions o;
  o.seed = m.seed;
  o.layers = m.layers;
  o.dtype = m.dtype == "f32" ? DType::F32 : (m.dtype == "f16" ? DType::F16 : DType::BF16);

  struct NormFamily {
    const char* prefix;
    NormOverride* target;
  };
  const NormFamily families[] = {{"k_norm", &o.k_norm}, {"q_norm", &o.q_norm},
                                 {"attn_norm", &o.attn_norm}, {"final_norm", &o.final_norm}};
  for (const auto& [key, value] : m.overrides) {
    const std::string at = sc.where("model.synth.overrides." + key);
    bool done = false;
    for (const auto& f : families) {
      const std::string p = f.prefix;
      if (key == p + "_max") f.target->max = parse_number(at, value);
      else if (key == p + "_outlier_layers") f.target->outlier_layers = parse_int(at, value);
      else if (key == p + "_outlier_channels") f.target->outlier_channels = parse_int(at, value);
      else if (key == p + "_outlier_position") set_outlier_position(*f.target, value, at);
      else continue;
      done = true;
    }
    if (done) continue;
    if (key == "massive_activation") o.massive_activation = value == "true" || value == "1";
    else if (key == "massive_layer") o.massive_layer = parse_int(at, value);
    else if (key == "massive_channel") o.massive_channel = parse_int(at, value);
    else if (key == "massive_neuron") o.massive_neuron = parse_int(at, value);
    else if (key == "massive_value") o.massive_value = parse_number(at, value);
    else if (key == "massive_gain") o.massive_gain = parse_number(at, value);
    else if (key == "heads") o.shape.heads = parse_int(at, value);
    else if (key == "kv_heads") o.shape.kv_heads = parse_int(at, value);
    else if (key == "head_dim") o.shape.head_dim = parse_int(at, value);
    else {
      throw InputError(at, "unknown override (k_norm_max, k_norm_outlier_layers, k_norm_outlier_channels, "
                           "k_norm_outlier_position, the same for q_norm, attn_norm, final_norm; massive_activation, "
                           "massive_layer, massive_channel, massive_neuron, massive_value, massive_gain; heads, "
                           "kv_heads, head_dim)");
    }
  }
  return o;
}

// Opens the scenario's checkpoint, writing a synthetic one into the cache first if
// needed (place_synthetic_checkpoint: never half-written), once its sizes are checked.
std::filesystem::path prepare_model(const Scenario& sc, const std::filesystem::path& cache_root,
                                    const std::function<void(const ModelSpec&, const std::string&)>& check_sizes) {
  if (!sc.model.synth) {
    std::error_code ec;
    if (!std::filesystem::exists(sc.model.path, ec)) {
      throw InputError(sc.where("model.path"), ec ? "cannot open " + printable(sc.model.path.string(), 200) + ": " + ec.message()
                                                  : "no such file or folder: " + printable(sc.model.path.string(), 200));
    }
    return sc.model.path;
  }
  const SynthModel& m = *sc.model.synth;
  const auto names = synth_profile_names();
  if (std::find(names.begin(), names.end(), m.profile) == names.end()) {
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    throw InputError(sc.where("model.synth.profile"), "unknown profile '" + printable(m.profile, 80) + "' (known: " + known + ")");
  }
  const SynthOptions options = synth_options(sc);
  const SynthProfile& profile = synth_profile(m.profile);
  check_sizes(profile_shape(profile, m.layers.value_or(profile.layers)), "synthetic profile " + m.profile);
  const auto dir = synth_cache_dir(m, cache_root);
  place_synthetic_checkpoint(m.profile, options, dir);
  return dir;
}

std::string default_device() { return gpu_driver_present() && cuda_device_count() > 0 ? "cuda" : "cpu"; }

MemoryLimits memory_limits(const std::string& device) {
  MemoryLimits limits = host_memory_limits();
  if (device == "cuda" && cuda_device_count() > 0) {
    const DeviceDescription d = describe_cuda_device(0, /*measure_bandwidth=*/false);
    limits.device_bytes = d.global_mem_bytes;
    limits.device_source = d.name;
  }
  return limits;
}

std::string library_versions() {
  std::string s = fmt::format("eigen {}.{}.{}; hdf5 {}.{}.{}; fmt {}; compiler {}", EIGEN_WORLD_VERSION,
                              EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION, H5_VERS_MAJOR, H5_VERS_MINOR,
                              H5_VERS_RELEASE, FMT_VERSION, __VERSION__);
  return s;
}

// The model's tokenizer, for a text prompt and for showing greedy tokens as text.
struct TextTokens {
  std::unique_ptr<tok::Tokenizer> tokenizer;  // null when the model carries none
  std::string note;                           // why there is no text, when a tokenizer failed to load
  // What greedy decoding added after the first sequence's prompt.
  std::string text(const std::vector<std::int32_t>& prompt, const std::vector<std::int32_t>& ids) const {
    std::vector<std::int32_t> real;
    for (const auto id : ids) {
      if (id >= 0) real.push_back(id);  // kNoToken: every logit was NaN
    }
    return tokenizer->decode_continuation(prompt, real);
  }
};

// Encodes `tokens.prompt` into `sc.tokens.ids` (one copy per sequence); it must give the
// tokens the phase needs. Without a prompt the tokenizer is optional: a vocabulary that
// does not load costs the run its greedy text, not its numbers.
TextTokens resolve_prompt(Scenario& sc, const std::filesystem::path& model, int vocab) {
  TextTokens t;
  if (!sc.tokens.prompt) {
    try {
      t.tokenizer = tok::load_tokenizer(model);
    } catch (const InputError& e) {
      t.note = std::string("no greedy text: ") + e.what();
    }
    return t;
  }
  t.tokenizer = tok::load_tokenizer(model);
  if (!t.tokenizer) {
    throw InputError(sc.file.string() + ": tokens.prompt",
                     fmt::format("{} has no tokenizer (tokenizer.json or a GGUF vocabulary): give tokens.ids", model.string()));
  }
  const auto ids = tok::encode_prompt(*t.tokenizer, *sc.tokens.prompt, vocab);
  const int need = sc.phase.tokens_per_sequence();
  if (static_cast<int>(ids.size()) != need) {
    throw InputError(sc.file.string() + ": tokens.prompt",
                     fmt::format("encodes to {} tokens (BOS included) but the phase needs {}", ids.size(), need));
  }
  sc.tokens.ids.assign(static_cast<std::size_t>(sc.batch), ids);
  return t;
}

}  // namespace

std::string cuda_unusable_reason() {
  if (cuda_device_count() > 0) return "";
  return no_cuda_device_reason();
}

std::filesystem::path synth_cache_dir(const SynthModel& synth, const std::filesystem::path& cache_root) {
  // The build's sha is part of the key: a changed generator must not reuse old files.
  const std::uint64_t h = fnv1a64(synth_options_text(synth) + ";" + git_sha());
  return cache_root / fmt::format("{}-{:016x}", synth.profile, h);
}

std::vector<std::vector<std::int32_t>> scenario_tokens(const Scenario& sc, int vocab) {
  const int n = sc.phase.tokens_per_sequence();
  if (!sc.tokens.ids.empty()) {
    for (const auto& seq : sc.tokens.ids) {
      for (auto id : seq) {
        if (id >= vocab) {
          throw InputError(sc.where("tokens.ids"),
                           fmt::format("token id {} is past the model's vocabulary of {}", id, vocab));
        }
      }
    }
    if (sc.tokens.ids.size() == 1) return std::vector(sc.batch, sc.tokens.ids.front());  // one list for all
    return sc.tokens.ids;
  }
  std::mt19937_64 rng(sc.seeds.tokens);
  std::vector<std::vector<std::int32_t>> ids(sc.batch, std::vector<std::int32_t>(n));
  for (auto& seq : ids) {
    for (auto& id : seq) id = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(vocab));
  }
  return ids;
}

std::vector<PathSlot> plan_paths(const Scenario& sc, const std::string& device, bool use_fused,
                                 std::vector<std::string>& notes) {
  std::vector<PathSlot> slots;
  // fused-cuda and its variants (batch-invariant, fp8-kv*): one fallback; on the CPU the
  // emulated recipe each is registered with (docs/recipes.md).
  auto fused_cuda = [](const std::string& name) { return name == "fused-cuda" || name.rfind("fused-cuda:", 0) == 0; };
  for (const auto& req : sc.paths) {
    PathSlot s{req, req.name, req.recipe, req.role, DType::BF16, ""};
    if (device == "cpu") {
      // The emulated recipes are the CUDA paths' arithmetic (docs/recipes.md).
      if (req.name == "standard-cuda") s.name = "emulated-cpu", s.recipe = "hf-bf16";
      if (fused_cuda(req.name)) {
        const PathInfo* info = find_path(req.name);
        s.name = "emulated-cpu", s.recipe = info && !info->recipe.empty() ? info->recipe : "fused-v1";
      }
      if (req.name == "ref32-cuda") s.name = "ref32-cpu";
      if (s.label() != req.label()) {
        s.note = "--device cpu: " + req.label() + " -> " + s.label();
        notes.push_back(s.note);
      }
    }
    if (!use_fused && s.role == "fused") {
      const std::string before = s.label();
      if (fused_cuda(s.name)) {
        s.name = "standard-cuda";
      } else if (s.name == "emulated-cpu") {
        s.recipe = s.recipe.find("fp16") != std::string::npos ? "hf-fp16" : "hf-bf16";
      }
      s.role = "standard";
      s.note += (s.note.empty() ? "" : "; ") + std::string("fallback: ") + before + " -> " + s.label();
      notes.push_back("fallback: " + before + " -> " + s.label());
    }
    s.dtype = path_dtype(s.name, s.recipe);
    const bool duplicate = std::any_of(slots.begin(), slots.end(), [&](const PathSlot& o) { return o.label() == s.label(); });
    if (duplicate) {
      notes.push_back(s.label() + " already runs; not run twice");
      continue;
    }
    slots.push_back(s);
  }
  return slots;
}

namespace {

// Invariance mode on every planned path: the needle is the first sequence; its
// neighbours are seeded random ids (seeds.tokens + 1), one per place in the largest batch.
InvarianceResult run_invariance_mode(const Scenario& sc, const std::vector<std::vector<std::int32_t>>& tokens,
                                     const ModelSpec& spec, const std::vector<PathSlot>& slots, const PathMaker& make) {
  InvarianceResult out;
  out.spec = *sc.modes.invariance;
  out.neighbour_seed = sc.seeds.tokens + 1;
  InvarianceInput in;
  in.n_layers = spec.n_layers;
  in.needle = tokens.front();
  in.batch = sc.batch;
  in.spec = out.spec;
  const int n = static_cast<int>(in.needle.size());
  out.n_tokens = n;
  if (in.spec.kv_chunks.empty()) in.spec.kv_chunks = {std::max(1, n / 3), std::max(1, n / 2)};
  out.spec.kv_chunks = in.spec.kv_chunks;
  int largest = sc.batch;
  for (int b : in.spec.batch_sizes) largest = std::max(largest, b);
  std::mt19937_64 rng(out.neighbour_seed);
  for (int b = 1; b < largest; ++b) {
    std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
    for (auto& id : ids) id = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(spec.vocab));
    in.neighbours.push_back(std::move(ids));
  }
  in.phase_chunks = {sc.phase.prefill_len};
  in.phase_chunks.insert(in.phase_chunks.end(), static_cast<std::size_t>(sc.phase.decode_steps), 1);
  // As the side-by-side metrics: a decode scenario is measured on its decode steps.
  in.compare_from = sc.phase.kind == Phase::Decode ? sc.phase.prefill_len : 0;
  for (const auto& slot : slots) {
    out.paths.push_back(run_invariance(in, slot.label(), slot.dtype, [&] { return make(slot.name, slot.recipe); }));
    for (const auto& o : out.paths.back().outcomes) out.differing += o.status == InvarianceStatus::differs;
  }
  return out;
}

}  // namespace

RunOutcome run_scenario(const RunOptions& opt) {
  keep_freed_memory_for_reuse();  // taps come and go in the same sizes every layer
  const auto wall_start = std::chrono::steady_clock::now();
  const double cpu_start = process_cpu_seconds();
  const std::string date = utc_now("%Y-%m-%dT%H:%M:%SZ");
  register_builtin_paths();
  for (const auto& plugin : opt.plugins) load_plugin(plugin);
  Scenario sc = load_scenario(opt.scenario);
  const std::string shown_name = printable(sc.name, 80);  // the name is the scenario's: bounded, escaped

  const std::string device = opt.device.empty() ? default_device() : opt.device;
  if (device != "cpu" && device != "cuda") throw InputError("--device", "must be cuda or cpu, got '" + printable(device, 40) + "'");
  if (device == "cuda" && cuda_device_count() == 0) {
    throw InputError("--device cuda", no_cuda_device_reason());
  }
  // Before any work: the results file's place, and that it can be written.
  const std::filesystem::path file = results_file_path(opt.out, opt.results_dir, sc.name, utc_now("%Y%m%d-%H%M%S"));
  prepare_results_folder(file);

  PhaseTimes phases;  // merged into the driver's below
  auto open_span = phases.span("checkpoint");
  const MemoryLimits limits = memory_limits(device);
  const auto check_sizes = [&](const ModelSpec& shape, const std::string& model) {
    check_run_size(sc, shape, model, device, opt.ref64, limits);
  };
  const auto model_dir = prepare_model(sc, opt.results_dir / ".synth-cache", check_sizes);
  const auto ckpt = Checkpoint::open(model_dir);
  open_span.stop();
  const ModelSpec& spec = ckpt->spec();
  check_sizes(spec, sc.model.synth ? sc.model.synth->profile : printable(sc.model.path.string(), 120));
  const TextTokens text = resolve_prompt(sc, model_dir, spec.vocab);
  const auto tokens = scenario_tokens(sc, spec.vocab);

  // Static check: both scorers for the cross-check; ours decides the fallback.
  auto check_span = phases.span("static_check");
  std::vector<check::CompatibilityResult> checks;
  for (auto scorer : {check::Scorer::Braidinfer, check::Scorer::Fusecheck}) {
    checks.push_back(check::check_model(*ckpt, check::default_thresholds(), scorer));
  }
  check_span.stop();
  if (opt.check_json) {
    // `fusecheck check MODEL --deep --format json`, byte for byte but for its read timings,
    // written whole or not at all (a temporary beside it, then a rename).
    auto deep_span = phases.span("static_check_deep");
    const check::CompatibilityResult deep =
        check::check_model(*ckpt, check::default_thresholds(), check::Scorer::Fusecheck, true);
    const std::string json = check::render_report(deep, check::ReportFormat::Json, false);
    const std::filesystem::path tmp = opt.check_json->string() + ".tmp";
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      f << json;
      if (!f.flush()) throw InputError(opt.check_json->string(), "cannot write the static check's JSON");
    }
    std::error_code ec;
    std::filesystem::rename(tmp, *opt.check_json, ec);
    if (ec) throw InputError(opt.check_json->string(), "cannot write the static check's JSON: " + ec.message());
  }
  const bool force_fused = opt.force_fused || sc.force_fused;
  const auto decision = check::decide_fused_or_standard(checks.back(), force_fused);
  const bool has_fused = std::any_of(sc.paths.begin(), sc.paths.end(), [](const PathRequest& p) { return p.role == "fused"; });

  std::vector<std::string> notes;
  for (const auto& p : loaded_plugins()) notes.push_back(fmt::format("plug-in {} {} from {} (sha256 {})", p.name, p.version, p.file, p.sha256.substr(0, 16)));
  if (has_fused && (decision.warn || !decision.use_fused)) notes.push_back(decision.reason);
  if (!text.note.empty()) notes.push_back(text.note);
  const auto slots = plan_paths(sc, device, decision.use_fused, notes);
  const bool fallback_applied = has_fused && !decision.use_fused;

  RunConfig cfg;
  cfg.n_layers = spec.n_layers;
  cfg.tokens = tokens;
  cfg.phase = sc.phase;
  cfg.reference = sc.reference == "auto" ? (device == "cuda" ? "ref32-cuda" : "ref32-cpu") : sc.reference;
  if (device == "cpu" && cfg.reference == "ref32-cuda") {
    notes.push_back("--device cpu: reference ref32-cuda -> ref32-cpu");
    cfg.reference = "ref32-cpu";
  }
  cfg.ref64 = sc.ref64 || opt.ref64;
  cfg.ref64_path = ref64_path_for(device);
  cfg.modes = sc.modes;
  cfg.gates = sc.gates;
  cfg.timing = sc.timing;
  cfg.greedy_steps = sc.greedy_steps;
  cfg.seeds = sc.seeds;
  cfg.dump_failing = opt.dump_failing;
  cfg.device_metrics = device == "cuda" && opt.device_metrics.value_or(kDeviceMetricsByDefault);

  const std::string model_label = sc.model.synth ? fmt::format("{} (synth, {} layers, {})", sc.model.synth->profile,
                                                               spec.n_layers, sc.model.synth->dtype)
                                                 : sc.model.path.string();
  ProgressBar bar(stderr, fmt::format("fusecheck run {}: {} layers x {} paths", shown_name, spec.n_layers, slots.size() + 1));
  if (opt.progress) cfg.progress = [&](int done, int total) { bar.update(done, total); };

  const PathMaker make = [&](const std::string& name, const std::string& recipe) {
    PathOptions po;
    po.recipe = recipe;
    po.seed = sc.seeds.paths;
    return make_path(name, *ckpt, po);
  };
  RunResult result = run_side_by_side(cfg, slots, make);
  if (opt.progress) bar.done();
  // Which route measured the taps, for the record (docs/gpu.md "Tap metrics on the device").
  if (result.device_metrics) {
    notes.push_back("tap metrics computed on the device (--device-metrics)");
  } else if (cfg.device_metrics) {
    notes.push_back("tap metrics on the host: the reference offers no device taps, or the run is not a prefill");
  }
  const auto first_prompt = std::span(tokens.front())
                                .first(std::min<std::size_t>(tokens.front().size(),
                                                             static_cast<std::size_t>(sc.phase.prefill_len)));
  if (sc.kv_age) add_kv_age(result, *ckpt, first_prompt, sc.greedy_steps);
  if (sc.scale_delivery) add_scale_delivery(result, *ckpt, first_prompt, sc.greedy_steps);
  if (sc.modes.invariance) {
    auto span = result.phases.span("invariance");
    result.invariance = run_invariance_mode(sc, tokens, spec, slots, make);
  }
  for (const auto& p : result.phases.entries()) phases.add(p.name, p.wall_s, p.cpu_s);
  result.phases = phases;

  std::string device_name = "cpu", clocks, driver = "n/a", runtime = "n/a", libs = library_versions();
  if (device == "cuda") {
    auto query_span = result.phases.span("device_query");  // copy bandwidth measured here
    const auto prov = describe_cuda_device(0, sc.timing.enabled);
    query_span.stop();
    device_name = prov.name;
    clocks = fmt::format("sm {} MHz, mem {} MHz (peak)", prov.sm_clock_peak_mhz, prov.mem_clock_peak_mhz);
    driver = std::to_string(prov.driver_version);
    runtime = std::to_string(prov.runtime_version);
    libs += "; " + prov.library_versions;
    const double bw = prov.copy_bandwidth_gbs > 0 ? prov.copy_bandwidth_gbs : kNaN;
    result.reference_timing.copy_bandwidth_gbps = bw;
    for (auto& p : result.paths) p.timing.copy_bandwidth_gbps = bw;
  }

  auto cross_span = result.phases.span("crosscheck");
  std::vector<StaticFigures> statics;
  std::vector<CrossCheck> crosschecks;
  for (const auto& c : checks) {
    statics.push_back(static_figures(c, spec.n_layers));
    crosschecks.push_back(cross_check(statics.back(), observed_path(result)));
  }

  std::string substitutions;
  for (const auto& s : slots) {
    if (s.note.rfind("--device cpu", 0) == 0) substitutions += (substitutions.empty() ? "" : "; ") + s.note.substr(14);
  }
  std::string modes;
  if (sc.modes.isolated) modes += "isolated";
  if (sc.modes.propagated) modes += std::string(modes.empty() ? "" : ",") + "propagated";
  if (sc.modes.perturb) modes += std::string(modes.empty() ? "" : ",") + "perturb";
  if (sc.modes.invariance) modes += std::string(modes.empty() ? "" : ",") + "invariance";
  const std::string sha = git_sha();
  const bool dirty = sha.find("+dirty") != std::string::npos;
  cross_span.stop();
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  result.phases.add("total", wall_s, process_cpu_seconds() - cpu_start);

  RunRecord rec;
  rec.n_layers = spec.n_layers;
  rec.tokens = tokens;
  rec.result = &result;
  rec.statics = statics;
  rec.crosschecks = crosschecks;
  rec.greedy_steps = sc.greedy_steps;
  if (text.tokenizer && sc.greedy_steps > 0) {
    rec.reference_greedy_text = text.text(tokens.front(), result.reference_greedy);
    for (const auto& p : result.paths) rec.greedy_text[p.slot.label()] = text.text(tokens.front(), p.greedy_tokens);
  }
  rec.timing = sc.timing;
  using F = RootAttr::Flag;
  rec.attrs = {
      {"fusecheck_version", version_string()},
      {"git_sha", sha},
      {"git_dirty", F{dirty}},
      {"argv", shell_join(opt.argv)},
      {"date_utc", date},
      {"hostname", host_name()},
      {"cpu_model", cpu_model()},
      {"scenario_path", opt.scenario.string()},
      {"scenario_name", sc.name},
      {"scenario_text", sc.text},
      {"prompt", sc.tokens.prompt.value_or("")},
      {"tokenizer", text.tokenizer ? text.tokenizer->source() + " (" + text.tokenizer->kind() + ")" : std::string()},
      {"device", device},
      {"device_name", device_name},
      {"device_clocks", clocks},
      {"driver_version", driver},
      {"cuda_runtime_version", runtime},
      {"library_versions", libs},
      {"plugins", plugins_provenance_text()},
      {"model_source", std::string(sc.model.synth ? "synth" : "path")},
      {"model_path", model_dir.string()},
      {"model_profile", sc.model.synth ? sc.model.synth->profile : std::string()},
      {"model_options", sc.model.synth ? synth_options_text(*sc.model.synth) : std::string()},
      {"architecture", spec.architecture},
      {"n_layers", static_cast<long long>(spec.n_layers)},
      {"hidden", static_cast<long long>(spec.hidden)},
      {"vocab", static_cast<long long>(spec.vocab)},
      {"batch", static_cast<long long>(sc.batch)},
      {"phase", std::string(sc.phase.kind == Phase::Prefill ? "prefill" : "decode")},
      {"n_tokens", static_cast<long long>(sc.phase.tokens_per_sequence())},
      {"prefill_len", static_cast<long long>(sc.phase.prefill_len)},
      {"decode_steps", static_cast<long long>(sc.phase.decode_steps)},
      {"measured_rows", static_cast<long long>(result.measured_rows)},
      {"reference", result.reference_label},
      {"ref64", F{cfg.ref64}},
      {"modes", modes},
      {"seed_tokens", static_cast<long long>(sc.seeds.tokens)},
      {"seed_paths", static_cast<long long>(sc.seeds.paths)},
      {"seed_perturbation", static_cast<long long>(sc.seeds.perturbation)},
      {"substitutions", substitutions},
      {"fallback_applied", F{fallback_applied}},
      {"fallback_reason", decision.reason},
      {"force_fused", F{force_fused}},
      {"gate_failures", static_cast<long long>(result.gate_failures)},
      {"status", std::string(result.gate_failures == 0 ? "pass" : "gate_failed")},
      {"wall_s", wall_s},
  };
  const double write_wall0 = wall_seconds(), write_cpu0 = process_cpu_seconds();
  write_run_file(file, rec);
  // The summary's figure covers the whole write (the file's stops before closing it).
  result.phases.add("results_write", wall_seconds() - write_wall0, process_cpu_seconds() - write_cpu0);

  SummaryInput in;
  in.title = fmt::format("fusecheck run {}: {}; {} {} x batch {}; device {} ({}); reference {}", shown_name,
                         printable(model_label, 200),
                         sc.phase.kind == Phase::Prefill ? "prefill" : "decode",
                         sc.phase.kind == Phase::Prefill ? std::to_string(sc.phase.prefill_len)
                                                         : fmt::format("kv {} + {} steps", sc.phase.prefill_len, sc.phase.decode_steps),
                         sc.batch, device, device_name, result.reference_label);
  in.n_layers = spec.n_layers;
  in.result = &result;
  in.statics = statics;
  in.crosschecks = crosschecks;
  in.notes = notes;
  in.results_file = file.string();
  in.greedy_steps = sc.greedy_steps;
  in.prompt = sc.tokens.prompt.value_or("");
  in.reference_greedy_text = rec.reference_greedy_text;
  in.greedy_text = rec.greedy_text;

  RunOutcome outcome;
  outcome.exit_code = result.gate_failures == 0 ? 0 : 1;
  outcome.file = file;
  outcome.summary = format_summary(in);
  return outcome;
}

}  // namespace fusecheck::run
