// Operator answers from a file descriptor (operator_input.hpp).
#include "persoflow/actors/operator_input.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

namespace persoflow::actors {

Result<std::optional<std::string>> ask_operator_line(int fd, const std::string& question) {
  std::cerr << question << std::endl;
  std::string line;
  // One byte at a time: nothing past the line end is consumed, so the next question reads on
  // from there (the descriptor may be shared with the PIN entry).
  for (;;) {
    char c = 0;
    const ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return make_status(Errc::kUnavailable, "reading the operator's answer from descriptor " +
                                                 std::to_string(fd) + ": " +
                                                 std::strerror(errno));
    }
    if (n == 0) {
      if (line.empty()) return std::optional<std::string>();
      break;
    }
    if (c == '\n') break;
    line += c;
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return std::optional<std::string>(std::move(line));
}

}  // namespace persoflow::actors
