// Header-only C++ side of the fusecheck path plug-in ABI (path_plugin.h): a C++ plugin
// subclasses fusecheck::plugin::Path and exports its table with one macro instead of
// filling fc_plugin by hand. Exceptions never cross the C boundary: the wrapper turns
// them into the ABI's error channel (code + message). Needs only the C++20 standard
// library; nothing here links against fusecheck.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "fusecheck/path_plugin.h"

namespace fusecheck::plugin {

inline std::size_t dtype_size(fc_dtype t) {
  switch (t) {
    case FC_F32: return 4;
    case FC_F64: return 8;
    case FC_F16:
    case FC_BF16: return 2;
  }
  throw std::invalid_argument("unknown fc_dtype " + std::to_string(static_cast<int>(t)));
}

inline float bf16_bits_to_float(std::uint16_t bits) {
  const std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Rounds to the nearest bf16, ties to even; NaN stays a quiet NaN.
inline std::uint16_t float_to_bf16_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

inline float fp16_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = (h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while ((man & 0x400u) == 0) man <<= 1, --exp;
    u = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// A tensor of the checkpoint (any ABI dtype, any strides, rank 1 or 2) as dense floats.
// Throws std::invalid_argument for device memory or a rank it cannot take.
inline std::vector<float> to_float(const fc_tensor& t) {
  if (t.rank < 1 || t.rank > 2) throw std::invalid_argument("to_float: rank " + std::to_string(t.rank));
  if (t.memory != FC_HOST) throw std::invalid_argument("to_float: tensor is not in host memory");
  const std::int64_t rows = t.rank == 2 ? t.shape[0] : 1, cols = t.shape[t.rank - 1];
  const std::int64_t rs = t.rank == 2 ? t.strides[0] : 0, cs = t.strides[t.rank - 1];
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  const auto* base = static_cast<const unsigned char*>(t.data);
  const std::size_t es = dtype_size(static_cast<fc_dtype>(t.dtype));
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      const unsigned char* p = base + static_cast<std::size_t>(r * rs + c * cs) * es;
      float v = 0;
      switch (t.dtype) {
        case FC_F32: std::memcpy(&v, p, 4); break;
        case FC_F64: { double d; std::memcpy(&d, p, 8); v = static_cast<float>(d); break; }
        case FC_BF16: { std::uint16_t b; std::memcpy(&b, p, 2); v = bf16_bits_to_float(b); break; }
        case FC_F16: { std::uint16_t b; std::memcpy(&b, p, 2); v = fp16_bits_to_float(b); break; }
      }
      out[static_cast<std::size_t>(r * cols + c)] = v;
    }
  }
  return out;
}

// Dense host matrix [rows x cols] of one dtype; what a path returns. It owns its bytes, or
// (borrowed()) points at memory the path keeps alive until its next call, which saves a
// copy of large taps. With device taps (ABI 1.3), device_view() is a tap in device memory
// instead: [rows x cols] with row r at data + r * row_stride elements.
class HostMatrix {
 public:
  HostMatrix() = default;
  HostMatrix(fc_dtype dtype, std::int64_t rows, std::int64_t cols)
      : dtype_(dtype), rows_(rows), cols_(cols),
        bytes_(static_cast<std::size_t>(rows * cols) * dtype_size(dtype)) {}
  static HostMatrix borrowed(fc_dtype dtype, std::int64_t rows, std::int64_t cols, const void* data) {
    HostMatrix m;
    m.dtype_ = dtype, m.rows_ = rows, m.cols_ = cols, m.borrowed_ = data;
    return m;
  }
  static HostMatrix device_view(fc_dtype dtype, std::int64_t rows, std::int64_t cols, std::int64_t row_stride,
                                const void* data) {
    HostMatrix m = borrowed(dtype, rows, cols, data);
    m.memory_ = FC_CUDA_DEVICE;
    m.row_stride_ = row_stride;
    return m;
  }
  template <class T>
  T* data() { return reinterpret_cast<T*>(bytes_.data()); }
  std::int64_t rows() const { return rows_; }
  std::int64_t cols() const { return cols_; }
  fc_tensor view() const {
    fc_tensor t{};
    t.dtype = dtype_;
    t.memory = memory_;
    t.rank = 2;
    t.shape[0] = rows_;
    t.shape[1] = cols_;
    t.strides[0] = row_stride_ > 0 ? row_stride_ : cols_;
    t.strides[1] = 1;
    t.data = borrowed_ ? borrowed_ : bytes_.data();
    return t;
  }

