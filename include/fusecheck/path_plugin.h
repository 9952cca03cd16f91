/* fusecheck path plug-in ABI (C, versioned): what a shared library exports so that
 * `fusecheck run --plugin FILE.so` can drive its decoder layer side by side with the
 * references. A plugin exports one function, fusecheck_path_plugin(), returning a table:
 * the ABI version it was built against, its name and version, the paths it offers, and
 * the functions that create and drive a path instance. Plain C so that any compiler and
 * build system can produce it; include/fusecheck/path_plugin.hpp wraps it for C++.
 *
 * Rules of the ABI (version 1.4; 1.0 to 1.3 plugins, built before, still load):
 *  - Every call that can fail returns 0 on success or a nonzero status (fc_status), and
 *    then writes the same status and a one-line message into the caller's fc_error.
 *    fusecheck reports it naming the plugin: FC_ERR_INPUT and FC_ERR_UNSUPPORTED as bad
 *    input (exit 2), FC_ERR_PLUGIN_BUG (or any other code) as the plugin's own failure
 *    (exit 70). A 1.0 plugin's codes carry no meaning: every failure is exit 2.
 *  - Tensors are row-major views: dtype, rank, shape, strides in elements, a pointer and
 *    where the pointer lives. fusecheck hands a plugin host memory (weights memory-mapped
 *    from the checkpoint, inputs as F64); a plugin returns taps in host memory that stay
 *    valid until its next call on the same instance. ABI 1.3 device taps (FC_CAP_DEVICE_TAPS,
 *    set_device_taps) are the one exception: taps then stay in the instance's device memory.
 *  - fusecheck checks every returned tap's dtype and shape against the model; NaN or Inf
 *    values are measured (and fail the gates), never trusted.
 *  - A struct grows only at its end; `struct_size` says how much of it the plugin knows.
 *  - Versions: fusecheck loads a plugin of the same major version (abi_version) and a minor
 *    version (abi_minor) up to its own; a newer minor may rely on what this one lacks. */
#ifndef FUSECHECK_PATH_PLUGIN_H
#define FUSECHECK_PATH_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FC_PLUGIN_ABI_VERSION 1u  /* major: changes only when a 1.x plugin could be misread */
#define FC_PLUGIN_ABI_MINOR 4u    /* 1.1: fc_status; fc_plugin.abi_minor. 1.2: execution_traits.
                                     1.3: device taps (set_device_taps, tap_metrics, next_token, copy_to_host).
                                     1.4: headroom (FC_CAP_HEADROOM) */
#define FC_PLUGIN_ENTRY_POINT "fusecheck_path_plugin"
#define FC_ERROR_MESSAGE_SIZE 512
#define FC_MAX_RANK 4

typedef enum fc_dtype { FC_F32 = 0, FC_F16 = 1, FC_BF16 = 2, FC_F64 = 3 } fc_dtype;
typedef enum fc_memory { FC_HOST = 0, FC_CUDA_DEVICE = 1 } fc_memory;

/* Taps in execution order (docs/definitions in DESIGN.md). Values are part of the ABI. */
typedef enum fc_tap {
  FC_TAP_ATTN_NORM = 0, FC_TAP_Q, FC_TAP_K, FC_TAP_V, FC_TAP_Q_NORMED, FC_TAP_K_NORMED,
  FC_TAP_Q_ROPE, FC_TAP_K_ROPE, FC_TAP_ATTN, FC_TAP_O_PROJ, FC_TAP_RESID_MID, FC_TAP_MLP_NORM,
  FC_TAP_GATE, FC_TAP_UP, FC_TAP_ACT, FC_TAP_DOWN, FC_TAP_RESID_OUT,
  FC_TAP_FINAL_NORM, FC_TAP_LOGITS, FC_TAP_COUNT
} fc_tap;

typedef struct fc_tensor {
  int32_t dtype;                  /* fc_dtype */
  int32_t memory;                 /* fc_memory */
  int32_t rank;                   /* 0 = absent tensor (optional weights) */
  int64_t shape[FC_MAX_RANK];     /* slowest-varying first */
  int64_t strides[FC_MAX_RANK];   /* in elements; a dense row-major tensor has strides[rank-1] == 1 */
  const void* data;
} fc_tensor;

