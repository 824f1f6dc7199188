// persoflow-bench cm: certificates issued per second by the CM host over HTTPS + CMP (p10cr with
// implicit confirmation, one CmpClient per client thread, each over one kept-alive TLS
// connection), with an EC P-256 CA and an RSA-3072 CA, 1 and 32 concurrent clients, beside
// `openssl ca -batch` issuing from the same CSRs (one process given all CSRs with -infiles, so it
// measures signing and bookkeeping, not process starts). Server and clients share this machine.
// Bounded to about a minute; --seconds N sets the length of each timed run (default 4).
#include <openssl/pem.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_registry.hpp"
#include "persoflow/cmhost/cm_host.hpp"
#include "persoflow/cmhost/cmp_service.hpp"
#include "persoflow/cmhost/http_server.hpp"
#include "persoflow/protocol/cmp_client.hpp"
#include "test_support.hpp"

namespace persoflow::bench {
namespace {

using Clock = std::chrono::steady_clock;

// CPU seconds (user + system) of this process or of its waited-for children: on a shared
// machine these say more than wall-clock rates.
double cpu_seconds(int who) {
  rusage u{};
  getrusage(who, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}
namespace proto = persoflow::protocol;

struct Csrs {
  std::vector<proto::X509ReqPtr> requests;
  std::vector<std::string> pem_paths;
};

Csrs make_csrs(const std::string& dir, int n) {
  Csrs out;
  for (int i = 0; i < n; ++i) {
    proto::EvpPkeyPtr key(EVP_EC_gen("P-256"));
    proto::X509ReqPtr csr(X509_REQ_new());
    std::string cn = "bench user " + std::to_string(i);
    X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(csr.get()), "CN", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
    X509_REQ_set_pubkey(csr.get(), key.get());
    X509_REQ_sign(csr.get(), key.get(), EVP_sha256());
    std::string path = dir + "/csr-" + std::to_string(i) + ".pem";
    FILE* f = std::fopen(path.c_str(), "w");
    PEM_write_X509_REQ(f, csr.get());
    std::fclose(f);
    out.requests.push_back(std::move(csr));
    out.pem_paths.push_back(path);
  }
  return out;
}

// Issues certificates from `clients` threads for `seconds`; returns certificates per second, or
// a negative value when an enrolment failed.
double run_clients(const std::string& ca_pem, std::uint16_t port, const proto::Credentials& officer,
                   const Csrs& csrs, int clients, double seconds, double* cpu_ms_per_cert) {
  double cpu_start = cpu_seconds(RUSAGE_SELF);
  std::atomic<long> issued{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  auto start = Clock::now();
  auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      proto::CmpClientOptions o;
      o.https.port = port;
      o.https.trusted_ca_pem = ca_pem;
      o.cmp_trusted_pem = ca_pem;
      o.officer_key = officer.key.get();
      o.officer_cert = officer.cert.get();
      o.implicit_confirm = true;
      proto::CmpClient client(o);
      std::size_t i = static_cast<std::size_t>(c);
      while (Clock::now() < deadline && !failed) {
        proto::CertRequest r;
        r.type = proto::CertRequestType::kP10cr;
        r.csr = csrs.requests[i % csrs.requests.size()].get();
        auto enrolled = client.enroll(r);
        if (!enrolled.is_ok()) {
          std::fprintf(stderr, "cm bench: %s\n", enrolled.status().message().c_str());
          failed = true;
          return;
        }
        ++issued;
        i += static_cast<std::size_t>(clients);
      }
    });
  }
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (issued > 0) *cpu_ms_per_cert = (cpu_seconds(RUSAGE_SELF) - cpu_start) * 1000 / issued.load();
  return failed ? -1 : static_cast<double>(issued.load()) / elapsed;
}

int bench_ca(const std::string& alg, const std::string& label, const Csrs& csrs, double seconds,
             double* c32_out) {
  testing::TempDir dir("pf-cm-bench");
  cmhost::InitOptions init;
  init.ca_key_algorithm = alg;
  init.officer = "bench";
  init.officer_password = "bench-password-1";
  auto made = cmhost::CmHost::init(dir.file("cm"), init);
  if (!made.is_ok()) {
    std::fprintf(stderr, "cm bench: init: %s\n", made.status().message().c_str());
    return 1;
  }
  auto host = cmhost::CmHost::open(dir.file("cm"));
  if (!host.is_ok()) {
    std::fprintf(stderr, "cm bench: open: %s\n", host.status().message().c_str());
    return 1;
  }
  auto officer = proto::load_pkcs12(made->officer_p12, made->officer_password);
  if (!officer.is_ok()) {
    std::fprintf(stderr, "cm bench: %s\n", officer.status().message().c_str());
    return 1;
  }
  cmhost::CmpService service(**host);
  cmhost::HttpServerOptions options;
  options.listen = "127.0.0.1:0";
  options.cert_chain_pem = (*host)->tls_certificate_path();
  options.key_pem = (*host)->tls_key_path();
  cmhost::HttpServer server(options, cmhost::cm_routes(**host, service));
  if (Status s = server.start(); !s.is_ok()) {
    std::fprintf(stderr, "cm bench: %s\n", s.message().c_str());
    return 1;
  }
  const std::string ca_pem = made->ca_chain;
  double cpu1 = 0;
  double cpu32 = 0;
  double c1 = run_clients(ca_pem, server.port(), *officer, csrs, 1, seconds, &cpu1);
  double c32 = run_clients(ca_pem, server.port(), *officer, csrs, 32, seconds * 1.5, &cpu32);
  server.stop();
  if (c1 < 0 || c32 < 0) return 1;
  report("cm." + label + ".c1.certs_per_s", c1, "certs/s");
  report("cm." + label + ".c32.certs_per_s", c32, "certs/s");
  // Server and client CPU together (both run in this process): on a loaded machine these compare
  // better than the rates, and c32 against c1 shows what concurrency costs.
  report("cm." + label + ".c1.cpu_ms_per_cert", cpu1, "ms");
  report("cm." + label + ".c32.cpu_ms_per_cert", cpu32, "ms");
  if (c32_out) *c32_out = c32;
  return 0;
}

// openssl ca -batch with a P-256 CA issuing one certificate per CSR, all CSRs in one run.
double bench_openssl_ca(const Csrs& csrs) {
  testing::TempDir dir("pf-openssl-ca");
  auto path = [&](const std::string& f) { return dir.file(f); };
  std::ofstream(path("index.txt")).close();
  std::ofstream(path("serial")) << "1000\n";
  std::ofstream(path("ca.cnf")) << "[ ca ]\ndefault_ca = bench\n[ bench ]\ndir = " << dir.path().string()
                                << "\ndatabase = $dir/index.txt\nserial = $dir/serial\n"
                                   "new_certs_dir = $dir/certs\ncertificate = $dir/ca.pem\n"
                                   "private_key = $dir/ca-key.pem\ndefault_md = sha256\n"
                                   "default_days = 365\npolicy = any\nunique_subject = no\n"
                                   "copy_extensions = none\nx509_extensions = ext\n"
                                   "[ any ]\ncommonName = supplied\n"
                                   "[ ext ]\nbasicConstraints = critical,CA:FALSE\n"
                                   "keyUsage = critical,digitalSignature\n"
                                   "extendedKeyUsage = clientAuth,emailProtection\n"
                                   "subjectKeyIdentifier = hash\n"
                                   "authorityKeyIdentifier = keyid\n"
                                   "crlDistributionPoints = URI:https://127.0.0.1:8443/crl\n";
  std::filesystem::create_directory(path("certs"));
  auto ca = testing::run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=openssl bench CA",
                          "-keyout", path("ca-key.pem"), "-out", path("ca.pem"), "-days", "30"});
  if (ca.exit_code != 0) {
    std::fprintf(stderr, "cm bench: openssl req: %s\n", ca.err.c_str());
    return -1;
  }
  std::vector<std::string> argv = {"openssl", "ca", "-batch", "-config", path("ca.cnf"),
                                   "-notext", "-out", path("issued.pem"), "-infiles"};
  argv.insert(argv.end(), csrs.pem_paths.begin(), csrs.pem_paths.end());
  auto start = Clock::now();
  double cpu_start = cpu_seconds(RUSAGE_CHILDREN);
  auto r = testing::run(argv);
  report("cm.openssl_ca.cpu_ms_per_cert",
         (cpu_seconds(RUSAGE_CHILDREN) - cpu_start) * 1000 / static_cast<double>(csrs.pem_paths.size()),
         "ms");
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (r.exit_code != 0) {
    std::fprintf(stderr, "cm bench: openssl ca: %s\n", r.err.c_str());
    return -1;
  }
  return static_cast<double>(csrs.pem_paths.size()) / elapsed;
}

int run_cm_bench(int argc, char** argv) {
  double seconds = 4;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (a == "--help" || a == "-h") {
      std::printf("persoflow-bench cm [--seconds N]: CMP issuance over HTTPS vs openssl ca\n");
      return 0;
    }
  }
  testing::TempDir csr_dir("pf-cm-bench-csr");
  Csrs csrs = make_csrs(csr_dir.path().string(), 500);
  double p256_c32 = 0;
  int rc = bench_ca("ec-p256", "p256", csrs, seconds, &p256_c32);
  if (rc == 0) rc = bench_ca("rsa-3072", "rsa3072", csrs, seconds, nullptr);
  double openssl_rate = bench_openssl_ca(csrs);
  if (openssl_rate > 0) {
    report("cm.openssl_ca.certs_per_s", openssl_rate, "certs/s");
    if (p256_c32 > 0) report("cm.p256.vs_openssl_ca", p256_c32 / openssl_rate, "ratio");
  } else {
    rc = 1;
  }
  return rc;
}

}  // namespace
}  // namespace persoflow::bench

PF_REGISTER_BENCH_SUITE(cm, "cm", "CM host: certificates/s over HTTPS + CMP vs openssl ca",
                        persoflow::bench::run_cm_bench);
