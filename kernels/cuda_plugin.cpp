// libfusecheck_cuda.so: the built-in CUDA paths (ref32-cuda, ref64-cuda, standard-cuda, fused-cuda)
// behind the same C plug-in ABI as any team's path (include/fusecheck/path_plugin.h), so
// that the `fusecheck` binary links no CUDA library and loads this one only when a CUDA
// path runs. The library carries its own copy of the harness code it needs (checkpoint
// views, ModelSpec, the Path classes); nothing crosses the boundary but the C table, so
// no registry or cache exists twice in one address space in a way either side can see.
// The paths are the same objects as before the move: inputs and taps cross as F64 host
// matrices, which hold every value exactly, so results stay bitwise identical. With device
// taps (ABI 1.3) they stay in the paths' device buffers instead, and the plug-in's
// tap_metrics / next_token / copy_to_host (kernels/metrics) read them there.
#include <cstddef>
#include <cstring>
#include <optional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#include <fmt/core.h>

#include "fusecheck/path_plugin.hpp"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "harness/core/version.h"
#include "kernels/common/device_info.h"
#include "kernels/common/cuda_check.h"
#include "kernels/common/device_info_abi.h"
#include "kernels/fused/fused_path.h"
#include "kernels/metrics/device_taps.h"
#include "kernels/ref32/ref32_path.h"
#include "kernels/ref64/ref64_cuda_path.h"
#include "kernels/standard/standard_path.h"

namespace fusecheck {
namespace {

namespace fp = fusecheck::plugin;

std::optional<DType> dtype_of(std::int32_t t) {
  switch (t) {
    case FC_F32: return DType::F32;
    case FC_F16: return DType::F16;
    case FC_BF16: return DType::BF16;
    case FC_F64: return DType::F64;
    default: return std::nullopt;
  }
}

// The checkpoint rebuilt from the C view: tensors point at the caller's mapped memory.
class AbiCheckpoint final : public Checkpoint {
 public:
  explicit AbiCheckpoint(const fc_model& m) {
    const fc_model_spec& c = m.spec;
    path_ = "<fusecheck model>";
    format_ = "plugin-abi";
    spec_.architecture = c.architecture ? c.architecture : "";
    spec_.n_layers = c.n_layers, spec_.hidden = c.hidden, spec_.n_heads = c.n_heads;
    spec_.n_kv_heads = c.n_kv_heads, spec_.head_dim = c.head_dim, spec_.intermediate = c.intermediate;
    spec_.vocab = c.vocab, spec_.rms_eps = c.rms_eps, spec_.rope_theta = c.rope_theta, spec_.rope_dim = c.rope_dim;
    spec_.rope_style = c.rope_style == FC_ROPE_INTERLEAVED ? RopeStyle::Interleaved : RopeStyle::NeoxHalfSplit;
    spec_.rope_scaling.type = c.rope_scaling_type ? c.rope_scaling_type : "none";
    spec_.rope_scaling.factor = c.rope_scaling_factor;
    spec_.rope_scaling.low_freq_factor = c.rope_low_freq_factor;
    spec_.rope_scaling.high_freq_factor = c.rope_high_freq_factor;
    spec_.rope_scaling.original_max_position = c.rope_original_max_position;
    spec_.has_qk_norm = c.has_qk_norm != 0, spec_.has_qkv_bias = c.has_qkv_bias != 0;
    spec_.tied_embeddings = c.tied_embeddings != 0, spec_.max_position = c.max_position;
    if (c.n_layers < 0) throw std::invalid_argument("negative layer count");

    // Every tensor first (the vector must not grow once roles point into it).
    tensors_.reserve(3 + static_cast<std::size_t>(c.n_layers) * 14);
    const TensorView* embed = add("embed", m.embed);
    const TensorView* final_norm = add("final_norm", m.final_norm);
    const TensorView* lm_head = m.lm_head.data == m.embed.data ? embed : add("lm_head", m.lm_head);
    std::vector<LayerTensors> layers;
    for (int l = 0; l < c.n_layers; ++l) {
      const fc_layer_weights& w = m.layers[l];
      const std::string p = fmt::format("layers.{}.", l);
      layers.push_back({add(p + "attn_norm", w.attn_norm), add(p + "wq", w.wq), add(p + "wk", w.wk),
                        add(p + "wv", w.wv), add(p + "bq", w.bq), add(p + "bk", w.bk), add(p + "bv", w.bv),
                        add(p + "q_norm", w.q_norm), add(p + "k_norm", w.k_norm), add(p + "wo", w.wo),
                        add(p + "mlp_norm", w.mlp_norm), add(p + "w_gate", w.w_gate), add(p + "w_up", w.w_up),
                        add(p + "w_down", w.w_down)});
    }
    model_.embed = embed;
    model_.final_norm = final_norm;
    model_.lm_head = lm_head;
    model_.layers = std::move(layers);
    if (!model_.embed) throw std::invalid_argument("the model has no embedding");
    spec_.dtype = std::string(dtype_name(model_.embed->dtype));
  }

