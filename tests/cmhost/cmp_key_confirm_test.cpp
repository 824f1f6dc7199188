// Certificates made by the CM host's key generation and recovery genm are published only after
// confirmation: a persoflowCertConfirm genm naming the transaction, or implicit confirmation asked
// in the request. Against `persoflow cm serve` on 127.0.0.1, through protocol::CmpClient.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cmp_fixture.hpp"
#include "persoflow/protocol/cm_info_types.hpp"

namespace persoflow::testing {
namespace {

using json = nlohmann::json;
using storage::CertStatus;

json keygen(protocol::CmpClient& client, const std::string& subject) {
  auto answer = client.general_message(
      {{protocol::kOidServerKeygen,
        json{{"key_procedure", "archive-encryption"}, {"subject", subject}}.dump()}});
  EXPECT_TRUE(answer.is_ok()) << answer.status().message();
  if (!answer.is_ok() || answer->size() != 1) return json::object();
  return json::parse(answer->front().value);
}

CertStatus status_of(CmDir& cm, const std::string& serial) {
  auto record = cm.open_host()->certificate(serial);
  EXPECT_TRUE(record.has_value()) << serial;
  return record ? record->status : CertStatus::kRejected;
}

TEST(CmpKeyConfirm, ServerGeneratedCertificateWaitsForConfirmation) {
  CmDir cm;
  auto olga = cm.add_officer("olga", {"issue", "recover"});
  CmServer server(cm.dir());
  auto client = cm.client(server.port_number(), cm.officer);

  json g = keygen(*client, "CN=Dora,O=Example");
  ASSERT_TRUE(g.contains("serial")) << g.dump();
  const std::string serial = g["serial"];
  const std::string tid = g["transaction_id"];
  EXPECT_EQ(g["status"], "pending");
  EXPECT_EQ(status_of(cm, serial), CertStatus::kPending);

  // Only the officer who asked for the key confirms it.
  auto other = cm.client(server.port_number(), olga);
  auto denied = other->confirm_certificates(tid);
  ASSERT_FALSE(denied.is_ok());
  EXPECT_NE(denied.status().message().find("was requested by 'officer', not by 'olga'"),
            std::string::npos)
      << denied.status().message();
  EXPECT_EQ(status_of(cm, serial), CertStatus::kPending);

  auto confirmed = client->confirm_certificates(tid);
  ASSERT_TRUE(confirmed.is_ok()) << confirmed.status().message();
  EXPECT_EQ(*confirmed, std::vector<std::string>{serial});
  EXPECT_EQ(status_of(cm, serial), CertStatus::kValid);

  // The same confirmation again, as new bytes and as the same bytes: harmless.
  auto again = client->confirm_certificates(tid, {serial});
  ASSERT_TRUE(again.is_ok()) << again.status().message();
  EXPECT_EQ(*again, std::vector<std::string>{serial});
  const std::string request = client->last_request_der();
  const std::string answer = client->last_response_der();
  auto resent = client->post_der(request);
  ASSERT_TRUE(resent.is_ok()) << resent.status().message();
  EXPECT_EQ(*resent, answer);
  EXPECT_EQ(status_of(cm, serial), CertStatus::kValid);

  // A published certificate cannot be rejected afterwards; unknown transactions and serials are
  // refused with their reason.
  auto reject = client->confirm_certificates(tid, {}, false);
  ASSERT_FALSE(reject.is_ok());
  EXPECT_NE(reject.status().message().find("cannot become rejected"), std::string::npos)
      << reject.status().message();
  auto unknown = client->confirm_certificates("00FF00FF");
  ASSERT_FALSE(unknown.is_ok());
  EXPECT_NE(unknown.status().message().find("no certificate was issued in transaction 00FF00FF"),
            std::string::npos)
      << unknown.status().message();
  auto foreign = client->confirm_certificates(tid, {"0A0B"});
  ASSERT_FALSE(foreign.is_ok());
  EXPECT_NE(foreign.status().message().find("was not issued in transaction"), std::string::npos)
      << foreign.status().message();
  EXPECT_EQ(status_of(cm, serial), CertStatus::kValid);

  // A rejected one is never published.
  json h = keygen(*client, "CN=Erin,O=Example");
  auto rejected = client->confirm_certificates(h["transaction_id"], {}, false);
  ASSERT_TRUE(rejected.is_ok()) << rejected.status().message();
  EXPECT_EQ(status_of(cm, h["serial"]), CertStatus::kRejected);
  EXPECT_FALSE(client->confirm_certificates(h["transaction_id"]).is_ok());
}

TEST(CmpKeyConfirm, ImplicitConfirmationPublishesAtOnceAndRecoveryWaitsOtherwise) {
  CmDir cm;
  CmServer server(cm.dir());
  auto implicit = cm.client(server.port_number(), cm.officer, /*implicit_confirm=*/true);
  auto explicit_client = cm.client(server.port_number(), cm.officer);

  // The header's implicitConfirm (CmpClientOptions::implicit_confirm, as the station sets it).
  json g = keygen(*implicit, "CN=Fay,O=Example");
  ASSERT_TRUE(g.contains("serial")) << g.dump();
  EXPECT_EQ(g["status"], "valid");
  EXPECT_EQ(status_of(cm, g["serial"]), CertStatus::kValid);

  // The request's own "implicit_confirm" field.
  auto asked = explicit_client->general_message(
      {{protocol::kOidServerKeygen, json{{"key_procedure", "archive-encryption"},
                                         {"subject", "CN=Gus,O=Example"},
                                         {"implicit_confirm", true}}
                                        .dump()}});
  ASSERT_TRUE(asked.is_ok()) << asked.status().message();
  EXPECT_EQ(json::parse(asked->front().value)["status"], "valid");

  // Recovery with a new certificate: pending until confirmed, published at once when implicit.
  const json recover = {{"search", {{"serial", g["serial"]}}}, {"key_procedure", "recover-last-new"}};
  auto pending = explicit_client->general_message({{protocol::kOidKeyRecovery, recover.dump()}});
  ASSERT_TRUE(pending.is_ok()) << pending.status().message();
  json p = json::parse(pending->front().value);
  ASSERT_EQ(p["keys"].size(), 1u);
  const std::string new_serial = p["keys"][0]["certificate_serial"];
  EXPECT_EQ(p["keys"][0]["certificate_status"], "pending");
  EXPECT_EQ(status_of(cm, new_serial), CertStatus::kPending);
  auto confirmed = explicit_client->confirm_certificates(p["transaction_id"]);
  ASSERT_TRUE(confirmed.is_ok()) << confirmed.status().message();
  EXPECT_EQ(*confirmed, std::vector<std::string>{new_serial});
  EXPECT_EQ(status_of(cm, new_serial), CertStatus::kValid);

  auto published = implicit->general_message({{protocol::kOidKeyRecovery, recover.dump()}});
  ASSERT_TRUE(published.is_ok()) << published.status().message();
  json q = json::parse(published->front().value);
  ASSERT_EQ(q["keys"].size(), 1u);
  EXPECT_EQ(q["keys"][0]["certificate_status"], "valid");
  EXPECT_EQ(status_of(cm, q["keys"][0]["certificate_serial"]), CertStatus::kValid);

  // Exactly once: the recovery genm resent byte for byte gets the stored genp, no third
  // certificate.
  const std::string request = implicit->last_request_der();
  const std::string answer = implicit->last_response_der();
  auto resent = implicit->post_der(request);
  ASSERT_TRUE(resent.is_ok());
  EXPECT_EQ(*resent, answer);
}

}  // namespace
}  // namespace persoflow::testing
