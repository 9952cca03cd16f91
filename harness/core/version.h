// Version and git revision of this build (configured into version.cpp by CMake).
#pragma once

#include <string>

namespace fusecheck {
std::string version_string();  // "0.1.0"
std::string git_sha();         // short sha at configure time, "+dirty" appended if dirty
}  // namespace fusecheck
