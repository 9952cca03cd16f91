// Error types shared by every part of fusecheck.
// InputError: the user's input is bad (file, scenario, flag); one line, exit code 2
// unless a command documents another (check uses 3). PluginError: a plug-in reported a
// failure of its own (FC_ERR_PLUGIN_BUG); exit code 70, the message naming the plug-in.
// Internal invariants use std::logic_error. Nothing here depends on CUDA.
#pragma once

#include <stdexcept>
#include <string>

namespace fusecheck {

class InputError : public std::runtime_error {
 public:
  // `where` names the file (and tensor or key, when one applies); `what` the problem.
  InputError(const std::string& where, const std::string& what)
      : std::runtime_error(where.empty() ? what : where + ": " + what), where_(where) {}
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

class PluginError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace fusecheck
