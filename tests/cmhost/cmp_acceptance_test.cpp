// Acceptance of the CM host's CMP service against the real server process: `openssl cmp` as the
// outside client (ir, cr, p10cr, certConf, rr, and the CRL from GET /crl checked with
// `openssl verify -crl_check`), refusals with their reasons, exactly-once answers (same
// transactionID, and a server killed between issuing and answering), server-side key generation
// and recovery, and the CSR checks of p10cr.
#include <openssl/pem.h>

#include "cmp_fixture.hpp"
#include "persoflow/protocol/cm_info_types.hpp"
#include "persoflow/protocol/https_client.hpp"

#include <nlohmann/json.hpp>

namespace persoflow::testing {
namespace {

using json = nlohmann::json;

TEST(CmpAcceptance, OpensslCmpIssuesByIrCrP10crConfirmsAndRevokes) {
  CmDir cm;
  CmServer server(cm.dir());
  const auto port = server.port_number();

  // ir, cr and p10cr, each confirmed by certConf.
  auto k1 = genkey(cm, "k1.pem");
  auto ir = openssl_cmp(cm, port, &cm.officer,
                        {"-cmd", "ir", "-newkey", k1, "-subject", "/CN=Alice IR/O=Example",
                         "-certout", cm.file("ir.pem")});
  ASSERT_EQ(ir.exit_code, 0) << ir.output;
  auto k2 = genkey(cm, "k2.pem");
  auto cr = openssl_cmp(cm, port, &cm.officer,
                        {"-cmd", "cr", "-newkey", k2, "-subject", "/CN=Alice CR", "-certout",
                         cm.file("cr.pem")},
                        ".well-known/cmp/p/smartcard-auth");
  ASSERT_EQ(cr.exit_code, 0) << cr.output;
  auto k3 = genkey(cm, "k3.pem");
  auto req = run({"openssl", "req", "-new", "-key", k3, "-subj", "/CN=Alice P10", "-out",
                  cm.file("p10.csr")});
  ASSERT_EQ(req.exit_code, 0) << req.err;
  auto p10 = openssl_cmp(cm, port, &cm.officer,
                         {"-cmd", "p10cr", "-csr", cm.file("p10.csr"), "-certout",
                          cm.file("p10.pem")});
  ASSERT_EQ(p10.exit_code, 0) << p10.output;

  auto host = cm.open_host();
  for (const char* name : {"ir.pem", "cr.pem", "p10.pem"}) {
    auto v = run({"openssl", "verify", "-CAfile", cm.ca_pem(), cm.file(name)});
    EXPECT_EQ(v.exit_code, 0) << name << ": " << v.out << v.err;
    auto record = host->certificate(serial_of(cm.file(name)));
    ASSERT_TRUE(record.has_value()) << name;
    EXPECT_EQ(record->status, storage::CertStatus::kValid) << name << " published after certConf";
  }
  EXPECT_EQ(host->certificate(serial_of(cm.file("cr.pem")))->procedure, "smartcard-auth");

  auto crl1 = fetch_crl_pem(cm, port, "crl1");
  auto ok = verify_with_crl(cm, crl1, cm.file("ir.pem"));
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;

  auto rr = openssl_cmp(cm, port, &cm.officer,
                        {"-cmd", "rr", "-oldcert", cm.file("ir.pem"), "-revreason", "1"});
  ASSERT_EQ(rr.exit_code, 0) << rr.output;
  auto crl2 = fetch_crl_pem(cm, port, "crl2");
  auto revoked = verify_with_crl(cm, crl2, cm.file("ir.pem"));
  EXPECT_NE(revoked.exit_code, 0);
  EXPECT_NE((revoked.out + revoked.err).find("revoked"), std::string::npos)
      << revoked.out << revoked.err;
  auto record = host->certificate(serial_of(cm.file("ir.pem")));
  EXPECT_EQ(record->status, storage::CertStatus::kRevoked);
  EXPECT_EQ(record->revocation_reason, 1);
  // A second rr of the same certificate is refused with its reason.
  auto again = openssl_cmp(cm, port, &cm.officer,
                           {"-cmd", "rr", "-oldcert", cm.file("ir.pem"), "-revreason", "1"});
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.output.find("revoked"), std::string::npos) << again.output;
  EXPECT_EQ(server.stop(), 0);
}

// Each refusal names its reason to the client and leaves an audit record.
TEST(CmpAcceptance, RefusesUnprotectedForeignRevokedAndUnauthorisedRequests) {
  CmDir cm;
  auto revoked = cm.add_officer("bob", {"issue", "recover"});
  auto recover_only = cm.add_officer("rita", {"recover"});
  {
    auto host = cm.open_host();
    ASSERT_TRUE(host->revoke_officer("bob", "test").is_ok());
  }
  // A self-signed certificate, and one from a foreign CA.
  ASSERT_EQ(run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=self", "-keyout",
                 cm.file("self-key.pem"), "-out", cm.file("self.pem"), "-days", "2"})
                .exit_code,
            0);
  ASSERT_EQ(run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=persoflow CA/O=persoflow",
                 "-keyout", cm.file("foreign-ca-key.pem"), "-out", cm.file("foreign-ca.pem"),
                 "-days", "2"})
                .exit_code,
            0);
  ASSERT_EQ(run({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-subj", "/CN=officer", "-keyout", cm.file("foreign-key.pem"), "-out",
                 cm.file("foreign.csr")})
                .exit_code,
            0);
  ASSERT_EQ(run({"openssl", "x509", "-req", "-in", cm.file("foreign.csr"), "-CA",
                 cm.file("foreign-ca.pem"), "-CAkey", cm.file("foreign-ca-key.pem"),
                 "-CAcreateserial", "-out", cm.file("foreign.pem"), "-days", "2"})
                .exit_code,
            0);
  OfficerFiles self{"", "", cm.file("self-key.pem"), cm.file("self.pem"), {}};
  OfficerFiles foreign{"", "", cm.file("foreign-key.pem"), cm.file("foreign.pem"), {}};

  CmServer server(cm.dir());
  const auto port = server.port_number();
  auto key = genkey(cm, "k.pem");
  std::vector<std::string> ir = {"-cmd", "ir", "-newkey", key, "-subject", "/CN=Mallory",
                                 "-certout", cm.file("mallory.pem")};

  auto none = openssl_cmp(cm, port, nullptr, [&] {
    auto a = ir;
    a.insert(a.end(), {"-unprotected_requests"});
    return a;
  }());
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.output.find("protection"), std::string::npos) << none.output;

  auto self_signed = openssl_cmp(cm, port, &self, ir);
  EXPECT_NE(self_signed.exit_code, 0);
  EXPECT_NE(self_signed.output.find("rejection"), std::string::npos) << self_signed.output;

  auto foreign_ca = openssl_cmp(cm, port, &foreign, ir);
  EXPECT_NE(foreign_ca.exit_code, 0);
  EXPECT_NE(foreign_ca.output.find("rejection"), std::string::npos) << foreign_ca.output;

  auto by_revoked = openssl_cmp(cm, port, &revoked, ir);
  EXPECT_NE(by_revoked.exit_code, 0);
  EXPECT_NE(by_revoked.output.find("revoked"), std::string::npos) << by_revoked.output;

  auto no_role = openssl_cmp(cm, port, &recover_only, ir);
  EXPECT_NE(no_role.exit_code, 0);
  EXPECT_NE(no_role.output.find("lacks the role 'issue'"), std::string::npos) << no_role.output;

  // The refusals the CM host itself decided are in its audit log.
  auto host = cm.open_host();
  auto audit = host->store().audit_records(1, 0);
  ASSERT_TRUE(audit.is_ok());
  int refusals = 0;
  bool saw_role = false;
  bool saw_revoked = false;
  for (const auto& r : *audit) {
    if (r.action != "refuse") continue;
    ++refusals;
    saw_role |= r.detail.find("lacks the role") != std::string::npos;
    saw_revoked |= r.detail.find("revoked") != std::string::npos;
  }
  EXPECT_GE(refusals, 2);
  EXPECT_TRUE(saw_role);
  EXPECT_TRUE(saw_revoked);
  // Nothing was issued to Mallory.
  storage::CertQuery q;
  q.subject = "Mallory";
  q.subject_substring = true;
  EXPECT_TRUE(host->store().find_certificates(q)->empty());
  EXPECT_TRUE(server.alive());
}

