// Subcommand registry for the one `fusecheck` binary. Each cli_<name>.cpp registers its
// subcommand with a static CommandRegistrar; main.cpp builds the CLI11 app from them.
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

namespace fusecheck::cli {

// Adds options to `sub` (bound to state the setup owns) and returns the function that
// runs the command after parsing; its return value is the process exit code.
using CommandSetup = std::function<std::function<int()>(CLI::App& sub)>;

struct CommandSpec {
  std::string name;
  std::string help;
  CommandSetup setup;
  int input_error_exit_code = 2;  // exit code for InputError (check uses 3, like the seed)
};

struct CommandRegistrar {
  explicit CommandRegistrar(CommandSpec spec);
};

const std::vector<CommandSpec>& registered_commands();

}  // namespace fusecheck::cli
