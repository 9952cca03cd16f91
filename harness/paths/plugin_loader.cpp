// Plug-in loading and the adapter from the C table to Path (see plugin_loader.h). The
// adapter owns the C view of the checkpoint (fc_model) for the instance's life, checks
// every tap a plug-in returns (id, dtype, memory, rank, shape) before reading it, and
// converts it to the harness's double matrices; values themselves are measured, not
// trusted, so NaN or Inf reach the metrics and fail the gates.
#include "harness/paths/plugin_loader.h"

#include <deque>
#include <dlfcn.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <cmath>
#include <map>
#include <memory>

#include <fmt/core.h>

#include "fusecheck/path_plugin.h"
#include "harness/core/checkpoint.h"
#include "harness/core/dtype.h"
#include "harness/core/error.h"
#include "harness/core/path_registry.h"
#include "harness/core/shared_per_checkpoint.h"
#include "harness/core/untrusted.h"

namespace fusecheck {
namespace {

struct Library {
  std::string file;
  void* handle = nullptr;
  const fc_plugin* table = nullptr;
  std::uint32_t abi_minor = 0;  // 0 for a 1.0 plugin, whose error codes carry no status
  // ABI 1.2's optional execution_traits, null for an older table or one that offers none.
  decltype(fc_plugin::execution_traits) execution_traits = nullptr;
  // ABI 1.3's device-tap entries: all four, or none (null) for an older or partial table.
  decltype(fc_plugin::set_device_taps) set_device_taps = nullptr;
  decltype(fc_plugin::tap_metrics) tap_metrics = nullptr;
  decltype(fc_plugin::next_token) next_token = nullptr;
  decltype(fc_plugin::copy_to_host) copy_to_host = nullptr;
  // ABI 1.4's optional headroom, null for an older table or one that offers none.
  decltype(fc_plugin::headroom) headroom = nullptr;
  std::string name;             // the table's name, checked
  ~Library() = default;  // never dlclose: path instances and static objects outlive loading
};

std::vector<PluginProvenance>& provenance_list() {
  static std::vector<PluginProvenance> list;
  return list;
}

std::string file_sha256(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(file.string(), "cannot read the plug-in file");
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("OpenSSL: cannot initialise SHA-256");
  }
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(in.gcount())) != 1) {
      throw std::runtime_error("OpenSSL: SHA-256 update failed");
    }
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) throw std::runtime_error("OpenSSL: SHA-256 final failed");
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

std::string error_text(const fc_error& err) {
  const std::size_t n = strnlen(err.message, FC_ERROR_MESSAGE_SIZE);
  std::string msg(err.message, n);
  std::replace(msg.begin(), msg.end(), '\n', ' ');
  if (msg.empty()) msg = "no message";
  return fmt::format("{} (code {})", msg, err.code);
}

std::optional<DType> dtype_of(std::int32_t t) {
  switch (t) {
    case FC_F32: return DType::F32;
    case FC_F16: return DType::F16;
    case FC_BF16: return DType::BF16;
    case FC_F64: return DType::F64;
    default: return std::nullopt;
  }
}

fc_dtype fc_dtype_of(DType t) {
  switch (t) {
    case DType::F32: return FC_F32;
    case DType::F16: return FC_F16;
    case DType::BF16: return FC_BF16;
    case DType::F64: return FC_F64;
  }
  return FC_F32;
}

// `decoded` holds the FP32 values of block-quantized tensors (GGUF Q8_0, Q4_K, ...): the ABI
// carries plain dtypes only, so a plug-in gets them decoded exactly as the reference reads
// them (docs/checkpoints.md), never the raw blocks.
fc_tensor view_of(const TensorView* v, std::deque<std::vector<float>>& decoded) {
  fc_tensor t{};
  if (!v) return t;  // rank 0: absent
  if (v->shape.size() > FC_MAX_RANK) throw InputError(v->file, v->name + ": rank above the plug-in ABI's 4");
  t.dtype = fc_dtype_of(v->dtype);
  t.memory = FC_HOST;
  t.rank = static_cast<std::int32_t>(v->shape.size());
  std::int64_t stride = 1;
  for (int i = t.rank - 1; i >= 0; --i) {
    t.shape[i] = v->shape[static_cast<std::size_t>(i)];
    t.strides[i] = stride;
    stride *= t.shape[i];
  }
  t.data = v->bytes.data();
  if (v->codec != nullptr) {
    decoded.push_back(v->to_float());
    t.dtype = FC_F32;
    t.data = decoded.back().data();
  }
  return t;
}

// The checkpoint as the C ABI sees it; strings and arrays owned here.
struct CModel {
  std::string architecture, rope_scaling_type;
  std::vector<fc_layer_weights> layers;
  std::deque<std::vector<float>> decoded;  // quantized tensors, decoded to FP32 (view_of)
  fc_model model{};

