// The one-kernel-per-op decoder on the GPU, templated on the storage type (float for
// ref32-cuda, bf16 for standard-cuda). It owns device weights and runs a layer as a list
// of named ops (one kernel or cuBLAS call each; attention is two batched GEMMs and a
// softmax), so the same list serves the forward pass, per-op timing (Path::time_layer) and
// the benchmarks, which build it on random weights.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <cuda_bf16.h>

#include "harness/core/model_spec.h"
#include "kernels/common/cublas_handle.h"
#include "kernels/common/device_buffer.h"
#include "kernels/common/device_op.h"
#include "kernels/common/gemm.h"
#include "kernels/common/stream.h"
#include "kernels/standard/rope_table.h"

namespace fusecheck::cuda {

template <class T>
struct DeviceLayer {
  DeviceBuffer<T> attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, mlp_norm, w_gate, w_up,
      w_down;
};

template <class T>
struct DeviceHead {
  DeviceBuffer<T> final_norm, lm_head;
};

// Every device weight of a model. Immutable once uploaded, so engines (and the path
// instances that own them: a run's isolated and propagated instances, the perturbed
// reference) share one copy through a shared_ptr instead of uploading their own.
template <class T>
struct EngineWeights {
  std::vector<DeviceLayer<T>> layers;
  DeviceHead<T> head;
};

// The activations of one layer call: one buffer per tap, rows = batch * n_new.
template <class T>
struct LayerActivations {
  int rows = 0;
  DeviceBuffer<T> input, attn_norm, q, k, v, q_normed, k_normed, q_rope, k_rope, attn, o_proj,
      resid_mid, mlp_norm, gate, up, act, down, resid_out;
  // Grows the buffers to `rows` rows (never shrinks).
  void ensure(const ModelSpec& spec, int rows);
  void poison(cudaStream_t s);  // every buffer to NaN (0xFF bytes)
};

// KV caches of every layer (allocated on first use) and where each layer's cache ends.
template <class T>
struct DecoderState {
  int batch = 0, capacity = 0;
  std::vector<DeviceBuffer<T>> k_cache, v_cache;  // per layer [batch][capacity][kv_width]
  std::vector<int> cached;                         // per layer: valid rows per sequence
  DeviceBuffer<T> rope_cos, rope_sin;              // [capacity x head_dim / 2]
  // Attention scores/probabilities of the widest layer call so far: sized for n_new
  // queries against a full cache, so it grows only when n_new does (never per step).
  DeviceBuffer<T> attn_scores;
  LayerActivations<T> act;
};

struct EngineOptions {
  Fp32Gemm fp32_gemm = Fp32Gemm::strict;  // float engine only
  RopeAngles rope_angles = RopeAngles::fp64;
  int device = 0;
};

template <class T>
class DecoderEngine {
 public:
  DecoderEngine(ModelSpec spec, std::vector<DeviceLayer<T>> layers, DeviceHead<T> head,
                EngineOptions opts);
  // Shares weights already on the device (same device as opts.device).
  DecoderEngine(ModelSpec spec, std::shared_ptr<const EngineWeights<T>> weights, EngineOptions opts);

  const ModelSpec& spec() const { return spec_; }
  cudaStream_t stream() const { return stream_.get(); }
  const EngineOptions& options() const { return opts_; }

  // Fresh state: `batch` sequences of up to `capacity` tokens; caches allocated lazily.
  DecoderState<T> make_state(int batch, int capacity) const;
  void ensure_cache(DecoderState<T>& st, int layer) const;

  // The ops of `layer` for n_new tokens per sequence appended at st.cached[layer]; reads
  // st.act.input, writes every tap buffer and the cache rows. Running them does not advance
  // st.cached (the caller does, so timing can rerun them). st.act must hold batch * n_new rows.
  std::vector<DeviceOp> layer_ops(DecoderState<T>& st, int layer, int n_new);
  // Final norm and lm_head of `rows` rows of `hidden` into final_norm and logits.
  std::vector<DeviceOp> head_ops(const T* hidden, T* final_norm, T* logits, int rows);

  // Runs ops in order on the engine's stream (no synchronization).
  void run(const std::vector<DeviceOp>& ops);

 private:
  void gemm(int rows, int out, int in, const T* x, const T* w, T* y, float beta = 0.0f);

  ModelSpec spec_;
  std::shared_ptr<const EngineWeights<T>> weights_;
  EngineOptions opts_;
  Stream stream_;
  CublasHandle cublas_;
  DeviceBuffer<unsigned char> cublas_workspace_;
};

extern template class DecoderEngine<float>;
extern template class DecoderEngine<__nv_bfloat16>;

}  // namespace fusecheck::cuda
