/* Plug-ins that break the ABI on purpose, one per BAD_KIND, written in plain C (which also
 * shows that the header is C): the loader must turn each into a clear error naming the
 * file, or (NaN) into measured values that fail the gates, and never crash.
 *   1 not_a_plugin   exports no entry point
 *   2 abi_mismatch   reports ABI version 999
 *   3 missing_layer  leaves the layer function out of its table
 *   4 create_fails   every create returns an error
 *   5 wrong_shape    resid_out has one column too many
 *   6 nan_values     every value it returns is NaN
 *   7 builtin_name   offers a path named ref32-cpu
 * Kinds 1-7 leave abi_minor 0: their error codes carry no status, as in ABI 1.0.
 *   8 status_input        (1.1) layer returns FC_ERR_INPUT
 *   9 status_unsupported  (1.1) create returns FC_ERR_UNSUPPORTED
 *  10 status_plugin_bug   (1.1) layer returns FC_ERR_PLUGIN_BUG
 *  11 minor_too_new       reports ABI 1.99
 *  12 abi_1_0             a table of ABI 1.0's size (no abi_minor); create returns code 3,
 *                         which in 1.0 means only "failed"
 * Kinds 13-15 behave and are named traits-plugin-<kind> (loaded side by side in one test):
 *  13 traits_declared     (1.2) declares KV split boundaries 16, 32 and one switch
 *  14 traits_bad          (1.2) declares a KV split boundary of -4
 *  15 traits_abi_1_1      a 1.1 table (ends at abi_minor) whose execution_traits slot, past
 *                         its end, would fail: the loader must not read it
 * Kinds 16-18 are named device-plugin-<kind> and claim FC_CAP_DEVICE_TAPS (ABI 1.3):
 *  16 device_host_memory  (1.3) every entry offered, but with device taps on its layer
 *                         still returns host memory: the loader must refuse the taps
 *  17 device_abi_1_2      a 1.2 table (ends before set_device_taps) whose device-tap slots,
 *                         past its end, are filled: the loader must not read them
 *  18 device_partial      (1.3) offers set_device_taps, tap_metrics and copy_to_host but no
 *                         next_token: all four or none, so no device taps
 * Kinds 19-21 are named headroom-plugin-<kind> and claim FC_CAP_HEADROOM (ABI 1.4):
 *  19 headroom_declared   (1.4) reports k_cache.fp8 (3 of 64 + layer values clipped at 448,
 *                         max |x| 500) and v_cache.fp8 (5 flushed to zero)
 *  20 headroom_bad        (1.4) reports 99 saturated values out of 64
 *  21 headroom_abi_1_3    a 1.3 table (ends before headroom) whose headroom slot, past its
 *                         end, would fail: the loader must not read it */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "fusecheck/path_plugin.h"

#if BAD_KIND != 1

struct fc_path {
  int hidden, vocab;
  double* buffer;
  fc_tap_value taps[2];
};

static int create(const char* name, const fc_model* model, const fc_create_options* options, fc_path** out,
                  fc_error* err) {
  (void)name, (void)options;
  if (BAD_KIND == 4) {
    err->code = 7;
    strcpy(err->message, "this plug-in refuses every model");
    return 7;
  }
  if (BAD_KIND == 9 || BAD_KIND == 12) {
    err->code = BAD_KIND == 9 ? FC_ERR_UNSUPPORTED : 3;
    strcpy(err->message, "no kernel for this architecture");
    return err->code;
  }
  fc_path* p = calloc(1, sizeof *p);
  p->hidden = model->spec.hidden;
  p->vocab = model->spec.vocab;
  *out = p;
  return 0;
}

static void destroy(fc_path* p) {
  free(p->buffer);
  free(p);
}

