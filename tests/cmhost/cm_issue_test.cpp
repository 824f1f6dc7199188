// Issuance by procedure, checked by outside validators (openssl verify, GnuTLS certtool); request
// checks and CSR validation, each refusal with its own message; confirmation, idempotency,
// revocation and CRLs checked by openssl crl -verify and openssl verify -crl_check.
#include <openssl/x509v3.h>

#include <thread>

#include "cm_fixture.hpp"

namespace persoflow::cmhost::testing {
namespace {

TEST_F(CmHostTest, IssuedCertificatesPassOpensslAndCerttool) {
  for (const auto& [procedure, key] : std::vector<std::pair<std::string, std::string>>{
           {"smartcard-auth", "EC:secp256r1"},
           {"smartcard-sign", "EC:brainpoolP256r1"},
           {"smartcard-encrypt", "RSA:2048"},
           {"softtoken", "EC:secp384r1"},
           {"officer", "EC:secp256r1"},
           {"qualified", "EC:secp256r1"}}) {
    SCOPED_TRACE(procedure);
    std::string subject = procedure == "qualified" ? "CN=Erika Mustermann,C=DE" : "CN=User " + procedure + ",O=Example";
    auto c = issue(procedure, subject, key);
    ASSERT_NE(c.certificate, nullptr);
    auto v = openssl_verify(c.certificate.get());
    EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
    std::string path = file("verify-" + c.serial_hex + ".pem");
    auto t = run({"certtool", "--verify", "--load-ca-certificate", ca_pem(), "--infile", path});
    EXPECT_EQ(t.exit_code, 0) << t.out << t.err;
    EXPECT_NE(t.out.find("Verified"), std::string::npos) << t.out;
    // A 128-bit positive serial: 16 bytes, 32 hex digits.
    EXPECT_EQ(c.serial_hex.size(), 32u);
    EXPECT_EQ(c.status, storage::CertStatus::kValid);
  }
}

TEST_F(CmHostTest, ExtensionsFollowTheProcedure) {
  auto c = issue("smartcard-auth", "CN=Ext User,O=Example", "EC:secp256r1");
  std::string path = write_file(file("ext.pem"), to_pem(c.certificate.get()));
  auto text = run({"openssl", "x509", "-in", path, "-noout", "-text"});
  ASSERT_EQ(text.exit_code, 0);
  EXPECT_NE(text.out.find("CA:FALSE"), std::string::npos);
  EXPECT_NE(text.out.find("X509v3 Subject Key Identifier"), std::string::npos);
  EXPECT_NE(text.out.find("X509v3 Authority Key Identifier"), std::string::npos);
  EXPECT_NE(text.out.find("Digital Signature"), std::string::npos);
  EXPECT_EQ(text.out.find("Key Encipherment"), std::string::npos);
  EXPECT_NE(text.out.find("TLS Web Client Authentication"), std::string::npos);
  EXPECT_NE(text.out.find("Microsoft Smartcard Login"), std::string::npos);
  EXPECT_NE(text.out.find("URI:https://127.0.0.1:8443/crl"), std::string::npos);
  // Validity from the procedure (730 days).
  const ASN1_TIME* nb = X509_get0_notBefore(c.certificate.get());
  const ASN1_TIME* na = X509_get0_notAfter(c.certificate.get());
  int days = 0, secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, nb, na), 1);
  EXPECT_EQ(days, 730);

  auto officer_cert = issue("officer", "CN=Officer Bob", "EC:secp256r1");
  EXPECT_EQ(X509_get_ext_by_NID(officer_cert.certificate.get(), NID_key_usage, -1), -1)
      << "an officer certificate carries no key usage";
}