TEST(CmpAcceptance, SameTransactionIdGetsTheSameCertificate) {
  CmDir cm;
  CmServer server(cm.dir());
  auto key = ec_key();
  std::string first_request;
  auto client = cm.client(server.port_number(), cm.officer);
  client->on_request_sent([&](const std::string& der) {
    if (first_request.empty()) first_request = der;
  });
  protocol::CertRequest req;
  req.subject = "/CN=Dora";
  req.key = key.get();
  auto first = client->enroll(req);
  ASSERT_TRUE(first.is_ok()) << first.status().message();

  // The saved ir sent again, byte for byte: the stored answer, the same certificate.
  auto again = cm.client(server.port_number(), cm.officer);
  again->resend_next(first_request);
  auto second = again->enroll(req);
  ASSERT_TRUE(second.is_ok()) << second.status().message();
  EXPECT_EQ(second->serial_hex, first->serial_hex);
  EXPECT_EQ(second->transaction_id, first->transaction_id);
  auto raw1 = again->post_der(first_request);
  auto raw2 = again->post_der(first_request);
  ASSERT_TRUE(raw1.is_ok());
  EXPECT_EQ(*raw1, *raw2);

  // The same transactionID with another request is refused.
  auto other_key = ec_key();
  protocol::CertRequest other;
  other.subject = "/CN=Eve";
  other.key = other_key.get();
  other.transaction_id = first->transaction_id;
  auto third = cm.client(server.port_number(), cm.officer)->enroll(other);
  ASSERT_FALSE(third.is_ok());
  EXPECT_NE(third.status().message().find("reused with a different request"), std::string::npos)
      << third.status().message();

  auto host = cm.open_host();
  storage::CertQuery q;
  q.subject = "CN=Dora";
  EXPECT_EQ(host->store().find_certificates(q)->size(), 1u);
  q.subject = "CN=Eve";
  EXPECT_TRUE(host->store().find_certificates(q)->empty());
}

