// Layer-major side-by-side driver (see driver.h). For each layer: the reference runs,
// then every instance (ref64 isolated/propagated, each path isolated/propagated, the
// perturbed reference) runs the same layer, the metrics are taken, and that layer's
// taps are dropped. Only the per-chunk hidden states of each instance survive a layer.
#include "harness/run/driver.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include <time.h>

#include "harness/core/error.h"
#include "harness/core/greedy.h"

namespace fusecheck::run {

int layer_tap_index(Tap t) {
  for (int i = 0; i < kNumLayerTaps; ++i) {
    if (kLayerTaps[i] == t) return i;
  }
  return -1;
}

int head_tap_index(Tap t) {
  for (int i = 0; i < kNumHeadTaps; ++i) {
    if (kHeadTaps[i] == t) return i;
  }
  return -1;
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void PhaseTimes::add(const std::string& name, double wall_s, double cpu_s) {
  auto it = std::find_if(entries_.begin(), entries_.end(), [&](const PhaseTime& p) { return p.name == name; });
  if (it == entries_.end()) {
    entries_.push_back({name, 0, 0, 0});
    it = entries_.end() - 1;
  }
  it->wall_s += wall_s;
  it->cpu_s += cpu_s;
  ++it->spans;
}

const PhaseTime* PhaseTimes::find(const std::string& name) const {
  auto it = std::find_if(entries_.begin(), entries_.end(), [&](const PhaseTime& p) { return p.name == name; });
  return it == entries_.end() ? nullptr : &*it;
}

PhaseTimes::Span::Span(PhaseTimes& times, std::string name)
    : times_(&times), name_(std::move(name)), wall0_(wall_seconds()), cpu0_(process_cpu_seconds()) {}

void PhaseTimes::Span::stop() {
  if (!times_) return;
  times_->add(name_, wall_seconds() - wall0_, process_cpu_seconds() - cpu0_);
  times_ = nullptr;
}

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// The token stream cut into the calls a path sees: prefill is one chunk; decode is the
// kv_len prefill (not measured) then one chunk per step (measured).
struct Chunks {
  std::vector<std::vector<std::int32_t>> ids;  // per chunk: [batch][n] sequence-major
  std::vector<bool> measured;
};

Chunks make_chunks(const RunConfig& cfg) {
  Chunks ch;
  auto cut = [&](int begin, int count, bool measured) {
    std::vector<std::int32_t> ids;
    for (const auto& seq : cfg.tokens) ids.insert(ids.end(), seq.begin() + begin, seq.begin() + begin + count);
    ch.ids.push_back(std::move(ids));
    ch.measured.push_back(measured);
  };
  const bool decode = cfg.phase.kind == Phase::Decode;
  cut(0, cfg.phase.prefill_len, !decode);
  for (int s = 0; s < cfg.phase.decode_steps; ++s) cut(cfg.phase.prefill_len + s, 1, true);
  return ch;
}

TapMatrix stack_rows(const std::vector<const TapMatrix*>& parts) {
  if (parts.size() == 1) return *parts[0];
  Eigen::Index rows = 0;
  for (const auto* p : parts) rows += p->rows();
  TapMatrix out(rows, parts.front()->cols());
  Eigen::Index r = 0;
  for (const auto* p : parts) {
    out.middleRows(r, p->rows()) = *p;
    r += p->rows();
  }
  return out;
}

// Stacks the rows of the measured chunks' taps, tap by tap (taps all chunks share). One
// chunk (prefill) is moved, not copied: a 512-token layer's taps are ~100 MB of doubles.
TapSet stack_measured(std::vector<TapSet>&& sets) {
  TapSet out;
  if (sets.empty()) return out;
  if (sets.size() == 1) return std::move(sets.front());
  for (const auto& [tap, first] : sets.front()) {
    std::vector<const TapMatrix*> parts;
    for (const auto& s : sets) {
      auto it = s.find(tap);
      if (it == s.end()) break;
      parts.push_back(&it->second);
    }
    if (parts.size() == sets.size()) out[tap] = stack_rows(parts);
  }
  return out;
}

// One path instance and its hidden state per chunk (the input of the next layer).
struct Instance {
  explicit Instance(std::unique_ptr<Path> p) : path(std::move(p)) {}
  std::unique_ptr<Path> path;
  std::vector<TapMatrix> hidden;
  TapSet taps;       // measured taps of the current layer (dropped when the layer is done)
  double layer_ms = 0;
  std::optional<std::vector<Tap>> keep;  // the caller's keep_taps hint (set_keep)
  // The device route (docs/gpu.md): the taps stay on the device, valid until the
  // instance's next call; its last resid_out there is the input of its next layer.
  bool on_device = false;
  DeviceTapSet dtaps;
  std::optional<DeviceTap> dhidden;
  std::map<Tap, TapMatrix> copies;  // device taps brought to the host for a host-route cell
  void clear_taps() {
    taps.clear();
    dtaps.clear();
    copies.clear();
  }
  // Tap `t` of this layer on the host: its own, or its device tap copied once.
  const TapMatrix* host_tap(Tap t) {
    if (!on_device) {
      auto it = taps.find(t);
      return it == taps.end() ? nullptr : &it->second;
    }
    auto it = dtaps.find(t);
    if (it == dtaps.end()) return nullptr;
    auto c = copies.find(t);
    if (c == copies.end()) c = copies.emplace(t, path->to_host(it->second)).first;
    return &c->second;
  }
  const DeviceTap* device_tap(Tap t) const {
    auto it = dtaps.find(t);
    return it == dtaps.end() ? nullptr : &it->second;
  }
  std::vector<Tap> tap_list() const {
    std::vector<Tap> out;
    if (on_device) {
      for (const auto& [t, v] : dtaps) out.push_back(t);
    } else {
      for (const auto& [t, v] : taps) out.push_back(t);
    }
    return out;
  }
};

// One layer (or the head, head == true) of `inst` on the device route: device taps when it
// is on the device, else host taps from host input. Its output becomes its hidden state.
void run_on_route(Instance& inst, int layer, const TapInput& in, bool head) {
  const auto t0 = Clock::now();
  if (inst.on_device) {
    inst.dtaps = head ? inst.path->head_on_device(in) : inst.path->layer_on_device(layer, in);
    if (!head) {
      auto out = inst.dtaps.find(Tap::resid_out);
      if (out == inst.dtaps.end()) {
        throw std::logic_error(inst.path->name() + ": layer " + std::to_string(layer) + " returned no resid_out");
      }
      inst.dhidden = out->second;
    }
  } else {
    if (!in.host) throw std::logic_error("run_on_route: a host-route instance was given a device input");
    inst.taps = head ? inst.path->head(*in.host) : inst.path->layer(layer, *in.host);
    if (!head) {
      auto out = inst.taps.find(Tap::resid_out);
      if (out == inst.taps.end()) {
        throw std::logic_error(inst.path->name() + ": layer " + std::to_string(layer) + " returned no resid_out");
      }
      inst.hidden = {out->second};
    }
  }
  inst.layer_ms = ms_since(t0);
}

// Tells the path which taps the caller reads from now on, and remembers it for run_layer.
void set_keep(Instance& inst, std::optional<std::vector<Tap>> taps) {
  inst.keep = taps;
  inst.path->keep_taps(std::move(taps));
}

void start(Instance& inst, const Chunks& ch, int batch, int capacity, bool embed) {
  inst.path->reset(batch, capacity);
  inst.hidden.clear();
  if (!embed) return;
  for (const auto& ids : ch.ids) inst.hidden.push_back(inst.path->embed(ids));
}

// Runs `layer` over every chunk from `inputs`; keeps the measured taps; the outputs
// become the instance's hidden state.
void run_layer(Instance& inst, int layer, const std::vector<TapMatrix>& inputs, const Chunks& ch) {
  std::vector<TapSet> measured;
  std::vector<TapMatrix> outputs;
  const auto t0 = Clock::now();
  for (std::size_t c = 0; c < ch.ids.size(); ++c) {
    // An unmeasured chunk (decode's KV prefill) is read for its resid_out only.
    const bool narrow = !ch.measured[c] && !inst.keep;
    if (narrow) inst.path->keep_taps(std::vector<Tap>{Tap::resid_out});
    TapSet ts = inst.path->layer(layer, inputs[c]);
    if (narrow) inst.path->keep_taps(std::nullopt);
    auto out = ts.find(Tap::resid_out);
    if (out == ts.end()) {
      throw std::logic_error(inst.path->name() + ": layer " + std::to_string(layer) + " returned no resid_out");
    }
    outputs.push_back(out->second);
    if (ch.measured[c]) measured.push_back(std::move(ts));
  }
  inst.layer_ms = ms_since(t0);
  inst.taps = stack_measured(std::move(measured));
  inst.hidden = std::move(outputs);
}

// The final hidden states of the measured chunks, stacked (what the head sees).
TapMatrix measured_hidden(const Instance& inst, const Chunks& ch) {
  std::vector<const TapMatrix*> parts;
  for (std::size_t c = 0; c < ch.ids.size(); ++c) {
    if (ch.measured[c]) parts.push_back(&inst.hidden[c]);
  }
  return stack_rows(parts);
}

ModeTable empty_table(int n_layers) {
  ModeTable t;
  t.layers.resize(n_layers);
  t.gate.resize(n_layers);
  for (auto& row : t.gate) row.fill(-1);
  return t;
}

// Compares one layer's (or the head's, layer == n_layers) taps of a path with the
// reference's and writes the cells. `truth_*` are ref64's taps for the noise floor.
struct CompareContext {
  const RunConfig* cfg;
  int n_layers;
  DType dtype;
  std::string mode;
  std::vector<Dump>* dumps;  // null: no dumping
};

// One compare() of a (path, mode) at one layer, split so that the metrics of every cell
// of every pending comparison are computed in parallel (they are independent, and on a
// 512-token layer they are the run's largest host cost), then applied in tap order.
struct Cell {
  Tap tap;
  const TapMatrix* ref;
  const TapMatrix* path;
  const TapMatrix* truth;  // null: no ref64
  // Device route: the three taps on the device (ref null: a host cell), and the path that
  // reads them (the reference's: every device tap of a run is of its domain).
  const DeviceTap* dref = nullptr;
  const DeviceTap* dpath = nullptr;
  const DeviceTap* dtruth = nullptr;
  Path* reader = nullptr;
  TapMetrics m;
  std::unique_ptr<TapMetricsInParts> split;  // a large tap's metrics, computed in parts
  double noise_floor_ratio = kNaN;           // its own job (where truth is set), then into m
};
struct PendingCompare {
  ModeTable* table;
  int layer;
  CompareContext ctx;
  std::vector<Cell> cells;
};

PendingCompare plan_compare(ModeTable& table, int layer, Instance& ref, Instance& path, Instance* truth,
                            const CompareContext& ctx) {
  PendingCompare pc{&table, layer, ctx, {}};
  const bool head = layer == ctx.n_layers;
  const bool device = ref.on_device && path.on_device && (!truth || truth->on_device);
  const auto path_taps = path.tap_list();
  for (Tap tap : ref.tap_list()) {
    const int col = head ? head_tap_index(tap) : layer_tap_index(tap);
    if (col < 0) continue;
    if (std::find(path_taps.begin(), path_taps.end(), tap) == path_taps.end()) continue;
    if (device) {
      const DeviceTap* t = truth ? truth->device_tap(tap) : nullptr;
      Cell cell{tap, nullptr, nullptr, nullptr, ref.device_tap(tap), path.device_tap(tap), t, ref.path.get(), {}, nullptr,
                kNaN};
      pc.cells.push_back(std::move(cell));
      continue;
    }
    // Host route (or a mixed cell): device taps are copied to the host once.
    const TapMatrix* t = truth ? truth->host_tap(tap) : nullptr;
    pc.cells.push_back({tap, ref.host_tap(tap), path.host_tap(tap), t, nullptr, nullptr, nullptr, nullptr, {}, nullptr,
                        kNaN});
  }
  return pc;
}

// The device cells' metrics, one plug-in call each (the plug-in synchronizes), before the
// host cells' parallel jobs.
void compute_device_cells(std::vector<PendingCompare>& pending) {
  for (auto& pc : pending) {
    const Tolerance tol = default_tolerance(pc.ctx.dtype);
    for (auto& cell : pc.cells) {
      if (!cell.dref) continue;
      const DeviceTapSummary d =
          cell.reader->device_metrics(*cell.dref, *cell.dpath, cell.dtruth, pc.ctx.dtype, tol.atol, tol.rtol);
      TapMetrics& m = cell.m;
      m.max_abs = d.max_abs, m.max_rel = d.max_rel, m.rel_l2 = d.rel_l2, m.cosine = d.cosine;
      m.ulp_p50 = d.ulp_p50, m.ulp_p99 = d.ulp_p99, m.ulp_max = d.ulp_max, m.frac_outside = d.frac_outside;
      m.nan_count = d.nan_count, m.inf_count = d.inf_count, m.ref_nonfinite = d.ref_nonfinite;
      m.ref_norm = d.ref_norm, m.headroom = d.headroom, m.overflow_count = d.overflow_count;
      m.saturation_count = d.saturation_count;
      if (cell.dtruth) cell.noise_floor_ratio = d.truth_rel_l2_path / d.truth_rel_l2_ref;
    }
  }
}

// Runs jobs on every OpenMP thread, largest first (a logits tap is 100x a layer tap);
// the first exception is rethrown here (none may leave an OpenMP region).
void run_parallel(std::vector<std::pair<double, std::function<void()>>>& jobs) {
  std::stable_sort(jobs.begin(), jobs.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::exception_ptr error;
  const long n = static_cast<long>(jobs.size());
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
  for (long i = 0; i < n; ++i) {
    try {
      jobs[static_cast<std::size_t>(i)].second();
    } catch (...) {
#ifdef _OPENMP
#pragma omp critical(fusecheck_run_parallel_error)
#endif
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

// A tap larger than this (the logits: 512 x 151936 = 78M values) has its metrics computed
// in parts of about this size on every thread, rather than on one thread while the others
// wait; a layer's taps (at most ~1.6M values at 512 tokens) stay one job each.
constexpr Eigen::Index kSplitMetricsAbove = Eigen::Index(1) << 22;

// Jobs of the first stage: every cell's metrics, or, for a large tap, its in-order sums
// (its ranges follow, from range_jobs, once the sums are known).
void add_cell_jobs(std::vector<PendingCompare>& pending, std::vector<std::pair<double, std::function<void()>>>& jobs) {
  for (auto& pc : pending) {
    const Tolerance tol = default_tolerance(pc.ctx.dtype);
    for (auto& cell : pc.cells) {
      if (cell.dref) continue;  // computed on the device
      const Eigen::Index n = cell.ref->size();
      if (n > kSplitMetricsAbove) {
        const int parts = static_cast<int>((n + kSplitMetricsAbove - 1) / kSplitMetricsAbove);
        cell.split = std::make_unique<TapMetricsInParts>(*cell.ref, *cell.path, pc.ctx.dtype, tol, parts);
        // A scheduling weight: the sums cost about a third of a whole pass.
        jobs.emplace_back(static_cast<double>(n) / 3, [&cell] { cell.split->sums(); });
      } else {
        jobs.emplace_back(static_cast<double>(n), [&cell, tol, dtype = pc.ctx.dtype] {
          cell.m = compute_metrics(*cell.ref, *cell.path, dtype, tol);
        });
      }
      if (cell.truth) {
        jobs.emplace_back(static_cast<double>(n), [&cell] {
          cell.noise_floor_ratio = relative_l2(*cell.truth, *cell.path) / relative_l2(*cell.truth, *cell.ref);
        });
      }
    }
  }
}

// Jobs of the second stage: the element ranges of the large taps.
std::vector<std::pair<double, std::function<void()>>> range_jobs(std::vector<PendingCompare>& pending) {
  std::vector<std::pair<double, std::function<void()>>> jobs;
  for (auto& pc : pending) {
    for (auto& cell : pc.cells) {
      if (!cell.split) continue;
      for (int k = 0; k < cell.split->parts(); ++k) {
        jobs.emplace_back(static_cast<double>(cell.ref->size()) / cell.split->parts(), [&cell, k] { cell.split->range(k); });
      }
    }
  }
  return jobs;
}

// Every cell's metrics once both stages are done: a split cell's merged, and the noise
// floor ratio (computed by a job of its own) where ref64 ran.
void finish_cells(std::vector<PendingCompare>& pending) {
  for (auto& pc : pending) {
    for (auto& cell : pc.cells) {
      if (cell.split) cell.m = cell.split->finish();
      cell.split.reset();
      if (cell.truth || cell.dtruth) cell.m.noise_floor_ratio = cell.noise_floor_ratio;
    }
  }
}

void apply_compare(const PendingCompare& pc) {
  ModeTable& table = *pc.table;
  const CompareContext& ctx = pc.ctx;
  const int layer = pc.layer;
  const bool head = layer == ctx.n_layers;
  for (const Cell& cell : pc.cells) {
    const Tap tap = cell.tap;
    const int col = head ? head_tap_index(tap) : layer_tap_index(tap);
    const TapMetrics& m = cell.m;
    const bool pass = gate_passes(m, ctx.cfg->gates.resolve(tap, ctx.dtype));
    if (head) {
      table.head[col] = m;
      table.head_gate[col] = pass ? 1 : 0;
    } else {
      table.layers[layer][col] = m;
      table.gate[layer][col] = pass ? 1 : 0;
    }
    if (pass) continue;
    ++table.gate_failures;
    if (table.first_divergent_layer < 0) {
      table.first_divergent_layer = layer;
      table.first_divergent_tap = tap;
    }
    // Taps are visited in map order (= execution order), so a later tap of the same
    // layer never displaces an earlier one; an earlier layer is never revisited.
    if (ctx.dumps && ctx.cfg->dump_failing) {
      const auto cells = std::count_if(ctx.dumps->begin(), ctx.dumps->end(),
                                       [&](const Dump& d) { return d.mode == ctx.mode; });
      constexpr long kMaxDumpsPerMode = 16;  // a diverging model fails every later tap
      if (cells < kMaxDumpsPerMode) {
        // Device cells: only the failing cells' taps come back (copy_to_host).
        if (cell.dref) {
          ctx.dumps->push_back({ctx.mode, layer, tap, cell.reader->to_host(*cell.dref), cell.reader->to_host(*cell.dpath)});
        } else {
          ctx.dumps->push_back({ctx.mode, layer, tap, *cell.ref, *cell.path});
        }
      }
    }
  }
}

// Computes the pending comparisons' cells and `extra` jobs in parallel, then applies the
// comparisons in the order they were planned.
void compare_all(std::vector<PendingCompare>& pending,
                 std::vector<std::pair<double, std::function<void()>>> extra = {}) {
  compute_device_cells(pending);
  add_cell_jobs(pending, extra);
  run_parallel(extra);
  auto ranges = range_jobs(pending);
  run_parallel(ranges);
  finish_cells(pending);
  for (const auto& pc : pending) apply_compare(pc);
  pending.clear();
}

double safe_ratio(double a, double b) { return (b > 0 && std::isfinite(a)) ? a / b : kNaN; }

double resid_out_error(const ModeTable* t, int layer) {
  if (!t) return kNaN;
  const auto& cell = t->layers[layer][layer_tap_index(Tap::resid_out)];
  return cell ? cell->rel_l2 : kNaN;
}

}  // namespace

Amplification compute_amplification(const ModeTable* isolated, const ModeTable* propagated,
                                    int n_layers) {
  Amplification a;
  double acc_sq = 0, prev_prop = 0;
  for (int l = 0; l < n_layers; ++l) {
    const double loc = resid_out_error(isolated, l);
    const double prop = resid_out_error(propagated, l);
    acc_sq += loc * loc;
    a.local_error.push_back(loc);
    a.propagated_error.push_back(prop);
    a.amplification.push_back(safe_ratio(prop, loc));
    a.accumulated_local.push_back(std::sqrt(acc_sq));
    a.layer_gain.push_back(safe_ratio(prop, std::sqrt(prev_prop * prev_prop + loc * loc)));
    prev_prop = prop;
  }
  if (n_layers > 0) a.end_to_end = safe_ratio(a.propagated_error.back(), a.accumulated_local.back());
  const int logits = head_tap_index(Tap::logits);
  if (isolated && isolated->head[logits]) a.logits_local_error = isolated->head[logits]->rel_l2;
  if (propagated && propagated->head[logits]) a.logits_propagated_error = propagated->head[logits]->rel_l2;
  a.logits_amplification = safe_ratio(a.logits_propagated_error, a.logits_local_error);
  return a;
}

namespace {
// A path's headroom since its last reset() at every rounding point, per layer and the
// head (row L); empty for a path without the headroom capability or with nothing seen.
RecipeHeadroom read_recipe_headroom(Path& path, int L) {
  RecipeHeadroom h;
  if (!path.capabilities().headroom) return h;
  std::vector<std::map<std::string, HeadroomPoint>> layers;
  for (int l = 0; l <= L; ++l) {
    std::map<std::string, HeadroomPoint> points;
    for (const auto& [point, seen] : path.headroom(l)) {
      if (seen.n_values == 0) continue;
      points[point] = {seen.ratio(), static_cast<double>(seen.n_overflow), static_cast<double>(seen.n_saturated),
                       static_cast<double>(seen.n_flushed)};
    }
    layers.push_back(std::move(points));
    for (const auto& [point, value] : layers.back()) {
      if (std::find(h.points.begin(), h.points.end(), point) == h.points.end()) h.points.push_back(point);
    }
  }
  if (h.points.empty()) return h;
  for (const auto& layer : layers) {
    std::vector<HeadroomPoint> row;
    for (const auto& point : h.points) {
      auto it = layer.find(point);
      row.push_back(it == layer.end() ? HeadroomPoint{} : it->second);
    }
    h.by_layer.push_back(std::move(row));
  }
  return h;
}
}  // namespace

RunResult run_side_by_side(const RunConfig& cfg, const std::vector<PathSlot>& slots,
                           const PathMaker& make_path_instance) {
  const int L = cfg.n_layers;
  const int batch = static_cast<int>(cfg.tokens.size());
  const int capacity = cfg.phase.tokens_per_sequence();
  const Chunks ch = make_chunks(cfg);

  RunResult result;
  PhaseTimes& phases = result.phases;
  auto create = phases.span("paths_create");
  // Each instance's creation under its own name as well (nested in paths_create).
  const auto make = [&](const std::string& name, const std::string& recipe) {
    auto span = phases.span("paths_create:" + name + (recipe.empty() ? "" : ":" + recipe));
    return make_path_instance(name, recipe);
  };
  Instance ref(make(cfg.reference, ""));
  result.reference_label = cfg.reference;
  result.reference_device = ref.path->device();
  start(ref, ch, batch, capacity, true);

  std::optional<Instance> r64_iso, r64_prop;
  if (cfg.ref64) {
    r64_iso.emplace(make(cfg.ref64_path, ""));
    r64_prop.emplace(make(cfg.ref64_path, ""));
    result.ref64_label = cfg.ref64_path;
    start(*r64_iso, ch, batch, capacity, false);
    start(*r64_prop, ch, batch, capacity, true);
    result.noise_floor_isolated = empty_table(L);
    result.noise_floor_propagated = empty_table(L);
  }

  std::vector<std::optional<Instance>> iso(slots.size()), prop(slots.size());
  for (std::size_t i = 0; i < slots.size(); ++i) {
    PathResult pr;
    pr.slot = slots[i];
    if (cfg.modes.isolated) {
      iso[i].emplace(make(slots[i].name, slots[i].recipe));
      start(*iso[i], ch, batch, capacity, false);
      pr.isolated = empty_table(L);
      pr.device = iso[i]->path->device();
    }
    if (cfg.modes.propagated) {
      prop[i].emplace(make(slots[i].name, slots[i].recipe));
      start(*prop[i], ch, batch, capacity, true);
      pr.propagated = empty_table(L);
      pr.device = prop[i]->path->device();
    }
    pr.timing.layer_ms.assign(L, kNaN);
    result.paths.push_back(std::move(pr));
  }
  result.reference_timing.clock = result.reference_device == "cpu" ? "cpu-steady-clock" : "host-steady-clock";
  result.reference_timing.layer_ms.assign(L, kNaN);

  // Perturbation: on the reference when it supports it, else on a ref32-cpu pair.
  std::optional<Instance> perturbed, perturb_clean;
  if (cfg.modes.perturb) {
    const auto& spec = *cfg.modes.perturb;
    if (spec.layer >= L) {
      throw InputError("", "perturb layer " + std::to_string(spec.layer) + " is past the model's " +
                               std::to_string(L) + " layers");
    }
    Perturbation p{spec.layer, spec.tap, spec.relative_size, cfg.seeds.perturbation};
    PerturbResult pr{spec, cfg.seeds.perturbation, cfg.reference, {}, {kNaN, kNaN}};
    perturbed.emplace(make(cfg.reference, ""));
    if (perturbed->path->capabilities().perturbation) {
      perturbed->path->set_perturbation(p);
    } else {
      perturbed.emplace(make("ref32-cpu", ""));
      perturbed->path->set_perturbation(p);
      perturb_clean.emplace(make("ref32-cpu", ""));
      start(*perturb_clean, ch, batch, capacity, true);
      pr.path = "ref32-cpu";
    }
    start(*perturbed, ch, batch, capacity, true);
    pr.sensitivity.resize(L);
    for (auto& row : pr.sensitivity) row.fill(kNaN);
    result.perturb = std::move(pr);
  }

  create.stop();

  const int total = L * static_cast<int>(1 + slots.size()) + 1;
  int done = 0;
  auto tick = [&] {
    ++done;
    if (cfg.progress) cfg.progress(done, total);
  };
  auto ctx_for = [&](const PathSlot* slot, const std::string& mode, std::vector<Dump>* dumps) {
    return CompareContext{&cfg, L, slot ? slot->dtype : DType::F32, mode, dumps};
  };

  // The device route (docs/gpu.md): taps stay on the device and only the metrics come back,
  // for every instance that offers device taps in the reference's domain (same plug-in,
  // same device); the others keep the host route. One measured chunk only (prefill): a
  // device tap lives until its path's next call, so decode's per-step taps are not kept.
  const DeviceDomain domain = ref.path->device_domain();
  const bool device_route = cfg.device_metrics && domain.code && ch.ids.size() == 1 && ch.measured[0];
  result.device_metrics = device_route;
  if (device_route) {
    std::vector<Instance*> all = {&ref};
    for (auto* o : {&r64_iso, &r64_prop, &perturbed}) {
      if (*o) all.push_back(&**o);
    }
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (iso[i]) all.push_back(&*iso[i]);
      if (prop[i]) all.push_back(&*prop[i]);
    }
    for (Instance* inst : all) inst->on_device = inst->path->device_domain() == domain;
  }
  // Device route: the reference's last output as a consumer's input (isolated mode): on the
  // device for a device instance, copied to the host once for the others; its embedding
  // rows before layer 0.
  std::optional<TapMatrix> ref_out_host;
  auto ref_input_for = [&](const Instance& consumer) -> TapInput {
    if (!ref.dhidden) return TapInput{&ref.hidden.front(), nullptr};
    if (consumer.on_device) return TapInput{nullptr, &*ref.dhidden};
    if (!ref_out_host) ref_out_host = ref.path->to_host(*ref.dhidden);
    return TapInput{&*ref_out_host, nullptr};
  };
  auto own_input = [](const Instance& inst) -> TapInput {
    return inst.dhidden ? TapInput{nullptr, &*inst.dhidden} : TapInput{&inst.hidden.front(), nullptr};
  };

  const std::string ref_phase = "layers:" + cfg.reference;
  std::vector<PendingCompare> pending;
  for (int l = 0; l < L; ++l) {
    if (device_route) {
      // The isolated instances read the reference's previous output before the reference
      // overwrites it by running this layer.
      ref_out_host.reset();
      if (cfg.ref64) {
        auto span = phases.span("layers:" + cfg.ref64_path);
        run_on_route(*r64_iso, l, ref_input_for(*r64_iso), false);
      }
      for (std::size_t i = 0; i < slots.size(); ++i) {
        if (!iso[i]) continue;
        auto span = phases.span("layers:" + slots[i].label() + ":isolated");
        run_on_route(*iso[i], l, ref_input_for(*iso[i]), false);
        result.paths[i].timing.layer_ms[l] = iso[i]->layer_ms;
      }
      {
        auto span = phases.span(ref_phase);
        run_on_route(ref, l, own_input(ref), false);
      }
      result.reference_timing.layer_ms[l] = ref.layer_ms;
      if (cfg.ref64) {
        auto span = phases.span("layers:" + cfg.ref64_path);
        run_on_route(*r64_prop, l, own_input(*r64_prop), false);
      }
      tick();
      for (std::size_t i = 0; i < slots.size(); ++i) {
        PathResult& pr = result.paths[i];
        if (prop[i]) {
          auto span = phases.span("layers:" + slots[i].label() + ":propagated");
          run_on_route(*prop[i], l, own_input(*prop[i]), false);
          pr.timing.layer_ms[l] = prop[i]->layer_ms;
        }
        tick();
      }
    } else {
      const std::vector<TapMatrix> ref_in = ref.hidden;
      {
        auto span = phases.span(ref_phase);
        run_layer(ref, l, ref_in, ch);
      }
      result.reference_timing.layer_ms[l] = ref.layer_ms;
      if (cfg.ref64) {
        auto span = phases.span("layers:" + cfg.ref64_path);
        run_layer(*r64_iso, l, ref_in, ch);
        run_layer(*r64_prop, l, r64_prop->hidden, ch);
      }
      tick();
      // Every instance runs the layer first; the metrics of all of them follow in one
      // parallel batch, then the layer's taps are dropped.
      for (std::size_t i = 0; i < slots.size(); ++i) {
        PathResult& pr = result.paths[i];
        if (iso[i]) {
          auto span = phases.span("layers:" + slots[i].label() + ":isolated");
          run_layer(*iso[i], l, ref_in, ch);
          pr.timing.layer_ms[l] = iso[i]->layer_ms;
        }
        if (prop[i]) {
          auto span = phases.span("layers:" + slots[i].label() + ":propagated");
          run_layer(*prop[i], l, prop[i]->hidden, ch);
          pr.timing.layer_ms[l] = prop[i]->layer_ms;
        }
        tick();
      }
    }
    std::vector<std::pair<double, std::function<void()>>> perturb_jobs;
    if (perturbed) {
      auto span = phases.span("perturb");
      const auto& spec = result.perturb->spec;
      // Before the perturbed layer only the hidden state matters.
      if (l < spec.layer) {
        set_keep(*perturbed, std::vector<Tap>{Tap::resid_out});
        if (perturb_clean) set_keep(*perturb_clean, std::vector<Tap>{Tap::resid_out});
      } else {
        set_keep(*perturbed, std::nullopt);
        if (perturb_clean) set_keep(*perturb_clean, std::nullopt);
      }
      if (perturbed->on_device) {
        run_on_route(*perturbed, l, own_input(*perturbed), false);
      } else {
        run_layer(*perturbed, l, perturbed->hidden, ch);
      }
      Instance* clean = &ref;
      if (perturb_clean) {
        run_layer(*perturb_clean, l, perturb_clean->hidden, ch);
        clean = &*perturb_clean;
      }
      if (l >= spec.layer) {
        const bool on_device = perturbed->on_device && clean->on_device;
        for (Tap tap : perturbed->tap_list()) {
          const int col = layer_tap_index(tap);
          if (col < 0 || (l == spec.layer && col < layer_tap_index(spec.tap))) continue;
          double* cell = &result.perturb->sensitivity[l][col];
          if (on_device) {
            const DeviceTap* c = clean->device_tap(tap);
            if (!c) continue;
            // relative_l2(clean, perturbed): the plain relative L2 of the device summary.
            *cell = ref.path->device_metrics(*c, *perturbed->device_tap(tap), nullptr, DType::F32, 0, 0).plain_rel_l2 /
                    spec.relative_size;
            continue;
          }
          const TapMatrix* c = clean->host_tap(tap);
          if (!c) continue;
          const TapMatrix* values = perturbed->host_tap(tap);
          perturb_jobs.emplace_back(static_cast<double>(values->size()),
                                    [cell, clean_values = c, values, size = spec.relative_size] {
                                      *cell = relative_l2(*clean_values, *values) / size;
                                    });
        }
      }
    }
    {
      auto span = phases.span("metrics");
      if (cfg.ref64) {
        pending.push_back(plan_compare(*result.noise_floor_isolated, l, *r64_iso, ref, nullptr,
                                       ctx_for(nullptr, "isolated", nullptr)));
        pending.push_back(plan_compare(*result.noise_floor_propagated, l, *r64_prop, ref, nullptr,
                                       ctx_for(nullptr, "propagated", nullptr)));
      }
      for (std::size_t i = 0; i < slots.size(); ++i) {
        PathResult& pr = result.paths[i];
        if (iso[i]) {
          pending.push_back(plan_compare(*pr.isolated, l, ref, *iso[i], cfg.ref64 ? &*r64_iso : nullptr,
                                         ctx_for(&slots[i], "isolated", &pr.dumps)));
        }
        if (prop[i]) {
          pending.push_back(plan_compare(*pr.propagated, l, ref, *prop[i], cfg.ref64 ? &*r64_prop : nullptr,
                                         ctx_for(&slots[i], "propagated", &pr.dumps)));
        }
      }
      compare_all(pending, std::move(perturb_jobs));
    }
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (iso[i]) iso[i]->clear_taps();
      if (prop[i]) prop[i]->clear_taps();
    }
    if (perturbed) perturbed->clear_taps();
    if (perturb_clean) perturb_clean->clear_taps();
    if (r64_iso) r64_iso->clear_taps();
    if (r64_prop) r64_prop->clear_taps();
    ref.clear_taps();
  }

  // Head: isolated instances see the reference's final hidden state. The heads run
  // first (phase "head"); their metrics and next-token agreement follow ("metrics"). Each
  // instance's head taps take the place of its layer taps.
  auto head_span = phases.span("head");
  if (device_route) {
    ref_out_host.reset();
    result.measured_rows = static_cast<int>(ref.dhidden ? ref.dhidden->rows : ref.hidden.front().rows());
    if (cfg.ref64) run_on_route(*r64_iso, L, ref_input_for(*r64_iso), true);
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (iso[i]) run_on_route(*iso[i], L, ref_input_for(*iso[i]), true);
    }
    run_on_route(ref, L, own_input(ref), true);
    if (cfg.ref64) run_on_route(*r64_prop, L, own_input(*r64_prop), true);
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (prop[i]) run_on_route(*prop[i], L, own_input(*prop[i]), true);
    }
  } else {
    const TapMatrix ref_final = measured_hidden(ref, ch);
    result.measured_rows = static_cast<int>(ref_final.rows());
    ref.taps = ref.path->head(ref_final);
    if (cfg.ref64) {
      r64_iso->taps = r64_iso->path->head(ref_final);
      r64_prop->taps = r64_prop->path->head(measured_hidden(*r64_prop, ch));
    }
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (iso[i]) iso[i]->taps = iso[i]->path->head(ref_final);
      if (prop[i]) prop[i]->taps = prop[i]->path->head(measured_hidden(*prop[i], ch));
    }
  }
  head_span.stop();
  if (perturbed) {
    auto span = phases.span("perturb");
    if (perturbed->on_device) {
      run_on_route(*perturbed, L, own_input(*perturbed), true);
    } else {
      perturbed->taps = perturbed->path->head(measured_hidden(*perturbed, ch));
    }
    if (perturb_clean) perturb_clean->taps = perturb_clean->path->head(measured_hidden(*perturb_clean, ch));
  }
  {
    auto span = phases.span("metrics");
    if (cfg.ref64) {
      pending.push_back(plan_compare(*result.noise_floor_isolated, L, *r64_iso, ref, nullptr,
                                     ctx_for(nullptr, "isolated", nullptr)));
      pending.push_back(plan_compare(*result.noise_floor_propagated, L, *r64_prop, ref, nullptr,
                                     ctx_for(nullptr, "propagated", nullptr)));
    }
    for (std::size_t i = 0; i < slots.size(); ++i) {
      PathResult& pr = result.paths[i];
      if (iso[i]) {
        pending.push_back(plan_compare(*pr.isolated, L, ref, *iso[i], cfg.ref64 ? &*r64_iso : nullptr,
                                       ctx_for(&slots[i], "isolated", &pr.dumps)));
      }
      if (prop[i]) {
        pending.push_back(plan_compare(*pr.propagated, L, ref, *prop[i], cfg.ref64 ? &*r64_prop : nullptr,
                                       ctx_for(&slots[i], "propagated", &pr.dumps)));
      }
    }
    std::vector<std::pair<double, std::function<void()>>> extra;
    if (perturbed) {
      Instance& clean = perturb_clean ? *perturb_clean : ref;
      const double size = result.perturb->spec.relative_size;
      for (Tap tap : perturbed->tap_list()) {
        const int col = head_tap_index(tap);
        if (col < 0) continue;
        double* cell = &result.perturb->head_sensitivity[col];
        if (perturbed->on_device && clean.on_device) {
          const DeviceTap* c = clean.device_tap(tap);
          if (c) *cell = ref.path->device_metrics(*c, *perturbed->device_tap(tap), nullptr, DType::F32, 0, 0).plain_rel_l2 / size;
          continue;
        }
        const TapMatrix* c = clean.host_tap(tap);
        if (!c) continue;
        const TapMatrix* values = perturbed->host_tap(tap);
        extra.emplace_back(static_cast<double>(values->size()), [cell, c, values, size] {
          *cell = relative_l2(*c, *values) / size;
        });
      }
    }
    compare_all(pending, std::move(extra));
    // next_token_agreement parallelizes over positions itself; on the device route the
    // per-position figures come from the plug-in.
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (!prop[i]) continue;
      if (ref.on_device && prop[i]->on_device) {
        DeviceNextToken d =
            ref.path->device_next_token(*ref.device_tap(Tap::logits), *prop[i]->device_tap(Tap::logits));
        result.paths[i].end_to_end =
            next_token_from_positions(std::move(d.kl), std::move(d.ref_margin), std::move(d.top1_match));
      } else {
        result.paths[i].end_to_end =
            next_token_agreement(*ref.host_tap(Tap::logits), *prop[i]->host_tap(Tap::logits));
      }
    }
  }
  // The head's taps (the logits above all) are not needed past here.
  for (Instance* inst : {&ref, r64_iso ? &*r64_iso : nullptr, r64_prop ? &*r64_prop : nullptr,
                         perturbed ? &*perturbed : nullptr, perturb_clean ? &*perturb_clean : nullptr}) {
    if (inst) inst->clear_taps();
  }
  for (std::size_t i = 0; i < slots.size(); ++i) {
    if (iso[i]) iso[i]->clear_taps();
    if (prop[i]) prop[i]->clear_taps();
  }
  tick();

  for (std::size_t i = 0; i < slots.size(); ++i) {
    PathResult& pr = result.paths[i];
    pr.amplification = compute_amplification(pr.isolated ? &*pr.isolated : nullptr,
                                             pr.propagated ? &*pr.propagated : nullptr, L);
    for (const ModeTable* t : {pr.isolated ? &*pr.isolated : nullptr, pr.propagated ? &*pr.propagated : nullptr}) {
      if (t) result.gate_failures += t->gate_failures;
    }
  }
  for (const auto& t : {result.noise_floor_isolated, result.noise_floor_propagated}) {
    if (t) result.gate_failures += t->gate_failures;
  }

  {
    // Paths with the headroom capability (emulated) record it at every rounding point of
    // their recipe, the squares inside a norm included: silent fp16 overflow there leaves
    // the outputs finite.
    auto span = phases.span("headroom");
    for (std::size_t i = 0; i < slots.size(); ++i) {
      Instance* inst = prop[i] ? &*prop[i] : (iso[i] ? &*iso[i] : nullptr);
      if (inst) result.paths[i].recipe_headroom = read_recipe_headroom(*inst->path, L);
    }
  }

  // Timing after validation, on the instances that were just validated (STYLE.md 6).
  // CPU paths keep the steady-clock time of their validated run; GPU paths time ops.
  const bool decode = cfg.phase.kind == Phase::Decode;
  const int n_new = decode ? 1 : cfg.phase.prefill_len;
  const int kv_len = decode ? cfg.phase.prefill_len : 0;
  TimingOptions topts;
  topts.warmup = cfg.timing.warmup;
  topts.repetitions = cfg.timing.repetitions;
  topts.cold_l2 = cfg.timing.cold_l2;
  topts.graph = decode;
  auto time_ops = [&](Instance& inst, Timing& t, const std::string& label) {
    Path& p = *inst.path;
    auto span = phases.span("time_layer:" + label);
    t.clock = p.device() == "cpu" ? "cpu-steady-clock" : "host-steady-clock";
    if (!cfg.timing.enabled) return;
    if (p.device() == "cpu") {
      // A second forward: the validated run's times include converting each layer's
      // weights on first use, which is not the layer's cost.
      // Only the hidden state is needed here: a path that can skip its other taps does.
      set_keep(inst, std::vector<Tap>{Tap::resid_out});
      start(inst, ch, batch, capacity, true);
      for (int l = 0; l < L; ++l) {
        run_layer(inst, l, inst.hidden, ch);
        t.layer_ms[l] = inst.layer_ms;
        inst.taps.clear();
      }
      set_keep(inst, std::nullopt);
      return;
    }
    for (int l = 0; l < L; ++l) {
      auto ops = p.time_layer(l, n_new, kv_len, topts);
      if (ops.empty()) return;  // the path does not time ops: keep the host clock
      if (l == 0) {
        t.clock = "cuda-events";
        for (const auto& op : ops) t.op_names.push_back(op.op);
      }
      double sum = 0;
      for (const auto& op : ops) sum += op.median_ms;
      t.layer_ms[l] = sum;
      t.ops.push_back(std::move(ops));
    }
  };
  if (cfg.timing.reference) time_ops(ref, result.reference_timing, cfg.reference);
  for (std::size_t i = 0; i < slots.size(); ++i) {
    Instance* inst = prop[i] ? &*prop[i] : (iso[i] ? &*iso[i] : nullptr);
    if (inst) time_ops(*inst, result.paths[i].timing, slots[i].label());
  }

  // Greedy decoding from sequence 0's tokens, on fresh instances (caches reset).
  // Greedy decoding reads only each layer's output and the logits.
  if (cfg.greedy_steps > 0) {
    auto span = phases.span("greedy");
    auto decode_ids = [&](Path& p, const std::string& label) {
      auto path_span = phases.span("greedy:" + label);  // nested in greedy
      p.keep_taps(std::vector<Tap>{Tap::resid_out});
      auto ids = (cfg.device_metrics ? greedy_decode_on_device(p, L, cfg.tokens.front(), cfg.greedy_steps)
                                     : greedy_decode(p, L, cfg.tokens.front(), cfg.greedy_steps))
                     .ids;
      p.keep_taps(std::nullopt);
      return ids;
    };
    result.reference_greedy = decode_ids(*ref.path, cfg.reference);
    for (std::size_t i = 0; i < slots.size(); ++i) {
      Instance* inst = prop[i] ? &*prop[i] : &*iso[i];
      PathResult& pr = result.paths[i];
      pr.greedy_tokens = decode_ids(*inst->path, slots[i].label());
      // What the greedy steps saw (the decode's reset() started the counts afresh): an FP8
      // cache whose static scales came from the prefill can clip only on later tokens.
      pr.greedy_headroom = read_recipe_headroom(*inst->path, L);
      // Either side may stop early on all-NaN logits (greedy.h): a missing step mismatches.
      const std::size_t n = std::max(pr.greedy_tokens.size(), result.reference_greedy.size());
      for (std::size_t s = 0; s < n; ++s) {
        if (s >= pr.greedy_tokens.size() || s >= result.reference_greedy.size() ||
            pr.greedy_tokens[s] != result.reference_greedy[s]) {
          pr.greedy_first_mismatch = static_cast<int>(s);
          break;
        }
      }
    }
  }
  return result;
}

}  // namespace fusecheck::run
