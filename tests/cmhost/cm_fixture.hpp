// Shared by the CM host tests: a freshly initialised CM directory per test suite, the first
// officer's credentials read back from its PKCS#12 file, and small helpers for handing objects to
// the outside checkers (openssl, certtool).
#pragma once

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "persoflow/cmhost/cm_host.hpp"
#include "test_support.hpp"

namespace persoflow::cmhost::testing {

using persoflow::testing::run;
using persoflow::testing::RunResult;
using persoflow::testing::TempDir;

inline std::string write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  return path;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string key_pem(const EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), const_cast<EVP_PKEY*>(key), nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

inline EvpPkeyPtr make_key(const std::string& spec) {
  auto k = generate_key(spec);
  EXPECT_TRUE(k.is_ok()) << k.status().to_string();
  return std::move(k).value();
}

inline X509NamePtr make_name(const std::string& text) {
  auto n = parse_name(text);
  EXPECT_TRUE(n.is_ok()) << n.status().to_string();
  return std::move(n).value();
}

struct Credential {
  X509Ptr cert;
  EvpPkeyPtr key;
};

inline Credential read_p12(const std::string& path, const std::string& password) {
  std::string der = read_file(path);
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  PKCS12* p12 = d2i_PKCS12(nullptr, &p, static_cast<long>(der.size()));
  EXPECT_NE(p12, nullptr);
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  STACK_OF(X509)* ca = nullptr;
  EXPECT_EQ(PKCS12_parse(p12, password.c_str(), &key, &cert, &ca), 1);
  sk_X509_pop_free(ca, X509_free);
  PKCS12_free(p12);
  return {X509Ptr(cert), EvpPkeyPtr(key)};
}

// One CM directory for the whole suite (each ctest entry is its own process, so one per test).
class CmHostTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("persoflow-cm");
    InitOptions o;
    o.officer = "alice";
    o.officer_password = "alice-secret";
    // EC keeps the suite fast; the CLI tests create the default RSA-3072 archive key.
    o.archive_key_algorithm = "EC:secp256r1";
    auto r = CmHost::init(dir_->file("cm"), o);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    auto h = CmHost::open(dir_->file("cm"));
    ASSERT_TRUE(h.is_ok()) << h.status().to_string();
    host_ = std::move(h).value().release();
  }
  static void TearDownTestSuite() {
    delete host_;
    host_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }

  CmHost& host() { return *host_; }
  std::string cm_dir() const { return dir_->file("cm"); }
  std::string ca_pem() const { return dir_->file("cm/ca/ca.pem"); }
  std::string file(const std::string& name) const { return dir_->file(name); }
  Credential officer() const { return read_p12(dir_->file("cm/officers/alice.p12"), "alice-secret"); }

  IssuedCertificate issue(const std::string& procedure, const std::string& subject, const std::string& key_spec,
                          bool confirmed = true, const std::string& idempotency_key = {}) {
    IssueRequest r;
    r.procedure = procedure;
    r.subject = make_name(subject);
    r.public_key = make_key(key_spec);
    r.requester = "alice";
    r.confirmed = confirmed;
    r.idempotency_key = idempotency_key;
    auto c = host().issue(std::move(r));
    EXPECT_TRUE(c.is_ok()) << c.status().to_string();
    return std::move(c).value();
  }

  // openssl verify -CAfile ca.pem [more...] cert
  RunResult openssl_verify(const X509* cert, const std::vector<std::string>& extra = {}) {
    std::string path = write_file(file("verify-" + serial_hex(cert) + ".pem"), to_pem(cert));
    std::vector<std::string> argv = {"openssl", "verify", "-CAfile", ca_pem()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(path);
    return run(argv);
  }

  static TempDir* dir_;
  static CmHost* host_;
};

inline TempDir* CmHostTest::dir_ = nullptr;
inline CmHost* CmHostTest::host_ = nullptr;

}  // namespace persoflow::cmhost::testing