  explicit CModel(const Checkpoint& ckpt) {
    const ModelSpec& s = ckpt.spec();
    architecture = s.architecture;
    rope_scaling_type = s.rope_scaling.type;
    fc_model_spec& c = model.spec;
    c.architecture = architecture.c_str();
    c.n_layers = s.n_layers, c.hidden = s.hidden, c.n_heads = s.n_heads, c.n_kv_heads = s.n_kv_heads;
    c.head_dim = s.head_dim, c.intermediate = s.intermediate, c.vocab = s.vocab;
    c.rms_eps = s.rms_eps, c.rope_theta = s.rope_theta, c.rope_dim = s.rope_dim;
    c.rope_style = s.rope_style == RopeStyle::Interleaved ? FC_ROPE_INTERLEAVED : FC_ROPE_NEOX_HALF_SPLIT;
    c.rope_scaling_type = rope_scaling_type.c_str();
    c.rope_scaling_factor = s.rope_scaling.factor;
    c.rope_low_freq_factor = s.rope_scaling.low_freq_factor;
    c.rope_high_freq_factor = s.rope_scaling.high_freq_factor;
    c.rope_original_max_position = s.rope_scaling.original_max_position;
    c.has_qk_norm = s.has_qk_norm, c.has_qkv_bias = s.has_qkv_bias, c.tied_embeddings = s.tied_embeddings;
    c.max_position = s.max_position;
    const ModelTensors& m = ckpt.model();
    for (const LayerTensors& l : m.layers) {
      const auto v = [&](const TensorView* t) { return view_of(t, decoded); };
      layers.push_back({v(l.attn_norm), v(l.wq), v(l.wk), v(l.wv), v(l.bq), v(l.bk), v(l.bv), v(l.q_norm),
                        v(l.k_norm), v(l.wo), v(l.mlp_norm), v(l.w_gate), v(l.w_up), v(l.w_down)});
    }
    model.struct_size = sizeof(fc_model);
    model.embed = view_of(m.embed, decoded);
    model.layers = layers.data();
    model.final_norm = view_of(m.final_norm, decoded);
    model.lm_head = view_of(m.lm_head, decoded);
  }
};

std::int64_t tap_width(Tap t, const ModelSpec& s) {
  switch (t) {
    case Tap::q: case Tap::q_normed: case Tap::q_rope: case Tap::attn: return s.q_width();
    case Tap::k: case Tap::v: case Tap::k_normed: case Tap::k_rope: return s.kv_width();
    case Tap::gate: case Tap::up: case Tap::act: return s.intermediate;
    case Tap::logits: return s.vocab;
    default: return s.hidden;
  }
}

double element(const unsigned char* p, DType t) {
  switch (t) {
    case DType::F64: { double d; std::memcpy(&d, p, 8); return d; }
    case DType::F32: { float f; std::memcpy(&f, p, 4); return f; }
    case DType::BF16: { std::uint16_t b; std::memcpy(&b, p, 2); return bf16_to_float(b); }
    case DType::F16: { std::uint16_t b; std::memcpy(&b, p, 2); return fp16_to_float(b); }
  }
  return 0;
}

// A dense tap widened to doubles (F64: copied), in slices on every OpenMP thread: a
// 512-token layer is ~15M values and the logits ~78M, and the destination is fresh memory
// whose first touch (a page fault per 4 KiB) costs as much as the copy.
void copy_dense(const unsigned char* src, DType dtype, double* dst, std::int64_t n) {
  constexpr std::int64_t kSlice = std::int64_t(1) << 18;
  const std::int64_t slices = (n + kSlice - 1) / kSlice;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
  for (std::int64_t s = 0; s < slices; ++s) {
    const std::int64_t begin = s * kSlice, end = std::min(n, begin + kSlice);
    switch (dtype) {
      case DType::F64:
        std::memcpy(dst + begin, src + begin * 8, static_cast<std::size_t>(end - begin) * sizeof(double));
        break;
      case DType::F32:
        for (std::int64_t i = begin; i < end; ++i) {
          float f;
          std::memcpy(&f, src + i * 4, 4);
          dst[i] = f;
        }
        break;
      case DType::BF16:
      case DType::F16:
        for (std::int64_t i = begin; i < end; ++i) dst[i] = element(src + i * 2, dtype);
        break;
    }
  }
}

// Path over a plug-in instance. Every failure names the plug-in file and the path.
std::string checked_string(const Library& lib, const char* s, const std::string& field);

class PluginPath final : public Path {
 public:
  PluginPath(std::shared_ptr<const Library> lib, std::string name, std::string device, const Checkpoint& ckpt,
             const PathOptions& opts)
      : lib_(std::move(lib)), name_(std::move(name)), device_(std::move(device)), spec_(ckpt.spec()),
        device_index_(opts.device_index),
        cmodel_(shared_per_checkpoint<CModel>(ckpt, -1, [&] { return std::make_shared<const CModel>(ckpt); })) {
    fc_create_options o{sizeof(fc_create_options), opts.device_index, opts.seed};
    fc_error err{};
    fc_path* out = nullptr;
    if (const int rc = lib_->table->create(name_.c_str(), &cmodel_->model, &o, &out, &err); rc != 0) {
      fail_call("create failed", rc, err);
    }
    if (!out) fail("create returned success but no instance");
    instance_ = out;
    try {
      read_taps();
    } catch (...) {
      lib_->table->destroy(instance_);  // the destructor does not run for a failed constructor
      throw;
    }
    // A GPU path names its device as the built-in ones did ("NVIDIA H200", not "cuda").
    if (device_ == "cuda" && lib_->table->device_info) {
      fc_device_info info{};
      fc_error ignored{};
      if (lib_->table->device_info(opts.device_index, 0, &info, &ignored) == 0 && info.name[0]) {
        device_ = std::string(info.name, strnlen(info.name, sizeof info.name));
      }
    }
  }
  ~PluginPath() override { lib_->table->destroy(instance_); }

  std::string name() const override { return name_; }
  std::string device() const override { return device_; }
  std::vector<Tap> taps() const override { return taps_; }

  void reset(int batch, int capacity) override {
    fc_error err{};
    if (const int rc = lib_->table->reset(instance_, batch, capacity, &err); rc != 0) fail_call("reset", rc, err);
  }

  TapMatrix embed(std::span<const std::int32_t> tokens) override {
    fc_error err{};
    fc_tensor out{};
    if (const int rc = lib_->table->embed(instance_, tokens.data(), static_cast<std::int64_t>(tokens.size()), &out, &err);
        rc != 0) {
      fail_call("embed", rc, err);
    }
    return to_matrix(out, static_cast<std::int64_t>(tokens.size()), spec_.hidden, "embed");
  }