 private:
  // A dense host tensor as a TensorView; rank 0 (absent) gives null.
  const TensorView* add(const std::string& name, const fc_tensor& t) {
    if (t.rank == 0) return nullptr;
    const auto dtype = dtype_of(t.dtype);
    if (!dtype || t.memory != FC_HOST || t.rank < 0 || t.rank > FC_MAX_RANK || !t.data) {
      throw std::invalid_argument(name + ": not a host tensor of a known dtype");
    }
    TensorView v;
    v.name = name;
    v.dtype = *dtype;
    v.file = "<fusecheck model>";
    std::int64_t stride = 1;
    for (int i = t.rank - 1; i >= 0; --i) {
      if (t.strides[i] != stride) throw std::invalid_argument(name + ": not dense row-major");
      stride *= t.shape[i];
    }
    for (int i = 0; i < t.rank; ++i) v.shape.push_back(t.shape[i]);
    v.bytes = {static_cast<const std::byte*>(t.data), static_cast<std::size_t>(stride) * dtype_size(*dtype)};
    tensors_.push_back(std::move(v));
    return &tensors_.back();
  }
};

// One AbiCheckpoint per model the harness holds (keyed by where its weights live), so that
// instances of the same model share their device weights as they did inside the binary.
std::shared_ptr<const AbiCheckpoint> checkpoint_for(const fc_model& m) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, const void*, int>, std::weak_ptr<const AbiCheckpoint>> cache;
  const auto key = std::make_tuple(m.embed.data, m.final_norm.data, m.spec.n_layers);
  std::lock_guard lock(mu);
  if (auto live = cache[key].lock()) return live;
  auto made = std::make_shared<const AbiCheckpoint>(m);
  cache[key] = made;
  return made;
}

fp::HostMatrix to_host(const TapMatrix& m) {
  fp::HostMatrix out(FC_F64, m.rows(), m.cols());
  std::memcpy(out.data<double>(), m.data(), static_cast<std::size_t>(m.size()) * sizeof(double));
  return out;
}

TapMatrix from_input(const fp::Input& in) {
  TapMatrix m(in.rows, in.cols);
  std::memcpy(m.data(), in.data, static_cast<std::size_t>(in.rows * in.cols) * sizeof(double));
  return m;
}

// Views of `set`, which the caller keeps until the next call (no copy of the taps).
fp::TapValues to_values(const TapSet& set) {
  fp::TapValues out;
  for (const auto& [tap, m] : set) {
    out.emplace_back(static_cast<fc_tap>(tap), fp::HostMatrix::borrowed(FC_F64, m.rows(), m.cols(), m.data()));
  }
  return out;
}

// fusecheck's InputError (a model or request the path cannot take) is bad input through
// the ABI too (FC_ERR_INPUT); any other exception, a CUDA error above all, stays the
// plug-in's own failure (FC_ERR_PLUGIN_BUG).
template <class F>
decltype(auto) input_errors_as_abi(F&& body) {
  try {
    return body();
  } catch (const InputError& e) {
    throw fp::input_error(e.what());
  }
}

// A device tensor handed to the plug-in as a DeviceTap on `device`, checked: device memory
// (cudaPointerGetAttributes) on that device, rank 2, unit column stride, a known dtype.
DeviceTap device_tap_of(const fc_tensor& t, int device, const char* what) {
  auto bad = [&](const std::string& why) { return fp::input_error(std::string(what) + ": " + why); };
  if (t.memory != FC_CUDA_DEVICE) throw bad("not in device memory (memory " + std::to_string(t.memory) + ")");
  const auto dtype = dtype_of(t.dtype);
  if (!dtype) throw bad("unknown dtype " + std::to_string(t.dtype));
  if (t.rank != 2 || !t.data || t.shape[0] < 0 || t.shape[1] < 0 || t.strides[1] != 1 || t.strides[0] < t.shape[1]) {
    throw bad("not a rank-2 tensor with unit column stride and a row stride of at least its width");
  }
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, t.data) != cudaSuccess || attr.type != cudaMemoryTypeDevice) {
    cudaGetLastError();  // clears the error of a pointer CUDA does not know
    throw bad("the pointer is not CUDA device memory");
  }
  if (attr.device != device) {
    throw bad(fmt::format("the pointer is on device {}, the call names device {}", attr.device, device));
  }
  DeviceTap d;
  d.data = t.data;
  d.dtype = *dtype;
  d.rows = t.shape[0], d.cols = t.shape[1], d.row_stride = t.strides[0];
  d.device = device;
  return d;
}

