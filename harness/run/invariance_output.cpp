// The /invariance group and the certificate table (see invariance_output.h).
#include "harness/run/invariance_output.h"

#include <algorithm>
#include <cmath>

#include <fmt/core.h>

#include "harness/core/untrusted.h"

namespace fusecheck::run {

namespace {

std::string int_list(const std::vector<int>& values) {
  std::string s;
  for (int v : values) s += (s.empty() ? "" : ",") + std::to_string(v);
  return s;
}

std::string ulp_text(double ulp) {
  if (std::isinf(ulp)) return "inf";
  return fmt::format("{:.0f}", ulp);
}

// A scaled distance: two significant digits below 1 (one value of a row moving by its own
// tiny ULP reads 0.0039, not 0.0), one decimal below 10 (a reduction order reads 0.5 to a
// few), whole numbers above.
std::string scaled_text(double ulp) {
  if (std::isinf(ulp)) return "inf";
  if (ulp < 1) return fmt::format("{:.2g}", ulp);
  return ulp < 10 ? fmt::format("{:.1f}", ulp) : fmt::format("{:.0f}", ulp);
}

std::string where_text(const InvarianceOutcome& o, int n_layers) {
  const std::string layer = o.first_layer == n_layers ? std::string("head") : fmt::format("L{}", o.first_layer);
  return fmt::format("{} {}", layer, o.first_tap ? tap_name(*o.first_tap) : "?");
}

std::string cell_text(const InvarianceOutcome& o, int n_layers) {
  switch (o.status) {
    case InvarianceStatus::invariant: return "yes";
    case InvarianceStatus::not_applicable: return "n/a";
    case InvarianceStatus::differs:
      return fmt::format("NO {} {}ulp@scale", where_text(o, n_layers), scaled_text(o.first_scaled_ulp));
  }
  return "?";
}

}  // namespace

void write_invariance(results::H5Writer& w, const InvarianceResult& r) {
  const std::string root = "/invariance";
  w.group(root);
  std::string checks;
  for (InvarianceCheck c : r.spec.checks) checks += (checks.empty() ? "" : ",") + std::string(invariance_check_name(c));
  w.attr(root, "checks", checks);
  w.attr(root, "batch_sizes", int_list(r.spec.batch_sizes));
  w.attr(root, "runs", static_cast<long long>(r.spec.runs));
  w.attr(root, "kv_chunks", int_list(r.spec.kv_chunks));
  w.attr(root, "decode_steps", static_cast<long long>(r.spec.decode_steps));
  w.attr(root, "n_tokens", static_cast<long long>(r.n_tokens));
  w.attr(root, "neighbour_seed", static_cast<long long>(r.neighbour_seed));
  w.attr(root, "differing", static_cast<long long>(r.differing));
  for (const auto& p : r.paths) {
    const std::string pg = root + "/" + p.label;
    w.group(pg);
    w.attr(pg, "device", p.device);
    w.attr(pg, "fingerprint", p.fingerprint);
    for (const auto& o : p.outcomes) {
      const std::string g = pg + "/" + invariance_check_name(o.check);
      w.group(g);
      w.attr(g, "status", std::string(invariance_status_name(o.status)));
      w.attr(g, "reason", o.reason);
      w.attr(g, "variants", static_cast<long long>(o.variants));
      w.attr(g, "variants_differing", static_cast<long long>(o.variants_differing));
      w.attr(g, "first_layer", static_cast<long long>(o.first_layer));
      w.attr(g, "first_tap", std::string(o.first_tap ? tap_name(*o.first_tap) : ""));
      w.attr(g, "first_row", static_cast<long long>(o.first_row));
      w.attr(g, "max_ulp", o.max_ulp);
      w.attr(g, "max_ulp_dtype", o.max_ulp_dtype);
      w.attr(g, "first_scaled_ulp", o.first_scaled_ulp);
      w.attr(g, "first_scaled_ulp_dtype", o.first_scaled_ulp_dtype);
      w.attr(g, "first_scaled_ulp_histogram", scaled_ulp_histogram_csv(o.first_scaled_ulp_histogram));
      w.attr(g, "max_scaled_ulp", o.max_scaled_ulp);
      w.attr(g, "sign_crossings", static_cast<long long>(o.sign_crossings));
      w.attr(g, "max_same_sign_ulp", o.max_same_sign_ulp);
      w.attr(g, "elements_differing", static_cast<long long>(o.elements_differing));
      w.attr(g, "elements_compared", static_cast<long long>(o.elements_compared));
    }
  }
}

std::string format_invariance_table(const InvarianceResult& r, int n_layers) {
  std::vector<std::string> header{"path"};
  for (InvarianceCheck c : r.spec.checks) header.emplace_back(invariance_check_name(c));
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : r.paths) {
    std::vector<std::string> row{printable(p.label, 40)};
    for (const auto& o : p.outcomes) row.push_back(cell_text(o, n_layers));
    rows.push_back(std::move(row));
  }
  std::vector<std::size_t> width(header.size());
  for (std::size_t c = 0; c < header.size(); ++c) {
    width[c] = header[c].size();
    for (const auto& row : rows) width[c] = std::max(width[c], row[c].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (std::size_t c = 0; c < cells.size(); ++c) s += fmt::format("{:<{}}  ", cells[c], width[c]);
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s + "\n";
  };
  std::string out = fmt::format("Invariance (bitwise, every tap of one sequence of {} tokens; yes = identical bits):\n",
                                r.n_tokens);
  out += line(header);
  for (const auto& row : rows) out += line(row);
  for (const auto& p : r.paths) {
    for (const auto& o : p.outcomes) {
      if (o.status == InvarianceStatus::invariant) continue;
      const std::string head = fmt::format("  {} {}: ", printable(p.label, 40), invariance_check_name(o.check));
      if (o.status == InvarianceStatus::not_applicable) {
        out += head + "n/a, " + printable(o.reason, 200) + "\n";
      } else {
        out += head + fmt::format("{} of {} variants differ; first at {} token {} ({}), there {} ulp@scale ({}); "
                                  "{} of {} values differ\n",
                                  o.variants_differing, o.variants, where_text(o, n_layers), o.first_row,
                                  printable(o.reason, 120), scaled_text(o.first_scaled_ulp),
                                  o.first_scaled_ulp_dtype, o.elements_differing, o.elements_compared);
        out += fmt::format("    {} scaled ulps: {}\n", where_text(o, n_layers),
                           scaled_ulp_histogram_text(o.first_scaled_ulp_histogram));
        out += fmt::format("    every tap: max {} ulp@scale; {} sign crossings; max {} ulp same-sign, {} ulp in bits "
                           "({})\n",
                           scaled_text(o.max_scaled_ulp), o.sign_crossings, ulp_text(o.max_same_sign_ulp),
                           ulp_text(o.max_ulp), o.max_ulp_dtype);
      }
    }
  }
  return out;
}

}  // namespace fusecheck::run