  TapSet layer(int layer, const TapMatrix& input) override {
    set_device_mode(false);
    const CallTaps c = call_layer(layer, input_view(input));
    return tap_set(c.out, c.n, input.rows(), fmt::format("layer {}", layer), false);
  }

  TapSet head(const TapMatrix& hidden) override {
    set_device_mode(false);
    const CallTaps c = call_head(input_view(hidden));
    return tap_set(c.out, c.n, hidden.rows(), "head", true);
  }

  void keep_taps(std::optional<std::vector<Tap>> taps) override {
    if (!lib_->table->keep_taps) return;
    if (!taps) return lib_->table->keep_taps(instance_, nullptr, -1);
    std::vector<std::int32_t> ids;
    for (Tap t : *taps) ids.push_back(static_cast<std::int32_t>(t));
    lib_->table->keep_taps(instance_, ids.data(), static_cast<std::int32_t>(ids.size()));
  }

  // ABI 1.2: what the plug-in declares, checked (counts, positive boundaries, switches as
  // short strings); a plug-in without it declares none.
  ExecutionTraits execution_traits(int batch, int max_kv) const override {
    ExecutionTraits traits;
    if (!lib_->execution_traits) return traits;
    fc_execution_traits out{};
    fc_error err{};
    if (const int rc = lib_->execution_traits(instance_, batch, max_kv, &out, &err); rc != 0) {
      fail_call("execution_traits", rc, err);
    }
    constexpr std::int32_t kMaxEntries = 64;
    if (out.n_kv_split_boundaries < 0 || out.n_kv_split_boundaries > kMaxEntries ||
        (out.n_kv_split_boundaries > 0 && !out.kv_split_boundaries)) {
      fail(fmt::format("execution_traits() returned {} KV split boundaries (0 to {})", out.n_kv_split_boundaries,
                       kMaxEntries));
    }
    if (out.n_switches < 0 || out.n_switches > kMaxEntries || (out.n_switches > 0 && !out.switches)) {
      fail(fmt::format("execution_traits() returned {} switches (0 to {})", out.n_switches, kMaxEntries));
    }
    for (std::int32_t i = 0; i < out.n_kv_split_boundaries; ++i) {
      const std::int32_t b = out.kv_split_boundaries[i];
      if (b <= 0) fail(fmt::format("execution_traits() returned KV split boundary {} (must be > 0)", b));
      traits.kv_split_boundaries.push_back(b);
    }
    for (std::int32_t i = 0; i < out.n_switches; ++i) {
      traits.switches.push_back(checked_string(*lib_, out.switches[i], fmt::format("execution_traits switch {}", i)));
    }
    return traits;
  }

  PathCapabilities capabilities() const override {
    PathCapabilities c;
    const std::uint32_t bits = lib_->table->capabilities ? lib_->table->capabilities(instance_) : 0u;
    c.perturbation = lib_->table->set_perturbation && (bits & FC_CAP_PERTURB) != 0;
    c.device_taps = lib_->set_device_taps && (bits & FC_CAP_DEVICE_TAPS) != 0;
    c.headroom = lib_->headroom && (bits & FC_CAP_HEADROOM) != 0;
    return c;
  }

  // ABI 1.4: the recipe's rounding points as the plug-in counted them, checked (a bounded
  // count, named points without duplicates, finite non-negative magnitudes, counts within
  // n_values); a plug-in without the capability reports none.
  std::map<std::string, Headroom> headroom(int layer) const override {
    std::map<std::string, Headroom> out;
    if (!capabilities().headroom) return out;
    const fc_headroom* points = nullptr;
    std::int32_t n = 0;
    fc_error err{};
    if (const int rc = lib_->headroom(instance_, layer, &points, &n, &err); rc != 0) fail_call("headroom", rc, err);
    constexpr std::int32_t kMaxPoints = 256;
    if (n < 0 || n > kMaxPoints || (n > 0 && !points)) {
      fail(fmt::format("headroom() returned {} rounding points (0 to {})", n, kMaxPoints));
    }
    for (std::int32_t i = 0; i < n; ++i) {
      const fc_headroom& p = points[i];
      const std::string name = checked_string(*lib_, p.point, fmt::format("headroom point {}", i));
      if (out.count(name)) fail(fmt::format("headroom() returned rounding point '{}' twice", name));
      const bool magnitudes = std::isfinite(p.max_abs) && p.max_abs >= 0 && std::isfinite(p.max_finite) &&
                              p.max_finite >= 0;
      const bool counts = p.n_values >= 0 && p.n_overflow >= 0 && p.n_saturated >= 0 && p.n_nonfinite_in >= 0 &&
                          p.n_flushed >= 0 && p.n_overflow <= p.n_values && p.n_saturated <= p.n_values &&
                          p.n_nonfinite_in <= p.n_values && p.n_flushed <= p.n_values;
      if (!magnitudes || !counts) {
        fail(fmt::format("headroom() point '{}' has max_abs {}, max_finite {}, {} values, {} overflowed, {} saturated, "
                         "{} non-finite, {} flushed (magnitudes finite and >= 0, counts within 0..values)",
                         name, p.max_abs, p.max_finite, p.n_values, p.n_overflow, p.n_saturated, p.n_nonfinite_in,
                         p.n_flushed));
      }
      Headroom h;
      h.max_abs = p.max_abs;
      h.max_finite = p.max_finite;
      h.n_values = p.n_values;
      h.n_overflow = p.n_overflow;
      h.n_saturated = p.n_saturated;
      h.n_nonfinite_in = p.n_nonfinite_in;
      h.n_flushed = p.n_flushed;
      h.rounded = p.rounded != 0;
      out.emplace(name, h);
    }
    return out;
  }

