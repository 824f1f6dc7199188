// Test fixture for the CMP acceptance tests: a CM directory made by `persoflow cm init` (served by
// tests/support/cm_server.hpp's CmServer, started and stopped by each test), the officer's key and
// certificate extracted with `openssl pkcs12`, CMP clients pointed at it, and the outside
// checkers (`openssl cmp`, the CRL from GET /crl).
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "persoflow/cmhost/cm_host.hpp"
#include "persoflow/protocol/base64.hpp"
#include "persoflow/protocol/cmp_client.hpp"
#include "persoflow/protocol/https_client.hpp"
#include "persoflow/protocol/ossl.hpp"
#include "cm_server.hpp"
#include "test_support.hpp"

namespace persoflow::testing {

inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct OfficerFiles {
  std::string p12;
  std::string password;
  std::string key_pem;
  std::string cert_pem;
  protocol::Credentials credentials;
};

// A CM directory with its first officer ("officer", both roles).
class CmDir {
 public:
  // extra_init_args: more `cm init` options (e.g. a CA key in a token).
  explicit CmDir(const std::string& ca_key_alg = {},
                 const std::vector<std::string>& extra_init_args = {}) {
    write_file(tmp_.file("officer.pass"), "officer-secret-1\n");
    std::vector<std::string> argv = {persoflow_binary(), "cm",      "init",
                                     "--dir",           dir(),     "--officer",
                                     "officer",         "--password-file", tmp_.file("officer.pass")};
    if (!ca_key_alg.empty()) {
      argv.push_back("--ca-key-alg");
      argv.push_back(ca_key_alg);
    }
    argv.insert(argv.end(), extra_init_args.begin(), extra_init_args.end());
    auto r = run(argv);
    if (r.exit_code != 0) throw std::runtime_error("cm init failed: " + r.out + r.err);
    officer = extract("officer", dir() + "/officers/officer.p12", "officer-secret-1");
  }

  std::string dir() const { return tmp_.file("cm"); }
  std::string file(const std::string& name) const { return tmp_.file(name); }
  std::string ca_pem() const { return dir() + "/ca/ca.pem"; }

  OfficerFiles extract(const std::string& name, const std::string& p12,
                       const std::string& password) {
    OfficerFiles f;
    f.p12 = p12;
    f.password = password;
    f.key_pem = tmp_.file(name + "-key.pem");
    f.cert_pem = tmp_.file(name + "-cert.pem");
    write_file(tmp_.file(name + ".pw"), password);
    auto a = run({"openssl", "pkcs12", "-in", p12, "-passin", "file:" + tmp_.file(name + ".pw"),
                  "-nocerts", "-nodes", "-out", f.key_pem});
    auto b = run({"openssl", "pkcs12", "-in", p12, "-passin", "file:" + tmp_.file(name + ".pw"),
                  "-clcerts", "-nokeys", "-out", f.cert_pem});
    if (a.exit_code != 0 || b.exit_code != 0) {
      throw std::runtime_error("openssl pkcs12 failed: " + a.err + b.err);
    }
    auto creds = protocol::load_pkcs12(p12, password);
    if (!creds.is_ok()) throw std::runtime_error(creds.status().message());
    f.credentials = std::move(creds).value();
    return f;
  }

  // Another officer, made through the CmHost API (the server may be running).
  OfficerFiles add_officer(const std::string& name, const std::vector<std::string>& roles) {
    auto host = cmhost::CmHost::open(dir());
    if (!host.is_ok()) throw std::runtime_error(host.status().message());
    auto added = (*host)->add_officer(name, roles, std::string("pw-") + name + "-12345", "test");
    if (!added.is_ok()) throw std::runtime_error(added.status().message());
    return extract(name, added->p12_path, added->password);
  }

  std::unique_ptr<cmhost::CmHost> open_host() {
    auto host = cmhost::CmHost::open(dir());
    if (!host.is_ok()) throw std::runtime_error(host.status().message());
    return std::move(host).value();
  }

