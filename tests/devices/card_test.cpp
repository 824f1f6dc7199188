// Card over PKCS#11 on real SoftHSM2 tokens: finding tokens, login errors, key generation per
// algorithm, idempotent key ids, CSRs verified by `openssl req`, certificates read back by
// OpenSC's pkcs11-tool and GnuTLS's p11tool, transport-certificate rules, PIN management.
#include "persoflow/devices/card.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "softhsm_fixture.hpp"
#include "test_pki.hpp"
#include "test_support.hpp"

namespace persoflow::devices {
namespace {

using persoflow::testing::run;
using persoflow::testing::SoftHsm;
using persoflow::testing::TempDir;
namespace pt = persoflow::testing;

constexpr unsigned long kCkrPinIncorrect = 0xa0;

class CardTest : public ::testing::Test {
 protected:
  std::unique_ptr<Card> open_logged_in(const SoftHsm::Token& t) {
    TokenSelector sel;
    sel.label = t.label;
    auto card = open_card(SoftHsm::kModule, sel);
    EXPECT_TRUE(card.is_ok()) << card.status().message();
    if (!card.is_ok()) return nullptr;
    Status s = (*card)->login(UserType::kUser, t.user_pin);
    EXPECT_TRUE(s.is_ok()) << s.message();
    return std::move(card).value();
  }

  SoftHsm hsm_;
};

TEST(CardModule, WrongModulePathIsAClearError) {
  auto missing = list_tokens("/nonexistent/lib/no-such-pkcs11.so");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), Errc::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/lib/no-such-pkcs11.so"),
            std::string::npos);
  EXPECT_NE(missing.status().message().find("--module"), std::string::npos);

  TempDir dir;
  pt::write_file(dir.file("fake.so"), "not an ELF file");
  auto not_elf = list_tokens(dir.file("fake.so"));
  ASSERT_FALSE(not_elf.is_ok());
  EXPECT_EQ(not_elf.status().code(), Errc::kUnavailable);
  EXPECT_NE(not_elf.status().message().find("cannot be loaded"), std::string::npos)
      << not_elf.status().message();

  auto not_pkcs11 = list_tokens("/lib/x86_64-linux-gnu/libz.so.1");
  ASSERT_FALSE(not_pkcs11.is_ok());
  EXPECT_EQ(not_pkcs11.status().code(), Errc::kUnsupported);
  EXPECT_NE(not_pkcs11.status().message().find("not a PKCS#11 module"), std::string::npos);
}

TEST_F(CardTest, ListsAndFindsTokensByLabelSerialReaderAndUri) {
  auto a = hsm_.create_token("Card A");
  auto b = hsm_.create_token("Card B");
  auto tokens = list_tokens(SoftHsm::kModule);
  ASSERT_TRUE(tokens.is_ok()) << tokens.status().message();
  int initialised = 0;
  std::string reader_of_b;
  for (const auto& t : *tokens) {
    if (!t.initialized) continue;
    ++initialised;
    EXPECT_EQ(t.manufacturer, "SoftHSM project");
    EXPECT_TRUE(t.label == "Card A" || t.label == "Card B") << t.label;
    if (t.label == "Card B") {
      EXPECT_EQ(t.serial, b.serial);
      reader_of_b = t.slot_description;
    }
  }
  EXPECT_EQ(initialised, 2);
  ASSERT_FALSE(reader_of_b.empty());

  auto open = [](TokenSelector sel) { return open_card(SoftHsm::kModule, sel); };
  TokenSelector by_label;
  by_label.label = "Card A";
  auto ca = open(by_label);
  ASSERT_TRUE(ca.is_ok()) << ca.status().message();
  EXPECT_EQ((*ca)->token().serial, a.serial);

  TokenSelector by_serial;
  by_serial.serial = b.serial;
  auto cb = open(by_serial);
  ASSERT_TRUE(cb.is_ok()) << cb.status().message();
  EXPECT_EQ((*cb)->token().label, "Card B");

  TokenSelector by_reader;
  by_reader.reader = reader_of_b;
  auto cr = open(by_reader);
  ASSERT_TRUE(cr.is_ok()) << cr.status().message();
  EXPECT_EQ((*cr)->token().label, "Card B");

  TokenSelector by_uri;
  by_uri.uri = parse_pkcs11_uri("pkcs11:token=Card%20B;manufacturer=SoftHSM%20project").value();
  auto cu = open(by_uri);
  ASSERT_TRUE(cu.is_ok()) << cu.status().message();
  EXPECT_EQ((*cu)->token().serial, b.serial);

  TokenSelector uri_serial;
  uri_serial.uri = parse_pkcs11_uri("pkcs11:serial=" + a.serial).value();
  auto cs = open(uri_serial);
  ASSERT_TRUE(cs.is_ok()) << cs.status().message();
  EXPECT_EQ((*cs)->token().label, "Card A");

  TokenSelector none;
  none.label = "Card C";
  auto missing = open(none);
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), Errc::kNotFound);
  EXPECT_NE(missing.status().message().find("no token with label 'Card C'"), std::string::npos);
  EXPECT_NE(missing.status().message().find("Card A"), std::string::npos)
      << "the message lists the tokens there are: " << missing.status().message();

  TokenSelector both;
  both.uri = parse_pkcs11_uri("pkcs11:manufacturer=SoftHSM%20project;model=SoftHSM%20v2").value();
  auto ambiguous = open(both);
  ASSERT_FALSE(ambiguous.is_ok());
  EXPECT_NE(ambiguous.status().message().find("tokens match"), std::string::npos);
}