  DeviceDomain device_domain() const override {
    return capabilities().device_taps ? DeviceDomain{lib_.get(), device_index_} : DeviceDomain{};
  }

  // ABI 1.3 device taps: the instance is switched on first use and back by layer()/head().
  DeviceTapSet layer_on_device(int layer, const TapInput& input) override {
    if (!capabilities().device_taps) return Path::layer_on_device(layer, input);
    set_device_mode(true);
    const CallTaps c = call_layer(layer, tap_input_view(input));
    return device_tap_set(c.out, c.n, input.rows(), fmt::format("layer {}", layer), false);
  }

  DeviceTapSet head_on_device(const TapInput& hidden) override {
    if (!capabilities().device_taps) return Path::head_on_device(hidden);
    set_device_mode(true);
    const CallTaps c = call_head(tap_input_view(hidden));
    return device_tap_set(c.out, c.n, hidden.rows(), "head", true);
  }

  TapMatrix to_host(const DeviceTap& tap) override {
    check_domain(tap, "to_host");
    const fc_tensor t = device_view(tap);
    TapMatrix m(tap.rows, tap.cols);
    fc_error err{};
    if (const int rc = lib_->copy_to_host(tap.device, &t, m.data(), &err); rc != 0) fail_call("copy_to_host", rc, err);
    return m;
  }

  DeviceTapSummary device_metrics(const DeviceTap& ref, const DeviceTap& path, const DeviceTap* truth, DType dtype,
                                  double atol, double rtol) override {
    check_domain(ref, "tap_metrics");
    check_domain(path, "tap_metrics");
    if (truth) check_domain(*truth, "tap_metrics");
    const fc_tensor r = device_view(ref), p = device_view(path);
    const fc_tensor t = truth ? device_view(*truth) : fc_tensor{};
    fc_metrics_request req{};
    req.struct_size = sizeof req;
    req.device_index = ref.device;
    req.path_dtype = static_cast<std::int32_t>(fc_dtype_of(dtype));
    req.atol = atol, req.rtol = rtol;
    req.truth = truth ? &t : nullptr;
    fc_tap_summary out{};
    out.struct_size = sizeof out;
    fc_error err{};
    if (const int rc = lib_->tap_metrics(&req, &r, &p, &out, &err); rc != 0) fail_call("tap_metrics", rc, err);
    if (out.struct_size != sizeof out) fail("tap_metrics changed the summary's struct_size");
    return {out.max_abs,       out.max_rel,        out.rel_l2,          out.cosine,          out.ulp_p50,
            out.ulp_p99,       out.ulp_max,        out.frac_outside,    out.nan_count,       out.inf_count,
            out.ref_nonfinite, out.ref_norm,       out.headroom,        out.overflow_count,  out.saturation_count,
            out.plain_rel_l2,  out.truth_rel_l2_path, out.truth_rel_l2_ref};
  }

  DeviceNextToken device_next_token(const DeviceTap& ref_logits, const DeviceTap& path_logits) override {
    check_domain(ref_logits, "next_token");
    check_domain(path_logits, "next_token");
    if (ref_logits.rows != path_logits.rows || ref_logits.cols != path_logits.cols) {
      throw std::logic_error("device_next_token: the logits differ in shape");
    }
    DeviceNextToken a;
    const auto rows = static_cast<std::size_t>(ref_logits.rows);
    a.kl.assign(rows, 0.0);
    a.ref_margin.assign(rows, 0.0);
    std::vector<std::int32_t> match(rows, 0);
    const fc_tensor r = device_view(ref_logits), p = device_view(path_logits);
    fc_error err{};
    if (const int rc = lib_->next_token(ref_logits.device, &r, &p, a.kl.data(), a.ref_margin.data(), match.data(), &err);
        rc != 0) {
      fail_call("next_token", rc, err);
    }
    for (std::int32_t m : match) {
      if (m != 0 && m != 1) fail(fmt::format("next_token returned a top-1 match of {}", m));
    }
    a.top1_match.assign(match.begin(), match.end());
    return a;
  }

  void set_perturbation(std::optional<Perturbation> p) override {
    if (!capabilities().perturbation) return Path::set_perturbation(p);
    fc_error err{};
    fc_perturbation c{};
    if (p) c = {p->layer, static_cast<std::int32_t>(p->tap), p->relative_size, p->seed};
    if (const int rc = lib_->table->set_perturbation(instance_, p ? &c : nullptr, &err); rc != 0) {
      fail_call("set_perturbation", rc, err);
    }
  }

  std::vector<OpTiming> time_layer(int layer, int n_new, int kv_len, const TimingOptions& opts) override {
    if (!lib_->table->time_layer) return {};
    const fc_timing_options o{opts.warmup, opts.repetitions, opts.cold_l2, opts.graph};
    const fc_op_timing* out = nullptr;
    std::int32_t n = 0;
    fc_error err{};
    if (const int rc = lib_->table->time_layer(instance_, layer, n_new, kv_len, &o, &out, &n, &err); rc != 0) {
      fail_call(fmt::format("time_layer {}", layer), rc, err);
    }
    if (n < 0 || (n > 0 && !out)) fail("time_layer returned a bad table");
    std::vector<OpTiming> timings;
    for (std::int32_t i = 0; i < n; ++i) {
      const fc_op_timing& t = out[i];
      timings.push_back({t.op ? t.op : "?", t.median_ms, t.p10_ms, t.p90_ms, t.repetitions, t.bytes, t.flops});
    }
    return timings;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(lib_->file, "plug-in path '" + name_ + "': " + what);
  }

