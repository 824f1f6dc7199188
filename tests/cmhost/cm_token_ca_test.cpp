// The CA key in a PKCS#11 token (SoftHSM2): `persoflow cm init --ca-key pkcs11:...` generates it
// in the token (or uses the one there), `cm serve` signs with it, `openssl cmp` enrols and
// revokes, and `openssl verify` / `openssl crl -verify` check the certificate and the CRLs.
#include <gtest/gtest.h>

#include <filesystem>

#include "cmp_fixture.hpp"
#include "softhsm_fixture.hpp"

namespace persoflow::testing {
namespace {

constexpr const char* kCaKeyUri = "pkcs11:token=CA%20Token;object=persoflow-ca";

std::vector<std::string> token_args(const std::string& pin_file) {
  return {"--ca-key", kCaKeyUri, "--ca-pkcs11-module", SoftHsm::kModule, "--ca-pin-file",
          pin_file};
}

// A SoftHSM2 token "CA Token" (user PIN 4321) and a file holding its PIN.
struct CaToken {
  SoftHsm hsm;
  std::string pin_file;
  CaToken() {
    hsm.create_token("CA Token", "4321");
    pin_file = hsm.dir().file("ca.pin");
    write_file(pin_file, "4321\n");
  }
};

std::string public_key_pem_of_cert(const std::string& cert_pem) {
  auto r = run({"openssl", "x509", "-in", cert_pem, "-noout", "-pubkey"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

TEST(CmTokenCa, CaKeyInSoftHsmSignsCertificatesAndCrls) {
  CaToken token;
  CmDir cm("ec-p256", token_args(token.pin_file));

  // No CA key file: the key is in the token, under the label the URI names.
  EXPECT_FALSE(std::filesystem::exists(cm.dir() + "/ca/ca-key.pem"));
  auto objects = run({"pkcs11-tool", "--module", SoftHsm::kModule, "--token-label", "CA Token",
                      "--login", "--pin", "4321", "--list-objects", "--type", "privkey"});
  ASSERT_EQ(objects.exit_code, 0) << objects.err;
  EXPECT_NE(objects.out.find("persoflow-ca"), std::string::npos) << objects.out;
  auto config = read_file(cm.dir() + "/cm.json");
  EXPECT_NE(config.find(kCaKeyUri), std::string::npos);
  EXPECT_EQ(config.find("4321"), std::string::npos) << "the PIN itself is not in cm.json";

  CmServer server(cm.dir());
  const auto port = server.port_number();
  auto key = genkey(cm, "alice-key.pem");
  auto ir = openssl_cmp(cm, port, &cm.officer,
                        {"-cmd", "ir", "-newkey", key, "-subject", "/CN=Alice Token CA",
                         "-certout", cm.file("alice.pem")});
  ASSERT_EQ(ir.exit_code, 0) << ir.output;
  auto verified = run({"openssl", "verify", "-CAfile", cm.ca_pem(), cm.file("alice.pem")});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;

  auto crl1 = fetch_crl_pem(cm, port, "crl1");
  auto crl_ok = run({"openssl", "crl", "-in", crl1, "-noout", "-CAfile", cm.ca_pem(), "-verify"});
  EXPECT_EQ(crl_ok.exit_code, 0) << crl_ok.out << crl_ok.err;
  EXPECT_NE((crl_ok.out + crl_ok.err).find("verify OK"), std::string::npos);
  auto valid = verify_with_crl(cm, crl1, cm.file("alice.pem"));
  EXPECT_EQ(valid.exit_code, 0) << valid.out << valid.err;

  auto rr = openssl_cmp(cm, port, &cm.officer,
                        {"-cmd", "rr", "-oldcert", cm.file("alice.pem"), "-revreason", "4"});
  ASSERT_EQ(rr.exit_code, 0) << rr.output;
  auto crl2 = fetch_crl_pem(cm, port, "crl2");
  auto revoked = verify_with_crl(cm, crl2, cm.file("alice.pem"));
  EXPECT_NE(revoked.exit_code, 0);
  EXPECT_NE((revoked.out + revoked.err).find("revoked"), std::string::npos)
      << revoked.out << revoked.err;
  EXPECT_TRUE(server.alive());
}

TEST(CmTokenCa, ExistingTokenKeyIsUsedAndBadInputsAreRefused) {
  CaToken token;
  const std::string& pin_file = token.pin_file;
  CmDir first("ec-p256", token_args(pin_file));
  // A second CA directory on the same token key: the same public key, not a new one.
  CmDir second("ec-p256", token_args(pin_file));
  EXPECT_EQ(public_key_pem_of_cert(first.ca_pem()), public_key_pem_of_cert(second.ca_pem()));

  const std::string wrong_pin = token.hsm.dir().file("wrong.pin");
  write_file(wrong_pin, "9999\n");
  TempDir tmp("pf-token-ca");
  auto init = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = {persoflow_binary(), "cm", "init", "--dir", tmp.file("cm")};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run(argv);
  };
  auto bad_pin = init(token_args(wrong_pin));
  EXPECT_NE(bad_pin.exit_code, 0);
  EXPECT_NE(bad_pin.err.find("CKR_PIN_INCORRECT"), std::string::npos) << bad_pin.err;
  auto no_module = init({"--ca-key", kCaKeyUri, "--ca-pin-file", pin_file});
  EXPECT_EQ(no_module.exit_code, 2);
  EXPECT_NE(no_module.err.find("--ca-pkcs11-module"), std::string::npos) << no_module.err;
  auto other_alg = init({"--ca-key-alg", "rsa-2048", "--ca-key", kCaKeyUri, "--ca-pkcs11-module",
                         SoftHsm::kModule, "--ca-pin-file", pin_file});
  EXPECT_NE(other_alg.exit_code, 0);
  EXPECT_NE(other_alg.err.find("not RSA:2048"), std::string::npos) << other_alg.err;
  auto no_token = init({"--ca-key", "pkcs11:token=Nope;object=x", "--ca-pkcs11-module",
                        SoftHsm::kModule, "--ca-pin-file", pin_file});
  EXPECT_NE(no_token.exit_code, 0);
  EXPECT_NE(no_token.err.find("Nope"), std::string::npos) << no_token.err;
}

}  // namespace
}  // namespace persoflow::testing
