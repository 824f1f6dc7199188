// persoflow-bench ca: the CA alone, without CMP or HTTPS — certificates issued per second through
// CmHost::issue (procedure checks, signing, one durable SQLite commit with its audit record) with
// an EC P-256 and an RSA-3072 CA, from 1 and 4 threads; and the time to sign a CRL.
// The `cm` suite measures the same over HTTPS + CMP; the difference is the protocol's cost.
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "bench_registry.hpp"
#include "persoflow/cmhost/cm_host.hpp"
#include "test_support.hpp"

namespace persoflow::bench {
namespace {

using cmhost::CmHost;
using Clock = std::chrono::steady_clock;

double issue_rate(CmHost& host, const std::vector<cmhost::EvpPkeyPtr>& keys, int threads, int per_thread,
                  const std::string& tag) {
  std::atomic<int> failures{0};
  auto start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        cmhost::IssueRequest r;
        r.procedure = "smartcard-auth";
        r.subject = cmhost::parse_name("CN=Bench User " + std::to_string(t) + "-" + std::to_string(i) + ",O=Bench")
                        .value();
        r.public_key = cmhost::share(keys[static_cast<std::size_t>(t * per_thread + i) % keys.size()].get());
        r.requester = "bench";
        r.idempotency_key = tag + "/" + std::to_string(t) + "/" + std::to_string(i);
        r.confirmed = true;
        if (!host.issue(std::move(r)).is_ok()) ++failures;
      }
    });
  }
  for (auto& th : pool) th.join();
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (failures) std::fprintf(stderr, "ca bench: %d issuances failed\n", failures.load());
  return threads * per_thread / seconds;
}

int run_ca(int, char**) {
  std::vector<cmhost::EvpPkeyPtr> keys;
  for (int i = 0; i < 64; ++i) keys.push_back(cmhost::generate_key("EC:secp256r1").value());
  for (const auto& [alg, name] : std::vector<std::pair<std::string, std::string>>{{"ec-p256", "p256"},
                                                                                  {"rsa-3072", "rsa3072"}}) {
    testing::TempDir dir("persoflow-bench-ca");
    cmhost::InitOptions o;
    o.ca_key_algorithm = alg;
    o.archive_key_algorithm = "EC:secp256r1";
    o.officer_password = "bench";
    auto init = CmHost::init(dir.file("cm"), o);
    if (!init.is_ok()) {
      std::fprintf(stderr, "ca bench: %s\n", init.status().to_string().c_str());
      return 1;
    }
    auto host = CmHost::open(dir.file("cm")).value();
    report("ca." + name + ".c1.certs_per_s", issue_rate(*host, keys, 1, 300, name + "c1"), "certs/s");
    report("ca." + name + ".c4.certs_per_s", issue_rate(*host, keys, 4, 150, name + "c4"), "certs/s");
    if (name == "p256") {
      storage::CertQuery q;
      q.limit = 500;
      auto certs = host->store().find_certificates(q).value();
      int revoked = 0;
      for (const auto& c : certs) {
        if (c.procedure == "smartcard-auth" && host->revoke(c.serial_hex, 1, "bench").is_ok()) ++revoked;
      }
      auto start = Clock::now();
      auto crl = host->crl_der();
      double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      if (!crl.is_ok()) return 1;
      report("ca.p256.crl_" + std::to_string(revoked) + "_revoked_ms", ms, "ms");
    }
  }
  return 0;
}

PF_REGISTER_BENCH_SUITE(ca, "ca", "the CA alone: certificates per second through CmHost::issue, CRL signing", run_ca);

}  // namespace
}  // namespace persoflow::bench