  // A call that returned status `rc` (ABI 1.1: fc_status). Bad input and what the path
  // does not support are the user's to fix (InputError, exit 2); anything else is the
  // plug-in's own failure (PluginError, exit 70). A 1.0 plug-in's codes mean nothing: exit 2.
  [[noreturn]] void fail_call(const std::string& call, int rc, const fc_error& err) const {
    if (lib_->abi_minor == 0 || rc == FC_ERR_INPUT) fail(call + ": " + error_text(err));
    if (rc == FC_ERR_UNSUPPORTED) fail(call + ": not supported by plug-in " + lib_->name + ": " + error_text(err));
    throw PluginError(fmt::format("{}: plug-in {} failed (a bug in the plug-in, not bad input), path '{}': {}: {}",
                                  lib_->file, lib_->name, name_, call, error_text(err)));
  }

  void read_taps() {
    std::int32_t ids[FC_TAP_COUNT];
    const std::int32_t n = lib_->table->taps(instance_, ids, FC_TAP_COUNT);
    if (n < 0 || n > FC_TAP_COUNT) fail(fmt::format("taps() returned {} taps", n));
    bool has_out = false;
    for (std::int32_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= FC_TAP_COUNT) fail(fmt::format("taps() lists unknown tap id {}", ids[i]));
      const Tap t = static_cast<Tap>(ids[i]);
      if (std::find(taps_.begin(), taps_.end(), t) == taps_.end()) taps_.push_back(t);
      has_out = has_out || t == Tap::resid_out;
    }
    if (!has_out) fail("taps() does not list resid_out");
  }

  // The plug-in's layer / head call on `in`: its tap table, checked by the caller (host or
  // device taps, whichever mode the instance is in).
  struct CallTaps {
    const fc_tap_value* out = nullptr;
    std::int32_t n = 0;
  };
  CallTaps call_layer(int layer, const fc_tensor& in) {
    CallTaps c;
    fc_error err{};
    if (const int rc = lib_->table->layer(instance_, layer, &in, &c.out, &c.n, &err); rc != 0) {
      fail_call(fmt::format("layer {}", layer), rc, err);
    }
    return c;
  }
  CallTaps call_head(const fc_tensor& in) {
    CallTaps c;
    fc_error err{};
    if (const int rc = lib_->table->head(instance_, &in, &c.out, &c.n, &err); rc != 0) fail_call("head", rc, err);
    return c;
  }

  // Switches the instance to device taps (on) or back (ABI 1.3 set_device_taps).
  void set_device_mode(bool on) {
    if (device_mode_ == on) return;
    fc_error err{};
    if (const int rc = lib_->set_device_taps(instance_, on ? 1 : 0, &err); rc != 0) fail_call("set_device_taps", rc, err);
    device_mode_ = on;
  }

  // A device tap handed back to the plug-in must be one of its own, on a device it named.
  void check_domain(const DeviceTap& t, const char* call) const {
    if (t.domain != lib_.get()) {
      throw std::logic_error(fmt::format("{}: path '{}' was given a device tap of another plug-in", call, name_));
    }
  }

  static fc_tensor device_view(const DeviceTap& d) {
    fc_tensor t{};
    t.dtype = fc_dtype_of(d.dtype);
    t.memory = FC_CUDA_DEVICE;
    t.rank = 2;
    t.shape[0] = d.rows;
    t.shape[1] = d.cols;
    t.strides[0] = d.row_stride;
    t.strides[1] = 1;
    t.data = d.data;
    return t;
  }

  fc_tensor tap_input_view(const TapInput& in) const {
    if (in.host) return input_view(*in.host);
    check_domain(*in.device, "layer input");
    if (in.device->device != device_index_) {
      throw std::logic_error(fmt::format("path '{}' on device {} was given an input on device {}", name_, device_index_,
                                         in.device->device));
    }
    return device_view(*in.device);
  }

  // Walks a tap table a layer or head call returned: ids known and of the layer or the head
  // as asked, none twice, resid_out (layer) or logits (head) present; each value made by
  // `convert(tensor, tap, what)`. Shared by the host taps and the device taps.
  template <class Set, class Convert>
  Set tap_table(const fc_tap_value* out, std::int32_t n, const std::string& call, bool head, Convert convert) const {
    if (n < 0 || (n > 0 && !out)) fail(call + ": returned a bad tap table");
    Set set;
    for (std::int32_t i = 0; i < n; ++i) {
      const std::int32_t id = out[i].tap;
      if (id < 0 || id >= FC_TAP_COUNT) fail(fmt::format("{}: unknown tap id {}", call, id));
      const Tap tap = static_cast<Tap>(id);
      const bool head_tap = tap == Tap::final_norm || tap == Tap::logits;
      if (head_tap != head) fail(fmt::format("{}: returned tap {} of the {}", call, tap_name(tap), head ? "layer" : "head"));
      if (set.count(tap)) fail(fmt::format("{}: returned tap {} twice", call, tap_name(tap)));
      set[tap] = convert(out[i].value, tap, fmt::format("{}: tap {}", call, tap_name(tap)));
    }
    if (!head && !set.count(Tap::resid_out)) fail(call + ": returned no resid_out");
    if (head && !set.count(Tap::logits)) fail(call + ": returned no logits");
    return set;
  }

  // Checks the taps a device-taps call returned: device memory, a known dtype, the model's
  // shape, unit column stride and a row stride of at least the width; no copy.
  DeviceTapSet device_tap_set(const fc_tap_value* out, std::int32_t n, std::int64_t rows, const std::string& call,
                              bool head) const {
    return tap_table<DeviceTapSet>(out, n, call, head, [&](const fc_tensor& t, Tap tap, const std::string& what) {
      const auto dtype = dtype_of(t.dtype);
      if (!dtype) fail(fmt::format("{}: unknown dtype {}", what, t.dtype));
      if (t.memory != FC_CUDA_DEVICE) {
        fail(fmt::format("{}: returned memory kind {} while device taps are on (FC_CUDA_DEVICE expected)", what,
                         t.memory));
      }
      const std::int64_t cols = tap_width(tap, spec_);
      if (t.rank != 2) fail(fmt::format("{}: rank {}, expected 2", what, t.rank));
      if (t.shape[0] != rows || t.shape[1] != cols) {
        fail(fmt::format("{}: shape [{} x {}], expected [{} x {}]", what, t.shape[0], t.shape[1], rows, cols));
      }
      if (t.strides[1] != 1 || t.strides[0] < cols) {
        fail(fmt::format("{}: strides [{}, {}], expected [>= {}, 1]", what, t.strides[0], t.strides[1], cols));
      }
      if (!t.data && rows * cols > 0) fail(what + ": null data");
      DeviceTap d;
      d.data = t.data;
      d.dtype = *dtype;
      d.rows = rows, d.cols = cols, d.row_stride = t.strides[0];
      d.device = device_index_;
      d.domain = lib_.get();
      return d;
    });
  }

  static fc_tensor input_view(const TapMatrix& m) {
    fc_tensor t{};
    t.dtype = FC_F64;
    t.memory = FC_HOST;
    t.rank = 2;
    t.shape[0] = m.rows();
    t.shape[1] = m.cols();
    t.strides[0] = m.cols();
    t.strides[1] = 1;
    t.data = m.data();
    return t;
  }

  // Checks a returned tensor against the shape it must have, then copies it.
  TapMatrix to_matrix(const fc_tensor& t, std::int64_t rows, std::int64_t cols, const std::string& what) const {
    const auto dtype = dtype_of(t.dtype);
    if (!dtype) fail(fmt::format("{}: unknown dtype {}", what, t.dtype));
    if (t.memory != FC_HOST) fail(what + ": returned device memory (ABI 1 takes host memory)");
    if (t.rank != 2) fail(fmt::format("{}: rank {}, expected 2", what, t.rank));
    if (t.shape[0] != rows || t.shape[1] != cols) {
      fail(fmt::format("{}: shape [{} x {}], expected [{} x {}]", what, t.shape[0], t.shape[1], rows, cols));
    }
    if (!t.data && rows * cols > 0) fail(what + ": null data");
    TapMatrix m(rows, cols);
    const auto* base = static_cast<const unsigned char*>(t.data);
    if (t.strides[1] == 1 && t.strides[0] == cols) {  // dense: one pass on every core
      copy_dense(base, *dtype, m.data(), rows * cols);
      return m;
    }
    const std::size_t es = dtype_size(*dtype);
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t c = 0; c < cols; ++c) {
        m(r, c) = element(base + static_cast<std::size_t>(r * t.strides[0] + c * t.strides[1]) * es, *dtype);
      }
    }
    return m;
  }

  TapSet tap_set(const fc_tap_value* out, std::int32_t n, std::int64_t rows, const std::string& call,
                 bool head) const {
    return tap_table<TapSet>(out, n, call, head, [&](const fc_tensor& t, Tap tap, const std::string& what) {
      return to_matrix(t, rows, tap_width(tap, spec_), what);
    });
  }

  std::shared_ptr<const Library> lib_;
  std::string name_, device_;
  ModelSpec spec_;
  int device_index_ = 0;
  bool device_mode_ = false;  // set_device_taps(on) in force
  // Shared by every instance of the checkpoint: its quantized tensors are decoded once, and
  // the CUDA library, which keys its device weights by where the tensors live, uploads once.
  std::shared_ptr<const CModel> cmodel_;
  fc_path* instance_ = nullptr;
  std::vector<Tap> taps_;
};