TEST_F(CmHostTest, QualifiedCertificateCarriesQcStatements) {
  IssueRequest r;
  r.procedure = "qualified";
  r.subject = make_name("CN=Erika Mustermann,C=DE,serialNumber=PNODE-123");
  r.public_key = make_key("EC:secp256r1");
  r.confirmed = true;
  r.qc.types = {"eseal"};
  r.qc.pds = {{"https://127.0.0.1:8443/pds/de", "de"}};
  auto c = host().issue(std::move(r));
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  std::string der_path = write_file(file("qc.der"), c->der);
  // openssl asn1parse finds the extension; -strparse decodes its content.
  auto outer = run({"openssl", "asn1parse", "-inform", "DER", "-in", der_path});
  ASSERT_EQ(outer.exit_code, 0) << outer.err;
  auto at = outer.out.find(":qcStatements");
  ASSERT_NE(at, std::string::npos) << outer.out;
  auto os = outer.out.find("OCTET STRING", at);
  ASSERT_NE(os, std::string::npos);
  auto line_start = outer.out.rfind('\n', os) + 1;
  std::string offset = outer.out.substr(line_start, outer.out.find(':', line_start) - line_start);
  offset.erase(0, offset.find_first_not_of(' '));
  auto inner = run({"openssl", "asn1parse", "-inform", "DER", "-in", der_path, "-strparse", offset});
  ASSERT_EQ(inner.exit_code, 0) << inner.err;
  for (const char* needle : {"0.4.0.1862.1.1", "0.4.0.1862.1.4", "0.4.0.1862.1.6", "0.4.0.1862.1.6.2",
                             "0.4.0.1862.1.5", "IA5STRING         :https://127.0.0.1:8443/pds/de",
                             "PRINTABLESTRING   :de"}) {
    EXPECT_NE(inner.out.find(needle), std::string::npos) << needle << "\n" << inner.out;
  }
  auto t = run({"certtool", "--verify", "--load-ca-certificate", ca_pem(), "--infile",
                write_file(file("qc.pem"), to_pem(c->certificate.get()))});
  EXPECT_EQ(t.exit_code, 0) << t.out << t.err;

  // A value the procedure does not offer is refused.
  IssueRequest bad;
  bad.procedure = "qualified";
  bad.subject = make_name("CN=Erika Mustermann,C=DE");
  bad.public_key = make_key("EC:secp256r1");
  bad.qc.pds = {{"https://elsewhere.example/pds", "en"}};
  auto refused = host().issue(std::move(bad));
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("PDS location https://elsewhere.example/pds (en) is not allowed"),
            std::string::npos)
      << refused.status().message();
}

TEST_F(CmHostTest, EachRequestCheckHasItsOwnMessage) {
  const CertificateProcedure* p = host().procedure("smartcard-auth");
  ASSERT_NE(p, nullptr);
  auto ec = make_key("EC:secp256r1");
  auto missing_cn = host().check_request(*p, make_name("O=Example").get(), ec.get());
  EXPECT_EQ(missing_cn.code(), Errc::kRejected);
  EXPECT_EQ(missing_cn.message(), "procedure 'smartcard-auth': missing required subject field 'CN'");

  auto rsa1024 = make_key("RSA:1024");
  auto small = host().check_request(*p, make_name("CN=A").get(), rsa1024.get());
  EXPECT_EQ(small.message(), "procedure 'smartcard-auth': key too small: RSA-1024 < 2048 required");

  auto dsa = make_key("DSA:1024");
  auto alg = host().check_request(*p, make_name("CN=A").get(), dsa.get());
  EXPECT_EQ(alg.message(), "procedure 'smartcard-auth': key algorithm DSA is not allowed (allowed: RSA, EC)");

  auto p224 = make_key("EC:secp224r1");
  auto curve = host().check_request(*p, make_name("CN=A").get(), p224.get());
  EXPECT_NE(curve.message().find("EC curve secp224r1 is not allowed"), std::string::npos) << curve.message();

  auto extra = host().check_request(*p, make_name("CN=A,title=Boss").get(), ec.get());
  EXPECT_NE(extra.message().find("subject field 'title' is not allowed"), std::string::npos) << extra.message();

  auto ku = host().check_request(*p, make_name("CN=A").get(), ec.get(), {"keyEncipherment"});
  EXPECT_NE(ku.message().find("key usage 'keyEncipherment' is not allowed"), std::string::npos) << ku.message();

  EXPECT_TRUE(host().check_request(*p, make_name("CN=A,O=B").get(), ec.get()).is_ok());
  // DSA is allowed where the softtoken procedure offers it (client.ra-key-generation has DSA:1024).
  EXPECT_TRUE(host().check_request(*host().procedure("softtoken"), make_name("CN=A").get(), dsa.get()).is_ok());

  // issue() applies the same checks, records the refusal in the audit log and issues nothing.
  IssueRequest r;
  r.procedure = "smartcard-auth";
  r.subject = make_name("CN=Too Small");
  r.public_key = share(rsa1024.get());
  r.requester = "alice";
  auto refused = host().issue(std::move(r));
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().message(), small.message());
  auto records = host().store().audit_records(0, 0);
  ASSERT_TRUE(records.is_ok());
  ASSERT_FALSE(records->empty());
  EXPECT_EQ(records->back().action, "refuse");

  IssueRequest unknown;
  unknown.procedure = "no-such";
  unknown.subject = make_name("CN=A");
  unknown.public_key = share(ec.get());
  auto nf = host().issue(std::move(unknown));
  EXPECT_EQ(nf.status().code(), Errc::kNotFound);
}

