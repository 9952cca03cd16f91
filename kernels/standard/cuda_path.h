// CudaDecoderPath<T>: the Path interface (harness/core/path.h) over DecoderEngine<T>.
// ref32-cuda is CudaDecoderPath<float>, standard-cuda CudaDecoderPath<bf16>; the public
// factories (kernels/ref32/ref32_path.h, kernels/standard/standard_path.h) hide this header
// and its CUDA includes from host-only code.
#pragma once

#include <memory>
#include <optional>
#include <type_traits>
#include <string>

#include "harness/core/checkpoint.h"
#include "harness/core/path.h"
#include "kernels/common/gpu_path.h"
#include "kernels/standard/decoder_engine.h"

namespace fusecheck::cuda {

struct CudaPathConfig {
  std::string name;
  EngineOptions engine;
  bool poison_activations = false;  // NaN-fill every tap buffer before each layer (tests)
};

template <class T>
class CudaDecoderPath final : public GpuPath {
 public:
  // Validates the spec and uploads every weight rounded once to T. InputError on a spec
  // or tensor this path cannot run.
  CudaDecoderPath(const Checkpoint& ckpt, CudaPathConfig cfg);

  std::string name() const override { return cfg_.name; }
  std::vector<Tap> taps() const override;
  void reset(int batch, int capacity) override;
  TapMatrix embed(std::span<const std::int32_t> tokens) override;
  TapSet layer(int layer, const TapMatrix& input) override;
  TapSet head(const TapMatrix& hidden) override;
  // ref32-cuda only (reference paths; standard-cuda throws std::logic_error): the tap's
  // values x become x + rel * rms(x) * n, n ~ N(0,1), with the same seeded sampler and
  // element order as reference/decoder_path.cpp, so ref32-cuda and ref32-cpu perturb
  // alike. The tap is downloaded, perturbed on the host and uploaded before the layer
  // goes on: one tap of one layer, so the round trip costs nothing that matters.
  PathCapabilities capabilities() const override {
    return {.perturbation = std::is_same_v<T, float>, .device_taps = true};
  }
  // Device taps: the same layer and head with the taps left in the path's buffers, valid
  // until the next call; a device input is rounded once to T on the device.
  DeviceTapSet layer_on_device(int layer, const TapInput& input) override;
  DeviceTapSet head_on_device(const TapInput& hidden) override;
  void set_perturbation(std::optional<Perturbation> p) override;
  // CUDA events around each op (behind a spin kernel so host launch latency is not
  // counted), median of repetitions, L2 flushed before each when cold_l2; the whole layer
  // last, as op "layer", replayed from a CUDA graph when opts.graph. Uses its own caches
  // filled with seeded random values; the path's sequences are untouched.
  std::vector<OpTiming> time_layer(int layer, int n_new, int kv_len,
                                   const TimingOptions& opts) override;

 private:
  DecoderState<T>& state(const char* what);
  // Each tap of a layer: its buffer, width, and the op that writes it last (names of layer_ops).
  struct TapBuffer {
    Tap tap;
    DeviceBuffer<T>* buf;
    int cols;
    const char* op;
  };
  // Runs layer `l` on `input` (synchronized); returns the taps this model has and the rows.
  std::vector<TapBuffer> run_layer(int l, const TapInput& input, int& rows);
  void run_head(const TapInput& hidden, int& rows);
  DeviceTap view(const DeviceBuffer<T>& buf, int rows, int cols) const;
  // Runs the ops in order, perturbing the first `count` elements of `buf` right after op
  // `perturb_after` (-1: no perturbation).
  void run_ops(const std::vector<DeviceOp>& ops, int perturb_after, DeviceBuffer<T>* buf, std::size_t count);
  void perturb_buffer(DeviceBuffer<T>& buf, std::size_t count);
  TapMatrix download(const DeviceBuffer<T>& buf, int rows, int cols);

  CudaPathConfig cfg_;
  std::unique_ptr<DecoderEngine<T>> engine_;
  std::optional<DecoderState<T>> state_;
  DeviceBuffer<T> head_in_, head_norm_, head_logits_;
  DeviceBuffer<T> device_in_;  // a device input, converted before any buffer is touched
  std::optional<Perturbation> perturbation_;
  std::uint64_t perturb_calls_ = 0;
  // Page-locked staging for tap downloads (pageable copies run at a fraction of the
  // link's speed), grown to the largest tap and reused.
  struct PinnedDeleter {
    void operator()(T* p) const;
  };
  std::unique_ptr<T, PinnedDeleter> staging_;
  std::size_t staging_size_ = 0;
};

extern template class CudaDecoderPath<float>;
extern template class CudaDecoderPath<__nv_bfloat16>;

}  // namespace fusecheck::cuda