std::string checked_string(const Library& lib, const char* s, const std::string& field) {
  if (!s) throw InputError(lib.file, "not a valid fusecheck plug-in: " + field + " is null");
  const std::size_t n = strnlen(s, 257);
  if (n == 0 || n > 256) throw InputError(lib.file, "not a valid fusecheck plug-in: " + field + " is empty or longer than 256");
  return std::string(s, n);
}

// Opens the library and checks the table; registers nothing.
std::shared_ptr<Library> open_library(const std::filesystem::path& file) {
  auto lib = std::make_shared<Library>();
  lib->file = file.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) throw InputError(lib->file, "no such plug-in file");
  dlerror();
  lib->handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib->handle) {
    const char* why = dlerror();
    throw InputError(lib->file, std::string("not a loadable shared library: ") + (why ? why : "dlopen failed"));
  }
  auto entry = reinterpret_cast<fc_plugin_entry>(dlsym(lib->handle, FC_PLUGIN_ENTRY_POINT));
  if (!entry) {
    throw InputError(lib->file, "not a fusecheck plug-in: it does not export " FC_PLUGIN_ENTRY_POINT "()");
  }
  lib->table = entry();
  const fc_plugin* t = lib->table;
  if (!t) throw InputError(lib->file, FC_PLUGIN_ENTRY_POINT "() returned no table");
  if (t->abi_version != FC_PLUGIN_ABI_VERSION) {
    throw InputError(lib->file, fmt::format("plug-in ABI version {}, this fusecheck takes {}.0 to {}.{} (rebuild the "
                                            "plug-in against this fusecheck's include/fusecheck/path_plugin.h)",
                                            t->abi_version, FC_PLUGIN_ABI_VERSION, FC_PLUGIN_ABI_VERSION,
                                            FC_PLUGIN_ABI_MINOR));
  }
  // The table of a 1.0 plug-in ends before abi_minor; one that holds it says its minor.
  constexpr std::size_t kTable10 = offsetof(fc_plugin, abi_minor);
  if (t->struct_size < kTable10) {
    throw InputError(lib->file, fmt::format("plug-in table is {} bytes, ABI {}.0 needs {}", t->struct_size,
                                            FC_PLUGIN_ABI_VERSION, kTable10));
  }
  if (t->struct_size >= kTable10 + sizeof(t->abi_minor)) lib->abi_minor = t->abi_minor;
  if (lib->abi_minor > FC_PLUGIN_ABI_MINOR) {
    throw InputError(lib->file, fmt::format("plug-in ABI version {}.{}, this fusecheck takes {}.0 to {}.{} (use a "
                                            "newer fusecheck, or build the plug-in against this one's headers)",
                                            t->abi_version, lib->abi_minor, FC_PLUGIN_ABI_VERSION,
                                            FC_PLUGIN_ABI_VERSION, FC_PLUGIN_ABI_MINOR));
  }
  if (lib->abi_minor >= 2 && t->struct_size >= offsetof(fc_plugin, execution_traits) + sizeof(t->execution_traits)) {
    lib->execution_traits = t->execution_traits;
  }
  if (lib->abi_minor >= 3 && t->struct_size >= offsetof(fc_plugin, copy_to_host) + sizeof(t->copy_to_host) &&
      t->set_device_taps && t->tap_metrics && t->next_token && t->copy_to_host) {
    lib->set_device_taps = t->set_device_taps;
    lib->tap_metrics = t->tap_metrics;
    lib->next_token = t->next_token;
    lib->copy_to_host = t->copy_to_host;
  }
  if (lib->abi_minor >= 4 && t->struct_size >= offsetof(fc_plugin, headroom) + sizeof(t->headroom)) {
    lib->headroom = t->headroom;
  }
  const std::pair<const void*, const char*> required[] = {
      {reinterpret_cast<const void*>(t->create), "create"}, {reinterpret_cast<const void*>(t->destroy), "destroy"},
      {reinterpret_cast<const void*>(t->taps), "taps"},     {reinterpret_cast<const void*>(t->reset), "reset"},
      {reinterpret_cast<const void*>(t->embed), "embed"},   {reinterpret_cast<const void*>(t->layer), "layer"},
      {reinterpret_cast<const void*>(t->head), "head"}};
  for (const auto& [fn, name] : required) {
    if (!fn) throw InputError(lib->file, std::string("not a valid fusecheck plug-in: function '") + name + "' is missing");
  }
  if (t->n_paths < 1 || t->n_paths > 64 || !t->paths) {
    throw InputError(lib->file, fmt::format("not a valid fusecheck plug-in: it offers {} paths (1 to 64)", t->n_paths));
  }
  lib->name = checked_string(*lib, t->name, "name");
  return lib;
}

}  // namespace