std::string make_csr(const TempDir& dir, const std::string& subject, bool der) {
  std::string key = dir.file("csr-key.pem");
  std::string out = dir.file(der ? "req.der" : "req.pem");
  auto r = run({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key, "-subj", subject, "-outform", der ? "DER" : "PEM", "-out", out});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return read_file(out);
}

TEST_F(CmHostTest, CsrValidationHasItsOwnMessages) {
  TempDir tmp;
  std::string pem = make_csr(tmp, "/CN=Reissue User/O=Example", false);
  auto ok = host().validate_csr(pem);
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  // openssl req puts CN first; RFC 2253 prints the most significant RDN last.
  EXPECT_EQ(name_to_string(ok->subject.get()), "O=Example,CN=Reissue User");

  std::string der = make_csr(tmp, "/CN=Reissue User", true);
  ASSERT_TRUE(host().validate_csr(der).is_ok());

  auto garbage = host().validate_csr("this is not a certification request");
  ASSERT_FALSE(garbage.is_ok());
  EXPECT_EQ(garbage.status().code(), Errc::kInvalidArgument);
  EXPECT_EQ(garbage.status().message().rfind("CSR is malformed: not a PKCS#10 certification request", 0), 0u)
      << garbage.status().message();
  auto truncated = host().validate_csr(der.substr(0, der.size() / 2));
  EXPECT_EQ(truncated.status().message().rfind("CSR is malformed", 0), 0u) << truncated.status().message();

  // Flip a byte inside the signature (the last bytes of the DER are the signature value).
  std::string bad = der;
  bad[bad.size() - 3] = static_cast<char>(bad[bad.size() - 3] ^ 0x01);
  auto sig = host().validate_csr(bad);
  ASSERT_FALSE(sig.is_ok());
  EXPECT_EQ(sig.status().code(), Errc::kRejected);
  EXPECT_EQ(sig.status().message(), "CSR signature is invalid (proof of possession failed)");

  // A valid CSR reissues under the reissue procedure.
  IssueRequest r;
  r.procedure = "reissue";
  r.subject = std::move(ok->subject);
  r.public_key = std::move(ok->public_key);
  r.confirmed = true;
  auto c = host().issue(std::move(r));
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(openssl_verify(c->certificate.get()).exit_code, 0);
}

TEST_F(CmHostTest, PendingUntilConfirmedAndIdempotent) {
  auto first = issue("softtoken", "CN=Idem User", "EC:secp256r1", false, "tx-0001/0");
  EXPECT_EQ(first.status, storage::CertStatus::kPending);
  EXPECT_FALSE(first.replayed);

  // The same key and the same request: the same certificate, not a second one.
  IssueRequest again;
  again.procedure = "softtoken";
  again.subject = make_name("CN=Idem User");
  again.public_key = share(X509_get0_pubkey(first.certificate.get()));
  again.idempotency_key = "tx-0001/0";
  auto second = host().issue(std::move(again));
  ASSERT_TRUE(second.is_ok()) << second.status().to_string();
  EXPECT_TRUE(second->replayed);
  EXPECT_EQ(second->serial_hex, first.serial_hex);
  EXPECT_EQ(second->der, first.der);

  // The same key with another public key: refused.
  IssueRequest other;
  other.procedure = "softtoken";
  other.subject = make_name("CN=Idem User");
  other.public_key = make_key("EC:secp256r1");
  other.idempotency_key = "tx-0001/0";
  auto third = host().issue(std::move(other));
  ASSERT_FALSE(third.is_ok());
  EXPECT_EQ(third.status().code(), Errc::kRejected);
  EXPECT_NE(third.status().message().find("already used for another request"), std::string::npos);

  storage::CertQuery q;
  q.subject = "CN=Idem User";
  auto rows = host().store().find_certificates(q);
  ASSERT_TRUE(rows.is_ok());
  EXPECT_EQ(rows->size(), 1u);

  ASSERT_TRUE(host().confirm(first.serial_hex, "alice").is_ok());
  EXPECT_EQ(host().certificate(first.serial_hex)->status, storage::CertStatus::kValid);
  ASSERT_TRUE(host().confirm(first.serial_hex, "alice").is_ok()) << "confirming twice is harmless";

  auto rejected = issue("softtoken", "CN=Rejected User", "EC:secp256r1", false);
  ASSERT_TRUE(host().reject(rejected.serial_hex, "alice").is_ok());
  EXPECT_EQ(host().certificate(rejected.serial_hex)->status, storage::CertStatus::kRejected);
  EXPECT_FALSE(host().confirm(rejected.serial_hex, "alice").is_ok());
  EXPECT_FALSE(host().revoke(rejected.serial_hex, 1, "alice").is_ok());
}