TEST(CmpAcceptance, KilledBetweenIssuingAndAnsweringGivesTheSameCertificateOnRetry) {
  CmDir cm;
  std::string saved;
  auto key = ec_key();
  protocol::CertRequest req;
  req.subject = "/CN=Crash Test";
  req.key = key.get();
  {
    CmServer server(cm.dir(), "127.0.0.1:0",
                    {"PERSOFLOW_CRASH_AT=cm.after_issue_before_answer:1"});
    auto client = cm.client(server.port_number(), cm.officer);
    client->on_request_sent([&](const std::string& der) {
      if (saved.empty()) saved = der;  // persisted before sending, as the station does
    });
    auto lost = client->enroll(req);
    EXPECT_FALSE(lost.is_ok());
    EXPECT_EQ(server.wait_exit(20), 128 + SIGKILL);
  }
  ASSERT_FALSE(saved.empty());
  std::string serial_before;
  {
    auto host = cm.open_host();
    storage::CertQuery q;
    q.subject = "CN=Crash Test";
    auto found = host->store().find_certificates(q);
    ASSERT_EQ(found->size(), 1u);
    serial_before = found->front().serial_hex;
    EXPECT_EQ(found->front().status, storage::CertStatus::kPending);
  }
  CmServer restarted(cm.dir());
  auto client = cm.client(restarted.port_number(), cm.officer);
  client->resend_next(saved);
  auto retry = client->enroll(req);
  ASSERT_TRUE(retry.is_ok()) << retry.status().message();
  EXPECT_EQ(retry->serial_hex, serial_before);
  auto host = cm.open_host();
  storage::CertQuery q;
  q.subject = "CN=Crash Test";
  auto found = host->store().find_certificates(q);
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ(found->front().status, storage::CertStatus::kValid);
}

