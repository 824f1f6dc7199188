// Fuzzing the CM host's request path against the running server process: seeded random and
// mutated CMP messages (from valid ir / p10cr / genm / rr / certConf requests), random bytes
// inside TLS, and truncated or garbage TLS. Built with -DPERSOFLOW_SANITIZE=ON the server runs
// under ASan, so any memory error kills it; the test requires it alive, answering /health and
// still enrolling afterwards. PERSOFLOW_FUZZ_SEED / PERSOFLOW_FUZZ_ITERATIONS override the
// defaults; the seed is printed.
#include <utility>  // before Asio

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <cstdlib>
#include <random>

#include "cmp_fixture.hpp"
#include "persoflow/protocol/cm_info_types.hpp"
#include "persoflow/protocol/https_client.hpp"

namespace persoflow::testing {
namespace {

namespace asio = boost::asio;

std::string mutate(std::mt19937_64& rng, std::string der) {
  auto pick = [&](std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(rng() % n); };
  switch (rng() % 6) {
    case 0:  // flip a few bytes
      for (int i = 0, n = 1 + static_cast<int>(rng() % 8); i < n && !der.empty(); ++i) {
        der[pick(der.size())] ^= static_cast<char>(1 + rng() % 255);
      }
      break;
    case 1:  // truncate
      der.resize(pick(der.size()));
      break;
    case 2: {  // insert random bytes
      std::string junk(1 + rng() % 32, '\0');
      for (auto& c : junk) c = static_cast<char>(rng());
      der.insert(pick(der.size() + 1), junk);
      break;
    }
    case 3: {  // duplicate a chunk
      std::size_t at = pick(der.size());
      std::size_t len = pick(der.size() - at + 1);
      der.insert(pick(der.size() + 1), der.substr(at, len));
      break;
    }
    case 4:  // damage a length octet near the start of a structure
      if (der.size() > 4) der[1 + pick(std::min<std::size_t>(der.size() - 1, 64))] = static_cast<char>(rng());
      break;
    default: {  // random bytes altogether
      std::string junk(pick(2048), '\0');
      for (auto& c : junk) c = static_cast<char>(rng());
      der = junk;
    }
  }
  return der;
}

TEST(CmpFuzz, RandomAndMutatedRequestsNeverTakeTheServerDown) {
  std::uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("PERSOFLOW_FUZZ_SEED")) seed = std::strtoull(s, nullptr, 10);
  int iterations = 600;
  if (const char* s = std::getenv("PERSOFLOW_FUZZ_ITERATIONS")) iterations = std::atoi(s);
  std::printf("fuzz seed %llu (PERSOFLOW_FUZZ_SEED to repeat)\n",
              static_cast<unsigned long long>(seed));
  RecordProperty("seed", std::to_string(seed));
  std::mt19937_64 rng(seed);

  CmDir cm;
  CmServer server(cm.dir());
  const auto port = server.port_number();

  // Valid requests of every kind, captured as sent.
  std::vector<std::string> corpus;
  auto client = cm.client(port, cm.officer);
  client->on_request_sent([&](const std::string& der) { corpus.push_back(der); });
  auto key = ec_key();
  protocol::CertRequest ir;
  ir.subject = "/CN=Fuzz Seed";
  ir.key = key.get();
  auto enrolled = client->enroll(ir);
  ASSERT_TRUE(enrolled.is_ok()) << enrolled.status().message();
  protocol::X509ReqPtr csr(X509_REQ_new());
  X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(csr.get()), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("Fuzz P10"), -1, -1, 0);
  X509_REQ_set_pubkey(csr.get(), key.get());
  X509_REQ_sign(csr.get(), key.get(), EVP_sha256());
  protocol::CertRequest p10;
  p10.type = protocol::CertRequestType::kP10cr;
  p10.csr = csr.get();
  ASSERT_TRUE(client->enroll(p10).is_ok());
  ASSERT_TRUE(client->general_message({{protocol::kOidProcedureList, "{}"}}).is_ok());
  ASSERT_TRUE(client->revoke(enrolled->cert.get(), 4).is_ok());
  ASSERT_GE(corpus.size(), 6u);

  const std::vector<std::string> paths = {"/.well-known/cmp", "/.well-known/cmp/p/softtoken",
                                          "/.well-known/cmp/p/no-such-procedure",
                                          "/.well-known/cmp/p/officer"};
  protocol::HttpsClientOptions http_options;
  http_options.port = port;
  http_options.trusted_ca_pem = cm.ca_pem();
  http_options.timeout = std::chrono::seconds(10);
  protocol::HttpsClient http(http_options);
  int answered = 0;
  for (int i = 0; i < iterations; ++i) {
    std::string body = mutate(rng, corpus[rng() % corpus.size()]);
    if (rng() % 4 == 0) body = mutate(rng, body);
    auto res = http.post(paths[rng() % paths.size()], "application/pkixcmp", body);
    if (res.is_ok()) {
      ++answered;
      EXPECT_TRUE(res->status == 200 || res->status == 400) << "iteration " << i << ": HTTP " << res->status;
    }
  }
  EXPECT_GT(answered, iterations * 9 / 10);

  // Random bytes inside TLS, and garbage / truncated TLS on the bare socket.
  asio::io_context ioc;
  asio::ssl::context tls(asio::ssl::context::tls_client);
  tls.set_verify_mode(asio::ssl::verify_none);
  const asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), port);
  for (int i = 0; i < 60; ++i) {
    boost::system::error_code ec;
    std::string junk(rng() % 4096, '\0');
    for (auto& c : junk) c = static_cast<char>(rng());
    if (i % 2 == 0) {
      asio::ssl::stream<asio::ip::tcp::socket> s(ioc, tls);
      s.next_layer().connect(endpoint, ec);
      if (ec) continue;
      s.handshake(asio::ssl::stream_base::client, ec);
      if (ec) continue;
      if (i % 4 == 0) junk = "POST /.well-known/cmp HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n" + junk;
      asio::write(s, asio::buffer(junk), ec);
      s.next_layer().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    } else {
      asio::ip::tcp::socket s(ioc);
      s.connect(endpoint, ec);
      if (ec) continue;
      std::string hello = std::string("\x16\x03\x01", 3) + junk.substr(0, rng() % 300);
      asio::write(s, asio::buffer(hello), ec);
      s.close(ec);
    }
  }

  ASSERT_TRUE(server.alive()) << "the server died; seed " << seed;
  auto health = http.get("/health");
  ASSERT_TRUE(health.is_ok()) << health.status().message();
  EXPECT_EQ(health->status, 200);
  auto key2 = ec_key();
  protocol::CertRequest after;
  after.subject = "/CN=After Fuzz";
  after.key = key2.get();
  auto ok = cm.client(port, cm.officer)->enroll(after);
  EXPECT_TRUE(ok.is_ok()) << ok.status().message();
  EXPECT_EQ(server.stop(), 0) << "the server did not stop cleanly after fuzzing";
}

}  // namespace
}  // namespace persoflow::testing
