// Invariance mode (see invariance.h). Each check is a list of variants; each variant is
// a pair of runs of fresh instances driven layer by layer in lockstep (only one layer's
// taps of the needle live at a time), compared bitwise tap by tap.
#include "harness/run/invariance.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <exception>
#include <iterator>
#include <set>
#include <stdexcept>

#include <fmt/core.h>

#include "harness/run/metrics.h"

namespace fusecheck::run {

const char* invariance_status_name(InvarianceStatus s) {
  switch (s) {
    case InvarianceStatus::invariant: return "invariant";
    case InvarianceStatus::differs: return "differs";
    case InvarianceStatus::not_applicable: return "n/a";
  }
  return "?";
}

namespace {

bool exact_in(double x, DType t) {
  if (!std::isfinite(x)) return true;  // Inf and NaN exist in every format
  switch (t) {
    case DType::F64: return true;
    case DType::F32: return static_cast<double>(static_cast<float>(x)) == x;
    case DType::BF16: {
      const auto f = static_cast<float>(x);
      return static_cast<double>(f) == x && round_to_bf16(f) == f;
    }
    case DType::F16: {
      const auto f = static_cast<float>(x);
      return static_cast<double>(f) == x && round_to_fp16(f) == f;
    }
  }
  return false;
}

// The narrowest of (path dtype, F32, F64) in which every value of both taps is exact.
DType storage_dtype(const TapMatrix& a, const TapMatrix& b, DType path_dtype) {
  std::vector<DType> candidates{path_dtype};
  if (path_dtype != DType::F32 && path_dtype != DType::F64) candidates.push_back(DType::F32);
  if (path_dtype != DType::F64) candidates.push_back(DType::F64);
  for (DType t : candidates) {
    const auto exact = [t](const TapMatrix& m) {
      return std::all_of(m.data(), m.data() + m.size(), [t](double x) { return exact_in(x, t); });
    };
    if (exact(a) && exact(b)) return t;
  }
  return DType::F64;
}

// Largest finite |value| of row `r`.
double row_scale(const TapMatrix& m, Eigen::Index r) {
  double scale = 0;
  for (Eigen::Index c = 0; c < m.cols(); ++c) {
    const double v = std::fabs(m(r, c));
    if (std::isfinite(v)) scale = std::max(scale, v);
  }
  return scale;
}

}  // namespace

TapDiff compare_bitwise(const TapMatrix& a, const TapMatrix& b, DType path_dtype) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) {
    throw std::logic_error(fmt::format("compare_bitwise: shape mismatch ({}x{} vs {}x{})", a.rows(), a.cols(),
                                       b.rows(), b.cols()));
  }
  TapDiff d;
  d.dtype = storage_dtype(a, b, path_dtype);
  for (Eigen::Index r = 0; r < a.rows(); ++r) {
    double scale = -1;  // computed at the row's first difference
    for (Eigen::Index c = 0; c < a.cols(); ++c) {
      const double x = a(r, c), y = b(r, c);
      if (std::bit_cast<std::uint64_t>(x) == std::bit_cast<std::uint64_t>(y)) continue;
      ++d.differing;
      if (d.first_row < 0) d.first_row = static_cast<int>(r);
      // -0 against +0 differs in its bits and is 0 ULPs apart; a NaN against a number is
      // the largest distance there is.
      const std::uint64_t u = ulp_distance(x, y, d.dtype);
      const double bits = u == UINT64_MAX ? HUGE_VAL : static_cast<double>(u);
      d.max_ulp = std::max(d.max_ulp, bits);
      if (crosses_zero(x, y)) {
        ++d.sign_crossings;
      } else {
        d.max_same_sign_ulp = std::max(d.max_same_sign_ulp, bits);
      }
      if (scale < 0) {
        scale = row_scale(a, r);
        if (scale == 0) scale = row_scale(b, r);
      }
      const double scaled = scaled_ulp(x, y, scale, d.dtype);
      d.max_scaled_ulp = std::max(d.max_scaled_ulp, scaled);
      ++d.scaled_ulp_histogram[static_cast<std::size_t>(scaled_ulp_bin(scaled))];
    }
  }
  return d;
}

