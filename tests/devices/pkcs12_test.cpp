// Software tokens: PKCS#12 read back by `openssl pkcs12 -info` and GnuTLS `certtool --p12-info`
// with the configured iteration counts; certificate files in DER and PEM; atomic, 0600,
// never-overwrite file writes; software key generation for the key-generation list.
#include "persoflow/devices/pkcs12.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <regex>

#include "test_pki.hpp"
#include "test_support.hpp"

namespace persoflow::devices {
namespace {

namespace pt = persoflow::testing;
using pt::run;
using pt::TempDir;

struct Issued {
  pt::TestCa ca{"Soft Token CA"};
  pt::EvpPtr key = pt::make_ec_key();
  pt::X509Ptr cert = ca.issue("Alice", key.get(), 4242);
};

int count(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (auto at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  return st.st_mode & 07777;
}

void check_pkcs12(const std::string& path, const std::string& password, int iterations) {
  TempDir dir;
  pt::write_file(dir.file("pass"), password + "\n");
  auto info = run(
      {"openssl", "pkcs12", "-info", "-noout", "-in", path, "-passin", "file:" + dir.file("pass")});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  const std::string it = std::to_string(iterations);
  EXPECT_NE(info.err.find("MAC: sha256, Iteration " + it + "\n"), std::string::npos) << info.err;
  EXPECT_EQ(count(info.err, "PBES2, PBKDF2, AES-256-CBC, Iteration " + it + ", PRF hmacWithSHA256"),
            2)
      << "the certificate bag and the key bag: " << info.err;

  auto gnutls =
      run({"certtool", "--p12-info", "--inder", "--infile", path, "--password", password});
  ASSERT_EQ(gnutls.exit_code, 0) << gnutls.err;
  EXPECT_NE(gnutls.out.find("MAC: SHA256"), std::string::npos) << gnutls.out;
  EXPECT_EQ(count(gnutls.out, "Iteration count: " + it + "\n"), 3) << gnutls.out;
  EXPECT_NE(gnutls.out.find("Schema: PBES2-AES256-CBC"), std::string::npos);
  EXPECT_NE(gnutls.out.find("Friendly name: Alice Example"), std::string::npos) << gnutls.out;

  // The chain is included: the leaf and the CA.
  auto certs =
      run({"openssl", "pkcs12", "-in", path, "-nokeys", "-passin", "file:" + dir.file("pass")});
  ASSERT_EQ(certs.exit_code, 0) << certs.err;
  EXPECT_EQ(count(certs.out, "-----BEGIN CERTIFICATE-----"), 2);
  EXPECT_NE(certs.out.find("CN = Soft Token CA"), std::string::npos) << certs.out;
}

TEST(Pkcs12, ConfiguredIterationCountsForBagsAndMac) {
  TempDir dir;
  Issued i;
  Pkcs12Options opt;
  opt.iterations = 2048;
  opt.friendly_name = "Alice Example";
  const std::string path = dir.file("alice.p12");
  Status s = write_pkcs12(path, i.key.get(), i.cert.get(), {i.ca.cert.get()}, "s3cret pass", opt);
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(mode_of(path), 0600u);
  check_pkcs12(path, "s3cret pass", 2048);
}

TEST(Pkcs12, DefaultIsSixHundredThousandIterations) {
  TempDir dir;
  Issued i;
  Pkcs12Options opt;
  EXPECT_EQ(opt.iterations, 600000);
  opt.friendly_name = "Alice Example";
  const std::string path = dir.file("alice.p12");
  ASSERT_TRUE(write_pkcs12(path, i.key.get(), i.cert.get(), {i.ca.cert.get()}, "pw", opt).is_ok());
  check_pkcs12(path, "pw", 600000);
}

TEST(Pkcs12, NeverOverwritesWithoutForce) {
  TempDir dir;
  Issued i;
  Pkcs12Options opt;
  opt.iterations = 1000;
  const std::string path = dir.file("token.p12");
  pt::write_file(path, "precious");
  ::chmod(path.c_str(), 0644);
  Status refused = write_pkcs12(path, i.key.get(), i.cert.get(), {}, "pw", opt);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.code(), Errc::kAlreadyExists);
  EXPECT_NE(refused.message().find("--force"), std::string::npos);
  EXPECT_EQ(pt::read_file(path), "precious");
  opt.force = true;
  ASSERT_TRUE(write_pkcs12(path, i.key.get(), i.cert.get(), {}, "pw", opt).is_ok());
  EXPECT_NE(pt::read_file(path), "precious");
  EXPECT_EQ(mode_of(path), 0600u);
  // No temporary file is left behind.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST(Pkcs12, RefusesBadInput) {
  Issued i;
  Pkcs12Options opt;
  opt.iterations = 1000;
  auto no_pass = make_pkcs12(i.key.get(), i.cert.get(), {}, "", opt);
  EXPECT_EQ(no_pass.status().code(), Errc::kInvalidArgument);
  auto other = pt::make_ec_key();
  auto mismatch = make_pkcs12(other.get(), i.cert.get(), {}, "pw", opt);
  ASSERT_FALSE(mismatch.is_ok());
  EXPECT_NE(mismatch.status().message().find("does not belong"), std::string::npos);
  opt.iterations = 0;
  EXPECT_FALSE(make_pkcs12(i.key.get(), i.cert.get(), {}, "pw", opt).is_ok());
  TempDir dir;
  Status no_dir = write_file_atomic(dir.file("missing/x.der"), "x", false);
  EXPECT_EQ(no_dir.code(), Errc::kNotFound);
}

TEST(CertificateFile, DerByDefaultPemForDotPem) {
  TempDir dir;
  Issued i;
  for (const char* name : {"alice.der", "alice.crt", "alice.pem", "ALICE.PEM"}) {
    const std::string path = dir.file(name);
    ASSERT_TRUE(write_certificate_file(path, i.cert.get(), false).is_ok()) << name;
    EXPECT_EQ(mode_of(path), 0600u);
    const bool pem = std::string(name).find(".pem") != std::string::npos ||
                     std::string(name).find(".PEM") != std::string::npos;
    EXPECT_EQ(pt::read_file(path).rfind("-----BEGIN CERTIFICATE-----", 0) == 0, pem) << name;
    auto parsed = run({"openssl", "x509", "-inform", pem ? "pem" : "der", "-in", path, "-noout",
                       "-serial", "-subject"});
    EXPECT_EQ(parsed.exit_code, 0) << parsed.err;
    EXPECT_NE(parsed.out.find("serial=1092"), std::string::npos) << parsed.out;
    EXPECT_NE(parsed.out.find("CN = Alice"), std::string::npos) << parsed.out;
    Status again = write_certificate_file(path, i.cert.get(), false);
    EXPECT_EQ(again.code(), Errc::kAlreadyExists);
    EXPECT_TRUE(write_certificate_file(path, i.cert.get(), true).is_ok());
  }
}

TEST(SoftwareKey, GeneratesTheKeyGenerationListAlgorithms) {
  for (const char* text :
       {"RSA:2048", "EC:secp256r1", "EC:secp384r1", "EC:secp521r1", "EC:brainpoolP256r1",
        "EC:brainpoolP320r1", "EC:brainpoolP384r1", "EC:brainpoolP512r1", "DSA:1024"}) {
    KeyAlgorithm a = parse_key_algorithm(text).value();
    auto key = generate_software_key(a);
    ASSERT_TRUE(key.is_ok()) << text << ": " << key.status().message();
    pt::EvpPtr owned(*key, EVP_PKEY_free);
    EXPECT_EQ(EVP_PKEY_get_bits(owned.get()), a.bits) << text;
  }
}

}  // namespace
}  // namespace persoflow::devices