// Opening by serial reads the slot where the last listing saw the token; a serial the listing did
// not see is looked for by listing again.
TEST_F(CardTest, OpensBySerialAfterAListingAndListsAgainForAnUnknownSerial) {
  auto a = hsm_.create_token("Listed A");
  auto b = hsm_.create_token("Listed B");
  auto keep_loaded = open_logged_in(a);  // the module, and what its listing saw, stay
  ASSERT_TRUE(keep_loaded);
  ASSERT_TRUE(list_tokens(SoftHsm::kModule).is_ok());
  auto by_serial = [](const std::string& serial) {
    TokenSelector sel;
    sel.serial = serial;
    return open_card(SoftHsm::kModule, sel);
  };
  auto cb = by_serial(b.serial);
  ASSERT_TRUE(cb.is_ok()) << cb.status().message();
  EXPECT_EQ((*cb)->token().label, "Listed B");
  auto ca = by_serial(a.serial);
  ASSERT_TRUE(ca.is_ok()) << ca.status().message();
  EXPECT_EQ((*ca)->token().label, "Listed A");
  EXPECT_TRUE((*cb)->login(UserType::kUser, b.user_pin).is_ok());

  // A serial the listing did not see: listed again, and the error names what is there.
  auto missing = by_serial("0123456789abcdef");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), Errc::kNotFound);
  EXPECT_NE(missing.status().message().find("Listed B"), std::string::npos)
      << "the message lists the tokens there are: " << missing.status().message();
}

TEST_F(CardTest, WrongPinGivesClearErrorWithRetryState) {
  auto t = hsm_.create_token("Pin Card");
  TokenSelector sel;
  sel.label = t.label;
  auto card = open_card(SoftHsm::kModule, sel);
  ASSERT_TRUE(card.is_ok()) << card.status().message();
  Status bad = (*card)->login(UserType::kUser, "9999");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.code(), std::error_code(static_cast<int>(kCkrPinIncorrect), pkcs11_category()));
  EXPECT_NE(bad.message().find("wrong user PIN for token 'Pin Card'"), std::string::npos);
  EXPECT_NE(bad.message().find("CKR_PIN_INCORRECT"), std::string::npos);
  // SoftHSM2 keeps no retry counter: the message says so rather than guessing a number.
  auto state = (*card)->pin_state();
  ASSERT_TRUE(state.is_ok());
  EXPECT_NE(bad.message().find(state->describe_user()), std::string::npos) << bad.message();
  std::printf("wrong PIN message: %s\n", bad.message().c_str());

  Status bad_so = (*card)->login(UserType::kSecurityOfficer, "00000000");
  ASSERT_FALSE(bad_so.is_ok());
  EXPECT_NE(bad_so.message().find("wrong SO PIN"), std::string::npos) << bad_so.message();

  EXPECT_TRUE((*card)->login(UserType::kUser, t.user_pin).is_ok());
  EXPECT_TRUE((*card)->logout().is_ok());
}

