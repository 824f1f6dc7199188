// PIN input from a descriptor or the terminal (see pin_input.hpp). Bytes are read one at a time
// so nothing after the line is consumed from a shared descriptor, and every buffer holding the
// secret is cleansed.
#include "persoflow/devices/pin_input.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace persoflow::devices {

Secret::Secret(Secret&& other) noexcept : value_(std::move(other.value_)) { other.clear(); }

Secret& Secret::operator=(Secret&& other) noexcept {
  if (this != &other) {
    clear();
    value_ = std::move(other.value_);
    other.clear();
  }
  return *this;
}

Secret::~Secret() { clear(); }

void Secret::clear() {
  if (!value_.empty()) OPENSSL_cleanse(value_.data(), value_.size());
  value_.clear();
}

namespace {

// Reads up to '\n' into `out` (a string with reserved capacity, so it never reallocates and
// leaves copies of the secret behind).
Status read_line(int fd, std::string& out, const char* source) {
  out.reserve(kMaxSecretLength + 2);
  while (true) {
    char c;
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      return Status(std::error_code(e, std::system_category()),
                    std::string("reading the PIN from ") + source + ": " + std::strerror(e));
    }
    if (n == 0 || c == '\n') break;
    if (out.size() == kMaxSecretLength + 1) {
      return make_status(Errc::kInvalidArgument,
                         std::string("the PIN from ") + source + " is longer than " +
                             std::to_string(kMaxSecretLength) + " characters");
    }
    out.push_back(c);
  }
  if (!out.empty() && out.back() == '\r') {
    out.back() = '\0';
    out.pop_back();
  }
  if (out.empty()) {
    return make_status(Errc::kInvalidArgument, std::string("no PIN given on ") + source);
  }
  return Status::ok();
}

}  // namespace

Result<Secret> read_secret_from_fd(int fd) {
  if (fd < 0 || ::fcntl(fd, F_GETFD) < 0) {
    return make_status(Errc::kInvalidArgument,
                       "--pin-fd " + std::to_string(fd) + ": no such open file descriptor");
  }
  std::string line;
  const std::string source = "file descriptor " + std::to_string(fd);
  Status s = read_line(fd, line, source.c_str());
  if (!s.is_ok()) {
    OPENSSL_cleanse(line.data(), line.capacity());
    return s;
  }
  return Secret(std::move(line));
}

Result<Secret> read_secret_from_tty(const std::string& prompt) {
  int fd = ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    return make_status(Errc::kUnavailable,
                       "no terminal to ask for the PIN: give it with --pin-fd N for batch use");
  }
  // Echo off before the prompt: whatever is typed after the prompt appears is never echoed,
  // and typeahead from before it is discarded (TCSAFLUSH), as getpass does.
  termios saved{};
  bool restore = ::tcgetattr(fd, &saved) == 0;
  if (restore) {
    termios quiet = saved;
    quiet.c_lflag &= static_cast<tcflag_t>(~(ECHO | ECHONL));
    quiet.c_lflag |= ICANON;
    ::tcsetattr(fd, TCSAFLUSH, &quiet);
  }
  (void)!::write(fd, prompt.data(), prompt.size());
  std::string line;
  Status s = read_line(fd, line, "the terminal");
  if (restore) ::tcsetattr(fd, TCSANOW, &saved);
  (void)!::write(fd, "\n", 1);
  ::close(fd);
  if (!s.is_ok()) {
    OPENSSL_cleanse(line.data(), line.capacity());
    return s;
  }
  return Secret(std::move(line));
}

Result<Secret> read_secret(int fd, const std::string& prompt) {
  if (fd >= 0) return read_secret_from_fd(fd);
  return read_secret_from_tty(prompt);
}

}  // namespace persoflow::devices