namespace {

struct Loaded {
  std::shared_ptr<const Library> lib;
  std::size_t provenance_index;
};

std::map<std::string, Loaded>& loaded_libraries() {
  static std::map<std::string, Loaded> m;
  return m;
}

// Reads the table's descriptors into PathInfo entries (checked), with factories.
std::vector<PathInfo> describe_paths(const std::shared_ptr<const Library>& lib, const std::string& origin) {
  const fc_plugin& t = *lib->table;
  std::vector<PathInfo> infos;
  for (int i = 0; i < t.n_paths; ++i) {
    const fc_path_desc& d = t.paths[i];
    const std::string where = fmt::format("paths[{}]", i);
    PathInfo info;
    info.name = checked_string(*lib, d.name, where + ".name");
    info.device = checked_string(*lib, d.device, where + ".device");
    if (info.device != "cpu" && info.device != "cuda") {
      throw InputError(lib->file, "path '" + info.name + "': device must be cpu or cuda, got '" + info.device + "'");
    }
    info.recipe = d.recipe ? std::string(d.recipe, strnlen(d.recipe, 256)) : "";
    info.role = d.role ? std::string(d.role, strnlen(d.role, 32)) : "other";
    if (info.role != "fused" && info.role != "standard" && info.role != "other") {
      throw InputError(lib->file, "path '" + info.name + "': role must be fused, standard or other, got '" + info.role + "'");
    }
    info.dtype = dtype_of(d.dtype);
    if (!info.dtype) throw InputError(lib->file, fmt::format("path '{}': unknown dtype {}", info.name, d.dtype));
    info.description = d.description ? std::string(d.description, strnlen(d.description, 1024)) : "";
    if (std::any_of(infos.begin(), infos.end(), [&](const PathInfo& o) { return o.name == info.name; })) {
      throw InputError(lib->file, "path '" + info.name + "' is offered twice");
    }
    info.origin = origin;
    info.factory = [lib, name = info.name, device = info.device](const Checkpoint& ckpt, const PathOptions& opts) {
      return std::unique_ptr<Path>(std::make_unique<PluginPath>(lib, name, device, ckpt, opts));
    };
    infos.push_back(std::move(info));
  }
  return infos;
}

// Opens and checks `file` once; registers its paths when `register_paths` is set.
const Loaded& load(const std::filesystem::path& file_in, bool register_paths) {
  std::error_code ec;
  if (printable(file_in.string()) != file_in.string()) {
    throw InputError(printable(file_in.string(), 200), "control characters or broken UTF-8 in the plug-in path");
  }
  const auto file = std::filesystem::weakly_canonical(std::filesystem::absolute(file_in), ec);
  if (auto it = loaded_libraries().find(file.string()); it != loaded_libraries().end()) return it->second;
  std::shared_ptr<const Library> lib = open_library(file);
  const fc_plugin& t = *lib->table;
  PluginProvenance prov;
  prov.file = file.string();
  prov.name = checked_string(*lib, t.name, "name");
  prov.version = checked_string(*lib, t.version, "version");
  prov.sha256 = file_sha256(file);
  for (int i = 0; t.env_switches && i < 64 && t.env_switches[i]; ++i) {
    const std::string var = checked_string(*lib, t.env_switches[i], "env_switches entry");
    const char* value = std::getenv(var.c_str());
    prov.env.emplace_back(var, value ? value : "<unset>");
  }
  std::vector<PathInfo> infos = describe_paths(lib, prov.file);
  for (const auto& info : infos) prov.paths.push_back(info.name);
  if (register_paths) {
    for (const auto& info : infos) {
      if (const PathInfo* existing = find_path(info.name)) {
        throw InputError(lib->file, "path '" + info.name + "' is already registered (" + existing->origin + ")");
      }
    }
    for (auto& info : infos) register_path(std::move(info));
  }
  provenance_list().push_back(std::move(prov));
  return loaded_libraries()[file.string()] = Loaded{lib, provenance_list().size() - 1};
}

}  // namespace