TEST_F(CardTest, GeneratesEveryDefaultAlgorithmOnTheToken) {
  auto t = hsm_.create_token("Keygen Card");
  auto card = open_logged_in(t);
  ASSERT_TRUE(card);
  std::vector<std::string> algorithms = {
      "RSA:2048",           "EC:secp256r1",       "EC:secp384r1",       "EC:secp521r1",
      "EC:brainpoolP256r1", "EC:brainpoolP320r1", "EC:brainpoolP384r1", "EC:brainpoolP512r1"};
  for (const auto& text : algorithms) {
    KeyAlgorithm a = parse_key_algorithm(text).value();
    ASSERT_TRUE(card->check_keygen_supported(a).is_ok()) << text;
    auto key = card->generate_key(a, "wf-keygen/" + text, "key " + text);
    ASSERT_TRUE(key.is_ok()) << text << ": " << key.status().message();
    EXPECT_EQ(key->id, derive_key_id("wf-keygen/" + text));
    EXPECT_EQ(key->label, "key " + text);
    EXPECT_TRUE(key->has_private);
    EXPECT_TRUE(key->has_public);
    ASSERT_TRUE(key->algorithm().has_value()) << text;
    EXPECT_EQ(key->algorithm()->to_string(), text);
    EXPECT_NE(std::find(key->usage.begin(), key->usage.end(), "sign"), key->usage.end());
    EXPECT_NE(std::find(key->usage.begin(), key->usage.end(), "verify"), key->usage.end());
  }
  auto contents = card->read_contents(TransportCertificateRule::defaults());
  ASSERT_TRUE(contents.is_ok()) << contents.status().message();
  EXPECT_TRUE(contents->logged_in);
  EXPECT_EQ(contents->keys.size(), algorithms.size());

  // An outside reader sees the keys: pkcs11-tool lists the EC one with its curve's size.
  auto listed = run({"pkcs11-tool", "--module", SoftHsm::kModule, "--token-label", t.label,
                     "--login", "--pin", t.user_pin, "--list-objects", "--type", "pubkey"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find("key EC:brainpoolP320r1"), std::string::npos) << listed.out;
}

TEST_F(CardTest, RefusesWhatTheCardCannotGenerateWithTheReason) {
  auto t = hsm_.create_token("Refusing Card");
  auto card = open_logged_in(t);
  ASSERT_TRUE(card);
  Status dsa = card->check_keygen_supported(parse_key_algorithm("DSA:1024").value());
  EXPECT_EQ(dsa.code(), Errc::kUnsupported);
  EXPECT_NE(dsa.message().find("DSA:1024 is not generated on cards"), std::string::npos);
  auto gen = card->generate_key(parse_key_algorithm("DSA:1024").value(), "wf/dsa", "dsa");
  ASSERT_FALSE(gen.is_ok());
  EXPECT_EQ(gen.status().code(), Errc::kUnsupported);
  Status small = card->check_keygen_supported(parse_key_algorithm("RSA:1024").value());
  EXPECT_EQ(small.code(), Errc::kUnsupported);
  Status big = card->check_keygen_supported(parse_key_algorithm("RSA:16384").value());
  EXPECT_EQ(big.code(), Errc::kUnsupported) << big.message();
}

TEST_F(CardTest, LargerRsaKeys) {
  auto t = hsm_.create_token("RSA Card");
  auto card = open_logged_in(t);
  ASSERT_TRUE(card);
  std::vector<std::string> sizes = {"RSA:3072", "RSA:4096"};
  if (const char* slow = std::getenv("PERSOFLOW_SLOW_TESTS"); slow && *slow == '1') {
    sizes.push_back("RSA:8192");  // 10 s and more: only on request
  }
  for (const auto& text : sizes) {
    auto key = card->generate_key(parse_key_algorithm(text).value(), "wf/" + text, text);
    ASSERT_TRUE(key.is_ok()) << key.status().message();
    EXPECT_EQ(key->type, KeyType::kRsa);
    EXPECT_EQ(key->algorithm()->to_string(), text);
  }
}

TEST_F(CardTest, KeyIdDerivedFromIdempotencyKeyFindsTheExistingKey) {
  auto t = hsm_.create_token("Resume Card");
  auto card = open_logged_in(t);
  ASSERT_TRUE(card);
  const std::string idem = "workflow-7f3a/step-4";
  auto before = card->find_key_by_idempotency_key(idem);
  ASSERT_TRUE(before.is_ok());
  EXPECT_FALSE(before->has_value());

  auto first = card->generate_key(parse_key_algorithm("EC:secp256r1").value(), idem, "sig");
  ASSERT_TRUE(first.is_ok()) << first.status().message();
  EXPECT_EQ(first->id.size(), 20u);
  EXPECT_EQ(first->id, derive_key_id(idem));
  EXPECT_NE(derive_key_id(idem), derive_key_id(idem + "x"));

  // A fresh Card object, as after a restart: the key is found, and a second generation returns
  // it instead of making another.
  card.reset();
  card = open_logged_in(t);
  ASSERT_TRUE(card);
  auto found = card->find_key_by_idempotency_key(idem);
  ASSERT_TRUE(found.is_ok());
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->id_hex, first->id_hex);
  auto again = card->generate_key(parse_key_algorithm("EC:secp256r1").value(), idem, "sig");
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ(again->id_hex, first->id_hex);
  auto contents = card->read_contents(TransportCertificateRule::defaults());
  ASSERT_TRUE(contents.is_ok());
  EXPECT_EQ(contents->keys.size(), 1u) << "generated twice";

  auto other = card->generate_key(parse_key_algorithm("RSA:2048").value(), idem, "sig");
  ASSERT_FALSE(other.is_ok());
  EXPECT_EQ(other.status().code(), Errc::kAlreadyExists);
  EXPECT_NE(other.status().message().find("EC:secp256r1"), std::string::npos);
}