namespace {

// One way to run the needle: the batch it sits in, how its tokens are cut into calls,
// which positions are compared and whether every tap is materialized.
struct Plan {
  std::string label;
  std::vector<std::vector<std::int32_t>> tokens;  // [batch][N]
  int needle = 0;                                 // sequence compared
  std::vector<int> chunks;                        // tokens per call, summing to N
  int compare_from = 0;                           // needle positions [compare_from, N) compared
  bool resid_only = false;                        // keep_taps({resid_out})
};

// What a path threw while running a plan: it refuses that layout (a batch, a chunk), so
// the check is n/a for it. The harness's own errors are not caught as this.
struct PathRefused : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename F>
auto path_call(F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    throw PathRefused(e.what());
  }
}

// A fresh instance running a plan; yields the needle's compared rows layer by layer.
class Runner {
 public:
  Runner(std::unique_ptr<Path> path, const Plan& plan) : path_(std::move(path)), plan_(plan) {
    const int batch = static_cast<int>(plan.tokens.size());
    const int n = static_cast<int>(plan.tokens.front().size());
    path_call([&] {
      path_->reset(batch, n);
      return 0;
    });
    int offset = 0;
    for (int size : plan.chunks) {
      std::vector<std::int32_t> ids;
      for (const auto& seq : plan.tokens) ids.insert(ids.end(), seq.begin() + offset, seq.begin() + offset + size);
      hidden_.push_back(path_call([&] { return path_->embed(ids); }));
      offsets_.push_back(offset);
      offset += size;
    }
  }

  // Runs `layer` on every chunk; the needle's compared rows of every tap.
  TapSet layer(int layer) {
    std::vector<TapSet> per_chunk;
    for (std::size_t c = 0; c < hidden_.size(); ++c) {
      // A call with no compared rows needs only its output (a GPU path then downloads
      // one tap instead of every one: a 64-sequence KV prefill's taps are gigabytes).
      const bool only_output = plan_.resid_only || !holds_compared(c);
      path_call([&] {
        path_->keep_taps(only_output ? std::optional<std::vector<Tap>>(std::vector<Tap>{Tap::resid_out})
                                     : std::nullopt);
        return 0;
      });
      TapSet ts = path_call([&] { return path_->layer(layer, hidden_[c]); });
      expect_rows(ts, hidden_[c].rows(), "layer");
      auto out = ts.find(Tap::resid_out);
      if (out == ts.end()) throw PathRefused("layer returned no resid_out");
      hidden_[c] = out->second;
      per_chunk.push_back(std::move(ts));
    }
    return gather(per_chunk);
  }

  // The head on the last `k` positions of every sequence in the last call (the whole
  // batch, as when serving: the lm_head GEMM sees the batch's rows; a vocab-wide tap of
  // every position would not fit a 64-sequence batch); the needle's rows.
  TapSet head(int k) {
    const std::size_t last = hidden_.size() - 1;
    const int n_c = plan_.chunks[last];
    const int batch = static_cast<int>(plan_.tokens.size());
    TapMatrix rows(static_cast<Eigen::Index>(batch) * k, hidden_[last].cols());
    for (int b = 0; b < batch; ++b) rows.middleRows(b * k, k) = hidden_[last].middleRows(b * n_c + n_c - k, k);
    const TapSet all = path_call([&] { return path_->head(rows); });
    expect_rows(all, rows.rows(), "head");
    TapSet out;
    for (const auto& [tap, m] : all) out[tap] = m.middleRows(plan_.needle * k, k);
    return out;
  }

