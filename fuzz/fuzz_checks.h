// Invariants every fuzz target checks on the errors it provokes.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "harness/core/error.h"

namespace fusecheck::fuzz {

// Bad input must give one printable line (the CLI prints it as is): a control character
// from a hostile name or value leaking into the message is a finding.
inline void check_one_printable_line(const InputError& e) {
  for (const char c : std::string_view(e.what())) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      std::fprintf(stderr, "InputError message holds control character 0x%02x: %s\n", u, e.what());
      std::abort();
    }
  }
}

}  // namespace fusecheck::fuzz