/* What a failed call returns (and writes into fc_error.code), ABI 1.1. */
typedef enum fc_status {
  FC_OK = 0,
  FC_ERR_INPUT = 1,        /* the model, option or call is bad input for this path (exit 2) */
  FC_ERR_UNSUPPORTED = 2,  /* a model, shape or feature the path does not support (exit 2) */
  FC_ERR_PLUGIN_BUG = 3    /* the plugin itself failed: a device error, a broken invariant (exit 70) */
} fc_status;

typedef struct fc_error {
  int32_t code;
  char message[FC_ERROR_MESSAGE_SIZE];
} fc_error;

/* RoPE styles: NeoX half-split rotates (i, i + d/2), interleaved rotates (2i, 2i + 1). */
typedef enum fc_rope_style { FC_ROPE_NEOX_HALF_SPLIT = 0, FC_ROPE_INTERLEAVED = 1 } fc_rope_style;

typedef struct fc_model_spec {
  const char* architecture;       /* "qwen3", "qwen2", "llama" */
  int32_t n_layers, hidden, n_heads, n_kv_heads, head_dim, intermediate, vocab;
  double rms_eps;
  double rope_theta;
  int32_t rope_dim;
  int32_t rope_style;             /* fc_rope_style */
  const char* rope_scaling_type;  /* "none", "linear", "llama3" */
  double rope_scaling_factor, rope_low_freq_factor, rope_high_freq_factor;
  int32_t rope_original_max_position;
  int32_t has_qk_norm, has_qkv_bias, tied_embeddings;
  int32_t max_position;
} fc_model_spec;

/* The tensors of one decoder layer under canonical roles; matrices are [out x in]. */
typedef struct fc_layer_weights {
  fc_tensor attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, mlp_norm, w_gate, w_up, w_down;
} fc_layer_weights;

typedef struct fc_model {
  uint32_t struct_size;
  fc_model_spec spec;
  fc_tensor embed;                /* [vocab x hidden] */
  const fc_layer_weights* layers; /* spec.n_layers entries */
  fc_tensor final_norm;           /* [hidden] */
  fc_tensor lm_head;              /* [vocab x hidden]; the embedding when tied */
} fc_model;

typedef struct fc_create_options {
  uint32_t struct_size;
  int32_t device_index;
  uint64_t seed;
} fc_create_options;

/* What one path of the plugin is, for `fusecheck paths`, scenarios and results. */
typedef struct fc_path_desc {
  const char* name;               /* unique, e.g. "myteam-fused" */
  const char* device;             /* "cpu" or "cuda" */
  const char* recipe;             /* the rounding recipe it follows, or "" */
  const char* role;               /* "fused", "standard" or "other" */
  int32_t dtype;                  /* fc_dtype of its activations (ULP metrics) */
  const char* description;
} fc_path_desc;

typedef struct fc_tap_value {
  int32_t tap;                    /* fc_tap */
  fc_tensor value;                /* [rows x width], host memory */
} fc_tap_value;

typedef struct fc_op_timing {
  const char* op;
  double median_ms, p10_ms, p90_ms;
  int32_t repetitions;
  double bytes, flops;
} fc_op_timing;

typedef struct fc_timing_options {
  int32_t warmup, repetitions, cold_l2, graph;
} fc_timing_options;

/* Perturb mode: the tap's values x become x + relative_size * rms(x) * n, n ~ N(0,1)
 * from `seed`, at one tap of one layer; then the layer goes on. */
typedef struct fc_perturbation {
  int32_t layer;
  int32_t tap;                    /* fc_tap */
  double relative_size;
  uint64_t seed;
} fc_perturbation;

/* Capabilities of an instance (bit mask from the optional capabilities()). */
#define FC_CAP_PERTURB 1u         /* set_perturbation works (reference paths) */
#define FC_CAP_DEVICE_TAPS 2u     /* ABI 1.3: set_device_taps works, and the plugin's tap_metrics,
                                     next_token and copy_to_host take this instance's taps */
#define FC_CAP_HEADROOM 4u        /* ABI 1.4: headroom() reports the recipe's rounding points */

/* ABI 1.4: one rounding point of a layer's recipe (its name as the recipe's emulated twin
 * spells it: "k_cache.fp8", "qkv.weight.fp8", ...), counted over every value the path
 * rounded there since reset() (docs/plugin-paths.md, "Headroom"). */