 private:
  // A tap with other rows than the call's would be read out of bounds: the path is
  // refused for this check, naming the tap.
  static void expect_rows(const TapSet& taps, Eigen::Index rows, const char* call) {
    for (const auto& [tap, m] : taps) {
      if (m.rows() != rows) {
        throw PathRefused(fmt::format("{} returned {} rows of {} for {} input rows", call, m.rows(), tap_name(tap), rows));
      }
    }
  }

  bool holds_compared(std::size_t c) const { return offsets_[c] + plan_.chunks[c] > plan_.compare_from; }

  TapSet gather(const std::vector<TapSet>& per_chunk) const {
    const int n = static_cast<int>(plan_.tokens.front().size());
    const int rows = n - plan_.compare_from;
    TapSet out;
    // Taps every chunk with compared rows returned.
    std::set<Tap> taps;
    bool first = true;
    for (std::size_t c = 0; c < per_chunk.size(); ++c) {
      if (!holds_compared(c)) continue;
      std::set<Tap> here;
      for (const auto& [tap, m] : per_chunk[c]) here.insert(tap);
      if (first) {
        taps = here;
        first = false;
      } else {
        std::set<Tap> both;
        std::set_intersection(taps.begin(), taps.end(), here.begin(), here.end(), std::inserter(both, both.end()));
        taps = both;
      }
    }
    for (Tap tap : taps) {
      TapMatrix m(rows, per_chunk[chunk_of(plan_.compare_from)].at(tap).cols());
      for (std::size_t c = 0; c < per_chunk.size(); ++c) {
        if (!holds_compared(c)) continue;
        const TapMatrix& src = per_chunk[c].at(tap);
        const int size = plan_.chunks[c];
        const int base = plan_.needle * size;  // rows are sequence-major within a call
        for (int t = std::max(0, plan_.compare_from - offsets_[c]); t < size; ++t) {
          m.row(offsets_[c] + t - plan_.compare_from) = src.row(base + t);
        }
      }
      out[tap] = std::move(m);
    }
    return out;
  }

  std::size_t chunk_of(int position) const {
    for (std::size_t c = 0; c < offsets_.size(); ++c) {
      if (position < offsets_[c] + plan_.chunks[c]) return c;
    }
    throw std::logic_error("invariance: position past the needle");
  }

  std::unique_ptr<Path> path_;
  Plan plan_;
  std::vector<TapMatrix> hidden_;  // per chunk: the input of the next layer
  std::vector<int> offsets_;
};

// The difference between two runs of the needle, first in layer order.
struct PairDiff {
  bool differs = false;
  int first_layer = -1;
  std::optional<Tap> first_tap;
  int first_row = -1;
  double max_ulp = 0;
  DType max_ulp_dtype = DType::F64;
  std::int64_t elements_differing = 0, elements_compared = 0;
  TapDiff first;  // the first differing tap's comparison
  double max_scaled_ulp = 0;
  std::int64_t sign_crossings = 0;
  double max_same_sign_ulp = 0;
};

// FNV-1a 64 over (layer, tap, shape, value bits) of every tap, in order.
class Fingerprint {
 public:
  void add(int layer, const TapSet& taps) {
    for (const auto& [tap, m] : taps) {
      mix(static_cast<std::uint64_t>(layer));
      mix(static_cast<std::uint64_t>(tap));
      mix(static_cast<std::uint64_t>(m.rows()));
      mix(static_cast<std::uint64_t>(m.cols()));
      for (Eigen::Index i = 0; i < m.size(); ++i) mix(std::bit_cast<std::uint64_t>(m.data()[i]));
    }
  }
  std::string hex() const { return fmt::format("{:016x}", h_); }

 private:
  void mix(std::uint64_t v) {
    for (int b = 0; b < 8; ++b) {
      h_ ^= (v >> (8 * b)) & 0xFFu;
      h_ *= 0x100000001b3ull;
    }
  }
  std::uint64_t h_ = 0xcbf29ce484222325ull;
};