TEST(CmpAcceptance, KurUpdatesACertificateWithANewKey) {
  CmDir cm;
  CmServer server(cm.dir());
  auto client = cm.client(server.port_number(), cm.officer, /*implicit_confirm=*/true);
  auto old_key = ec_key();
  protocol::CertRequest ir;
  ir.subject = "/CN=Frank/O=Example";
  ir.key = old_key.get();
  auto first = client->enroll(ir);
  ASSERT_TRUE(first.is_ok()) << first.status().message();
  auto new_key = ec_key();
  protocol::CertRequest kur;
  kur.type = protocol::CertRequestType::kKur;
  kur.key = new_key.get();
  kur.old_cert = first->cert.get();
  auto updated = client->enroll(kur);
  ASSERT_TRUE(updated.is_ok()) << updated.status().message();
  EXPECT_NE(updated->serial_hex, first->serial_hex);
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(updated->cert.get()),
                          X509_get_subject_name(first->cert.get())),
            0);
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(updated->cert.get()), new_key.get()), 1);
  // With implicit confirmation both are published at once.
  auto host = cm.open_host();
  EXPECT_EQ(host->certificate(updated->serial_hex)->status, storage::CertStatus::kValid);
}

TEST(CmpAcceptance, ServerGeneratedKeyIsRecoveredAndOnlyTheRequesterDecryptsIt) {
  CmDir cm;
  auto other = cm.add_officer("olga", {"issue"});
  auto recoverer = cm.add_officer("rita", {"recover"});
  CmServer server(cm.dir());
  auto client = cm.client(server.port_number(), cm.officer);

  auto list = client->general_message({{protocol::kOidProcedureList, "{}"}});
  ASSERT_TRUE(list.is_ok()) << list.status().message();
  ASSERT_EQ(list->size(), 1u);
  auto procedures = json::parse(list->front().value);
  EXPECT_FALSE(procedures["certificate_procedures"].empty());

  auto generated = client->general_message(
      {{protocol::kOidServerKeygen,
        json{{"key_procedure", "archive-encryption"}, {"subject", "CN=Carol,O=Example"}}.dump()}});
  ASSERT_TRUE(generated.is_ok()) << generated.status().message();
  auto g = json::parse(generated->front().value);
  std::string envelope = unbase64(g["envelope"].get<std::string>());
  auto cert = protocol::x509_from_der(unbase64(g["certificate"].get<std::string>()));
  ASSERT_TRUE(cert.is_ok());

  auto opened = cmhost::open_envelope(envelope, cm.officer.credentials.cert.get(),
                                      cm.officer.credentials.key.get());
  ASSERT_TRUE(opened.is_ok()) << opened.status().message();
  auto original = private_key_of(*opened);
  ASSERT_TRUE(original);
  EXPECT_EQ(EVP_PKEY_eq(original.get(), X509_get0_pubkey(cert->get())), 1);
  // Another officer's key does not open it.
  EXPECT_FALSE(cmhost::open_envelope(envelope, other.credentials.cert.get(),
                                     other.credentials.key.get())
                   .is_ok());

  // Search by serial, by decimal certificate ID and by subject.
  auto rita = cm.client(server.port_number(), recoverer);
  for (const json& search : {json{{"serial", g["serial"]}}, json{{"cert_id", g["cert_id"]}},
                             json{{"subject", "Carol"}, {"substring", true}}}) {
    auto found = rita->general_message({{protocol::kOidKeySearch, search.dump()}});
    ASSERT_TRUE(found.is_ok()) << found.status().message();
    auto keys = json::parse(found->front().value)["keys"];
    ASSERT_EQ(keys.size(), 1u) << search.dump();
    EXPECT_EQ(keys[0]["serial"], g["serial"]);
  }
  // A recovery-only officer recovers (reusing the certificate) for its own key...
  auto recovered = rita->general_message(
      {{protocol::kOidKeyRecovery,
        json{{"search", {{"serial", g["serial"]}}}, {"key_procedure", "recover-last-reuse"}}
            .dump()}});
  ASSERT_TRUE(recovered.is_ok()) << recovered.status().message();
  auto keys = json::parse(recovered->front().value)["keys"];
  ASSERT_EQ(keys.size(), 1u);
  std::string envelope2 = unbase64(keys[0]["envelope"].get<std::string>());
  auto opened2 = cmhost::open_envelope(envelope2, recoverer.credentials.cert.get(),
                                       recoverer.credentials.key.get());
  ASSERT_TRUE(opened2.is_ok()) << opened2.status().message();
  auto again = private_key_of(*opened2);
  ASSERT_TRUE(again);
  EXPECT_EQ(EVP_PKEY_eq(again.get(), original.get()), 1);
  EXPECT_FALSE(cmhost::open_envelope(envelope2, cm.officer.credentials.cert.get(),
                                     cm.officer.credentials.key.get())
                   .is_ok());
  // ...but may not have the CM host generate keys (Issue certificate role).
  auto refused = rita->general_message(
      {{protocol::kOidServerKeygen,
        json{{"key_procedure", "archive-encryption"}, {"subject", "CN=Nope"}}.dump()}});
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("lacks the role 'issue'"), std::string::npos)
      << refused.status().message();
  // An officer without the recover role may not search.
  auto olga = cm.client(server.port_number(), other);
  auto denied = olga->general_message({{protocol::kOidKeySearch, json{{"cert_id", 1}}.dump()}});
  ASSERT_FALSE(denied.is_ok());
  EXPECT_NE(denied.status().message().find("lacks the role 'recover'"), std::string::npos)
      << denied.status().message();
}