static uint32_t capabilities(fc_path* p) {
  (void)p;
  return BAD_KIND >= 19 ? FC_CAP_HEADROOM : FC_CAP_DEVICE_TAPS;
}
static fc_headroom kHeadroom[2];
static int headroom(fc_path* p, int32_t layer, const fc_headroom** out, int32_t* n_out, fc_error* err) {
  (void)p;
  if (BAD_KIND == 21) {
    err->code = FC_ERR_PLUGIN_BUG;
    strcpy(err->message, "headroom read past the end of a 1.3 table");
    return err->code;
  }
  memset(kHeadroom, 0, sizeof kHeadroom);
  kHeadroom[0].point = "k_cache.fp8";
  kHeadroom[0].max_abs = 500;
  kHeadroom[0].max_finite = 448;
  kHeadroom[0].n_values = 64 + layer;
  kHeadroom[0].n_saturated = BAD_KIND == 20 ? 99 : 3;
  kHeadroom[0].rounded = 1;
  kHeadroom[1].point = "v_cache.fp8";
  kHeadroom[1].max_abs = 2;
  kHeadroom[1].max_finite = 448;
  kHeadroom[1].n_values = 64 + layer;
  kHeadroom[1].n_flushed = 5;
  kHeadroom[1].rounded = 1;
  *out = kHeadroom;
  *n_out = 2;
  return 0;
}
static int set_device_taps(fc_path* p, int32_t on, fc_error* err) {
  (void)p, (void)on, (void)err;
  return 0;
}
static int device_entry_fails(fc_error* err) {
  err->code = FC_ERR_PLUGIN_BUG;
  strcpy(err->message, "a device-tap entry of this plug-in was called");
  return err->code;
}
static int tap_metrics(const fc_metrics_request* r, const fc_tensor* a, const fc_tensor* b, fc_tap_summary* out,
                       fc_error* err) {
  (void)r, (void)a, (void)b, (void)out;
  return device_entry_fails(err);
}
static int next_token(int32_t device, const fc_tensor* a, const fc_tensor* b, double* kl, double* margin,
                      int32_t* match, fc_error* err) {
  (void)device, (void)a, (void)b, (void)kl, (void)margin, (void)match;
  return device_entry_fails(err);
}
static int copy_to_host(int32_t device, const fc_tensor* t, double* out, fc_error* err) {
  (void)device, (void)t, (void)out;
  return device_entry_fails(err);
}

static int32_t taps(fc_path* p, int32_t* out, int32_t capacity) {
  (void)p;
  if (capacity > 0) out[0] = FC_TAP_RESID_OUT;
  return 1;
}

static int reset(fc_path* p, int32_t batch, int32_t capacity, fc_error* err) {
  (void)p, (void)batch, (void)capacity, (void)err;
  return 0;
}

/* A [rows x cols] F64 matrix in the instance's buffer: zeros, or NaN for BAD_KIND 6. */
static fc_tensor matrix(fc_path* p, int64_t rows, int64_t cols) {
  free(p->buffer);
  p->buffer = calloc((size_t)(rows * cols), sizeof(double));
  for (int64_t i = 0; BAD_KIND == 6 && i < rows * cols; ++i) p->buffer[i] = NAN;
  fc_tensor t;
  memset(&t, 0, sizeof t);
  t.dtype = FC_F64;
  t.memory = FC_HOST;
  t.rank = 2;
  t.shape[0] = rows;
  t.shape[1] = cols;
  t.strides[0] = cols;
  t.strides[1] = 1;
  t.data = p->buffer;
  return t;
}

static int embed(fc_path* p, const int32_t* tokens, int64_t n, fc_tensor* out, fc_error* err) {
  (void)tokens, (void)err;
  *out = matrix(p, n, p->hidden);
  return 0;
}

static int layer(fc_path* p, int32_t index, const fc_tensor* input, const fc_tap_value** out, int32_t* n_out,
                 fc_error* err) {
  (void)index;
  if (BAD_KIND == 8 || BAD_KIND == 10) {
    err->code = BAD_KIND == 8 ? FC_ERR_INPUT : FC_ERR_PLUGIN_BUG;
    strcpy(err->message, BAD_KIND == 8 ? "rows must be a multiple of 64" : "illegal memory access in the layer kernel");
    return err->code;
  }
  p->taps[0].tap = FC_TAP_RESID_OUT;
  p->taps[0].value = matrix(p, input->shape[0], p->hidden + (BAD_KIND == 5 ? 1 : 0));
  *out = p->taps;
  *n_out = 1;
  return 0;
}