void add_tap_diffs(PairDiff& d, int layer, int compare_from, const TapSet& a, const TapSet& b, DType dtype) {
  for (const auto& [tap, va] : a) {
    auto it = b.find(tap);
    if (it == b.end()) continue;
    const TapDiff td = compare_bitwise(va, it->second, dtype);
    d.elements_compared += va.size();
    if (td.differing == 0) continue;
    d.elements_differing += td.differing;
    if (!d.differs) {
      d.differs = true;
      d.first_layer = layer;
      d.first_tap = tap;
      d.first_row = compare_from + td.first_row;
      d.first = td;
    }
    d.max_scaled_ulp = std::max(d.max_scaled_ulp, td.max_scaled_ulp);
    d.sign_crossings += td.sign_crossings;
    d.max_same_sign_ulp = std::max(d.max_same_sign_ulp, td.max_same_sign_ulp);
    if (td.max_ulp >= d.max_ulp) {
      d.max_ulp = td.max_ulp;
      d.max_ulp_dtype = td.dtype;
    }
  }
}

// Runs `a` once and every plan of `bs` beside it, layer by layer, each on its own fresh
// instance; the difference of each from `a`.
std::vector<PairDiff> compare_group(const InstanceMaker& make, int n_layers, const Plan& a,
                                    const std::vector<const Plan*>& bs, DType dtype, Fingerprint* fingerprint_a) {
  Runner ra(path_call(make), a);
  std::vector<Runner> rbs;
  rbs.reserve(bs.size());
  for (const Plan* b : bs) rbs.emplace_back(path_call(make), *b);
  // The head's positions: the last few every plan's last call holds.
  constexpr int kHeadPositions = 8;
  const int n = static_cast<int>(a.tokens.front().size());
  int k = std::min({kHeadPositions, a.chunks.back(), n - a.compare_from});
  for (const Plan* b : bs) k = std::min(k, b->chunks.back());
  std::vector<PairDiff> d(bs.size());
  for (int l = 0; l <= n_layers; ++l) {
    const TapSet ta = l < n_layers ? ra.layer(l) : ra.head(k);
    if (fingerprint_a) fingerprint_a->add(l, ta);
    for (std::size_t i = 0; i < rbs.size(); ++i) {
      const TapSet tb = l < n_layers ? rbs[i].layer(l) : rbs[i].head(k);
      add_tap_diffs(d[i], l, l < n_layers ? a.compare_from : n - k, ta, tb, dtype);
    }
  }
  return d;
}

// Layer-major order of two first differences (head last); taps in execution order.
bool earlier(int layer_a, Tap tap_a, int layer_b, Tap tap_b) {
  if (layer_a != layer_b) return layer_a < layer_b;
  return static_cast<int>(tap_a) < static_cast<int>(tap_b);
}

struct Variant {
  Plan a, b;
};