// p10cr requests whose CSR the procedure refuses: each with its own message.
TEST(CmpAcceptance, P10crRefusalsNameTheirReason) {
  CmDir cm;
  CmServer server(cm.dir());
  auto client = cm.client(server.port_number(), cm.officer);
  auto make_csr = [](EVP_PKEY* key, const std::string& subject) {
    protocol::X509ReqPtr csr(X509_REQ_new());
    X509_REQ_set_version(csr.get(), 0);
    auto name = cmhost::parse_name(subject);
    X509_REQ_set_subject_name(csr.get(), name->get());
    X509_REQ_set_pubkey(csr.get(), key);
    X509_REQ_sign(csr.get(), key, EVP_sha256());
    return csr;
  };
  auto enroll = [&](X509_REQ* csr, const std::string& procedure = {}) {
    protocol::CertRequest r;
    r.type = protocol::CertRequestType::kP10cr;
    r.csr = csr;
    r.procedure = procedure;
    return client->enroll(r);
  };
  auto good = ec_key();
  auto ok = enroll(make_csr(good.get(), "CN=Good").get());
  ASSERT_TRUE(ok.is_ok()) << ok.status().message();

  auto no_cn = enroll(make_csr(good.get(), "O=Example").get());
  ASSERT_FALSE(no_cn.is_ok());
  EXPECT_NE(no_cn.status().message().find("missing required subject field 'CN'"), std::string::npos)
      << no_cn.status().message();

  protocol::EvpPkeyPtr rsa1024(EVP_RSA_gen(1024));
  auto small = enroll(make_csr(rsa1024.get(), "CN=Small").get());
  ASSERT_FALSE(small.is_ok());
  EXPECT_NE(small.status().message().find("key too small"), std::string::npos)
      << small.status().message();

  auto bad_sig = make_csr(good.get(), "CN=Bad Signature");
  const ASN1_BIT_STRING* sig = nullptr;
  X509_REQ_get0_signature(bad_sig.get(), &sig, nullptr);
  const_cast<unsigned char*>(ASN1_STRING_get0_data(sig))[10] ^= 0x55;
  auto bad = enroll(bad_sig.get());
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("signature"), std::string::npos) << bad.status().message();

  // A CSR whose public key is not a valid key (an EC point off the curve).
  auto malformed_csr = make_csr(good.get(), "CN=Malformed");
  unsigned char* der = nullptr;
  int len = i2d_X509_REQ(malformed_csr.get(), &der);
  std::string bytes(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  auto point = bytes.find(std::string("\x03\x42\x00\x04", 4));
  ASSERT_NE(point, std::string::npos);
  bytes[point + 4] = static_cast<char>(bytes[point + 4] ^ 0x01);
  bytes[point + 40] = static_cast<char>(bytes[point + 40] ^ 0x01);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  protocol::X509ReqPtr malformed(d2i_X509_REQ(nullptr, &p, static_cast<long>(bytes.size())));
  ASSERT_TRUE(malformed);
  auto broken = enroll(malformed.get());
  ASSERT_FALSE(broken.is_ok());
  EXPECT_NE(broken.status().message().find("CSR"), std::string::npos) << broken.status().message();
  EXPECT_TRUE(server.alive());
}

}  // namespace
}  // namespace persoflow::testing
