// Overlap check by sorting the tensors' byte ranges.
#include "harness/checkpoint/view_checks.h"

#include <algorithm>
#include <functional>

#include <fmt/core.h>

#include "harness/core/error.h"

namespace fusecheck {

void check_no_overlap(const std::vector<TensorView>& tensors, const std::string& file) {
  std::vector<const TensorView*> order;
  for (const TensorView& t : tensors) {
    if (!t.bytes.empty()) order.push_back(&t);  // zero-sized tensors overlap nothing
  }
  const std::less<const std::byte*> before;
  std::sort(order.begin(), order.end(),
            [&](const TensorView* a, const TensorView* b) { return before(a->bytes.data(), b->bytes.data()); });
  for (std::size_t i = 1; i < order.size(); ++i) {
    const TensorView& prev = *order[i - 1];
    if (before(order[i]->bytes.data(), prev.bytes.data() + prev.bytes.size())) {
      throw InputError(fmt::format("{}: tensor '{}'", file, order[i]->name),
                       fmt::format("data overlaps that of tensor '{}'", prev.name));
    }
  }
}

namespace {

std::string printable(const std::string& text) {
  constexpr std::size_t kMaxChars = 2000;
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
    if (out.size() >= kMaxChars) return out + "...";
  }
  return out;
}

}  // namespace

void rethrow_printable(const InputError& e) {
  const std::string what = e.what();
  const std::string& where = e.where();
  const std::string problem = where.empty() ? what : what.substr(std::min(what.size(), where.size() + 2));
  throw InputError(printable(where), printable(problem));
}

}  // namespace fusecheck
