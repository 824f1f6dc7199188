// Officer signing tokens: a key with its certificate on a SoftHSM2 card (signatures made on the
// card verify with the certificate), and a PKCS#12 software token (accepted with a warning).
#include "persoflow/devices/officer.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "persoflow/devices/pkcs12.hpp"
#include "softhsm_fixture.hpp"
#include "test_pki.hpp"
#include "test_support.hpp"

namespace persoflow::devices {
namespace {

namespace pt = persoflow::testing;
using pt::SoftHsm;

bool verifies(X509* cert, const std::string& data, const std::string& sig) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  return EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, X509_get0_pubkey(cert)) ==
             1 &&
         EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                          reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
}

// Generates a key on the card and stores a certificate for it issued by `ca`.
std::vector<unsigned char> enrol(Card& card, const pt::TestCa& ca, const std::string& alg,
                                 const std::string& label, long serial) {
  auto key = card.generate_key(parse_key_algorithm(alg).value(), "officer/" + label, label);
  EXPECT_TRUE(key.is_ok()) << key.status().message();
  auto csr = card.make_csr(key->id, "CN=" + label);
  EXPECT_TRUE(csr.is_ok()) << csr.status().message();
  auto pub = pt::csr_public_key(*csr);
  auto cert = ca.issue(label, pub.get(), serial);
  EXPECT_TRUE(card.store_certificate(pt::cert_der(cert.get()), key->id, label).is_ok());
  return key->id;
}

TEST(OfficerToken, SignsOnTheCard) {
  SoftHsm hsm;
  auto t = hsm.create_token("Officer Card", "4711", "12345678");
  pt::TestCa ca("Officer CA");
  std::vector<unsigned char> ec_id, rsa_id;
  {
    TokenSelector sel;
    sel.label = t.label;
    auto card = open_card(SoftHsm::kModule, sel);
    ASSERT_TRUE(card.is_ok());
    ASSERT_TRUE((*card)->login(UserType::kUser, "4711").is_ok());
    ec_id = enrol(**card, ca, "EC:secp256r1", "Officer Signature", 77);
  }
  OfficerCardOptions opt;
  opt.module_path = SoftHsm::kModule;
  opt.token.label = t.label;
  auto wrong = open_officer_card(opt, "0000");
  ASSERT_FALSE(wrong.is_ok());
  EXPECT_NE(wrong.status().message().find("wrong user PIN"), std::string::npos);

  {
    auto officer = open_officer_card(opt, "4711");
    ASSERT_TRUE(officer.is_ok()) << officer.status().message();
    EXPECT_FALSE((*officer)->is_software());
    EXPECT_TRUE((*officer)->warnings().empty());
    EXPECT_NE((*officer)->describe().find("Officer Card"), std::string::npos);
    const std::string data = "a CMP request body";
    auto sig = (*officer)->sign(data);
    ASSERT_TRUE(sig.is_ok()) << sig.status().message();
    EXPECT_TRUE(verifies((*officer)->certificate(), data, *sig));
    EXPECT_FALSE(verifies((*officer)->certificate(), data + "x", *sig));
  }

  // A second signing key with a certificate: the choice must be named.
  {
    TokenSelector sel;
    sel.label = t.label;
    auto card = open_card(SoftHsm::kModule, sel);
    ASSERT_TRUE(card.is_ok());
    ASSERT_TRUE((*card)->login(UserType::kUser, "4711").is_ok());
    rsa_id = enrol(**card, ca, "RSA:2048", "Officer RSA", 78);
  }
  auto ambiguous = open_officer_card(opt, "4711");
  ASSERT_FALSE(ambiguous.is_ok());
  EXPECT_NE(ambiguous.status().message().find("name one by id"), std::string::npos);
  opt.key_id = rsa_id;
  auto by_id = open_officer_card(opt, "4711");
  ASSERT_TRUE(by_id.is_ok()) << by_id.status().message();
  auto sig = (*by_id)->sign("rsa data");
  ASSERT_TRUE(sig.is_ok()) << sig.status().message();
  EXPECT_TRUE(verifies((*by_id)->certificate(), "rsa data", *sig));
  by_id.value().reset();

  OfficerCardOptions by_uri;
  by_uri.module_path = SoftHsm::kModule;
  by_uri.token.uri =
      parse_pkcs11_uri("pkcs11:token=Officer%20Card;object=Officer%20Signature").value();
  auto named = open_officer_card(by_uri, "4711");
  ASSERT_TRUE(named.is_ok()) << named.status().message();
  EXPECT_NE((*named)->describe().find(to_hex(ec_id)), std::string::npos);
}

TEST(OfficerToken, SoftwareTokenIsAcceptedWithAWarning) {
  pt::TempDir dir;
  pt::TestCa ca("Officer CA");
  auto key = pt::make_ec_key();
  auto cert = ca.issue("Officer Soft", key.get(), 5);
  Pkcs12Options p12;
  p12.iterations = 1000;
  const std::string path = dir.file("officer.p12");
  ASSERT_TRUE(
      write_pkcs12(path, key.get(), cert.get(), {ca.cert.get()}, "officer pw", p12).is_ok());

  auto wrong = open_officer_pkcs12(path, "nope");
  ASSERT_FALSE(wrong.is_ok());
  EXPECT_EQ(wrong.status().code(), Errc::kPermissionDenied);

  auto officer = open_officer_pkcs12(path, "officer pw");
  ASSERT_TRUE(officer.is_ok()) << officer.status().message();
  EXPECT_TRUE((*officer)->is_software());
  ASSERT_EQ((*officer)->warnings().size(), 1u);
  EXPECT_EQ(
      (*officer)->warnings()[0].rfind("a software token is not recommended for officers: ", 0), 0u);
  EXPECT_EQ((*officer)->chain().size(), 1u);
  auto sig = (*officer)->sign("data");
  ASSERT_TRUE(sig.is_ok());
  EXPECT_TRUE(verifies((*officer)->certificate(), "data", *sig));

  ::chmod(path.c_str(), 0644);
  auto loose = open_officer_pkcs12(path, "officer pw");
  ASSERT_TRUE(loose.is_ok());
  ASSERT_EQ((*loose)->warnings().size(), 2u);
  EXPECT_NE((*loose)->warnings()[1].find("mode 644"), std::string::npos);

  EXPECT_EQ(open_officer_pkcs12(dir.file("none.p12"), "x").status().code(), Errc::kNotFound);
}

}  // namespace
}  // namespace persoflow::devices
