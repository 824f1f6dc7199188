// Small files of a station's state directory (saved requests, CMP request DER, certificates):
// read whole, written durably (temporary file, fsync, rename, fsync of the folder), and the
// names workflow ids may give them.
#pragma once

#include <sys/types.h>

#include <string>

#include "persoflow/common/status.hpp"

namespace persoflow::actors {

Result<std::string> read_file(const std::string& path);
// The first line (without CR/LF); an empty one is kInvalidArgument.
Result<std::string> first_line(const std::string& path);
// After it returns OK the file has the new content even across a power cut; a crash before
// leaves the old content (or no file).
Status write_durably(const std::string& path, const std::string& data, mode_t mode = 0644);
// A workflow id or reference usable as a file name: [A-Za-z0-9._-], not starting with '.'.
bool safe_file_name(const std::string& name);

}  // namespace persoflow::actors