// keygen_child generating pairs on `t` under "<prefix>/<i>", killed with SIGKILL at `share` (0
// to 1) of its second generation, timed by how long its first one took (the machine's load
// changes that); returns the number of the generation it had begun last (-1: it never started).
long generate_until_killed(const SoftHsm::Token& t, const std::string& prefix, double share) {
  int out[2];
  if (::pipe(out) != 0) return -1;
  const std::string child = pt::binary_dir() + "/keygen_child";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::execl(child.c_str(), child.c_str(), SoftHsm::kModule, t.label.c_str(), t.user_pin.c_str(),
            prefix.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  using Clock = std::chrono::steady_clock;
  std::string printed;
  std::vector<Clock::time_point> begun;  // when each generation began
  char buf[256];
  ssize_t n = 0;
  while (begun.size() < 2 && (n = ::read(out[0], buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] == '\n') begun.push_back(Clock::now());
    }
    printed.append(buf, static_cast<std::size_t>(n));
  }
  if (begun.size() == 2) std::this_thread::sleep_for((begun[1] - begun[0]) * share);
  ::kill(pid, SIGKILL);
  while ((n = ::read(out[0], buf, sizeof buf)) > 0) printed.append(buf, static_cast<std::size_t>(n));
  ::close(out[0]);
  ::waitpid(pid, nullptr, 0);
  const auto last = printed.find_last_of('\n', printed.size() > 1 ? printed.size() - 2 : 0);
  const std::string line = printed.substr(last == std::string::npos ? 0 : last + 1);
  return line.empty() ? -1 : std::atol(line.c_str());
}

