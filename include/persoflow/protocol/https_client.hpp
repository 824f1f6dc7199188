// A small synchronous HTTPS client (Boost.Beast) for the RA <-> CM link: POST a CMP message, GET
// the CRL or the CA chain. It keeps one connection alive and reconnects once when the server
// closed it. The server certificate must chain to the trusted CA and name the host (DNS name or
// IP address). Not thread-safe: one client per thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "persoflow/common/status.hpp"

namespace persoflow::protocol {

struct HttpsClientOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8443;
  std::string trusted_ca_pem;  // path of the CA certificate(s) that must sign the server's
  std::chrono::seconds timeout{30};
};

struct HttpResponse {
  int status = 0;
  std::string content_type;
  std::string body;
};

class HttpsClient {
 public:
  explicit HttpsClient(HttpsClientOptions options);
  ~HttpsClient();
  HttpsClient(const HttpsClient&) = delete;
  HttpsClient& operator=(const HttpsClient&) = delete;

  Result<HttpResponse> post(const std::string& target, const std::string& content_type,
                            const std::string& body);
  Result<HttpResponse> get(const std::string& target);

  // Drops the connection (the next request opens a new one).
  void disconnect();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace persoflow::protocol