const PluginProvenance& load_plugin(const std::filesystem::path& file) {
  return provenance_list()[load(file, true).provenance_index];
}

std::vector<std::filesystem::path> cuda_plugin_candidates() {
  std::vector<std::filesystem::path> out;
  // Set, it is the only place looked: a user who names a file means that file.
  if (const char* env = std::getenv("FUSECHECK_CUDA_PLUGIN"); env && *env) return {env};
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    out.push_back(exe.parent_path() / "libfusecheck_cuda.so");
    out.push_back(exe.parent_path().parent_path() / "lib" / "libfusecheck_cuda.so");
  }
  out.emplace_back(FUSECHECK_INSTALL_LIBDIR "/libfusecheck_cuda.so");
#ifdef FUSECHECK_BUILD_CUDA_PLUGIN
  out.emplace_back(FUSECHECK_BUILD_CUDA_PLUGIN);
#endif
  return out;
}

namespace {

// The CUDA library, loaded on first call; nullptr when no candidate exists.
const Library* cuda_library() {
  static const Library* lib = [] () -> const Library* {
    for (const auto& file : cuda_plugin_candidates()) {
      std::error_code ec;
      if (std::filesystem::is_regular_file(file, ec)) return load(file, false).lib.get();
    }
    return nullptr;
  }();
  return lib;
}

}  // namespace

namespace {
std::string missing_cuda_library() {
  std::string looked;
  for (const auto& f : cuda_plugin_candidates()) looked += (looked.empty() ? "" : ", ") + f.string();
  return "the CUDA paths live in libfusecheck_cuda.so, which was not found (looked in " + looked +
         "); build it where nvcc exists (cmake --build BUILD --target fusecheck_cuda) and install it beside "
         "fusecheck (cmake --install BUILD), or set FUSECHECK_CUDA_PLUGIN";
}
}  // namespace

std::unique_ptr<Path> make_builtin_cuda_path(const std::string& name, const Checkpoint& ckpt,
                                             const PathOptions& opts) {
  const Library* lib = cuda_library();
  if (!lib) throw InputError(name, missing_cuda_library());
  const auto& loaded = loaded_libraries().at(lib->file);
  for (const auto& info : describe_paths(loaded.lib, lib->file)) {
    if (info.name == name) return info.factory(ckpt, opts);
  }
  throw InputError(lib->file, "offers no path named '" + name + "'");
}

std::string no_cuda_device_reason() {
  if (!cuda_library()) return missing_cuda_library();
  return "no usable CUDA device on this machine (use --device cpu)";
}

bool gpu_driver_present() {
  std::error_code ec;
  for (const char* node : {"/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg"}) {
    if (std::filesystem::exists(node, ec)) return true;
  }
  return false;
}

int cuda_device_count() {
  const Library* lib = cuda_library();
  return lib && lib->table->device_count ? lib->table->device_count() : 0;
}

DeviceDescription describe_cuda_device(int index, bool measure_bandwidth) {
  const Library* lib = cuda_library();
  if (!lib || !lib->table->device_info) throw InputError("--device cuda", "no CUDA library loaded");
  fc_device_info info{};
  fc_error err{};
  if (lib->table->device_info(index, measure_bandwidth, &info, &err) != 0) {
    throw InputError(lib->file, "device_info: " + error_text(err));
  }
  DeviceDescription d;
  d.name = std::string(info.name, strnlen(info.name, sizeof info.name));
  d.library_versions = std::string(info.library_versions, strnlen(info.library_versions, sizeof info.library_versions));
  d.driver_version = info.driver_version, d.runtime_version = info.runtime_version;
  d.sm_clock_peak_mhz = info.sm_clock_peak_mhz, d.mem_clock_peak_mhz = info.mem_clock_peak_mhz;
  d.copy_bandwidth_gbs = info.copy_bandwidth_gbs;
  d.global_mem_bytes = info.global_mem_bytes;
  return d;
}

const std::vector<PluginProvenance>& loaded_plugins() { return provenance_list(); }

std::string plugins_provenance_text() {
  std::string text;
  for (const auto& p : provenance_list()) {
    std::string env;
    for (const auto& [k, v] : p.env) env += (env.empty() ? "" : ", ") + k + "=" + v;
    text += fmt::format("{}{} {} sha256:{} {}; env {}", text.empty() ? "" : "\n", p.name, p.version, p.sha256,
                        p.file, env.empty() ? "none" : env);
  }
  return text;
}

}  // namespace fusecheck
