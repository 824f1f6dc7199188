// Reading a PIN (or a PKCS#12 password): at a prompt on the controlling terminal without echo, or
// from a file descriptor for batch use (`--pin-fd N`). Never from the command line or the
// environment, where other users and logs see it.
//
// A Secret zeroes its buffer (OPENSSL_cleanse) when it goes away; copy it as little as possible.
#pragma once

#include <string>
#include <string_view>

#include "persoflow/common/status.hpp"

namespace persoflow::devices {

class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  Secret(Secret&& other) noexcept;
  Secret& operator=(Secret&& other) noexcept;
  ~Secret();

  std::string_view view() const { return value_; }
  const char* c_str() const { return value_.c_str(); }
  bool empty() const { return value_.empty(); }
  std::size_t size() const { return value_.size(); }
  void clear();  // zeroes and empties

 private:
  std::string value_;
};

// The longest secret accepted (a longer line is refused rather than cut).
inline constexpr std::size_t kMaxSecretLength = 256;

// Reads one line from fd (up to '\n' or end of file; a trailing "\r\n" or "\n" is dropped). The
// descriptor is not closed. An empty line or an empty stream is Errc::kInvalidArgument.
Result<Secret> read_secret_from_fd(int fd);

// Prints `prompt` on /dev/tty and reads a line there with echo off (restored afterwards, also
// when interrupted by a signal that returns). No terminal: Errc::kUnavailable, suggesting
// --pin-fd.
Result<Secret> read_secret_from_tty(const std::string& prompt);

// --pin-fd N when given (fd >= 0), else the prompt.
Result<Secret> read_secret(int fd, const std::string& prompt);

}  // namespace persoflow::devices