typedef struct fc_headroom {
  const char* point;              /* owned by the plugin, valid until its next call */
  double max_abs;                 /* largest |x| before rounding (NaN/Inf inputs excluded) */
  double max_finite;              /* largest finite value of the point's format (448 for E4M3) */
  int64_t n_values;
  int64_t n_overflow;             /* finite values that rounded to +-Inf */
  int64_t n_saturated;            /* values that rounded (or were clipped) to +-max_finite */
  int64_t n_nonfinite_in;         /* NaN or Inf already in the input */
  int64_t n_flushed;              /* FP8 points: nonzero values stored as zero */
  int32_t rounded;                /* 1 when the recipe rounds at this point */
} fc_headroom;

/* ABI 1.3 device taps. A device tensor is an fc_tensor with memory FC_CUDA_DEVICE, rank 2,
 * strides[1] == 1 and strides[0] >= shape[1] (a row stride lets a tap be a column block of
 * a wider buffer), of dtype F64, F32, BF16 or F16, on the device the call names. */

/* What tap_metrics is asked for. */
typedef struct fc_metrics_request {
  uint32_t struct_size;           /* sizeof(fc_metrics_request) in fusecheck's build */
  int32_t device_index;           /* the device every tensor of the call lives on */
  int32_t path_dtype;             /* fc_dtype of the path's format: ULP distances, headroom, saturation */
  double atol, rtol;              /* an element is outside when |path - ref| > atol + rtol |ref| */
  const fc_tensor* truth;         /* optional (NULL): the FP64 truth at this tap, for the noise floor */
} fc_metrics_request;

/* The metrics of a (reference, path) pair of device tensors, with FP64 accumulation; the
 * definitions are fusecheck's CPU route's (docs/plugin-paths.md, "Device taps"). fusecheck
 * sets struct_size to what it reads; the plugin writes no field past it. */
typedef struct fc_tap_summary {
  uint32_t struct_size;
  double max_abs, max_rel, rel_l2, cosine;
  double ulp_p50, ulp_p99, ulp_max, frac_outside;
  double nan_count, inf_count, ref_nonfinite, ref_norm;
  double headroom, overflow_count, saturation_count;
  double plain_rel_l2;            /* ||path - ref|| / ||ref|| over every element, NaN when ||ref|| == 0 */
  double truth_rel_l2_path;       /* ||path - truth|| / ||truth|| (NaN without truth) */
  double truth_rel_l2_ref;        /* ||ref - truth|| / ||truth|| (NaN without truth) */
} fc_tap_summary;

/* A GPU plugin's device, for the results file's provenance. */
typedef struct fc_device_info {
  char name[256];
  char library_versions[256];     /* "cublas 120804", ... */
  int32_t driver_version, runtime_version;
  int32_t sm_clock_peak_mhz, mem_clock_peak_mhz;
  double copy_bandwidth_gbs;      /* measured when asked, else 0 */
  uint64_t global_mem_bytes;      /* device memory, for the size check before a run; 0 = unknown */
} fc_device_info;

/* How an instance runs, for invariance mode (ABI 1.2, docs/invariance.md). Arrays owned by
 * the plugin, valid until its next call on the same instance. */
typedef struct fc_execution_traits {
  int32_t n_kv_split_boundaries;       /* at most 64 */
  const int32_t* kv_split_boundaries;  /* KV lengths (> 0) at which the split of the KV cache changes */
  int32_t n_switches;                  /* at most 64 */
  const char* const* switches;         /* "NAME=VALUE" kernel switches read once per process */
} fc_execution_traits;

typedef struct fc_path fc_path;   /* a plugin's instance, opaque to fusecheck */

