// Archiving of a key the RA generated: an ir / cr carrying CRMF PKIArchiveOptions (the private key
// as a CMS EnvelopedData for the CM host's key-archive certificate) gets its certificate, the key
// is archived with it, and the existing recovery genm gives back the very same key. Against
// `persoflow cm serve` on 127.0.0.1, through protocol::CmpClient.
#include <openssl/core_names.h>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cmp_fixture.hpp"
#include "persoflow/protocol/cm_info_types.hpp"
#include "persoflow/protocol/crmf_archive.hpp"

namespace persoflow::testing {
namespace {

using json = nlohmann::json;

std::string private_scalar_hex(const EVP_PKEY* key) {
  BIGNUM* d = nullptr;
  if (!EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &d)) return "none";
  char* hex = BN_bn2hex(d);
  std::string out(hex);
  OPENSSL_free(hex);
  BN_clear_free(d);
  return out;
}

protocol::X509Ptr archive_certificate(const CmDir& cm) {
  auto certs = protocol::read_pem_certs(cm.dir() + "/archive/archive.pem");
  EXPECT_TRUE(certs.is_ok() && !certs->empty());
  return std::move(certs->front());
}

// The key archived for certificate `serial`, recovered through the recovery genm and opened with
// the officer's key.
protocol::EvpPkeyPtr recover(protocol::CmpClient& client, const OfficerFiles& officer,
                             const std::string& serial) {
  auto answer = client.general_message(
      {{protocol::kOidKeyRecovery,
        json{{"search", {{"serial", serial}}}, {"scope", "last"}, {"certificate", "reuse"}}
            .dump()}});
  EXPECT_TRUE(answer.is_ok()) << answer.status().message();
  if (!answer.is_ok()) return nullptr;
  auto keys = json::parse(answer->front().value)["keys"];
  EXPECT_EQ(keys.size(), 1u);
  if (keys.size() != 1) return nullptr;
  EXPECT_EQ(keys[0]["serial"], serial);
  auto pkcs8 = cmhost::open_envelope(unbase64(keys[0]["envelope"].get<std::string>()),
                                     officer.credentials.cert.get(), officer.credentials.key.get());
  EXPECT_TRUE(pkcs8.is_ok()) << pkcs8.status().message();
  if (!pkcs8.is_ok()) return nullptr;
  return private_key_of(*pkcs8);
}

TEST(CmpArchive, RaGeneratedKeyIsArchivedByIrAndCrAndRecoveredEqual) {
  CmDir cm;
  CmServer server(cm.dir());
  auto client = cm.client(server.port_number(), cm.officer, /*implicit_confirm=*/true);
  auto archive = archive_certificate(cm);

  for (auto type : {protocol::CertRequestType::kIr, protocol::CertRequestType::kCr}) {
    auto key = ec_key();
    protocol::CertRequest request;
    request.type = type;
    request.subject = "/CN=Hana/O=Example";
    request.key = key.get();
    request.archive_to = archive.get();
    auto enrolled = client->enroll(request);
    ASSERT_TRUE(enrolled.is_ok()) << enrolled.status().message();
    EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(enrolled->cert.get()), key.get()), 1);
    // The request carried the control (id-regCtrl-pkiArchiveOptions) and no private key in clear.
    const std::string sent = client->last_request_der();
    EXPECT_NE(sent.find(std::string("\x2B\x06\x01\x05\x05\x07\x05\x01\x04", 9)), std::string::npos);

    auto recovered = recover(*client, cm.officer, enrolled->serial_hex);
    ASSERT_TRUE(recovered);
    EXPECT_EQ(EVP_PKEY_eq(recovered.get(), key.get()), 1);
    EXPECT_EQ(private_scalar_hex(recovered.get()), private_scalar_hex(key.get()));
  }

  // The same request again (same transactionID, same bytes): the stored answer, one archived key.
  const std::string request = client->last_request_der();
  const std::string answer = client->last_response_der();
  auto resent = client->post_der(request);
  ASSERT_TRUE(resent.is_ok());
  EXPECT_EQ(*resent, answer);
  auto host = cm.open_host();
  cmhost::KeySearch search;
  search.subject = "CN=Hana";
  search.subject_substring = true;
  auto keys = host->search_keys(search);
  ASSERT_TRUE(keys.is_ok()) << keys.status().message();
  EXPECT_EQ(keys->size(), 2u);
}

TEST(CmpArchive, KeyNotForTheArchiveOrNotTheRequestedKeyIsRefused) {
  CmDir cm;
  auto host = cm.open_host();
  auto archive = archive_certificate(cm);
  auto key = ec_key();
  auto other = ec_key();
  auto pkcs8_of = [](EVP_PKEY* k) {
    unsigned char* der = nullptr;
    int len = i2d_PrivateKey(k, &der);
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    return out;
  };
  auto request = [&](const std::string& envelope) {
    cmhost::IssueRequest r;
    r.subject = std::move(cmhost::parse_name("CN=Ivo").value());
    r.public_key = cmhost::share(key.get());
    r.requester = "test";
    r.archive_envelope = envelope;
    return host->issue(std::move(r));
  };
  auto wrong_key = request(cmhost::envelope_for(archive.get(), pkcs8_of(other.get())).value());
  ASSERT_FALSE(wrong_key.is_ok());
  EXPECT_NE(wrong_key.status().message().find("does not belong to the requested public key"),
            std::string::npos)
      << wrong_key.status().message();
  auto wrong_recipient = request(
      cmhost::envelope_for(cm.officer.credentials.cert.get(), pkcs8_of(key.get())).value());
  ASSERT_FALSE(wrong_recipient.is_ok());
  EXPECT_NE(wrong_recipient.status().message().find("not enveloped for this CM host's key-archive"),
            std::string::npos)
      << wrong_recipient.status().message();
  auto right = request(cmhost::envelope_for(archive.get(), pkcs8_of(key.get())).value());
  ASSERT_TRUE(right.is_ok()) << right.status().message();
}

// The control survives OpenSSL's own CRMF encoding and is found again, once.
TEST(CrmfArchive, ControlRoundTripsThroughTheCrmfEncoding) {
  CmDir cm;
  auto host = cm.open_host();
  auto archive = archive_certificate(cm);
  auto key = ec_key();
  protocol::CrmfMsgPtr crm(OSSL_CRMF_MSG_new());
  ASSERT_TRUE(OSSL_CRMF_MSG_set_certReqId(crm.get(), 0));
  auto options = protocol::archive_options_der(key.get(), archive.get());
  ASSERT_TRUE(options.is_ok()) << options.status().message();
  auto with = protocol::with_archive_options(crm.get(), *options);
  ASSERT_TRUE(with.is_ok()) << with.status().message();
  EXPECT_FALSE(protocol::with_archive_options(with->get(), *options).is_ok());  // only once
  auto envelope = protocol::archive_envelope_of(with->get());
  ASSERT_TRUE(envelope.is_ok()) << envelope.status().message();
  ASSERT_TRUE(envelope->has_value());
  auto none = protocol::archive_envelope_of(crm.get());
  ASSERT_TRUE(none.is_ok());
  EXPECT_FALSE(none->has_value());
}

}  // namespace
}  // namespace persoflow::testing