// A process really killed (SIGKILL) at random moments while it generates keys: SoftHSM2 creates
// each object of a pair and sets its key material in a further write, so some kills leave a pair
// unfinished (half made, or the public half only). Generating again under the same idempotency
// key removes it and makes a whole pair that signs; whole pairs are returned as they are.
TEST_F(CardTest, KeyPairsAKillLeftUnfinishedAreGeneratedWhole) {
  auto t = hsm_.create_token("Kill Card");
  const auto p256 = parse_key_algorithm("EC:secp256r1").value();
  std::mt19937 random(20261203);
  std::uniform_real_distribution<double> share(0.0, 1.0);
  int unfinished = 0;
  int whole = 0;
  for (int trial = 0; trial < 150 && unfinished < 3; ++trial) {
    const std::string prefix = "kill-" + std::to_string(trial);
    const long last = generate_until_killed(t, prefix, share(random));
    ASSERT_GE(last, 0) << "keygen_child did not start";
    auto card = open_logged_in(t);
    ASSERT_TRUE(card);
    // Only the generation the kill interrupted can be unfinished; the earlier ones are whole.
    auto found = card->find_key_by_idempotency_key(prefix + "/" + std::to_string(last));
    ASSERT_TRUE(found.is_ok()) << found.status().message();
    if (!found->has_value()) continue;  // killed before SoftHSM2 wrote anything
    const bool was_whole = (*found)->has_private && (*found)->has_public && !(*found)->half_made;
    (was_whole ? whole : unfinished)++;
    auto again = card->generate_key(p256, prefix + "/" + std::to_string(last), "kill test");
    ASSERT_TRUE(again.is_ok()) << again.status().message();
    EXPECT_TRUE(again->has_private && again->has_public && !again->half_made) << trial;
    if (was_whole) {
      EXPECT_EQ(again->id_hex, (*found)->id_hex);
      continue;
    }
    auto key = card->private_key(again->id);
    ASSERT_TRUE(key.is_ok()) << key.status().message();
    char group[64] = {};
    EXPECT_EQ(EVP_PKEY_get_group_name(*key, group, sizeof group, nullptr), 1);
    EXPECT_STREQ(group, "prime256v1");
    EVP_PKEY_free(*key);
    auto csr = card->make_csr(again->id, "CN=Kill Test");
    EXPECT_TRUE(csr.is_ok()) << csr.status().message();
    auto contents = card->read_contents(TransportCertificateRule::defaults());
    ASSERT_TRUE(contents.is_ok());
    for (const auto& k : contents->keys) {
      EXPECT_FALSE(k.id == again->id && k.half_made) << "a second, unfinished pair under one id";
    }
  }
  // Without an unfinished pair the repair above was never exercised: the kills must hit.
  EXPECT_GE(unfinished, 1) << "no kill left an unfinished pair (" << whole << " whole)";
}

TEST_F(CardTest, CsrSignedOnCardVerifiesWithOpenssl) {
  auto t = hsm_.create_token("CSR Card");
  auto card = open_logged_in(t);
  ASSERT_TRUE(card);
  TempDir dir;
  for (const char* alg : {"EC:secp256r1", "RSA:2048", "EC:brainpoolP384r1"}) {
    auto key = card->generate_key(parse_key_algorithm(alg).value(), std::string("csr/") + alg, alg);
    ASSERT_TRUE(key.is_ok()) << key.status().message();
    auto csr = card->make_csr(key->id, "CN=Alice Example,O=Example Org,C=DE");
    ASSERT_TRUE(csr.is_ok()) << alg << ": " << csr.status().message();
    const std::string path = dir.file("req.der");
    pt::write_file(path, *csr);
    auto verify = run({"openssl", "req", "-inform", "DER", "-in", path, "-verify", "-noout",
                       "-subject", "-nameopt", "RFC2253"});
    EXPECT_EQ(verify.exit_code, 0) << alg << ": " << verify.err;
    EXPECT_NE((verify.out + verify.err).find("verify OK"), std::string::npos) << verify.err;
    EXPECT_NE(verify.out.find("CN=Alice Example,O=Example Org,C=DE"), std::string::npos)
        << verify.out;
  }
  auto bad_subject = card->make_csr(derive_key_id("csr/EC:secp256r1"), "CN=x,NOPE=y");
  ASSERT_FALSE(bad_subject.is_ok());
  EXPECT_EQ(bad_subject.status().code(), Errc::kInvalidArgument);
  auto no_key = card->make_csr(derive_key_id("no such"), "CN=x");
  EXPECT_EQ(no_key.status().code(), Errc::kNotFound);
}