fc_dtype abi_dtype(DType t) {
  switch (t) {
    case DType::F32: return FC_F32;
    case DType::F16: return FC_F16;
    case DType::BF16: return FC_BF16;
    case DType::F64: return FC_F64;
  }
  throw std::logic_error("abi_dtype: bad dtype");
}

// A built-in CUDA path seen through the plug-in wrapper.
class BuiltinCudaPath final : public fp::Path {
 public:
  BuiltinCudaPath(std::shared_ptr<const AbiCheckpoint> ckpt, std::unique_ptr<fusecheck::Path> path, int device)
      : ckpt_(std::move(ckpt)), path_(std::move(path)), device_(device) {}
  std::vector<fc_tap> taps() const override {
    std::vector<fc_tap> out;
    for (Tap t : path_->taps()) out.push_back(static_cast<fc_tap>(t));
    return out;
  }
  void reset(int batch, int capacity) override {
    input_errors_as_abi([&] { path_->reset(batch, capacity); });
  }
  fp::HostMatrix embed(const std::int32_t* tokens, std::int64_t n) override {
    return input_errors_as_abi([&] { return to_host(path_->embed({tokens, static_cast<std::size_t>(n)})); });
  }
  fp::TapValues layer(int layer, const fp::Input& input) override {
    last_ = input_errors_as_abi([&] { return path_->layer(layer, from_input(input)); });
    return to_values(last_);
  }
  fp::TapValues head(const fp::Input& hidden) override {
    last_ = input_errors_as_abi([&] { return path_->head(from_input(hidden)); });
    return to_values(last_);
  }
  void keep_taps(const std::vector<fc_tap>* taps) override {
    if (!taps) return path_->keep_taps(std::nullopt);
    std::vector<Tap> keep;
    for (fc_tap t : *taps) keep.push_back(static_cast<Tap>(t));
    path_->keep_taps(keep);
  }
  bool supports_perturbation() const override { return path_->capabilities().perturbation; }
  void set_perturbation(const fc_perturbation* p) override {
    if (!p) return path_->set_perturbation(std::nullopt);
    path_->set_perturbation(Perturbation{p->layer, static_cast<Tap>(p->tap), p->relative_size, p->seed});
  }
  std::vector<fp::OpTiming> time_layer(int layer, int n_new, int kv_len, const fc_timing_options& o) override {
    const TimingOptions opts{o.warmup, o.repetitions, o.cold_l2 != 0, o.graph != 0};
    std::vector<fp::OpTiming> out;
    for (const auto& t : path_->time_layer(layer, n_new, kv_len, opts)) {
      out.push_back({t.op, t.median_ms, t.p10_ms, t.p90_ms, t.repetitions, t.bytes, t.flops});
    }
    return out;
  }
  bool supports_device_taps() const override { return path_->capabilities().device_taps; }
  fp::TapValues layer_device(int layer, const fc_tensor& input) override {
    last_device_ = input_errors_as_abi([&] { return with_input(input, [&](const TapInput& in) {
      return path_->layer_on_device(layer, in);
    }); });
    return device_values(last_device_);
  }
  fp::TapValues head_device(const fc_tensor& hidden) override {
    last_device_ = input_errors_as_abi([&] { return with_input(hidden, [&](const TapInput& in) {
      return path_->head_on_device(in);
    }); });
    return device_values(last_device_);
  }

