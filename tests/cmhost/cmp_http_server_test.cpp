// The CM host's HTTPS front end on its own (no CA behind it): routing and status codes, body
// limit, deadlines for silent clients, and garbage / TLS garbage / half-closed connections that
// must end only their own connection.
#include <utility>  // before Asio

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>

#include "persoflow/cmhost/http_server.hpp"
#include "persoflow/protocol/https_client.hpp"
#include "test_support.hpp"

namespace {

using persoflow::cmhost::HttpReply;
using persoflow::cmhost::HttpRoutes;
using persoflow::cmhost::HttpServer;
using persoflow::cmhost::HttpServerOptions;
using persoflow::protocol::HttpsClient;
using persoflow::protocol::HttpsClientOptions;
using persoflow::testing::TempDir;
namespace asio = boost::asio;

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = persoflow::testing::run(
        {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=test server", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", dir_.file("key.pem"), "-out", dir_.file("cert.pem"), "-days", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    HttpServerOptions options;
    options.listen = "127.0.0.1:0";
    options.cert_chain_pem = dir_.file("cert.pem");
    options.key_pem = dir_.file("key.pem");
    options.max_body_bytes = 1024;
    options.request_timeout = std::chrono::seconds(1);
    options.idle_timeout = std::chrono::seconds(1);
    options.handshake_timeout = std::chrono::seconds(1);
    options.threads = 2;
    HttpRoutes routes;
    routes.cmp = [this](const std::string& procedure, const std::string& body) {
      last_procedure_ = procedure;
      return HttpReply{200, "application/pkixcmp", "echo:" + body};
    };
    routes.crl = [] { return HttpReply{200, "application/pkix-crl", "crl"}; };
    routes.ca = [] { return HttpReply{200, "application/pem-certificate-chain", "pem"}; };
    server_ = std::make_unique<HttpServer>(options, routes);
    auto s = server_->start();
    ASSERT_TRUE(s.is_ok()) << s.message();
    ASSERT_NE(server_->port(), 0);
  }

  HttpsClient client() {
    HttpsClientOptions o;
    o.port = server_->port();
    o.trusted_ca_pem = dir_.file("cert.pem");
    return HttpsClient(o);
  }

  // A plain TCP connection that sends bytes and reads until the server closes; returns what came
  // back. Bounded by the server's own deadlines (1 s) plus a margin.
  std::string raw_exchange(const std::string& bytes, bool half_close) {
    asio::io_context ioc;
    asio::ip::tcp::socket s(ioc);
    s.connect({asio::ip::make_address("127.0.0.1"), server_->port()});
    if (!bytes.empty()) asio::write(s, asio::buffer(bytes));
    if (half_close) s.shutdown(asio::ip::tcp::socket::shutdown_send);
    std::string out;
    boost::system::error_code ec;
    char buf[4096];
    auto start = std::chrono::steady_clock::now();
    for (;;) {
      std::size_t n = s.read_some(asio::buffer(buf), ec);
      if (ec) break;
      out.append(buf, n);
      if (std::chrono::steady_clock::now() - start > std::chrono::seconds(10)) break;
    }
    return out;
  }

  TempDir dir_{"pf-http"};
  std::unique_ptr<HttpServer> server_;
  std::string last_procedure_;
};

TEST_F(HttpServerTest, RoutesAndStatusCodes) {
  auto c = client();
  auto health = c.get("/health");
  ASSERT_TRUE(health.is_ok()) << health.status().message();
  EXPECT_EQ(health->status, 200);
  auto crl = c.get("/crl");
  ASSERT_TRUE(crl.is_ok());
  EXPECT_EQ(crl->content_type, "application/pkix-crl");
  EXPECT_EQ(c.get("/ca")->body, "pem");
  EXPECT_EQ(c.get("/nothing")->status, 404);
  EXPECT_EQ(c.post("/crl", "text/plain", "x")->status, 405);
  EXPECT_EQ(c.get("/.well-known/cmp")->status, 405);
  EXPECT_EQ(c.post("/.well-known/cmp", "text/plain", "x")->status, 415);
  auto cmp = c.post("/.well-known/cmp", "application/pkixcmp", "abc");
  ASSERT_TRUE(cmp.is_ok());
  EXPECT_EQ(cmp->status, 200);
  EXPECT_EQ(cmp->body, "echo:abc");
  EXPECT_EQ(last_procedure_, "");
  cmp = c.post("/.well-known/cmp/p/smartcard-auth", "application/pkixcmp", "x");
  EXPECT_EQ(cmp->status, 200);
  EXPECT_EQ(last_procedure_, "smartcard-auth");
  EXPECT_EQ(c.post("/.well-known/cmp/p/bad%20name", "application/pkixcmp", "x")->status, 404);
  auto big = c.post("/.well-known/cmp", "application/pkixcmp", std::string(4096, 'x'));
  ASSERT_TRUE(big.is_ok()) << big.status().message();
  EXPECT_EQ(big->status, 413);
  // The connection after a 413 is gone; the client reconnects and the server still answers.
  EXPECT_EQ(c.get("/health")->status, 200);
}

TEST_F(HttpServerTest, GarbageSilenceAndHalfCloseEndOnlyTheirConnection) {
  // Plain-text HTTP on the TLS port, random bytes, a TLS record header with nonsense, silence,
  // and a half-closed connection: each is closed by the server.
  raw_exchange("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", false);
  raw_exchange(std::string("\x16\x03\x01\x00\x05hello", 10), false);
  raw_exchange(std::string(3000, '\xff'), false);
  auto start = std::chrono::steady_clock::now();
  raw_exchange("", false);  // silent: dropped at the handshake deadline
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  raw_exchange("\x16\x03", true);
  auto c = client();
  auto health = c.get("/health");
  ASSERT_TRUE(health.is_ok()) << health.status().message();
  EXPECT_EQ(health->status, 200);
}

TEST_F(HttpServerTest, ClientRefusesAServerItDoesNotTrust) {
  TempDir other("pf-http-other");
  auto r = persoflow::testing::run(
      {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-subj", "/CN=other", "-keyout", other.file("k.pem"), "-out", other.file("c.pem"), "-days",
       "1"});
  ASSERT_EQ(r.exit_code, 0);
  HttpsClientOptions o;
  o.port = server_->port();
  o.trusted_ca_pem = other.file("c.pem");
  HttpsClient c(o);
  auto res = c.get("/health");
  EXPECT_FALSE(res.is_ok());
}

TEST(ListenAddress, Parses) {
  auto a = persoflow::cmhost::parse_listen_address("127.0.0.1:0");
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ(a->second, 0);
  EXPECT_FALSE(persoflow::cmhost::parse_listen_address("localhost").is_ok());
  EXPECT_FALSE(persoflow::cmhost::parse_listen_address("127.0.0.1:99999").is_ok());
  EXPECT_FALSE(persoflow::cmhost::parse_listen_address("nohost:80").is_ok());
  EXPECT_TRUE(persoflow::cmhost::parse_listen_address("[::1]:8443").is_ok());
}

}  // namespace