TEST_F(CardTest, StoredCertificateIsReadBackByOutsideTools) {
  auto t = hsm_.create_token("Cert Card");
  auto card = open_logged_in(t);
  ASSERT_TRUE(card);
  pt::TestCa ca("Issuing CA");
  auto key = card->generate_key(parse_key_algorithm("EC:secp256r1").value(), "cert/1", "Signature");
  ASSERT_TRUE(key.is_ok()) << key.status().message();
  auto csr = card->make_csr(key->id, "CN=Bob");
  ASSERT_TRUE(csr.is_ok()) << csr.status().message();
  auto pub = pt::csr_public_key(*csr);
  auto cert = ca.issue("Bob", pub.get(), 0x1234ABCD);
  const std::string der = pt::cert_der(cert.get());
  ASSERT_TRUE(card->store_certificate(der, key->id, "Signature").is_ok());
  ASSERT_TRUE(card->store_certificate(der, key->id, "Signature").is_ok()) << "idempotent";

  auto contents = card->read_contents(TransportCertificateRule::defaults());
  ASSERT_TRUE(contents.is_ok());
  ASSERT_EQ(contents->certificates.size(), 1u);
  const auto& c = contents->certificates[0];
  EXPECT_EQ(c.subject, "CN=Bob,O=Example");
  EXPECT_EQ(c.issuer, "CN=Issuing CA,O=Example");
  EXPECT_EQ(c.serial_hex, "1234ABCD");
  EXPECT_EQ(c.id_hex, key->id_hex);
  EXPECT_EQ(c.label, "Signature");
  EXPECT_FALSE(c.transport_certificate);
  EXPECT_EQ(c.not_before.size(), 20u) << c.not_before;

  auto p11 = run({"pkcs11-tool", "--module", SoftHsm::kModule, "--token-label", t.label,
                  "--list-objects", "--type", "cert"});
  EXPECT_EQ(p11.exit_code, 0) << p11.err;
  EXPECT_NE(p11.out.find("label:      Signature"), std::string::npos) << p11.out;
  EXPECT_NE(p11.out.find("ID:         " + key->id_hex), std::string::npos) << p11.out;
  EXPECT_NE(p11.out.find("CN=Bob"), std::string::npos) << p11.out;

  auto gnutls = run(
      {"p11tool", "--provider", SoftHsm::kModule, "--list-all-certs", "pkcs11:token=Cert%20Card"});
  EXPECT_EQ(gnutls.exit_code, 0) << gnutls.err;
  EXPECT_NE(gnutls.out.find("Label: Signature"), std::string::npos) << gnutls.out;
  EXPECT_NE(gnutls.out.find("object=Signature;type=cert"), std::string::npos) << gnutls.out;

  // Through p11-kit's registered SoftHSM2 module too (p11tool's default), our SOFTHSM2_CONF
  // inherited by the child.
  auto registered = run({"p11tool", "--list-all-certs", "pkcs11:token=Cert%20Card"});
  EXPECT_EQ(registered.exit_code, 0) << registered.err;
  EXPECT_NE(registered.out.find("Label: Signature"), std::string::npos) << registered.out;

  ASSERT_TRUE(card->delete_certificates(key->id).is_ok());
  EXPECT_EQ(card->delete_certificates(key->id).code(), Errc::kNotFound);
  ASSERT_TRUE(card->delete_key(key->id).is_ok());
  EXPECT_EQ(card->delete_key(key->id).code(), Errc::kNotFound);
  auto after = card->read_contents(TransportCertificateRule::defaults());
  ASSERT_TRUE(after.is_ok());
  EXPECT_TRUE(after->certificates.empty());
  EXPECT_TRUE(after->keys.empty());
}