  // ABI 1.4: the FP8 recipes' rounding points (fp8-kv caches, fp8-w8a8 weights) as the
  // in-process path counts them, so GPU runs report clipping as the emulated twins do.
  bool supports_headroom() const override { return path_->capabilities().headroom; }
  std::vector<fp::HeadroomPoint> headroom(int layer) const override {
    std::vector<fp::HeadroomPoint> out;
    for (const auto& [point, h] : path_->headroom(layer)) {
      out.push_back({point, h.max_abs, h.max_finite, h.n_values, h.n_overflow, h.n_saturated, h.n_nonfinite_in,
                     h.n_flushed, h.rounded});
    }
    return out;
  }

  // Forwarded so that invariance mode sees the switches and split edges of a CUDA path
  // (ABI 1.2) as it did when the paths were linked into the binary.
  fp::ExecutionTraits execution_traits(int batch, int max_kv) const override {
    const ExecutionTraits t = path_->execution_traits(batch, max_kv);
    return {{t.kv_split_boundaries.begin(), t.kv_split_boundaries.end()}, t.switches};
  }

 private:
  std::shared_ptr<const AbiCheckpoint> ckpt_;  // outlives the path, which holds references into it
  // Calls `body` with `t` as a TapInput: host F64 rows (copied) or a checked device tap.
  template <class Body>
  DeviceTapSet with_input(const fc_tensor& t, Body&& body) {
    if (t.memory == FC_HOST) {
      const fp::Input in = fp::detail::input_of(&t);
      const TapMatrix m = from_input(in);
      return body(TapInput{&m, nullptr});
    }
    const DeviceTap d = device_tap_of(t, device_, "layer input");
    return body(TapInput{nullptr, &d});
  }
  static fp::TapValues device_values(const DeviceTapSet& set) {
    fp::TapValues out;
    for (const auto& [tap, d] : set) {
      out.emplace_back(static_cast<fc_tap>(tap),
                       fp::HostMatrix::device_view(abi_dtype(d.dtype), d.rows, d.cols, d.row_stride, d.data));
    }
    return out;
  }

  std::unique_ptr<fusecheck::Path> path_;
  int device_;
  TapSet last_;  // the taps of the last layer() or head(), lent to the caller until the next call
  DeviceTapSet last_device_;  // the same with device taps
};

std::unique_ptr<fp::Path> create_path(const std::string& name, const fc_model& model,
                                      const fc_create_options& options) {
  auto ckpt = checkpoint_for(model);
  PathOptions opts;
  opts.device_index = options.device_index;
  opts.seed = options.seed;
  std::unique_ptr<fusecheck::Path> path;
  if (name == "ref32-cuda") {
    path = make_ref32_cuda_path(*ckpt, opts);
  } else if (name == "ref64-cuda") {
    path = make_ref64_cuda_path(*ckpt, opts);
  } else if (name == "standard-cuda") {
    path = make_standard_cuda_path(*ckpt, opts);
  } else if (name == "fused-cuda") {
    path = make_fused_cuda_path(*ckpt, opts);
  } else if (name == kFusedBatchInvariantName) {
    path = make_fused_cuda_path(*ckpt, opts, fused::BatchInvariantPlan{});
  } else if (name == kFusedW8a8Name) {
    path = make_fused_cuda_w8a8_path(*ckpt, opts);
  } else if (name.rfind(std::string(kFusedFp8KvPrefix) + "fp8-kv", 0) == 0) {
    path = make_fused_cuda_fp8_kv_path(*ckpt, opts, name.substr(std::string(kFusedFp8KvPrefix).size()));
  } else {
    throw std::invalid_argument("no CUDA path named '" + name + "'");
  }
  return std::make_unique<BuiltinCudaPath>(std::move(ckpt), std::move(path), options.device_index);
}

