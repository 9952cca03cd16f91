// Text that comes from input fusecheck does not control (a scenario's name and values, a
// results file's attributes, a path on the command line): made safe to print on one
// terminal line and safe to use as one file name. A hostile name must neither move the
// cursor nor forge a line of output, nor lead a write outside the folder the user named.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace fusecheck {

// Control characters (C0, DEL, C1) and bytes that are not UTF-8 shown as \xNN; when `max_chars` is exceeded, the middle is
// replaced by "...(N characters)..." so that both ends stay readable.
std::string printable(std::string_view text, std::size_t max_chars = std::string_view::npos);

// The longest file name component file_name_component() returns: far below NAME_MAX (255)
// so that a date prefix and an extension still fit.
inline constexpr std::size_t kMaxFileStem = 96;

// One file name component derived from `text`: characters outside [A-Za-z0-9._+-] become
// '_', no ".." and no leading '.', at most kMaxFileStem bytes; `fallback` when nothing is
// left. The result never contains a separator, so joined to a folder it stays in it.
std::string file_name_component(std::string_view text, std::string_view fallback);

}  // namespace fusecheck
