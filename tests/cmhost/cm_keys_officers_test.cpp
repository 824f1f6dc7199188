// Officers (officer_for accepts only this CA's, known, unrevoked officers) and key archive and
// recovery: the recovered key is the archived one, and only the requester's key opens the
// envelope (checked with `openssl cms -decrypt`).
#include <sqlite3.h>

#include "cm_fixture.hpp"

namespace persoflow::cmhost::testing {
namespace {

TEST_F(CmHostTest, OfficerForAcceptsTheOfficerAndRefusesOthers) {
  Credential alice = officer();
  ASSERT_NE(alice.cert, nullptr);
  auto o = host().officer_for(alice.cert.get());
  ASSERT_TRUE(o.is_ok()) << o.status().to_string();
  EXPECT_EQ(o->name, "alice");
  EXPECT_TRUE(o->has_role(kRoleIssue));
  EXPECT_TRUE(o->has_role(kRoleRecover));
  EXPECT_FALSE(host().procedures_for(*o).empty());

  // A certificate of this CA that is not an officer's.
  auto user = issue("softtoken", "CN=Not An Officer", "EC:secp256r1");
  auto not_officer = host().officer_for(user.certificate.get());
  EXPECT_EQ(not_officer.status().code(), Errc::kPermissionDenied);
  EXPECT_NE(not_officer.status().message().find("is not an officer certificate"), std::string::npos);

  // A certificate of another CA with the same subject as the officer.
  TempDir other;
  InitOptions opts;
  opts.officer = "alice";
  opts.officer_password = "x-secret";
  opts.archive_key_algorithm = "EC:secp256r1";
  ASSERT_TRUE(CmHost::init(other.file("cm"), opts).is_ok());
  Credential foreign = read_p12(other.file("cm/officers/alice.p12"), "x-secret");
  auto refused = host().officer_for(foreign.cert.get());
  EXPECT_EQ(refused.status().code(), Errc::kPermissionDenied);
  EXPECT_NE(refused.status().message().find("was not issued by this CA"), std::string::npos)
      << refused.status().message();

  // A recovery-only officer sees only the procedures that need no issue role.
  auto bob = host().add_officer("bob", {kRoleRecover}, std::string("bob-secret"), "alice");
  ASSERT_TRUE(bob.is_ok()) << bob.status().to_string();
  EXPECT_TRUE(host().procedures_for(bob->officer).empty());
  EXPECT_EQ(host().add_officer("bob", {kRoleIssue}, std::nullopt, "alice").status().code(), Errc::kAlreadyExists);
  EXPECT_EQ(host().add_officer("../evil", {kRoleIssue}, std::nullopt, "alice").status().code(),
            Errc::kInvalidArgument);
  EXPECT_EQ(host().add_officer("carol", {"admin"}, std::nullopt, "alice").status().code(), Errc::kInvalidArgument);

  Credential bob_cred = read_p12(bob->p12_path, "bob-secret");
  ASSERT_TRUE(host().officer_for(bob_cred.cert.get()).is_ok());
  ASSERT_TRUE(host().revoke_officer("bob", "alice").is_ok());
  auto revoked = host().officer_for(bob_cred.cert.get());
  EXPECT_EQ(revoked.status().code(), Errc::kPermissionDenied);
  EXPECT_EQ(revoked.status().message(), "officer 'bob' is revoked");
  EXPECT_EQ(host().revoke_officer("bob", "alice").code(), Errc::kAlreadyExists);
  EXPECT_EQ(host().revoke_officer("nobody", "alice").code(), Errc::kNotFound);
  // The officer's certificate is revoked too, so it appears on the CRL.
  EXPECT_EQ(host().certificate(bob->officer.cert_serial_hex)->status, storage::CertStatus::kRevoked);

  // An officer whose certificate alone was revoked is refused as well.
  auto carol = host().add_officer("carol", {kRoleIssue}, std::string("carol-secret"), "alice");
  ASSERT_TRUE(carol.is_ok());
  ASSERT_TRUE(host().revoke(carol->officer.cert_serial_hex, 1, "alice").is_ok());
  auto carol_refused = host().officer_for(read_p12(carol->p12_path, "carol-secret").cert.get());
  EXPECT_NE(carol_refused.status().message().find("is revoked"), std::string::npos);
}

// Opens a DER envelope with `openssl cms -decrypt`; returns the exit code and writes the PKCS#8
// key it holds to out_path.
RunResult cms_decrypt(const std::string& envelope_path, const std::string& cert_path, const std::string& key_path,
                      const std::string& out_path) {
  return run({"openssl", "cms", "-decrypt", "-inform", "DER", "-in", envelope_path, "-recip", cert_path, "-inkey",
              key_path, "-binary", "-out", out_path});
}

std::string spki_of_pkcs8_file(const std::string& path) {
  auto r = run({"openssl", "pkey", "-inform", "DER", "-in", path, "-pubout", "-outform", "PEM"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

std::string spki_of_cert(const X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PUBKEY(bio.get(), X509_get0_pubkey(cert));
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

TEST_F(CmHostTest, GeneratedKeyIsArchivedAndRecoveredForTheRequesterOnly) {
  Credential alice = officer();
  std::string alice_cert = write_file(file("alice.pem"), to_pem(alice.cert.get()));
  std::string alice_key = write_file(file("alice-key.pem"), key_pem(alice.key.get()));

  GenerateArchiveRequest g;
  g.procedure = "smartcard-encrypt";
  g.subject = make_name("CN=Archive User,O=Example");
  g.requester = "alice";
  g.recipient = share(alice.cert.get());
  g.idempotency_key = "tx-gen/0";
  g.confirmed = true;
  auto gen = host().generate_and_archive(std::move(g));
  ASSERT_TRUE(gen.is_ok()) << gen.status().to_string();
  EXPECT_EQ(openssl_verify(gen->certificate.certificate.get()).exit_code, 0);
  std::string cert_spki = spki_of_cert(gen->certificate.certificate.get());

  // The requester's key opens the envelope, and the key in it belongs to the certificate.
  std::string env = write_file(file("gen.env.der"), gen->envelope_der);
  auto dec = cms_decrypt(env, alice_cert, alice_key, file("gen.key.der"));
  ASSERT_EQ(dec.exit_code, 0) << dec.err;
  EXPECT_EQ(spki_of_pkcs8_file(file("gen.key.der")), cert_spki);
  // Another key does not.
  auto other_key = make_key("EC:secp256r1");
  auto other = issue("softtoken", "CN=Someone Else", "EC:secp256r1");
  std::string other_cert = write_file(file("other.pem"), to_pem(other.certificate.get()));
  std::string other_key_path = write_file(file("other-key.pem"), key_pem(other_key.get()));
  EXPECT_NE(cms_decrypt(env, other_cert, other_key_path, file("x.der")).exit_code, 0);
  EXPECT_NE(cms_decrypt(env, alice_cert, other_key_path, file("y.der")).exit_code, 0);

  // A retry with the same idempotency key: the same certificate and key, no second archive.
  GenerateArchiveRequest again;
  again.procedure = "smartcard-encrypt";
  again.subject = make_name("CN=Archive User,O=Example");
  again.recipient = share(alice.cert.get());
  again.idempotency_key = "tx-gen/0";
  auto replay = host().generate_and_archive(std::move(again));
  ASSERT_TRUE(replay.is_ok()) << replay.status().to_string();
  EXPECT_EQ(replay->certificate.serial_hex, gen->certificate.serial_hex);
  EXPECT_EQ(replay->key_id, gen->key_id);
  auto found = host().search_keys(KeySearch{std::nullopt, std::nullopt, std::string("CN=Archive User,O=Example")});
  ASSERT_TRUE(found.is_ok());
  EXPECT_EQ(found->size(), 1u);

  // Search by hexadecimal serial (any spelling), by decimal certificate ID, by subject.
  std::string lower = gen->certificate.serial_hex;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  auto by_serial = host().search_keys(KeySearch{"0x" + lower, std::nullopt, std::nullopt});
  ASSERT_TRUE(by_serial.is_ok());
  ASSERT_EQ(by_serial->size(), 1u);
  EXPECT_EQ(by_serial->front().key_id, gen->key_id);
  auto by_id = host().search_keys(KeySearch{std::nullopt, gen->certificate.cert_id, std::nullopt});
  ASSERT_EQ(by_id->size(), 1u);
  KeySearch sub;
  sub.subject = "Archive User";
  sub.subject_substring = true;
  EXPECT_EQ(host().search_keys(sub)->size(), 1u);
  EXPECT_EQ(host().search_keys(KeySearch{}).status().code(), Errc::kInvalidArgument);

  // Recover the last key with a new certificate: same public key, new serial, envelope for alice.
  RecoverRequest rec;
  rec.search.serial_hex = gen->certificate.serial_hex;
  rec.scope = "last";
  rec.certificate = "new";
  rec.requester = "alice";
  rec.recipient = share(alice.cert.get());
  rec.idempotency_key = "tx-rec/0";
  rec.confirmed = true;
  auto recovered = host().recover(std::move(rec));
  ASSERT_TRUE(recovered.is_ok()) << recovered.status().to_string();
  ASSERT_EQ(recovered->size(), 1u);
  const RecoveredKey& rk = recovered->front();
  EXPECT_NE(rk.certificate.serial_hex, gen->certificate.serial_hex);
  EXPECT_EQ(spki_of_cert(rk.certificate.certificate.get()), cert_spki);
  std::string renv = write_file(file("rec.env.der"), rk.envelope_der);
  ASSERT_EQ(cms_decrypt(renv, alice_cert, alice_key, file("rec.key.der")).exit_code, 0);
  EXPECT_EQ(spki_of_pkcs8_file(file("rec.key.der")), cert_spki);
  EXPECT_EQ(read_file(file("rec.key.der")), read_file(file("gen.key.der"))) << "the very same private key";
  EXPECT_NE(cms_decrypt(renv, other_cert, other_key_path, file("z.der")).exit_code, 0);

  // Reuse the old certificate.
  RecoverRequest reuse;
  reuse.search.cert_id = gen->certificate.cert_id;
  reuse.certificate = "reuse";
  reuse.recipient = share(alice.cert.get());
  auto reused = host().recover(std::move(reuse));
  ASSERT_TRUE(reused.is_ok()) << reused.status().to_string();
  ASSERT_EQ(reused->size(), 1u);
  EXPECT_EQ(reused->front().certificate.serial_hex, gen->certificate.serial_hex);

  RecoverRequest none;
  none.search.serial_hex = "0BADC0DE";
  none.recipient = share(alice.cert.get());
  EXPECT_EQ(host().recover(std::move(none)).status().code(), Errc::kNotFound);
}

TEST_F(CmHostTest, RaGeneratedKeyIsArchivedAndAllKeysOfAUserRecovered) {
  Credential alice = officer();
  // Two encryption keys of the same user: one generated by the RA and archived, one by the host.
  auto ra_key = make_key("RSA:2048");
  IssueRequest r;
  r.procedure = "smartcard-encrypt";
  r.subject = make_name("CN=Two Keys,O=Example");
  r.public_key = share(ra_key.get());
  r.confirmed = true;
  auto c1 = host().issue(std::move(r));
  ASSERT_TRUE(c1.is_ok()) << c1.status().to_string();
  auto wrong = make_key("RSA:2048");
  auto mismatch = host().archive_key(c1->serial_hex, wrong.get(), "alice");
  EXPECT_EQ(mismatch.status().code(), Errc::kRejected);
  EXPECT_NE(mismatch.status().message().find("does not match"), std::string::npos);
  // Parsed from DER: a certificate built in-process may still hold the private key it was made from.
  auto parsed = x509_from_der(c1->der);
  ASSERT_TRUE(parsed.is_ok());
  auto public_only = share(X509_get0_pubkey(parsed->get()));
  EXPECT_FALSE(host().archive_key(c1->serial_hex, public_only.get(), "alice").is_ok());
  auto k1 = host().archive_key(c1->serial_hex, ra_key.get(), "alice", "tx-arch/0");
  ASSERT_TRUE(k1.is_ok()) << k1.status().to_string();
  auto k1_again = host().archive_key(c1->serial_hex, ra_key.get(), "alice", "tx-arch/0");
  ASSERT_TRUE(k1_again.is_ok());
  EXPECT_EQ(*k1_again, *k1);

  GenerateArchiveRequest g;
  g.procedure = "smartcard-encrypt";
  g.subject = make_name("CN=Two Keys,O=Example");
  g.recipient = share(alice.cert.get());
  g.confirmed = true;
  auto gen = host().generate_and_archive(std::move(g));
  ASSERT_TRUE(gen.is_ok()) << gen.status().to_string();

  // Searching by the first certificate's serial with scope "all" finds both keys of the user.
  RecoverRequest all;
  all.search.serial_hex = c1->serial_hex;
  all.scope = "all";
  all.certificate = "reuse";
  all.recipient = share(alice.cert.get());
  auto both = host().recover(std::move(all));
  ASSERT_TRUE(both.is_ok()) << both.status().to_string();
  ASSERT_EQ(both->size(), 2u);
  EXPECT_EQ(both->at(0).certificate.serial_hex, c1->serial_hex);
  EXPECT_EQ(both->at(1).certificate.serial_hex, gen->certificate.serial_hex);
  auto opened = open_envelope(both->at(0).envelope_der, alice.cert.get(), alice.key.get());
  ASSERT_TRUE(opened.is_ok()) << opened.status().to_string();
  const unsigned char* p = reinterpret_cast<const unsigned char*>(opened->data());
  EvpPkeyPtr back(d2i_AutoPrivateKey(nullptr, &p, static_cast<long>(opened->size())));
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(EVP_PKEY_eq(back.get(), ra_key.get()), 1);
  auto other = make_key("EC:secp256r1");
  EXPECT_EQ(open_envelope(both->at(0).envelope_der, alice.cert.get(), other.get()).status().code(),
            Errc::kPermissionDenied);

  RecoverRequest bad;
  bad.search.serial_hex = c1->serial_hex;
  bad.scope = "some";
  bad.recipient = share(alice.cert.get());
  EXPECT_EQ(host().recover(std::move(bad)).status().code(), Errc::kInvalidArgument);
}

TEST_F(CmHostTest, AuditLogIsChainedAndTamperingIsFound) {
  issue("softtoken", "CN=Audit User", "EC:secp256r1");
  ASSERT_TRUE(host().audit("alice", "note", "a line for the auditor").is_ok());
  auto report = host().store().verify_audit();
  ASSERT_TRUE(report.is_ok());
  EXPECT_TRUE(report->intact) << report->reason;
  EXPECT_GE(report->records_checked, 4u);  // init, officer-add, issue, note
  auto records = host().store().audit_records(0, 0);
  ASSERT_TRUE(records.is_ok());
  bool saw_init = false, saw_issue = false;
  for (const auto& r : *records) {
    saw_init |= r.action == "init";
    saw_issue |= r.action == "issue" && r.detail.find("CN=Audit User") != std::string::npos;
  }
  EXPECT_TRUE(saw_init);
  EXPECT_TRUE(saw_issue);
  // The CLI reports the same.
  auto cli = run({persoflow::testing::persoflow_binary(), "cm", "audit", "verify", "--dir", cm_dir()});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_NE(cli.out.find("audit log intact"), std::string::npos);

  // Alter one record behind the host's back: verify names it, the CLI fails.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((cm_dir() + "/cm.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE audit_log SET detail='forged' WHERE seq=2", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto tampered = host().store().verify_audit();
  ASSERT_TRUE(tampered.is_ok());
  EXPECT_FALSE(tampered->intact);
  EXPECT_EQ(tampered->first_bad_seq, 2u);
  auto cli_bad = run({persoflow::testing::persoflow_binary(), "cm", "audit", "verify", "--dir", cm_dir()});
  EXPECT_EQ(cli_bad.exit_code, 1);
  EXPECT_NE(cli_bad.err.find("ALTERED at record 2"), std::string::npos) << cli_bad.err;
}

}  // namespace
}  // namespace persoflow::cmhost::testing

namespace persoflow::cmhost::testing {
namespace {

TEST_F(CmHostTest, TransportCertificatesAreValidatedAgainstTrustedIssuers) {
  auto tc = issue("transport", "CN=Card 0001 TC", "EC:secp256r1");
  EXPECT_TRUE(host().validate_transport_certificate("smartcard-tc", tc.certificate.get()).is_ok());

  auto no_tc = host().validate_transport_certificate("smartcard-standard", tc.certificate.get());
  EXPECT_NE(no_tc.message().find("does not validate transport certificates"), std::string::npos);
  EXPECT_EQ(host().validate_transport_certificate("nope", tc.certificate.get()).code(), Errc::kNotFound);

  auto user = issue("smartcard-auth", "CN=Not A TC", "EC:secp256r1");
  auto not_tc = host().validate_transport_certificate("smartcard-tc", user.certificate.get());
  EXPECT_NE(not_tc.message().find("not a transport procedure"), std::string::npos) << not_tc.message();

  TempDir other;
  InitOptions opts;
  opts.officer_password = "pw-other";
  opts.archive_key_algorithm = "EC:secp256r1";
  ASSERT_TRUE(CmHost::init(other.file("cm"), opts).is_ok());
  Credential foreign = read_p12(other.file("cm/officers/officer.p12"), "pw-other");
  auto untrusted = host().validate_transport_certificate("smartcard-tc", foreign.cert.get());
  EXPECT_EQ(untrusted.code(), Errc::kRejected);
  EXPECT_NE(untrusted.message().find("unable to get local issuer certificate"), std::string::npos)
      << untrusted.message();

  ASSERT_TRUE(host().revoke(tc.serial_hex, 1, "alice").is_ok());
  auto revoked = host().validate_transport_certificate("smartcard-tc", tc.certificate.get());
  EXPECT_NE(revoked.message().find("is revoked"), std::string::npos) << revoked.message();
}

}  // namespace
}  // namespace persoflow::cmhost::testing