std::unique_ptr<fp::Path> create(const std::string& name, const fc_model& model, const fc_create_options& options) {
  return input_errors_as_abi([&] { return create_path(name, model, options); });
}

std::int32_t device_count() { return cuda::visible_device_count(); }

int device_info(std::int32_t index, std::int32_t measure_bandwidth, fc_device_info* out, fc_error* err) {
  return fp::detail::guarded(err, [&] {
    const auto prov = cuda::query_device(index, measure_bandwidth != 0);
    *out = cuda::to_abi(prov, "cublas " + std::to_string(prov.cublas_version));
  });
}

// ABI 1.3's plug-in entries over kernels/metrics, on the calling thread's default stream
// (every path has synchronized its own stream before returning device taps).
int tap_metrics(const fc_metrics_request* req, const fc_tensor* ref, const fc_tensor* path, fc_tap_summary* out,
                fc_error* err) {
  return fp::detail::guarded(err, [&] {
    if (!req || !ref || !path || !out || req->struct_size < sizeof(fc_metrics_request) ||
        out->struct_size < offsetof(fc_tap_summary, plain_rel_l2)) {
      throw fp::input_error("tap_metrics: a null argument or a request/summary older than ABI 1.3");
    }
    const auto dtype = dtype_of(req->path_dtype);
    if (!dtype) throw fp::input_error("tap_metrics: unknown path dtype " + std::to_string(req->path_dtype));
    CUDA_CHECK(cudaSetDevice(req->device_index));
    const DeviceTap r = device_tap_of(*ref, req->device_index, "tap_metrics reference");
    const DeviceTap p = device_tap_of(*path, req->device_index, "tap_metrics path");
    std::optional<DeviceTap> t;
    if (req->truth) t = device_tap_of(*req->truth, req->device_index, "tap_metrics truth");
    const DeviceTapSummary m = input_errors_as_abi([&] {
      try {
        return cuda::tap_summary(r, p, t ? &*t : nullptr, *dtype, req->atol, req->rtol, cudaStreamPerThread);
      } catch (const std::invalid_argument& e) {
        throw fp::input_error(e.what());
      }
    });
    fc_tap_summary full{};
    full.max_abs = m.max_abs, full.max_rel = m.max_rel, full.rel_l2 = m.rel_l2, full.cosine = m.cosine;
    full.ulp_p50 = m.ulp_p50, full.ulp_p99 = m.ulp_p99, full.ulp_max = m.ulp_max, full.frac_outside = m.frac_outside;
    full.nan_count = m.nan_count, full.inf_count = m.inf_count, full.ref_nonfinite = m.ref_nonfinite;
    full.ref_norm = m.ref_norm, full.headroom = m.headroom, full.overflow_count = m.overflow_count;
    full.saturation_count = m.saturation_count, full.plain_rel_l2 = m.plain_rel_l2;
    full.truth_rel_l2_path = m.truth_rel_l2_path, full.truth_rel_l2_ref = m.truth_rel_l2_ref;
    const std::uint32_t caller = out->struct_size;
    full.struct_size = caller;
    std::memcpy(out, &full, std::min<std::size_t>(caller, sizeof full));
  });
}

int next_token(std::int32_t device, const fc_tensor* ref, const fc_tensor* path, double* kl, double* margin,
               std::int32_t* top1_match, fc_error* err) {
  return fp::detail::guarded(err, [&] {
    if (!ref || !path || !kl || !margin || !top1_match) throw fp::input_error("next_token: a null argument");
    CUDA_CHECK(cudaSetDevice(device));
    const DeviceTap r = device_tap_of(*ref, device, "next_token reference logits");
    const DeviceTap p = device_tap_of(*path, device, "next_token path logits");
    if (r.rows != p.rows || r.cols != p.cols) throw fp::input_error("next_token: the logits differ in shape");
    const DeviceNextToken a = cuda::next_token(r, p, cudaStreamPerThread);
    for (std::size_t i = 0; i < a.kl.size(); ++i) {
      kl[i] = a.kl[i], margin[i] = a.ref_margin[i], top1_match[i] = a.top1_match[i];
    }
  });
}