static int head(fc_path* p, const fc_tensor* hidden, const fc_tap_value** out, int32_t* n_out, fc_error* err) {
  (void)err;
  p->taps[0].tap = FC_TAP_LOGITS;
  p->taps[0].value = matrix(p, hidden->shape[0], p->vocab);
  *out = p->taps;
  *n_out = 1;
  return 0;
}

#define KIND_TEXT_(k) #k
#define KIND_TEXT(k) KIND_TEXT_(k)
static const fc_path_desc kPaths[] = {
    {BAD_KIND == 7    ? "ref32-cpu"
     : BAD_KIND >= 19 ? "headroom-plugin-" KIND_TEXT(BAD_KIND)
     : BAD_KIND >= 16 ? "device-plugin-" KIND_TEXT(BAD_KIND)
     : BAD_KIND >= 13 ? "traits-plugin-" KIND_TEXT(BAD_KIND)
                      : "bad-plugin-path",
     "cpu", "",
     "other", FC_BF16, "a plug-in that misbehaves"}};

static const int32_t kBoundaries[] = {16, BAD_KIND == 14 ? -4 : 32};
static const char* const kSwitches[] = {"BAD_PLUGIN_SPLIT=0"};

static int execution_traits(fc_path* p, int32_t batch, int32_t max_kv, fc_execution_traits* out, fc_error* err) {
  (void)p, (void)batch, (void)max_kv;
  if (BAD_KIND == 15) {
    err->code = FC_ERR_PLUGIN_BUG;
    strcpy(err->message, "execution_traits read past the end of a 1.1 table");
    return err->code;
  }
  out->n_kv_split_boundaries = 2;
  out->kv_split_boundaries = kBoundaries;
  out->n_switches = 1;
  out->switches = kSwitches;
  return 0;
}

__attribute__((visibility("default"))) const fc_plugin* fusecheck_path_plugin(void) {
  static fc_plugin table;
  memset(&table, 0, sizeof table);
  table.abi_version = BAD_KIND == 2 ? 999u : FC_PLUGIN_ABI_VERSION;
  table.struct_size = BAD_KIND == 12   ? (uint32_t)offsetof(fc_plugin, abi_minor)
                     : BAD_KIND == 15 ? (uint32_t)offsetof(fc_plugin, execution_traits)
                     : BAD_KIND == 17 ? (uint32_t)offsetof(fc_plugin, set_device_taps)
                     : BAD_KIND == 21 ? (uint32_t)offsetof(fc_plugin, headroom)
                                      : (uint32_t)sizeof table;
  if ((BAD_KIND >= 8 && BAD_KIND <= 10) || BAD_KIND == 13 || BAD_KIND == 14) table.abi_minor = FC_PLUGIN_ABI_MINOR;
  if (BAD_KIND == 11) table.abi_minor = 99;
  if (BAD_KIND == 15) table.abi_minor = 1;
  if (BAD_KIND >= 13 && BAD_KIND <= 15) table.execution_traits = execution_traits;
  if (BAD_KIND >= 19) {
    table.abi_minor = BAD_KIND == 21 ? 3 : FC_PLUGIN_ABI_MINOR;
    table.capabilities = capabilities;
    table.headroom = headroom;
  } else if (BAD_KIND >= 16) {
    table.abi_minor = BAD_KIND == 17 ? 2 : FC_PLUGIN_ABI_MINOR;
    table.capabilities = capabilities;
    table.set_device_taps = set_device_taps;
    table.tap_metrics = tap_metrics;
    table.next_token = BAD_KIND == 18 ? NULL : next_token;
    table.copy_to_host = copy_to_host;
  }
  table.name = "bad-plugin";
  table.version = "0";
  table.n_paths = 1;
  table.paths = kPaths;
  table.create = create;
  table.destroy = destroy;
  table.taps = taps;
  table.reset = reset;
  table.embed = embed;
  table.layer = BAD_KIND == 3 ? NULL : layer;
  table.head = head;
  return &table;
}

#else
__attribute__((visibility("default"))) int not_a_fusecheck_plugin(void) { return 42; }
#endif