TEST_F(CardTest, TransportCertificateRecognisedByEachRule) {
  auto t = hsm_.create_token("TC Card");
  auto card = open_logged_in(t);
  ASSERT_TRUE(card);
  pt::TestCa transport_ca("Transport CA");
  pt::TestCa other_ca("Issuing CA");
  auto k = pt::make_ec_key();
  const std::vector<unsigned char> id1{1}, id2{2}, id3{3}, id4{4};
  ASSERT_TRUE(
      card->store_certificate(pt::cert_der(transport_ca.issue("by issuer", k.get(), 11).get()), id1,
                              "Card cert 1")
          .is_ok());
  ASSERT_TRUE(
      card->store_certificate(
              pt::cert_der(other_ca.issue("by policy", k.get(), 12, "1.3.6.1.4.1.99999.7.1").get()),
              id2, "Card cert 2")
          .is_ok());
  ASSERT_TRUE(card->store_certificate(pt::cert_der(other_ca.issue("by label", k.get(), 13).get()),
                                      id3, "TRANSPORT key 3")
                  .is_ok());
  ASSERT_TRUE(card->store_certificate(pt::cert_der(other_ca.issue("plain", k.get(), 14).get()), id4,
                                      "Card cert 4")
                  .is_ok());
  auto marked = [&](const TransportCertificateRule& rule) {
    std::vector<std::string> out;
    auto c = card->read_contents(rule);
    EXPECT_TRUE(c.is_ok());
    for (const auto& cert : c->certificates) {
      if (cert.transport_certificate) out.push_back(cert.subject.substr(0, cert.subject.find(',')));
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  using V = std::vector<std::string>;
  TransportCertificateRule by_issuer;
  by_issuer.issuer_dns = {"cn=transport ca, o=Example"};
  EXPECT_EQ(marked(by_issuer), (V{"CN=by issuer"}));
  TransportCertificateRule by_issuer_oneline;
  by_issuer_oneline.issuer_dns = {"/O=Example/CN=Transport CA"};
  EXPECT_EQ(marked(by_issuer_oneline), (V{"CN=by issuer"}));
  TransportCertificateRule by_policy;
  by_policy.policy_oids = {"1.3.6.1.4.1.99999.7.1"};
  EXPECT_EQ(marked(by_policy), (V{"CN=by policy"}));
  EXPECT_EQ(marked(TransportCertificateRule::defaults()), (V{"CN=by label"}));
  TransportCertificateRule any = TransportCertificateRule::defaults();
  any.issuer_dns = by_issuer.issuer_dns;
  any.policy_oids = by_policy.policy_oids;
  EXPECT_EQ(marked(any), (V{"CN=by issuer", "CN=by label", "CN=by policy"}));
  EXPECT_TRUE(marked(TransportCertificateRule{}).empty());
}

TEST_F(CardTest, ChangesAndUnblocksTheUserPin) {
  auto t = hsm_.create_token("PIN Card", "1111", "87654321");
  auto card = open_logged_in(t);
  ASSERT_TRUE(card);
  ASSERT_TRUE(card->change_user_pin("1111", "2222").is_ok());
  ASSERT_TRUE(card->logout().is_ok());
  EXPECT_FALSE(card->login(UserType::kUser, "1111").is_ok());
  ASSERT_TRUE(card->login(UserType::kUser, "2222").is_ok());
  ASSERT_TRUE(card->logout().is_ok());

  Status bad_so = card->unblock_user_pin("00000000", "3333");
  ASSERT_FALSE(bad_so.is_ok());
  EXPECT_NE(bad_so.message().find("wrong SO PIN"), std::string::npos) << bad_so.message();
  ASSERT_TRUE(card->unblock_user_pin("87654321", "3333").is_ok());
  EXPECT_FALSE(card->login(UserType::kUser, "2222").is_ok());
  EXPECT_TRUE(card->login(UserType::kUser, "3333").is_ok());
  auto state = card->pin_state();
  ASSERT_TRUE(state.is_ok());
  EXPECT_TRUE(state->user_pin_initialized);
  EXPECT_FALSE(state->user_locked);
}

// The SO PIN (a card's PUK) changed after libp11 has used a key on the token, which leaves
// read-only sessions that make SoftHSM2 refuse an SO login (CKR_SESSION_READ_ONLY_EXISTS): the
// card clears them; the signing key still works afterwards, and pkcs11-tool opens the token as SO
// with the new PIN only.
TEST_F(CardTest, ChangesTheSoPinAfterLibp11UsedAKey) {
  auto t = hsm_.create_token("PUK Card", "1111", "87654321");
  auto card = open_logged_in(t);
  ASSERT_TRUE(card);
  auto key = card->generate_key(parse_key_algorithm("EC:secp256r1").value(), "puk/1", "k");
  ASSERT_TRUE(key.is_ok()) << key.status().message();
  auto pkey = card->private_key(key->id);
  ASSERT_TRUE(pkey.is_ok()) << pkey.status().message();
  EVP_PKEY_free(*pkey);

  Status wrong = card->change_so_pin("00000000", "24682468");
  ASSERT_FALSE(wrong.is_ok());
  EXPECT_NE(wrong.message().find("wrong SO PIN"), std::string::npos) << wrong.message();
  Status changed = card->change_so_pin("87654321", "24682468");
  ASSERT_TRUE(changed.is_ok()) << changed.message();

  ASSERT_TRUE(card->login(UserType::kUser, "1111").is_ok());
  auto again = card->private_key(key->id);
  ASSERT_TRUE(again.is_ok()) << again.status().message();
  EVP_PKEY_free(*again);
  auto so_login = [&](const std::string& pin) {
    return run({"/usr/bin/env", hsm_.env_entry(), "pkcs11-tool", "--module", SoftHsm::kModule,
                "--token-label", t.label, "--session-rw", "--login", "--login-type", "so",
                "--so-pin", pin, "--list-objects"})
        .exit_code;
  };
  EXPECT_EQ(so_login("24682468"), 0);
  EXPECT_NE(so_login("87654321"), 0);
}

TEST_F(CardTest, RandomBytesFromTheToken) {
  auto t = hsm_.create_token("RNG Card");
  auto card = open_logged_in(t);
  ASSERT_TRUE(card);
  auto a = card->random_bytes(32);
  auto b = card->random_bytes(32);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_EQ(a->size(), 32u);
  EXPECT_NE(*a, *b);
}

TEST_F(CardTest, KeygenNeedsLogin) {
  auto t = hsm_.create_token("No Login Card");
  TokenSelector sel;
  sel.serial = t.serial;
  auto card = open_card(SoftHsm::kModule, sel);
  ASSERT_TRUE(card.is_ok());
  auto key = (*card)->generate_key(parse_key_algorithm("EC:secp256r1").value(), "x", "x");
  ASSERT_FALSE(key.is_ok());
  EXPECT_NE(key.status().message().find("CKR_USER_NOT_LOGGED_IN"), std::string::npos)
      << key.status().message();
}

TEST_F(CardTest, ListingAndClosingOtherCardsKeepsALoginAlive) {
  auto a = hsm_.create_token("Shared A");
  auto b = hsm_.create_token("Shared B");
  auto card_a = open_logged_in(a);
  ASSERT_TRUE(card_a);
  {
    auto card_b = open_logged_in(b);
    ASSERT_TRUE(card_b);
    auto tokens = list_tokens(SoftHsm::kModule);  // must not close card_a's sessions
    ASSERT_TRUE(tokens.is_ok());
    auto key = card_b->generate_key(parse_key_algorithm("EC:secp256r1").value(), "b/1", "b");
    ASSERT_TRUE(key.is_ok());
    auto pkey = card_b->private_key(key->id);  // libp11's slot list comes into play
    ASSERT_TRUE(pkey.is_ok()) << pkey.status().message();
    EVP_PKEY_free(*pkey);
  }  // card_b goes away: the shared module stays, card_a keeps its session and login
  auto contents = card_a->read_contents(TransportCertificateRule::defaults());
  ASSERT_TRUE(contents.is_ok()) << contents.status().message();
  EXPECT_TRUE(contents->logged_in);
  auto key = card_a->generate_key(parse_key_algorithm("EC:secp256r1").value(), "a/1", "a");
  EXPECT_TRUE(key.is_ok()) << key.status().message();
}

TEST_F(CardTest, CardsOnSeveralThreadsAtOnce) {
  constexpr int kCards = 3;
  std::vector<SoftHsm::Token> tokens;
  for (int i = 0; i < kCards; ++i)
    tokens.push_back(hsm_.create_token("Thread " + std::to_string(i)));
  std::vector<std::unique_ptr<Card>> cards;
  for (const auto& t : tokens) {
    cards.push_back(open_logged_in(t));
    ASSERT_TRUE(cards.back());
  }
  std::vector<std::string> errors(kCards);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCards; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 4; ++k) {
        const std::string idem = "thread/" + std::to_string(i) + "/" + std::to_string(k);
        auto key = cards[i]->generate_key(parse_key_algorithm("EC:secp256r1").value(), idem, idem);
        if (!key.is_ok()) {
          errors[i] = key.status().message();
          return;
        }
        auto csr = cards[i]->make_csr(key->id, "CN=" + idem);
        if (!csr.is_ok()) {
          errors[i] = csr.status().message();
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kCards; ++i) {
    EXPECT_EQ(errors[i], "") << "card " << i;
    auto contents = cards[i]->read_contents(TransportCertificateRule::defaults());
    ASSERT_TRUE(contents.is_ok());
    EXPECT_EQ(contents->keys.size(), 4u);
  }
}

}  // namespace
}  // namespace persoflow::devices