  std::unique_ptr<protocol::CmpClient> client(std::uint16_t port, const OfficerFiles& who,
                                              bool implicit_confirm = false) {
    protocol::CmpClientOptions o;
    o.https.port = port;
    o.https.trusted_ca_pem = ca_pem();
    o.cmp_trusted_pem = ca_pem();
    o.officer_key = who.credentials.key.get();
    o.officer_cert = who.credentials.cert.get();
    o.implicit_confirm = implicit_confirm;
    return std::make_unique<protocol::CmpClient>(o);
  }

  OfficerFiles officer;

 private:
  TempDir tmp_{"pf-cmp"};
};

struct Cmd {
  int exit_code;
  std::string output;
};

// openssl cmp against the server, protected by an officer's key and certificate.
inline Cmd openssl_cmp(const CmDir& cm, std::uint16_t port, const OfficerFiles* who,
                std::vector<std::string> args, const std::string& path = ".well-known/cmp") {
  std::vector<std::string> argv = {"openssl", "cmp", "-server", "127.0.0.1:" + std::to_string(port),
                                   "-path", path, "-tls_used", "-tls_trusted", cm.ca_pem(),
                                   "-trusted", cm.ca_pem()};
  if (who) {
    argv.insert(argv.end(), {"-cert", who->cert_pem, "-key", who->key_pem});
  }
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run(argv);
  return {r.exit_code, r.out + r.err};
}

inline std::string genkey(const CmDir& cm, const std::string& name, const std::string& alg = "EC") {
  std::string path = cm.file(name);
  std::vector<std::string> argv = {"openssl", "genpkey", "-algorithm", alg, "-out", path};
  if (alg == "EC") argv.insert(argv.end(), {"-pkeyopt", "ec_paramgen_curve:P-256"});
  auto r = run(argv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return path;
}

inline std::string fetch_crl_pem(const CmDir& cm, std::uint16_t port, const std::string& name) {
  protocol::HttpsClientOptions o;
  o.port = port;
  o.trusted_ca_pem = cm.ca_pem();
  protocol::HttpsClient c(o);
  auto res = c.get("/crl");
  EXPECT_TRUE(res.is_ok());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->content_type, "application/pkix-crl");
  write_file(cm.file(name + ".der"), res->body);
  auto r = run({"openssl", "crl", "-inform", "DER", "-in", cm.file(name + ".der"), "-out",
                cm.file(name + ".pem")});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return cm.file(name + ".pem");
}

inline std::string serial_of(const std::string& cert_pem) {
  auto r = run({"openssl", "x509", "-in", cert_pem, "-noout", "-serial"});
  EXPECT_EQ(r.exit_code, 0);
  auto pos = r.out.find('=');
  std::string s = pos == std::string::npos ? "" : r.out.substr(pos + 1);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

// `openssl verify -crl_check` of a certificate against the CA and a CRL (PEM files).
inline RunResult verify_with_crl(const CmDir& cm, const std::string& crl_pem,
                                 const std::string& cert_pem) {
  return run({"openssl", "verify", "-crl_check", "-CAfile", cm.ca_pem(), "-CRLfile", crl_pem,
              cert_pem});
}

// A PKCS#8 PrivateKeyInfo (DER), decoded.
inline protocol::EvpPkeyPtr private_key_of(const std::string& pkcs8_der) {
  const auto* p = reinterpret_cast<const unsigned char*>(pkcs8_der.data());
  return protocol::EvpPkeyPtr(d2i_AutoPrivateKey(nullptr, &p, static_cast<long>(pkcs8_der.size())));
}

// Base64 (RFC 4648, padded), decoded.
inline std::string unbase64(const std::string& text) {
  auto decoded = protocol::base64_decode(text);
  EXPECT_TRUE(decoded.is_ok()) << text;
  return decoded.is_ok() ? *decoded : std::string();
}

inline protocol::EvpPkeyPtr ec_key() {
  return protocol::EvpPkeyPtr(EVP_EC_gen("P-256"));
}

}  // namespace persoflow::testing
