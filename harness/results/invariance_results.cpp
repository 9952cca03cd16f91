// The /invariance group read back: validation and comparison (see invariance_results.h).
#include "harness/results/invariance_results.h"

#include <cmath>
#include <map>

#include <fmt/core.h>

namespace fusecheck::results {

namespace {

bool known_status(const std::string& s) { return s == "invariant" || s == "differs" || s == "n/a"; }

std::string cell_detail(const InvarianceCell& c) {
  if (c.status == "differs") {
    const auto figure = [](double ulp) { return std::isinf(ulp) ? std::string("inf") : fmt::format("{:.0f}", ulp); };
    std::string s = fmt::format("differs from L{} {} (token {})", c.first_layer, c.first_tap, c.first_row);
    if (c.first_scaled_ulp) {
      s += fmt::format(", {} ulp@scale {}, {} sign crossings", fmt::format("{:.3g}", *c.first_scaled_ulp),
                       c.first_scaled_ulp_dtype, c.sign_crossings.value_or(0));
    }
    return s + fmt::format(", max {} ulp {}", figure(c.max_ulp), c.max_ulp_dtype);
  }
  if (c.status == "n/a") return "n/a (" + c.reason + ")";
  return c.status;
}

}  // namespace

std::vector<InvarianceCell> read_invariance(const Run& run) {
  std::vector<InvarianceCell> cells;
  const H5Node* root = run.root().group("invariance");
  if (!root) return cells;
  for (const auto& [path, group] : root->groups) {
    for (const auto& [check, g] : group.groups) {
      const std::string where = fmt::format("/invariance/{}/{}", path, check);
      InvarianceCell c;
      c.path = path;
      c.check = check;
      c.status = g.attr_string("status").value_or("");
      if (!known_status(c.status)) {
        run.fail(where, fmt::format("status '{}' is none of invariant, differs, n/a", c.status));
      }
      c.reason = g.attr_string("reason").value_or("");
      c.first_layer = static_cast<long>(g.attr_number("first_layer").value_or(-1));
      c.first_tap = g.attr_string("first_tap").value_or("");
      c.first_row = static_cast<long>(g.attr_number("first_row").value_or(-1));
      c.max_ulp = g.attr_number("max_ulp").value_or(0);
      c.max_ulp_dtype = g.attr_string("max_ulp_dtype").value_or("");
      c.first_scaled_ulp = g.attr_number("first_scaled_ulp");
      c.first_scaled_ulp_dtype = g.attr_string("first_scaled_ulp_dtype").value_or("");
      if (c.first_scaled_ulp && !(*c.first_scaled_ulp >= 0)) run.fail(where, "first_scaled_ulp must be >= 0");
      if (const auto n = g.attr_number("sign_crossings")) {
        // A count from the file: checked before it becomes an integer.
        if (!(*n >= 0 && *n <= 1e15)) run.fail(where, "sign_crossings must be a count (0 to 1e15)");
        c.sign_crossings = static_cast<long>(*n);
      }
      if (c.status == "differs" && (c.first_layer < 0 || c.first_tap.empty())) {
        run.fail(where, "a cell that differs must name its first layer and tap");
      }
      cells.push_back(std::move(c));
    }
  }
  return cells;
}

void validate_invariance(const Run& run, bool mode_ran) {
  const H5Node* root = run.root().group("invariance");
  if (!mode_ran) return;
  if (!root) run.fail("/invariance", "incomparable: missing the invariance certificate (modes include invariance)");
  if (const H5Node* paths = run.root().group("paths")) {
    for (const auto& [label, g] : paths->groups) {
      if (!root->groups.count(label)) {
        run.fail("/invariance/" + label, fmt::format("incomparable: missing the invariance cells of path '{}'", label));
      }
    }
  }
  read_invariance(run);  // every cell's status
}

void compare_invariance(const Run& fresh, const Run& base, RunComparison& out) {
  // The same scenario gave other bits (another build, a kernel switch): worth reading,
  // not a regression of its own.
  const H5Node* fresh_root = fresh.root().group("invariance");
  const H5Node* base_root = base.root().group("invariance");
  if (fresh_root && base_root) {
    for (const auto& [path, b] : base_root->groups) {
      auto f = fresh_root->groups.find(path);
      if (f == fresh_root->groups.end()) continue;
      const auto fb = b.attr_string("fingerprint").value_or(""), ff = f->second.attr_string("fingerprint").value_or("");
      if (!fb.empty() && !ff.empty() && fb != ff) {
        out.findings.push_back({Severity::note, "invariance", path + " invariance fingerprint",
                                fmt::format("the needle's bits differ from the baseline's ({} -> {})", fb, ff)});
      }
    }
  }
  std::map<std::pair<std::string, std::string>, InvarianceCell> now;
  for (auto& c : read_invariance(fresh)) now[{c.path, c.check}] = c;
  for (const auto& b : read_invariance(base)) {
    const std::string where = b.path + " invariance " + b.check;
    auto it = now.find({b.path, b.check});
    if (it == now.end()) {
      const Severity s = b.status == "invariant" ? Severity::regression : Severity::note;
      out.findings.push_back({s, "invariance", where, "certified in the baseline (" + cell_detail(b) + "), not checked now"});
      continue;
    }
    const InvarianceCell& f = it->second;
    if (f.status == b.status) continue;
    const std::string detail = cell_detail(b) + " -> " + cell_detail(f);
    if (b.status == "invariant") {
      out.findings.push_back({Severity::regression, "invariance", where, detail});
    } else if (f.status == "invariant") {
      out.findings.push_back({Severity::note, "invariance", where, "gained: " + detail});
    } else {
      out.findings.push_back({Severity::note, "invariance", where, detail});
    }
  }
}

}  // namespace fusecheck::results
