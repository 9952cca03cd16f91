// Error against KV age (see kv_age.h): the per-key contributions p_j v_j of every decode
// step's attention, with the exact cache and with the FP8 one, bucketed by key age.
#include "reference/kv_age.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "reference/decoder_path.h"
#include "reference/kv_fp8.h"

namespace fusecheck::ref {

namespace {

int bucket_of(int age) {
  int b = 0;
  while ((1 << b) <= age) ++b;  // 0 -> 0, 1 -> 1, 2-3 -> 2, 4-7 -> 3, ...
  return b;
}

// One layer's caches, the exact one and what the FP8 one reads back.
struct LayerCaches {
  Mat<float> k_exact, v_exact, k_fp8, v_fp8;
  Index len = 0;
  std::vector<double> err_sq;  // per bucket
  std::vector<std::int64_t> keys;
  double ref_sq = 0;
};

void append(Mat<float>& cache, Index at, const Mat<float>& rows) { cache.middleRows(at, rows.rows()) = rows; }

// Softmax weights of one query head over keys 0..visible-1 (FP64: the measurement, not
// the recipe).
std::vector<double> softmax_weights(const float* q, const Mat<float>& keys, Index col0, int hd, Index visible,
                                    double scale) {
  std::vector<double> w(static_cast<std::size_t>(visible));
  double mx = -INFINITY, sum = 0;
  for (Index j = 0; j < visible; ++j) {
    double dot = 0;
    for (int d = 0; d < hd; ++d) dot += static_cast<double>(q[d]) * keys(j, col0 + d);
    w[static_cast<std::size_t>(j)] = dot * scale;
    mx = std::max(mx, w[static_cast<std::size_t>(j)]);
  }
  for (auto& x : w) sum += (x = std::exp(x - mx));
  for (auto& x : w) x /= sum;
  return w;
}

}  // namespace

KvAgeReport measure_kv_age_error(const Checkpoint& ckpt, const Recipe& recipe, std::span<const std::int32_t> prompt,
                                 int decode_steps) {
  if (!recipe.kv_fp8) throw std::invalid_argument("KV age error: " + recipe.name + " has no FP8 KV cache");
  if (prompt.empty() || decode_steps < 1) throw std::invalid_argument("KV age error: needs a prompt and decode steps");
  const ModelSpec& s = ckpt.spec();
  const int hd = s.head_dim, group = s.n_heads / s.n_kv_heads;
  const Index capacity = static_cast<Index>(prompt.size()) + decode_steps;
  const int n_buckets = bucket_of(static_cast<int>(capacity)) + 1;
  EmulatedPath path(ckpt, "emulated-cpu", &recipe);
  path.reset(1, static_cast<int>(capacity));
  std::vector<LayerCaches> layers(static_cast<std::size_t>(s.n_layers));
  std::vector<std::pair<KvFp8Quantizer, KvFp8Quantizer>> quantizers;
  for (auto& l : layers) {
    l.k_exact = l.v_exact = l.k_fp8 = l.v_fp8 = Mat<float>(capacity, s.kv_width());
    l.err_sq.assign(static_cast<std::size_t>(n_buckets), 0);
    l.keys.assign(static_cast<std::size_t>(n_buckets), 0);
    quantizers.emplace_back(KvFp8Quantizer(*recipe.kv_fp8, s.n_kv_heads), KvFp8Quantizer(*recipe.kv_fp8, s.n_kv_heads));
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));

  auto forward = [&](std::span<const std::int32_t> ids, bool measure) {
    TapMatrix h = path.embed(ids);
    for (int li = 0; li < s.n_layers; ++li) {
      const TapSet taps = path.layer(li, h);
      LayerCaches& c = layers[static_cast<std::size_t>(li)];
      const Mat<float> k = taps.at(Tap::k_rope).cast<float>(), v = taps.at(Tap::v).cast<float>();
      Mat<float> k8 = k, v8 = v;
      auto& [kq, vq] = quantizers[static_cast<std::size_t>(li)];
      kq.append(k8, "k_cache");
      vq.append(v8, "v_cache");
      append(c.k_exact, c.len, k);
      append(c.v_exact, c.len, v);
      append(c.k_fp8, c.len, k8);
      append(c.v_fp8, c.len, v8);
      c.len += k.rows();
      if (measure) {
        const Mat<float> q = taps.at(Tap::q_rope).cast<float>();
        for (Index t = 0; t < q.rows(); ++t) {
          const Index pos = c.len - q.rows() + t, visible = pos + 1;
          for (int head = 0; head < s.n_heads; ++head) {
            const Index col0 = static_cast<Index>(head / group) * hd;
            const float* qh = q.row(t).data() + static_cast<Index>(head) * hd;
            const auto p = softmax_weights(qh, c.k_exact, col0, hd, visible, scale);
            const auto p8 = softmax_weights(qh, c.k_fp8, col0, hd, visible, scale);
            std::vector<double> out(static_cast<std::size_t>(hd), 0.0);
            for (Index j = 0; j < visible; ++j) {
              double e = 0;
              for (int d = 0; d < hd; ++d) {
                const double ref = p[static_cast<std::size_t>(j)] * c.v_exact(j, col0 + d);
                const double got = p8[static_cast<std::size_t>(j)] * c.v_fp8(j, col0 + d);
                out[static_cast<std::size_t>(d)] += ref;
                e += (got - ref) * (got - ref);
              }
              const int b = bucket_of(static_cast<int>(pos - j));
              c.err_sq[static_cast<std::size_t>(b)] += e;
              ++c.keys[static_cast<std::size_t>(b)];
            }
            for (double x : out) c.ref_sq += x * x;
          }
        }
      }
      h = taps.at(Tap::resid_out);
    }
    return path.head(h).at(Tap::logits);
  };

  std::vector<std::int32_t> tokens(prompt.begin(), prompt.end());
  TapMatrix logits = forward(tokens, false);
  for (int step = 0; step < decode_steps; ++step) {
    Eigen::Index next = 0;
    logits.row(logits.rows() - 1).maxCoeff(&next);
    tokens.push_back(static_cast<std::int32_t>(next));
    logits = forward(std::span(tokens).last(1), true);
  }

  KvAgeReport report;
  report.decode_steps = decode_steps;
  double total_ref = 0;
  for (const auto& l : layers) total_ref += l.ref_sq;
  for (int b = 0; b < n_buckets; ++b) {
    KvAgeBucket bucket;
    bucket.lo = b == 0 ? 0 : 1 << (b - 1);
    bucket.hi = b == 0 ? 0 : (1 << b) - 1;
    double err = 0;
    for (const auto& l : layers) {
      const auto ub = static_cast<std::size_t>(b);
      bucket.keys += l.keys[ub];
      err += l.err_sq[ub];
      bucket.rel_error_by_layer.push_back(l.ref_sq > 0 ? std::sqrt(l.err_sq[ub] / l.ref_sq) : 0);
    }
    if (bucket.keys == 0) continue;
    bucket.rel_error = total_ref > 0 ? std::sqrt(err / total_ref) : 0;
    report.buckets.push_back(std::move(bucket));
  }
  return report;
}

}  // namespace fusecheck::ref