int copy_to_host(std::int32_t device, const fc_tensor* t, double* out, fc_error* err) {
  return fp::detail::guarded(err, [&] {
    if (!t || !out) throw fp::input_error("copy_to_host: a null argument");
    CUDA_CHECK(cudaSetDevice(device));
    const TapMatrix m = cuda::tap_to_host(device_tap_of(*t, device, "copy_to_host"), cudaStreamPerThread);
    std::memcpy(out, m.data(), static_cast<std::size_t>(m.size()) * sizeof(double));
  });
}

const fc_path_desc kPaths[] = {
    {"ref32-cuda", "cuda", "", "other", FC_F32, "FP32 decoder on the GPU, every tap; cuBLAS GEMMs with TF32 off"},
    {"ref64-cuda", "cuda", "", "other", FC_F32,
     "FP64 reference on the GPU (the truth at GPU speed): cuBLAS DGEMM, FP64 kernels, every tap"},
    {"standard-cuda", "cuda", "hf-bf16", "standard", FC_BF16,
     "bf16 storage, one kernel per op, cuBLAS bf16 GEMMs (FP32 accumulation), hf-bf16 recipe"},
    {"fused-cuda", "cuda", "fused-v1", "fused", FC_BF16, "fused decoder-layer kernels, fused-v1 recipe (kernels/fused)"},
    {kFusedBatchInvariantName, "cuda", "fused-v1", "fused", FC_BF16,
     "fused-cuda in its batch-invariant mode: one GEMM algorithm per shape for every batch, fixed split-KV chunks"},
    {"fused-cuda:fp8-kv", "cuda", "fp8-kv", "fused", FC_BF16, "fused-cuda with an FP8 E4M3 KV cache, static per tensor"},
    {"fused-cuda:fp8-kv-per-head", "cuda", "fp8-kv-per-head", "fused", FC_BF16,
     "fused-cuda with an FP8 E4M3 KV cache, static per kv head"},
    {"fused-cuda:fp8-kv-dynamic", "cuda", "fp8-kv-dynamic", "fused", FC_BF16,
     "fused-cuda with an FP8 E4M3 KV cache, dynamic per tensor"},
    {"fused-cuda:fp8-kv-per-head-dynamic", "cuda", "fp8-kv-per-head-dynamic", "fused", FC_BF16,
     "fused-cuda with an FP8 E4M3 KV cache, dynamic per kv head"},
    {kFusedW8a8Name, "cuda", kFusedW8a8Recipe, "fused", FC_BF16,
     "fused-cuda with FP8 E4M3 GEMMs (weights per output row, activations per token) and the fp8-kv cache"},
};

// The switches the fused kernels read (docs/fused-kernels.md); recorded with their values.
const char* const kEnvSwitches[] = {"FUSECHECK_FUSED_PDL", "FUSECHECK_FUSED_ROPE_FOLD", "FUSECHECK_GEMV_L2PF",
                                    "FUSECHECK_PREFILL_PV_SPLIT", nullptr};

const char* plugin_version() {
  static const std::string v = version_string() + "+" + git_sha();
  return v.c_str();
}

}  // namespace
}  // namespace fusecheck

FUSECHECK_EXPORT_DEVICE_TAPS_PLUGIN("fusecheck-cuda", fusecheck::plugin_version(), fusecheck::kPaths,
                                    fusecheck::kEnvSwitches, fusecheck::create, fusecheck::device_count,
                                    fusecheck::device_info,
                                    (fusecheck::plugin::detail::DeviceTapEntries{
                                        fusecheck::tap_metrics, fusecheck::next_token, fusecheck::copy_to_host}))