// `fingerprint`: of the first variant's first run, when given.
InvarianceOutcome run_variants(InvarianceCheck check, const std::vector<Variant>& variants, const InstanceMaker& make,
                               int n_layers, DType dtype, std::string* fingerprint = nullptr) {
  InvarianceOutcome o;
  o.check = check;
  // Every variant of a check compares against one A run: it runs once.
  std::vector<const Plan*> bs;
  for (const auto& v : variants) {
    if (v.a.label != variants.front().a.label) throw std::logic_error("invariance: variants of one check differ in A");
    bs.push_back(&v.b);
  }
  std::vector<PairDiff> diffs;
  Fingerprint print;
  try {
    diffs = compare_group(make, n_layers, variants.front().a, bs, dtype, fingerprint ? &print : nullptr);
    if (fingerprint) *fingerprint = print.hex();
  } catch (const PathRefused& e) {
    // A path that refuses a layout (a batch or chunk it does not support) cannot be
    // certified for it: the check says so rather than passing.
    o.status = InvarianceStatus::not_applicable;
    o.reason = fmt::format("the path refused a variant of it: {}", e.what());
    return o;
  }
  for (std::size_t i = 0; i < variants.size(); ++i) {
    const Variant& v = variants[i];
    const PairDiff& d = diffs[i];
    ++o.variants;
    o.elements_compared += d.elements_compared;
    if (!d.differs) continue;
    ++o.variants_differing;
    o.elements_differing += d.elements_differing;
    if (!o.first_tap || earlier(d.first_layer, *d.first_tap, o.first_layer, *o.first_tap)) {
      o.first_layer = d.first_layer;
      o.first_tap = d.first_tap;
      o.first_row = d.first_row;
      o.reason = v.b.label + " vs " + v.a.label;
      o.first_scaled_ulp = d.first.max_scaled_ulp;
      o.first_scaled_ulp_dtype = std::string(dtype_name(d.first.dtype));
      o.first_scaled_ulp_histogram = d.first.scaled_ulp_histogram;
    }
    o.max_scaled_ulp = std::max(o.max_scaled_ulp, d.max_scaled_ulp);
    o.sign_crossings += d.sign_crossings;
    o.max_same_sign_ulp = std::max(o.max_same_sign_ulp, d.max_same_sign_ulp);
    if (d.max_ulp >= o.max_ulp) {
      o.max_ulp = d.max_ulp;
      o.max_ulp_dtype = std::string(dtype_name(d.max_ulp_dtype));
    }
  }
  o.status = o.variants_differing > 0 ? InvarianceStatus::differs : InvarianceStatus::invariant;
  return o;
}

InvarianceOutcome not_applicable(InvarianceCheck check, std::string reason) {
  InvarianceOutcome o;
  o.check = check;
  o.status = InvarianceStatus::not_applicable;
  o.reason = std::move(reason);
  return o;
}

Plan base_plan(const InvarianceInput& in, int batch, int needle) {
  Plan p;
  p.tokens.assign(static_cast<std::size_t>(batch), {});
  for (int b = 0, other = 0; b < batch; ++b) {
    p.tokens[static_cast<std::size_t>(b)] = b == needle ? in.needle : in.neighbours.at(static_cast<std::size_t>(other++));
  }
  p.needle = needle;
  p.chunks = in.phase_chunks;
  p.compare_from = in.compare_from;
  p.label = batch == 1 ? "alone" : fmt::format("batch {} at {}", batch, needle);
  return p;
}

std::vector<Variant> batch_variants(const InvarianceInput& in) {
  std::vector<Variant> out;
  const Plan alone = base_plan(in, 1, 0);
  for (int b : in.spec.batch_sizes) {
    std::set<int> positions{0, b / 2, b - 1};
    for (int pos : positions) out.push_back({alone, base_plan(in, b, pos)});
  }
  return out;
}

std::vector<Variant> run_to_run_variants(const InvarianceInput& in, int batch) {
  std::vector<Variant> out;
  Plan first = base_plan(in, batch, 0);
  first.label = "run 1";
  for (int r = 2; r <= in.spec.runs; ++r) {
    Plan again = first;
    again.label = fmt::format("run {}", r);
    out.push_back({first, again});
  }
  return out;
}

Plan chunked(const InvarianceInput& in, std::vector<int> chunks, int compare_from, std::string label) {
  Plan p = base_plan(in, 1, 0);
  p.chunks = std::move(chunks);
  p.compare_from = compare_from;
  p.label = std::move(label);
  return p;
}

// First chunks of a chunked prefill: the scenario's sizes and each side of the path's
// split boundaries, inside (0, N).
std::vector<int> first_chunk_sizes(const InvarianceInput& in, const ExecutionTraits& traits) {
  const int n = static_cast<int>(in.needle.size());
  std::set<int> sizes(in.spec.kv_chunks.begin(), in.spec.kv_chunks.end());
  for (int b : traits.kv_split_boundaries) {
    sizes.insert(b - 1);
    sizes.insert(b + 1);
  }
  std::vector<int> out;
  for (int s : sizes) {
    if (s > 0 && s < n) out.push_back(s);
  }
  return out;
}

