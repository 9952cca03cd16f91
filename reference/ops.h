// The decoder's ops on Eigen row-major matrices, templated on the scalar (double for
// ref64, float for ref32 and emulated-cpu) and on a rounding hook: NoRounding for the
// references, RecipeRounding (reference/rounding.h) for emulated-cpu, which rounds at the
// recipe's points and records their overflow headroom. Semantics follow Hugging Face
// transformers (modeling_qwen3.py, modeling_llama.py): eps inside the square root,
// weight multiply after normalization, rotate_half RoPE, eager attention order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "harness/core/model_spec.h"
#include "reference/flashinfer_decode.h"
#include "reference/recipe.h"

namespace fusecheck::ref {

template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;
using Eigen::Index;

// The references round nothing; every call folds away.
template <class S>
struct NoRounding {
  static constexpr bool kRounds = false;
  S operator()(RoundPoint, S x) const { return x; }
  void measure(RoundPoint, S) const {}
};

// Applies the hook to every element of a matrix or block (blocks bind as temporaries).
template <class R, class M>
void round_all(R& round, RoundPoint p, M&& m) {
  if constexpr (R::kRounds) {
    for (Index i = 0; i < m.rows(); ++i) {
      for (Index j = 0; j < m.cols(); ++j) m(i, j) = round(p, m(i, j));
    }
  }
}

struct NormPoints {
  RoundPoint sumsq, normalized, out;
};

// RMSNorm of each group of `group` columns of every row (group = hidden for the layer
// norms, head_dim for Qwen3's per-head q_norm/k_norm): y = w * (x / sqrt(mean(x^2) + eps)),
// normalized first and multiplied by the weight second, as HF does.
template <class S, class R>
Mat<S> rms_norm(const Mat<S>& x, const Vec<S>& w, double eps, Index group, R& round,
                NormPoints pts) {
  Mat<S> y(x.rows(), x.cols());
  const Index groups = x.cols() / group;
  for (Index i = 0; i < x.rows(); ++i) {
    for (Index g = 0; g < groups; ++g) {
      const auto seg = x.row(i).segment(g * group, group);
      const S sumsq = seg.squaredNorm();
      round.measure(pts.sumsq, sumsq);
      const S inv = S(1) / std::sqrt(sumsq / static_cast<S>(group) + static_cast<S>(eps));
      for (Index j = 0; j < group; ++j) {
        const S normalized = round(pts.normalized, seg(j) * inv);
        y(i, g * group + j) = round(pts.out, w(j) * normalized);
      }
    }
  }
  return y;
}

// Inverse frequencies of the rotated pairs, i in [0, rope_dim / 2): theta^(-2i/d) with the
// checkpoint's scaling ("linear": / factor; "llama3": HF's _compute_llama3_parameters).
std::vector<double> rope_inv_freq(const ModelSpec& spec);
// The same computed in FP32 the way HF's rotary embedding does (pow and divide in float).
std::vector<float> rope_inv_freq_fp32(const ModelSpec& spec);

// cos and sin per position (rows: positions first .. first + count - 1) and pair (cols).
template <class S>
struct RopeTable {
  Mat<S> cos, sin;
};

// FP64 angles rounded once to S (references and fused-v1).
template <class S>
RopeTable<S> rope_table(const ModelSpec& spec, std::int64_t first, Index count) {
  const std::vector<double> inv = rope_inv_freq(spec);
  RopeTable<S> t{Mat<S>(count, static_cast<Index>(inv.size())),
                 Mat<S>(count, static_cast<Index>(inv.size()))};
  for (Index p = 0; p < count; ++p) {
    for (Index i = 0; i < static_cast<Index>(inv.size()); ++i) {
      const double angle = static_cast<double>(first + p) * inv[i];
      t.cos(p, i) = static_cast<S>(std::cos(angle));
      t.sin(p, i) = static_cast<S>(std::sin(angle));
    }
  }
  return t;
}

// FP32 angles and FP32 cos/sin, as HF computes them before casting to the model dtype.
RopeTable<float> rope_table_fp32_angles(const ModelSpec& spec, std::int64_t first, Index count);

// Rotates every head of x in place. Row r of x takes the table row r % n_per_seq (rows are
// sequence-major, every sequence at the same positions). NeoX pairs (i, i + d/2) or
// interleaved pairs (2i, 2i + 1); out = x*cos + rotate(x)*sin with each term rounded at
// rope.terms and the sum at `out_point` (HF evaluates q*cos, rotate_half(q)*sin, then +).
template <class S, class R>
void apply_rope(Mat<S>& x, int head_dim, RopeStyle style, const RopeTable<S>& table,
                Index n_per_seq, R& round, RoundPoint out_point) {
  const Index half = head_dim / 2;
  const Index heads = x.cols() / head_dim;
  for (Index r = 0; r < x.rows(); ++r) {
    const Index p = r % n_per_seq;
    for (Index h = 0; h < heads; ++h) {
      S* v = x.row(r).data() + h * head_dim;
      for (Index i = 0; i < half; ++i) {
        const Index ia = style == RopeStyle::NeoxHalfSplit ? i : 2 * i;
        const Index ib = style == RopeStyle::NeoxHalfSplit ? i + half : 2 * i + 1;
        const S c = table.cos(p, i), s = table.sin(p, i);
        const S a = v[ia], b = v[ib];
        const S a_c = round(RoundPoint::rope_terms, a * c);
        const S nb_s = round(RoundPoint::rope_terms, -b * s);
        const S b_c = round(RoundPoint::rope_terms, b * c);
        const S a_s = round(RoundPoint::rope_terms, a * s);
        v[ia] = round(out_point, a_c + nb_s);
        v[ib] = round(out_point, b_c + a_s);
      }
    }
  }
}

// Causal grouped-query attention for one sequence. q: [n x n_heads*hd] (the sequence's new
// rows); k_cache, v_cache: [total x n_kv*hd], the first `total` rows valid, the n new
// tokens last. Query head h reads kv head h / (n_heads / n_kv). Scores are scaled after the
// product and softmax runs in S over the unmasked keys (masked weights exactly zero), as
// HF eager attention does. Writes [n x n_heads*hd] into out.
// partial_chunk > 0 with a partial recipe (flashinfer, docs/recipes.md): a single query
// row is FlashInfer's decode in its FP32 order (reference/flashinfer_decode.h; the batch
// paged kernel's layout when partial->decode_batch_paged), split into chunks of
// partial_chunk keys, chunk outputs rounded to partial->format and merged as MergeStates
// does (the caller rounds the merged output at attn).
// A partial recipe with prefill_rounds_unnormalized_p: for more than one query row, each
// exp(s - max) is rounded to its format and the row sum adds the rounded values.
template <class S, class R, class QBlock, class OutBlock>
void causal_gqa_attention(const QBlock& q, const Mat<S>& k_cache, const Mat<S>& v_cache,
                          Index total, int n_heads, int n_kv_heads, int head_dim, S scale,
                          R& round, OutBlock&& out, Index partial_chunk = 0,
                          const Recipe* partial = nullptr) {
  const Index n = q.rows();
  const Index group = n_heads / n_kv_heads;
  if constexpr (std::is_same_v<S, float>) {
    // FlashInfer lays a head out in 8-element vectors (bf16): other head dims, which it
    // has no kernel for, take the plain softmax below.
    if (n == 1 && partial && partial_chunk > 0 && head_dim % 8 == 0 && head_dim <= 256) {
      for (Index h = 0; h < n_heads; ++h) {
        const Index g = h / group;
        std::vector<float> qh(q.row(0).data() + h * head_dim, q.row(0).data() + (h + 1) * head_dim);
        const auto key = [&](std::int64_t j) { return k_cache.row(j).data() + g * head_dim; };
        const auto value = [&](std::int64_t j) { return v_cache.row(j).data() + g * head_dim; };
        flashinfer_decode_head(qh.data(), key, value, total, head_dim, static_cast<int>(group), scale, partial_chunk,
                               [&](float x) { return partial->round(x); }, out.row(0).data() + h * head_dim,
                               partial->decode_batch_paged ? FlashInferDecodeKernel::batch_paged
                                                           : FlashInferDecodeKernel::single);
      }
      return;
    }
  }
  for (Index h = 0; h < n_heads; ++h) {
    const Index g = h / group;
    const auto keys = k_cache.block(0, g * head_dim, total, head_dim);
    const auto values = v_cache.block(0, g * head_dim, total, head_dim);
    Mat<S> probs = Mat<S>::Zero(n, total);
    Mat<S> scores = q.block(0, h * head_dim, n, head_dim) * keys.transpose();
    for (Index t = 0; t < n; ++t) {
      const Index visible = total - n + t + 1;  // keys at positions <= this token's
      S row_max = -std::numeric_limits<S>::infinity();
      for (Index j = 0; j < visible; ++j) {
        const S s = round(RoundPoint::scores_scaled, round(RoundPoint::scores, scores(t, j)) * scale);
        scores(t, j) = s;
        row_max = std::max(row_max, s);
      }
      S sum = 0;
      const bool round_p = n > 1 && partial && partial->prefill_rounds_unnormalized_p;
      for (Index j = 0; j < visible; ++j) {
        probs(t, j) = std::exp(scores(t, j) - row_max);
        if (round_p) probs(t, j) = static_cast<S>(partial->round(static_cast<float>(probs(t, j))));
        sum += probs(t, j);
      }
      for (Index j = 0; j < visible; ++j) probs(t, j) = round(RoundPoint::probs, probs(t, j) / sum);
    }
    out.block(0, h * head_dim, n, head_dim).noalias() = probs * values;
  }
}

template <class S>
S silu(S x) {
  return x / (S(1) + std::exp(-x));
}

}  // namespace fusecheck::ref
