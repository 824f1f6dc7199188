// Answers an operator types at the RA when a workflow asks again (a refused CSR, a refused
// soft-token request): lines read from a file descriptor the command was given (--ask-fd N).
// Blocking; call it from an executor running on the blocking pool or from the command's thread.
#pragma once

#include <optional>
#include <string>

#include "persoflow/common/status.hpp"

namespace persoflow::actors {

// Writes `question` (one line) to stderr, then reads one line from `fd` without its line end.
// The end of the input: nullopt. A read error: kUnavailable.
Result<std::optional<std::string>> ask_operator_line(int fd, const std::string& question);

}  // namespace persoflow::actors
