// A private pcscd for tests and benchmarks: `pcscd --foreground` in its own mount namespace, with
// a temporary directory bind-mounted over /run/pcscd and its own reader.conf.d, where the vpcd
// driver listens on two free TCP ports. Several of these (other test processes, other people's
// pcscd) run side by side without seeing each other.
//
// This process reaches its pcscd through PCSCLITE_CSOCK_NAME, which the fixture sets. libpcsclite
// reads that variable once per process, at its first call: the socket directory is therefore one
// per process (made at the first use, removed at exit), and at most one PcscdFixture runs at a
// time in a process. Create the fixture (or call use_private_socket()) before any PC/SC call.
//
// Everything started is stopped by the destructor (SIGTERM, then SIGKILL after 10 s), also when
// a test fails. Needs root (mount namespace, bind mount), as pcscd itself does.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "test_support.hpp"

namespace persoflow::testing {

class PcscdFixture {
 public:
  // Picks two free ports and writes the vpcd configuration; does not start pcscd.
  PcscdFixture();
  ~PcscdFixture();
  PcscdFixture(const PcscdFixture&) = delete;
  PcscdFixture& operator=(const PcscdFixture&) = delete;

  // Starts pcscd and returns once it says "daemon ready" (within 10 s). Removes a stale
  // pcscd.comm / pcscd.pid first. Throws std::runtime_error with pcscd's log on failure.
  void start();
  // SIGTERM and wait (bounded; SIGKILL after 10 s). No-op when not running.
  void stop();
  // SIGKILL, as a crash would: pcscd leaves its socket file behind (the next start() copes).
  void kill_hard();
  bool running() const { return pid_ > 0; }

  // vpcd's port for reader 0 ("Virtual PCD 00 00"); reader 1 listens on port() + 1.
  std::uint16_t port() const { return port_; }
  static std::string reader_name(int index);  // "Virtual PCD 00 00", "Virtual PCD 00 01"
  // What pcscd printed so far (info level), for failure messages.
  std::string log() const;

  // The process-wide private socket path, exported as PCSCLITE_CSOCK_NAME. With no fixture
  // running, PC/SC calls then find no pcscd (rather than the machine's own one).
  static const std::string& use_private_socket();

 private:
  void drain(int fd);

  std::unique_ptr<TempDir> config_dir_;
  std::uint16_t port_ = 0;
  int pid_ = 0;
  std::thread drain_thread_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::string log_;
  bool ready_ = false;
  bool output_closed_ = false;
};

// A TCP port free on all interfaces whose successor is free too (vpcd takes port and port + 1).
std::uint16_t free_port_pair();

}  // namespace persoflow::testing