typedef struct fc_plugin {
  uint32_t abi_version;           /* FC_PLUGIN_ABI_VERSION the plugin was built with */
  uint32_t struct_size;           /* sizeof(fc_plugin) in the plugin's build */
  const char* name;
  const char* version;
  int32_t n_paths;
  const fc_path_desc* paths;
  /* NULL-terminated names of environment variables that change what the plugin computes
   * or how fast (recorded with their values in the results file); may be NULL. */
  const char* const* env_switches;

  int (*create)(const char* path_name, const fc_model* model, const fc_create_options* options,
                fc_path** out, fc_error* err);
  void (*destroy)(fc_path* path);
  /* Writes up to `capacity` fc_tap values (resid_out always among them); returns the count. */
  int32_t (*taps)(fc_path* path, int32_t* out, int32_t capacity);
  int (*reset)(fc_path* path, int32_t batch, int32_t capacity, fc_error* err);
  /* Embedding rows for n token ids ([n x hidden]). */
  int (*embed)(fc_path* path, const int32_t* tokens, int64_t n, fc_tensor* out, fc_error* err);
  /* Decoder layer `layer` on input [rows x hidden] (F64, host); *out points at *n_out taps. */
  int (*layer)(fc_path* path, int32_t layer, const fc_tensor* input, const fc_tap_value** out,
               int32_t* n_out, fc_error* err);
  /* Final norm and lm_head on [rows x hidden]: taps final_norm and logits. */
  int (*head)(fc_path* path, const fc_tensor* hidden, const fc_tap_value** out, int32_t* n_out,
              fc_error* err);

  /* Optional (NULL when not offered). */
  /* Hint: only these taps are read until the next call; n < 0 means every tap again. */
  void (*keep_taps)(fc_path* path, const int32_t* taps, int32_t n);
  int (*time_layer)(fc_path* path, int32_t layer, int32_t n_new, int32_t kv_len,
                    const fc_timing_options* options, const fc_op_timing** out, int32_t* n_out,
                    fc_error* err);
  uint32_t (*capabilities)(fc_path* path);
  /* p == NULL clears it. Called only on instances with FC_CAP_PERTURB. */
  int (*set_perturbation)(fc_path* path, const fc_perturbation* p, fc_error* err);
  /* GPU plugins: usable devices (0 when none or no driver), and one device's description. */
  int32_t (*device_count)(void);
  int (*device_info)(int32_t device_index, int32_t measure_bandwidth, fc_device_info* out, fc_error* err);

  /* ABI 1.1 */
  uint32_t abi_minor;             /* FC_PLUGIN_ABI_MINOR the plugin was built with */

  /* ABI 1.2, optional (NULL when not offered; read only from a table of minor >= 2 that
   * is long enough to hold it). The traits of an instance for `batch` sequences over up to
   * `max_kv` KV positions; without it a path declares none. */
  int (*execution_traits)(fc_path* path, int32_t batch, int32_t max_kv, fc_execution_traits* out,
                          fc_error* err);

  /* ABI 1.3, optional (NULL when not offered; read only from a table of minor >= 3 that is
   * long enough to hold them; fusecheck uses device taps only when all four are offered).
   * set_device_taps(on != 0), called only on instances with FC_CAP_DEVICE_TAPS: from then
   * on `layer` and `head` return device tensors on the instance's device, in the path's own
   * dtype, valid until the next call on the instance; their input may then be a device
   * tensor on that device too (F64, F32, BF16), which may be one of the instance's own taps
   * of the previous call: the plugin reads it before writing any tap. on == 0 returns to
   * host taps. */
  int (*set_device_taps)(fc_path* path, int32_t on, fc_error* err);
  /* The metrics of `path` against `ref` (same shape, any of the device dtypes each). */
  int (*tap_metrics)(const fc_metrics_request* request, const fc_tensor* ref, const fc_tensor* path,
                     fc_tap_summary* out, fc_error* err);
  /* Next-token figures of two logits tensors [positions x vocab] on device `device_index`,
   * per position into caller-owned arrays of shape[0] entries: KL(softmax(ref) ||
   * softmax(path)) in nats (+Inf where the path's row is not finite), the reference's top-1
   * minus top-2 logit, and 1 where both rows' first argmax agree. */
  int (*next_token)(int32_t device_index, const fc_tensor* ref_logits, const fc_tensor* path_logits, double* kl,
                    double* ref_margin, int32_t* top1_match, fc_error* err);
  /* A device tensor's values as dense F64 rows ([shape[0] x shape[1]], caller-owned). */
  int (*copy_to_host)(int32_t device_index, const fc_tensor* tensor, double* out, fc_error* err);

  /* ABI 1.4, optional (NULL when not offered; read only from a table of minor >= 4 that is
   * long enough to hold it; called only on instances with FC_CAP_HEADROOM). The rounding
   * points of layer `layer` (n_layers: the head) since reset(): *n_out entries at *out,
   * owned by the plugin, valid until its next call on the instance. */
  int (*headroom)(fc_path* path, int32_t layer, const fc_headroom** out, int32_t* n_out, fc_error* err);
} fc_plugin;

/* The one symbol a plugin exports. */
typedef const fc_plugin* (*fc_plugin_entry)(void);

#ifdef __cplusplus
}
#endif

#endif /* FUSECHECK_PATH_PLUGIN_H */
