// The CM host's HTTPS front end (RFC 6712 transfer of CMP over HTTP, inside TLS).
//
// Routes: POST /.well-known/cmp and POST /.well-known/cmp/p/<procedure> (application/pkixcmp),
// GET /crl (application/pkix-crl, DER), GET /ca (PEM chain), GET /health. Anything else is 404,
// a known path with another method 405, a CMP POST of another content type 415, a body over
// max_body_bytes 413. Guarantees: a TLS handshake, a request and an idle keep-alive connection
// each have a deadline, so slow or silent clients are dropped; a malformed request, TLS garbage or
// a half-closed connection ends that connection only. Listens only on the address given.
//
// Threads: start() binds and returns; the handlers run on the server's own threads (one per
// core), concurrently, so they must be thread-safe. stop() may be called from any thread or a
// signal handler context via Asio (run_until_signal() stops on SIGINT/SIGTERM).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "persoflow/common/status.hpp"

namespace persoflow::cmhost {

struct HttpReply {
  int status = 200;
  std::string content_type;
  std::string body;
};

// What the server calls; each is optional (a missing one answers 404).
struct HttpRoutes {
  // procedure is empty for /.well-known/cmp; body is the DER of the PKIMessage.
  std::function<HttpReply(const std::string& procedure, const std::string& body)> cmp;
  std::function<HttpReply()> crl;
  std::function<HttpReply()> ca;
  std::function<HttpReply()> health;
};

struct HttpServerOptions {
  std::string listen = "127.0.0.1:8443";  // host:port; port 0 picks a free one
  std::string cert_chain_pem;             // path of the TLS certificate (chain) in PEM
  std::string key_pem;                    // path of its private key in PEM (unencrypted)
  std::size_t max_body_bytes = 256 * 1024;
  std::chrono::seconds handshake_timeout{10};
  std::chrono::seconds request_timeout{30};  // whole request, from its first byte
  std::chrono::seconds idle_timeout{30};     // keep-alive wait for the next request
  unsigned threads = 0;                      // 0: one per core
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpRoutes routes);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Loads the TLS credentials, binds and starts accepting on the server's threads.
  Status start();
  // The port actually bound (after start()).
  std::uint16_t port() const;
  std::string address() const;
  // Blocks until stop() or SIGINT/SIGTERM, then stops the threads.
  void run_until_signal();
  // Stops accepting, closes connections and joins the threads. Idempotent.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Parses "host:port" (IPv4, or [IPv6]:port).
Result<std::pair<std::string, std::uint16_t>> parse_listen_address(const std::string& text);

}  // namespace persoflow::cmhost