TEST_F(CmHostTest, ConcurrentIssuanceWithOneIdempotencyKeyMakesOneCertificate) {
  auto key = make_key("EC:secp256r1");
  std::vector<std::string> serials(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      IssueRequest r;
      r.procedure = "softtoken";
      r.subject = make_name("CN=Race User");
      r.public_key = share(key.get());
      r.idempotency_key = "tx-race/0";
      auto c = host().issue(std::move(r));
      if (c.is_ok()) serials[i] = c->serial_hex;
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& s : serials) EXPECT_EQ(s, serials[0]);
  EXPECT_FALSE(serials[0].empty());
}

int crl_number(const std::string& der) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  X509CrlPtr crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
  if (!crl) return -1;
  ASN1_INTEGER* n = static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, nullptr, nullptr));
  long v = n ? ASN1_INTEGER_get(n) : -1;
  ASN1_INTEGER_free(n);
  return static_cast<int>(v);
}

TEST_F(CmHostTest, RevokedCertificateIsRejectedByCrlCheck) {
  auto c = issue("smartcard-auth", "CN=Revoke Me", "EC:secp256r1");
  auto crl1 = host().crl_der();
  ASSERT_TRUE(crl1.is_ok()) << crl1.status().to_string();
  std::string crl1_path = write_file(file("crl1.der"), *crl1);
  auto crl_verify = run({"openssl", "crl", "-inform", "DER", "-in", crl1_path, "-CAfile", ca_pem(), "-noout"});
  EXPECT_EQ(crl_verify.exit_code, 0) << crl_verify.err;
  EXPECT_NE(crl_verify.err.find("verify OK"), std::string::npos) << crl_verify.err;
  auto pem1 = run({"openssl", "crl", "-inform", "DER", "-in", crl1_path, "-out", file("crl1.pem")});
  ASSERT_EQ(pem1.exit_code, 0);
  auto before = openssl_verify(c.certificate.get(), {"-crl_check", "-CRLfile", file("crl1.pem")});
  EXPECT_EQ(before.exit_code, 0) << before.out << before.err;

  ASSERT_TRUE(host().revoke(c.serial_hex, 1, "alice").is_ok());
  EXPECT_EQ(host().revoke(c.serial_hex, 1, "alice").code(), Errc::kAlreadyExists);
  EXPECT_EQ(host().revoke(c.serial_hex, 7, "alice").code(), Errc::kInvalidArgument);
  EXPECT_EQ(host().revoke("ABCDEF", 1, "alice").code(), Errc::kNotFound);
  auto crl2 = host().crl_der();
  ASSERT_TRUE(crl2.is_ok());
  EXPECT_EQ(crl_number(*crl2), crl_number(*crl1) + 1);
  std::string crl2_path = write_file(file("crl2.der"), *crl2);
  ASSERT_EQ(run({"openssl", "crl", "-inform", "DER", "-in", crl2_path, "-out", file("crl2.pem")}).exit_code, 0);
  auto listing = run({"openssl", "crl", "-in", file("crl2.pem"), "-noout", "-text"});
  EXPECT_NE(listing.out.find(c.serial_hex), std::string::npos);
  EXPECT_NE(listing.out.find("Key Compromise"), std::string::npos);
  auto after = openssl_verify(c.certificate.get(), {"-crl_check", "-CRLfile", file("crl2.pem")});
  EXPECT_NE(after.exit_code, 0);
  EXPECT_NE((after.out + after.err).find("certificate revoked"), std::string::npos) << after.out << after.err;
  // GnuTLS agrees about the CRL's signature.
  auto gnutls = run({"certtool", "--verify-crl", "--load-ca-certificate", ca_pem(), "--infile", file("crl2.pem")});
  EXPECT_EQ(gnutls.exit_code, 0) << gnutls.out << gnutls.err;
}

}  // namespace
}  // namespace persoflow::cmhost::testing
