// `persoflow card list|show` against SoftHSM2 tokens: readable and JSON output, the transport
// certificate marked, PIN from a descriptor, clear errors and usage exits.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "persoflow/devices/card.hpp"
#include "softhsm_fixture.hpp"
#include "test_pki.hpp"
#include "test_support.hpp"

namespace persoflow::devices {
namespace {

namespace pt = persoflow::testing;
using nlohmann::json;
using pt::SoftHsm;

class CardCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    token_ = hsm_.create_token("CLI Card", "2468", "12345678");
    TokenSelector sel;
    sel.label = token_.label;
    auto card = open_card(SoftHsm::kModule, sel);
    ASSERT_TRUE(card.is_ok()) << card.status().message();
    ASSERT_TRUE((*card)->login(UserType::kUser, "2468").is_ok());
    auto key = (*card)->generate_key(parse_key_algorithm("EC:secp384r1").value(), "cli/1", "Auth");
    ASSERT_TRUE(key.is_ok()) << key.status().message();
    key_id_ = key->id_hex;
    pt::TestCa transport("Transport CA");
    auto k = pt::make_ec_key();
    ASSERT_TRUE(
        (*card)
            ->store_certificate(pt::cert_der(transport.issue("TC 1", k.get(), 0xBEEF).get()),
                                key->id, "Transport certificate")
            .is_ok());
  }

  pt::RunResult persoflow(std::vector<std::string> args, const std::string& stdin_text = "") {
    args.insert(args.begin(), pt::persoflow_binary());
    return pt::run(args, stdin_text);
  }

  SoftHsm hsm_;
  SoftHsm::Token token_;
  std::string key_id_;
};