// The variants of one check, or why it cannot be made.
struct CheckPlan {
  std::vector<Variant> variants;
  std::string not_applicable;  // non-empty: the reason
};

CheckPlan plan_check(InvarianceCheck check, const InvarianceInput& in, const ExecutionTraits& traits, bool cpu,
                     int batch) {
  const int n = static_cast<int>(in.needle.size());
  switch (check) {
    case InvarianceCheck::batch: return {batch_variants(in), ""};
    case InvarianceCheck::run_to_run: return {run_to_run_variants(in, batch), ""};
    case InvarianceCheck::cuda_graph:
      return {{}, cpu ? "CPU path: no CUDA graphs"
                      : "the path declares no graph-launched layer() (its graphs run only in time_layer)"};
    case InvarianceCheck::switches: {
      if (traits.switches.empty()) return {{}, cpu ? "CPU path: no kernel switches" : "the path declares no switches"};
      std::string names;
      for (const auto& sw : traits.switches) names += (names.empty() ? "" : ", ") + sw;
      return {{}, "read once per process, not switchable inside one run: " + names +
                      " (scripts/gpu-check-20 compares two processes)"};
    }
    case InvarianceCheck::kv_chunking: {
      CheckPlan plan;
      const Plan whole = chunked(in, {n}, 0, fmt::format("prefill {}", n));
      for (int c : first_chunk_sizes(in, traits)) {
        plan.variants.push_back({whole, chunked(in, {c, n - c}, 0, fmt::format("prefill {}+{}", c, n - c))});
      }
      if (plan.variants.empty()) plan.not_applicable = fmt::format("no chunk size inside (0, {})", n);
      return plan;
    }
    case InvarianceCheck::prefill_vs_decode: {
      const int d = std::min(in.spec.decode_steps, n - 1);
      if (d < 1) return {{}, "the needle has one token: nothing to decode"};
      std::vector<int> decode_chunks{n - d};
      decode_chunks.insert(decode_chunks.end(), static_cast<std::size_t>(d), 1);
      const Plan prefill = chunked(in, {n}, n - d, fmt::format("prefill {}", n));
      const Plan decode = chunked(in, decode_chunks, n - d, fmt::format("prefill {} + {} decode", n - d, d));
      return {{{prefill, decode}}, ""};
    }
    case InvarianceCheck::taps_on_off: {
      Plan all = base_plan(in, batch, 0);
      all.label = "every tap";
      Plan resid = all;
      resid.label = "resid_out only";
      resid.resid_only = true;
      return {{{all, resid}}, ""};
    }
  }
  throw std::logic_error("invariance: unknown check");
}

}  // namespace

PathInvariance run_invariance(const InvarianceInput& in, const std::string& label, DType dtype,
                              const InstanceMaker& make) {
  PathInvariance pi;
  pi.label = label;
  const int batch = std::clamp(in.batch, 1, 1 + static_cast<int>(in.neighbours.size()));
  ExecutionTraits traits;
  {
    const auto probe = make();
    pi.device = probe->device();
    traits = probe->execution_traits(1, static_cast<int>(in.needle.size()));
  }
  for (InvarianceCheck check : in.spec.checks) {
    const CheckPlan plan = plan_check(check, in, traits, pi.device == "cpu", batch);
    if (!plan.not_applicable.empty()) {
      pi.outcomes.push_back(not_applicable(check, plan.not_applicable));
      continue;
    }
    std::string* fingerprint = check == InvarianceCheck::run_to_run ? &pi.fingerprint : nullptr;
    pi.outcomes.push_back(run_variants(check, plan.variants, make, in.n_layers, dtype, fingerprint));
  }
  return pi;
}

}  // namespace fusecheck::run
