// A real SMTP server for tests: Debian's python3-aiosmtpd, run by /usr/bin/python3 (the python3
// on PATH may be a pyenv without aiosmtpd) on 127.0.0.1 with a port the kernel picks. Every
// message it accepts is written to the sink's directory, where a test reads it back with
// messages() or wait_for(). Refusals for chosen recipients exercise a client's error paths:
//   RCPT TO:<...@refuse.invalid> -> 550 5.1.1 mailbox unavailable
//   RCPT TO:<...@later.invalid>  -> 451 4.3.0 try again later
//
// The server is stopped by the destructor (SIGTERM, SIGKILL after 10 s), also when a test fails.
// Methods are called from the test's thread; messages() may be called while the server runs.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace persoflow::testing {

struct ReceivedMail {
  std::string mail_from;             // the envelope sender (MAIL FROM)
  std::vector<std::string> rcpt_to;  // the envelope recipients (RCPT TO)
  std::string data;                  // the message after DATA, dot-unstuffed, CRLF line ends

  // The value of the first header with that name (case-insensitive), "" when absent.
  std::string header(const std::string& name) const;
  // Everything after the blank line ending the headers.
  std::string body() const;
};

class SmtpSink {
 public:
  SmtpSink();  // makes the message directory; does not start the server
  ~SmtpSink();
  SmtpSink(const SmtpSink&) = delete;
  SmtpSink& operator=(const SmtpSink&) = delete;

  // Starts the server and returns once it listens (within 15 s); throws std::runtime_error with
  // the server's output when it does not.
  void start();
  void stop();
  bool running() const { return pid_ > 0; }

  std::uint16_t port() const { return port_; }
  const std::string& host() const { return host_; }
  // The directory the messages are written to (NNNNNN.eml + NNNNNN.env, in arrival order).
  std::string directory() const { return messages_dir_->path().string(); }

  // The messages received so far, in arrival order.
  std::vector<ReceivedMail> messages() const;
  // Waits until at least `count` messages arrived; throws std::runtime_error after `timeout`.
  std::vector<ReceivedMail> wait_for(std::size_t count,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(30))
      const;
  // What the server printed (stdout and stderr), for failure messages.
  std::string log() const;

 private:
  std::unique_ptr<TempDir> messages_dir_;
  std::unique_ptr<TempDir> log_dir_;
  std::string host_ = "127.0.0.1";
  std::uint16_t port_ = 0;
  int pid_ = 0;
};

}  // namespace persoflow::testing
