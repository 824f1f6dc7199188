// A TCP proxy on 127.0.0.1 between the station and the CM host that injects the CM-link fault
// points (common/fault_points.hpp, 9-12): the N-th connection is refused (reset at once), left
// unanswered (timeout), dropped after its request reached the CM host, or answered late.
//
// It does not terminate TLS: it relays bytes and reads only the TLS record headers of the
// station's side, so it knows when the handshake is over and the request is on its way (the first
// application-data record). From then on the CM host's bytes are the answer, which it holds back
// (late answer) or throws away and resets both connections (drop).
//
// Threads: one accepting thread and one per connection, all joined by the destructor. Methods
// are thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "persoflow/common/fault_points.hpp"
#include "persoflow/common/status.hpp"

namespace persoflow::sim {

struct FaultProxyOptions {
  std::uint16_t upstream_port = 0;  // the CM host on 127.0.0.1
  std::chrono::milliseconds late_delay{2000};
  // After the first answer bytes of a dropped connection: how long the CM host may still be
  // writing its answer before both connections are reset.
  std::chrono::milliseconds drop_settle{300};
};

class FaultProxy {
 public:
  // Listens on 127.0.0.1 on a free port.
  static Result<std::unique_ptr<FaultProxy>> start(FaultProxyOptions options);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  std::uint16_t port() const { return port_; }
  // Arms a CM-link fault (points 9-12; others are ignored) and restarts the connection count;
  // nullopt relays every connection faithfully.
  void arm(std::optional<FaultSpec> fault);
  // Connections accepted since the last arm(): the operations of the CM-link points.
  long connections() const { return connections_.load(); }
  // Whether the armed fault was applied to a connection.
  bool fired() const { return fired_.load(); }

 private:
  FaultProxy(FaultProxyOptions options, int listen_fd, std::uint16_t port);
  void accept_loop();
  void serve(int client_fd, std::optional<FaultPoint> fault);

  FaultProxyOptions options_;
  int listen_fd_;
  std::uint16_t port_;
  std::atomic<bool> stopping_{false};
  std::atomic<long> connections_{0};
  std::atomic<bool> fired_{false};
  std::mutex mu_;
  std::optional<FaultSpec> fault_;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

}  // namespace persoflow::sim
