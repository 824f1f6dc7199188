// persoflow-bench devices: on-card key generation per algorithm on a SoftHSM2 token (its own
// SOFTHSM2_CONF in a temporary folder), and PKCS#12 creation at 600,000 and 2,048 iterations.
// Each figure is the median of a few repetitions, in milliseconds.
//
//   persoflow-bench devices [--reps N]      (default 5; RSA keygen varies a lot: raise N)
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_registry.hpp"
#include "persoflow/devices/card.hpp"
#include "persoflow/devices/pkcs12.hpp"
#include "softhsm_fixture.hpp"

namespace persoflow::bench {
namespace {

namespace dev = persoflow::devices;
using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

int keygen(int reps) {
  persoflow::testing::SoftHsm hsm;
  auto token = hsm.create_token("Bench Card");
  dev::TokenSelector sel;
  sel.label = token.label;
  auto card = dev::open_card(persoflow::testing::SoftHsm::kModule, sel);
  if (!card.is_ok()) {
    std::fprintf(stderr, "devices bench: %s\n", card.status().message().c_str());
    return 1;
  }
  if (Status s = (*card)->login(dev::UserType::kUser, token.user_pin); !s.is_ok()) {
    std::fprintf(stderr, "devices bench: %s\n", s.message().c_str());
    return 1;
  }
  const std::pair<const char*, const char*> algorithms[] = {
      {"RSA:2048", "rsa2048"},
      {"RSA:3072", "rsa3072"},
      {"EC:secp256r1", "ec_p256"},
      {"EC:secp384r1", "ec_p384"},
      {"EC:secp521r1", "ec_p521"},
      {"EC:brainpoolP256r1", "brainpoolp256r1"},
      {"EC:brainpoolP384r1", "brainpoolp384r1"},
      {"EC:brainpoolP512r1", "brainpoolp512r1"},
  };
  int counter = 0;
  for (const auto& [text, name] : algorithms) {
    auto alg = dev::parse_key_algorithm(text).value();
    std::vector<double> times;
    for (int i = 0; i < reps; ++i) {
      auto start = Clock::now();
      auto key = (*card)->generate_key(alg, "bench/" + std::to_string(counter++), name);
      double ms = ms_since(start);
      if (!key.is_ok()) {
        std::fprintf(stderr, "devices bench: %s: %s\n", text, key.status().message().c_str());
        return 1;
      }
      times.push_back(ms);
      // A card being personalised holds a few keys, not dozens: keep the token small (SoftHSM2
      // scans every object file on each search).
      if (Status s = (*card)->delete_key(key->id); !s.is_ok()) {
        std::fprintf(stderr, "devices bench: %s\n", s.message().c_str());
        return 1;
      }
    }
    report(std::string("devices.keygen.softhsm.") + name + "_ms", median(times), "ms");
  }
  return 0;
}

int pkcs12(int reps) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("bench"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_sign(cert, key, EVP_sha256());
  int rc = 0;
  for (int iterations : {600000, 2048}) {
    dev::Pkcs12Options opt;
    opt.iterations = iterations;
    opt.friendly_name = "bench";
    std::vector<double> times;
    for (int i = 0; i < reps; ++i) {
      auto start = Clock::now();
      auto p12 = dev::make_pkcs12(key, cert, {}, "bench password", opt);
      times.push_back(ms_since(start));
      if (!p12.is_ok()) {
        std::fprintf(stderr, "devices bench: %s\n", p12.status().message().c_str());
        rc = 1;
      }
    }
    report(iterations == 600000 ? "devices.pkcs12.it600k_ms" : "devices.pkcs12.it2048_ms",
           median(times), "ms");
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  return rc;
}

int run(int argc, char** argv) {
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--help") == 0) {
      std::printf("persoflow-bench devices [--reps N]: SoftHSM2 keygen and PKCS#12 timings\n");
      return 0;
    }
  }
  int rc = keygen(reps);
  if (int r = pkcs12(reps); r != 0) rc = r;
  return rc;
}

}  // namespace
}  // namespace persoflow::bench

PF_REGISTER_BENCH_SUITE(devices_card, "devices",
                        "on-card key generation (SoftHSM2) and PKCS#12 creation times",
                        persoflow::bench::run);