 private:
  fc_dtype dtype_ = FC_F32;
  std::int64_t rows_ = 0, cols_ = 0;
  std::vector<unsigned char> bytes_;
  const void* borrowed_ = nullptr;
  fc_memory memory_ = FC_HOST;
  std::int64_t row_stride_ = 0;
};

// Input handed to layer()/head(): [rows x cols] F64, dense, host.
struct Input {
  const double* data;
  std::int64_t rows, cols;
};

using TapValues = std::vector<std::pair<fc_tap, HostMatrix>>;

struct OpTiming {
  std::string op;
  double median_ms = 0, p10_ms = 0, p90_ms = 0;
  int repetitions = 0;
  double bytes = 0, flops = 0;
};

// What execution_traits() declares (fc_execution_traits).
struct ExecutionTraits {
  std::vector<std::int32_t> kv_split_boundaries;
  std::vector<std::string> switches;
};

// One rounding point's headroom (fc_headroom, ABI 1.4).
struct HeadroomPoint {
  std::string point;
  double max_abs = 0, max_finite = 0;
  std::int64_t n_values = 0, n_overflow = 0, n_saturated = 0, n_nonfinite_in = 0, n_flushed = 0;
  bool rounded = false;
};

// What a C++ plugin implements; the meaning of each call is the C table's.
class Path {
 public:
  virtual ~Path() = default;
  virtual std::vector<fc_tap> taps() const = 0;
  virtual void reset(int batch, int capacity) = 0;
  virtual HostMatrix embed(const std::int32_t* tokens, std::int64_t n) = 0;
  virtual TapValues layer(int layer, const Input& input) = 0;
  virtual TapValues head(const Input& hidden) = 0;
  // Optional: a hint that only `taps` are read (nullptr: every tap again).
  virtual void keep_taps(const std::vector<fc_tap>* taps) { (void)taps; }
  // Optional: perturb mode (reference paths). set_perturbation(nullptr) clears it.
  virtual bool supports_perturbation() const { return false; }
  virtual void set_perturbation(const fc_perturbation* p) {
    if (p) throw std::logic_error("this path does not support perturbation");
  }
  // Optional: per-op timing; empty when the path does not time ops.
  virtual std::vector<OpTiming> time_layer(int layer, int n_new, int kv_len, const fc_timing_options& o) {
    (void)layer, (void)n_new, (void)kv_len, (void)o;
    return {};
  }
  // Optional (ABI 1.3): device taps. While set_device_taps(true) holds, layer and head go to
  // layer_device / head_device instead: `input` is a dense F64 host matrix or a device
  // tensor on the instance's device (device_input_of checked it), and they return
  // HostMatrix::device_view taps valid until the next call.
  virtual bool supports_device_taps() const { return false; }
  // Told when device taps switch on or off (supports_device_taps() checked first); no-op by default.
  virtual void set_device_taps(bool on) { (void)on; }
  virtual TapValues layer_device(int layer, const fc_tensor& input) {
    (void)layer, (void)input;
    throw std::logic_error("this path does not offer device taps");
  }
  virtual TapValues head_device(const fc_tensor& hidden) {
    (void)hidden;
    throw std::logic_error("this path does not offer device taps");
  }
  // Optional (ABI 1.4): the recipe's rounding points of `layer` since reset() (FC_CAP_HEADROOM
  // while supports_headroom()).
  virtual bool supports_headroom() const { return false; }
  virtual std::vector<HeadroomPoint> headroom(int layer) const {
    (void)layer;
    return {};
  }
  // Optional (ABI 1.2): split-KV boundaries and kernel switches; none by default.
  virtual ExecutionTraits execution_traits(int batch, int max_kv) const {
    (void)batch, (void)max_kv;
    return {};
  }
};

// What a C++ plugin throws to choose the status of a failure (ABI 1.1): input_error for
// bad input (FC_ERR_INPUT, as is std::invalid_argument), unsupported for what the path does
// not support (FC_ERR_UNSUPPORTED). Any other exception is the plugin's own failure
// (FC_ERR_PLUGIN_BUG): fusecheck exits 70 naming the plugin.
struct input_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Creates the path `name` (one of the plugin's descriptors) for a model; throws on failure.
using Factory = std::unique_ptr<Path> (*)(const std::string& name, const fc_model& model,
                                          const fc_create_options& options);

namespace detail {

struct Instance {
  std::unique_ptr<Path> path;
  bool device_taps = false;         // ABI 1.3: set_device_taps(on)
  HostMatrix embedded;
  TapValues values;                 // the last call's taps, valid until the next call
  std::vector<fc_tap_value> table;
  std::vector<OpTiming> timings;
  std::vector<fc_op_timing> timing_table;
  ExecutionTraits traits;
  std::vector<const char*> switch_table;
  std::vector<HeadroomPoint> headroom;  // ABI 1.4: the last headroom() call's points
  std::vector<fc_headroom> headroom_table;
};

inline int fail(fc_error* err, int code, const char* what) {
  if (err) {
    err->code = code;
    std::strncpy(err->message, what, FC_ERROR_MESSAGE_SIZE - 1);
    err->message[FC_ERROR_MESSAGE_SIZE - 1] = '\0';
  }
  return code;
}

// Runs `body`, turning any exception into the error channel with its status.
template <class F>
int guarded(fc_error* err, F&& body) {
  try {
    body();
    return FC_OK;
  } catch (const unsupported& e) {
    return fail(err, FC_ERR_UNSUPPORTED, e.what());
  } catch (const input_error& e) {
    return fail(err, FC_ERR_INPUT, e.what());
  } catch (const std::invalid_argument& e) {
    return fail(err, FC_ERR_INPUT, e.what());
  } catch (const std::exception& e) {
    return fail(err, FC_ERR_PLUGIN_BUG, e.what());
  } catch (...) {
    return fail(err, FC_ERR_PLUGIN_BUG, "unknown C++ exception");
  }
}

inline Input input_of(const fc_tensor* t) {
  if (!t || t->dtype != FC_F64 || t->memory != FC_HOST || t->rank != 2 || t->strides[1] != 1 ||
      t->strides[0] != t->shape[1]) {
    throw std::invalid_argument("input is not a dense host F64 matrix");
  }
  return {static_cast<const double*>(t->data), t->shape[0], t->shape[1]};
}

// A layer's input while device taps are on: a dense F64 host matrix, or a device tensor
// (F64, F32, BF16, F16; rank 2; unit column stride; row stride >= width).
inline const fc_tensor& device_input_of(const fc_tensor* t) {
  if (t && t->memory == FC_HOST) {
    input_of(t);
    return *t;
  }
  if (!t || t->memory != FC_CUDA_DEVICE || t->rank != 2 || !t->data || t->shape[0] < 0 || t->shape[1] < 0 ||
      t->strides[1] != 1 || t->strides[0] < t->shape[1] ||
      (t->dtype != FC_F64 && t->dtype != FC_F32 && t->dtype != FC_BF16 && t->dtype != FC_F16)) {
    throw std::invalid_argument("input is neither a dense host F64 matrix nor a device matrix of a known dtype");
  }
  return *t;
}

inline void publish(Instance& inst, TapValues values, const fc_tap_value** out, std::int32_t* n) {
  inst.values = std::move(values);
  inst.table.clear();
  for (const auto& [tap, m] : inst.values) inst.table.push_back({tap, m.view()});
  *out = inst.table.data();
  *n = static_cast<std::int32_t>(inst.table.size());
}

// ABI 1.3's plugin-level device-tap entries (all or none).
struct DeviceTapEntries {
  decltype(fc_plugin::tap_metrics) tap_metrics = nullptr;
  decltype(fc_plugin::next_token) next_token = nullptr;
  decltype(fc_plugin::copy_to_host) copy_to_host = nullptr;
};

template <Factory F>
fc_plugin make_table(const char* name, const char* version, const fc_path_desc* paths, int n_paths,
                     const char* const* env_switches, std::int32_t (*device_count)(void) = nullptr,
                     int (*device_info)(std::int32_t, std::int32_t, fc_device_info*, fc_error*) = nullptr,
                     DeviceTapEntries device_taps = {}) {
  fc_plugin t{};
  t.abi_version = FC_PLUGIN_ABI_VERSION;
  t.struct_size = sizeof(fc_plugin);
  t.name = name;
  t.version = version;
  t.n_paths = n_paths;
  t.paths = paths;
  t.env_switches = env_switches;
  t.create = [](const char* path_name, const fc_model* model, const fc_create_options* options,
                fc_path** out, fc_error* err) {
    return guarded(err, [&] {
      auto inst = std::make_unique<Instance>();
      inst->path = F(path_name, *model, *options);
      if (!inst->path) throw std::runtime_error(std::string("no path named ") + path_name);
      *out = reinterpret_cast<fc_path*>(inst.release());
    });
  };
  t.destroy = [](fc_path* p) { delete reinterpret_cast<Instance*>(p); };
  t.taps = [](fc_path* p, std::int32_t* out, std::int32_t capacity) -> std::int32_t {
    try {
      const auto taps = reinterpret_cast<Instance*>(p)->path->taps();
      for (std::size_t i = 0; i < taps.size() && static_cast<std::int32_t>(i) < capacity; ++i) out[i] = taps[i];
      return static_cast<std::int32_t>(taps.size());
    } catch (...) {
      return -1;
    }
  };
  t.reset = [](fc_path* p, std::int32_t batch, std::int32_t capacity, fc_error* err) {
    return guarded(err, [&] { reinterpret_cast<Instance*>(p)->path->reset(batch, capacity); });
  };
  t.embed = [](fc_path* p, const std::int32_t* tokens, std::int64_t n, fc_tensor* out, fc_error* err) {
    return guarded(err, [&] {
      auto& inst = *reinterpret_cast<Instance*>(p);
      inst.embedded = inst.path->embed(tokens, n);
      *out = inst.embedded.view();
    });
  };
  t.layer = [](fc_path* p, std::int32_t layer, const fc_tensor* input, const fc_tap_value** out,
               std::int32_t* n_out, fc_error* err) {
    return guarded(err, [&] {
      auto& inst = *reinterpret_cast<Instance*>(p);
      if (inst.device_taps) return publish(inst, inst.path->layer_device(layer, device_input_of(input)), out, n_out);
      publish(inst, inst.path->layer(layer, input_of(input)), out, n_out);
    });
  };
  t.head = [](fc_path* p, const fc_tensor* hidden, const fc_tap_value** out, std::int32_t* n_out,
              fc_error* err) {
    return guarded(err, [&] {
      auto& inst = *reinterpret_cast<Instance*>(p);
      if (inst.device_taps) return publish(inst, inst.path->head_device(device_input_of(hidden)), out, n_out);
      publish(inst, inst.path->head(input_of(hidden)), out, n_out);
    });
  };
  t.keep_taps = [](fc_path* p, const std::int32_t* taps, std::int32_t n) {
    try {
      auto& inst = *reinterpret_cast<Instance*>(p);
      if (n < 0) return inst.path->keep_taps(nullptr);
      std::vector<fc_tap> keep;
      for (std::int32_t i = 0; i < n; ++i) keep.push_back(static_cast<fc_tap>(taps[i]));
      inst.path->keep_taps(&keep);
    } catch (...) {
      // a hint: ignoring it is always correct
    }
  };
  t.time_layer = [](fc_path* p, std::int32_t layer, std::int32_t n_new, std::int32_t kv_len,
                    const fc_timing_options* options, const fc_op_timing** out, std::int32_t* n_out,
                    fc_error* err) {
    return guarded(err, [&] {
      auto& inst = *reinterpret_cast<Instance*>(p);
      inst.timings = inst.path->time_layer(layer, n_new, kv_len, *options);
      inst.timing_table.clear();
      for (const auto& o : inst.timings) {
        inst.timing_table.push_back({o.op.c_str(), o.median_ms, o.p10_ms, o.p90_ms, o.repetitions, o.bytes, o.flops});
      }
      *out = inst.timing_table.data();
      *n_out = static_cast<std::int32_t>(inst.timing_table.size());
    });
  };
  t.capabilities = [](fc_path* p) -> std::uint32_t {
    try {
      const Path& path = *reinterpret_cast<Instance*>(p)->path;
      return (path.supports_perturbation() ? FC_CAP_PERTURB : 0u) | (path.supports_device_taps() ? FC_CAP_DEVICE_TAPS : 0u) |
             (path.supports_headroom() ? FC_CAP_HEADROOM : 0u);
    } catch (...) {
      return 0u;
    }
  };
  t.set_perturbation = [](fc_path* p, const fc_perturbation* perturbation, fc_error* err) {
    return guarded(err, [&] { reinterpret_cast<Instance*>(p)->path->set_perturbation(perturbation); });
  };
  t.device_count = device_count;
  t.device_info = device_info;
  t.abi_minor = FC_PLUGIN_ABI_MINOR;
  t.execution_traits = [](fc_path* p, std::int32_t batch, std::int32_t max_kv, fc_execution_traits* out,
                          fc_error* err) {
    return guarded(err, [&] {
      auto& inst = *reinterpret_cast<Instance*>(p);
      inst.traits = inst.path->execution_traits(batch, max_kv);
      inst.switch_table.clear();
      for (const auto& sw : inst.traits.switches) inst.switch_table.push_back(sw.c_str());
      out->n_kv_split_boundaries = static_cast<std::int32_t>(inst.traits.kv_split_boundaries.size());
      out->kv_split_boundaries = inst.traits.kv_split_boundaries.data();
      out->n_switches = static_cast<std::int32_t>(inst.switch_table.size());
      out->switches = inst.switch_table.data();
    });
  };
  t.headroom = [](fc_path* p, std::int32_t layer, const fc_headroom** out, std::int32_t* n_out, fc_error* err) {
    return guarded(err, [&] {
      auto& inst = *reinterpret_cast<Instance*>(p);
      if (!inst.path->supports_headroom()) throw unsupported("this path does not report headroom");
      inst.headroom = inst.path->headroom(layer);
      inst.headroom_table.clear();
      for (const auto& h : inst.headroom)
        inst.headroom_table.push_back({h.point.c_str(), h.max_abs, h.max_finite, h.n_values, h.n_overflow,
                                       h.n_saturated, h.n_nonfinite_in, h.n_flushed, h.rounded ? 1 : 0});
      *out = inst.headroom_table.data();
      *n_out = static_cast<std::int32_t>(inst.headroom_table.size());
    });
  };
  if (device_taps.tap_metrics && device_taps.next_token && device_taps.copy_to_host) {
    t.set_device_taps = [](fc_path* p, std::int32_t on, fc_error* err) {
      return guarded(err, [&] {
        auto& inst = *reinterpret_cast<Instance*>(p);
        if (on && !inst.path->supports_device_taps()) throw std::logic_error("this path does not offer device taps");
        inst.path->set_device_taps(on != 0);
        inst.device_taps = on != 0;
        inst.values.clear();  // the last call's taps were in the other memory
        inst.table.clear();
      });
    };
    t.tap_metrics = device_taps.tap_metrics;
    t.next_token = device_taps.next_token;
    t.copy_to_host = device_taps.copy_to_host;
  }
  return t;
}

}  // namespace detail
}  // namespace fusecheck::plugin

// Defines the plugin's entry point. PATHS: an array of fc_path_desc; ENV_SWITCHES: a
// NULL-terminated array of environment variable names (or nullptr); FACTORY: a function
// with the signature of fusecheck::plugin::Factory.
#define FUSECHECK_EXPORT_PLUGIN(NAME, VERSION, PATHS, ENV_SWITCHES, FACTORY)                      \
  extern "C" __attribute__((visibility("default"))) const fc_plugin* fusecheck_path_plugin(void) { \
    static const fc_plugin table = ::fusecheck::plugin::detail::make_table<FACTORY>(                \
        NAME, VERSION, PATHS, static_cast<int>(sizeof(PATHS) / sizeof((PATHS)[0])), ENV_SWITCHES);  \
    return &table;                                                                                 \
  }

// The same for a GPU plug-in with device taps (ABI 1.3): DEVICE_TAPS is a DeviceTapEntries.
#define FUSECHECK_EXPORT_DEVICE_TAPS_PLUGIN(NAME, VERSION, PATHS, ENV_SWITCHES, FACTORY, DEVICE_COUNT, DEVICE_INFO,  \
                                            DEVICE_TAPS)                                                          \
  extern "C" __attribute__((visibility("default"))) const fc_plugin* fusecheck_path_plugin(void) {               \
    static const fc_plugin table = ::fusecheck::plugin::detail::make_table<FACTORY>(                              \
        NAME, VERSION, PATHS, static_cast<int>(sizeof(PATHS) / sizeof((PATHS)[0])), ENV_SWITCHES,                 \
        DEVICE_COUNT, DEVICE_INFO, DEVICE_TAPS);                                                                   \
    return &table;                                                                                               \
  }

// The same for a GPU plug-in, with its device functions (see fc_plugin::device_count).
#define FUSECHECK_EXPORT_GPU_PLUGIN(NAME, VERSION, PATHS, ENV_SWITCHES, FACTORY, DEVICE_COUNT, DEVICE_INFO) \
  extern "C" __attribute__((visibility("default"))) const fc_plugin* fusecheck_path_plugin(void) {       \
    static const fc_plugin table = ::fusecheck::plugin::detail::make_table<FACTORY>(                      \
        NAME, VERSION, PATHS, static_cast<int>(sizeof(PATHS) / sizeof((PATHS)[0])), ENV_SWITCHES,         \
        DEVICE_COUNT, DEVICE_INFO);                                                                        \
    return &table;                                                                                       \
  }