TEST_F(CardCliTest, ShowJsonMarksTheTransportCertificate) {
  auto r = persoflow({"card", "show", "--token", "CLI Card", "--module", SoftHsm::kModule,
                      "--pin-fd", "0", "--json"},
                     "2468\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_TRUE(j["logged_in"].get<bool>());
  EXPECT_EQ(j["token"]["serial"], token_.serial);
  ASSERT_EQ(j["keys"].size(), 1u);
  EXPECT_EQ(j["keys"][0]["id"], key_id_);
  EXPECT_EQ(j["keys"][0]["type"], "EC");
  EXPECT_EQ(j["keys"][0]["curve"], "secp384r1");
  ASSERT_EQ(j["certificates"].size(), 1u);
  EXPECT_EQ(j["certificates"][0]["subject"], "CN=TC 1,O=Example");
  EXPECT_EQ(j["certificates"][0]["serial_hex"], "BEEF");
  EXPECT_TRUE(j["certificates"][0]["transport_certificate"].get<bool>());

  // Another rule: the issuer only; the label no longer counts.
  auto by_issuer = persoflow({"card", "show", "--uri", "pkcs11:serial=" + token_.serial, "--module",
                              SoftHsm::kModule, "--tc-issuer", "CN=Someone Else", "--json"});
  ASSERT_EQ(by_issuer.exit_code, 0) << by_issuer.err;
  json k = json::parse(by_issuer.out);
  EXPECT_FALSE(k["logged_in"].get<bool>());
  EXPECT_FALSE(k["certificates"][0]["transport_certificate"].get<bool>());
}

TEST_F(CardCliTest, ShowReadable) {
  auto r = persoflow(
      {"card", "show", "--token", "CLI Card", "--module", SoftHsm::kModule, "--pin-fd", "0"},
      "2468\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Token 'CLI Card'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("EC secp384r1 (384 bits)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[TRANSPORT CERTIFICATE]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("serial   BEEF"), std::string::npos) << r.out;
}

TEST_F(CardCliTest, ListShowsTheToken) {
  auto r = persoflow({"card", "list", "--module", SoftHsm::kModule, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  bool found = false;
  for (const auto& t : j["tokens"]) {
    if (t["label"] == "CLI Card") {
      found = true;
      EXPECT_EQ(t["serial"], token_.serial);
      EXPECT_EQ(t["manufacturer"], "SoftHSM project");
    }
  }
  EXPECT_TRUE(found) << r.out;
  // Readers come from pcscd; without it they are absent with the reason, not a failure.
  EXPECT_TRUE(j["readers"].is_array() || j.contains("readers_error")) << r.out;

  auto text = persoflow({"card", "list", "--module", SoftHsm::kModule});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("'CLI Card'  serial " + token_.serial), std::string::npos) << text.out;
}

TEST_F(CardCliTest, ClearErrors) {
  auto wrong_pin = persoflow(
      {"card", "show", "--token", "CLI Card", "--module", SoftHsm::kModule, "--pin-fd", "0"},
      "1111\n");
  EXPECT_EQ(wrong_pin.exit_code, 1);
  EXPECT_NE(wrong_pin.err.find("wrong user PIN for token 'CLI Card' (CKR_PIN_INCORRECT)"),
            std::string::npos)
      << wrong_pin.err;
  auto bad_module = persoflow({"card", "list", "--module", "/no/such/module.so"});
  EXPECT_EQ(bad_module.exit_code, 1);
  EXPECT_NE(bad_module.err.find("PKCS#11 module '/no/such/module.so' not found"),
            std::string::npos);
  auto no_token = persoflow({"card", "show", "--token", "Nope", "--module", SoftHsm::kModule});
  EXPECT_EQ(no_token.exit_code, 1);
  EXPECT_NE(no_token.err.find("no token with label 'Nope'"), std::string::npos) << no_token.err;
  auto unnamed = persoflow({"card", "show", "--module", SoftHsm::kModule});
  EXPECT_EQ(unnamed.exit_code, 2);
  auto bad_uri = persoflow({"card", "show", "--uri", "pkcs11:slot-id=1"});
  EXPECT_EQ(bad_uri.exit_code, 2);
  EXPECT_NE(bad_uri.err.find("slot-id is not accepted"), std::string::npos);
  auto unknown = persoflow({"card", "show", "--frobnicate"});
  EXPECT_EQ(unknown.exit_code, 2);
  auto help = persoflow({"card", "show", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--tc-issuer"), std::string::npos);
  EXPECT_EQ(persoflow({"card", "--help"}).exit_code, 0);
  EXPECT_EQ(persoflow({"card", "list", "--help"}).exit_code, 0);
}

TEST_F(CardCliTest, KeygenIsIdempotent) {
  std::vector<std::string> args = {"card",
                                   "keygen",
                                   "--serial",
                                   token_.serial,
                                   "--module",
                                   SoftHsm::kModule,
                                   "--alg",
                                   "EC:brainpoolP256r1",
                                   "--idempotency-key",
                                   "wf-9/step-2",
                                   "--pin-fd",
                                   "0",
                                   "--json"};
  auto first = persoflow(args, "2468\n");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  json a = json::parse(first.out);
  EXPECT_EQ(a["id"], to_hex(derive_key_id("wf-9/step-2")));
  EXPECT_EQ(a["curve"], "brainpoolP256r1");
  auto again = persoflow(args, "2468\n");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(json::parse(again.out)["id"], a["id"]);
  auto show = persoflow({"card", "show", "--token", "CLI Card", "--module", SoftHsm::kModule,
                         "--pin-fd", "0", "--json"},
                        "2468\n");
  ASSERT_EQ(show.exit_code, 0);
  EXPECT_EQ(json::parse(show.out)["keys"].size(), 2u) << "one from SetUp, one from keygen";

  auto no_pin = persoflow({"card", "keygen", "--token", "CLI Card", "--module", SoftHsm::kModule,
                           "--alg", "EC:secp256r1", "--idempotency-key", "x"});
  EXPECT_EQ(no_pin.exit_code, 2);
  EXPECT_NE(no_pin.err.find("needs the user PIN"), std::string::npos) << no_pin.err;
  auto bad_alg = persoflow({"card", "keygen", "--token", "CLI Card", "--alg", "EC:secp999r1",
                            "--idempotency-key", "x", "--pin-fd", "0"});
  EXPECT_EQ(bad_alg.exit_code, 2);
  EXPECT_NE(bad_alg.err.find("unknown EC curve 'secp999r1'"), std::string::npos) << bad_alg.err;
  auto dsa = persoflow({"card", "keygen", "--token", "CLI Card", "--module", SoftHsm::kModule,
                        "--alg", "DSA:1024", "--idempotency-key", "x", "--pin-fd", "0"},
                       "2468\n");
  EXPECT_EQ(dsa.exit_code, 1);
  EXPECT_NE(dsa.err.find("DSA:1024 is not generated on cards"), std::string::npos) << dsa.err;
}

}  // namespace
}  // namespace persoflow::devices
