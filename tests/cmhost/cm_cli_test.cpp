// `persoflow cm` as a person runs it: init creates every file with the right modes, the officer's
// PKCS#12 opens with openssl, an initialised directory is never overwritten, the listing commands
// print text and JSON, and every bad input is one line on stderr with a non-zero exit.
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "cm_fixture.hpp"

namespace persoflow::cmhost::testing {
namespace {

using persoflow::testing::persoflow_binary;

RunResult cm(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {persoflow_binary(), "cm"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 0777;
}

bool one_line(const std::string& text) {
  return !text.empty() && text.find('\n') == text.size() - 1;
}

TEST(CmCli, InitCreatesEverythingAndRefusesAnExistingCa) {
  TempDir tmp;
  std::string dir = tmp.file("cm");
  std::string pw = write_file(tmp.file("pw"), "s3cret-pass\n");
  auto r = cm({"init", "--dir", dir, "--officer", "olga", "--password-file", pw, "--ca-key-alg", "rsa-2048",
               "--ca-subject", "CN=Test Root,O=Test"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("s3cret-pass"), std::string::npos) << "a given password is never printed";
  for (const char* f : {"cm.json", "cm.db", "ca/ca.pem", "ca/ca-key.pem", "ca/ca-key.pass", "archive/archive.pem",
                        "archive/archive-key.pem", "archive/archive-key.pass", "tls/tls.pem", "tls/tls-key.pem",
                        "officers/olga.p12"}) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + f)) << f;
  }
  for (const char* f : {"ca/ca-key.pem", "ca/ca-key.pass", "archive/archive-key.pem", "archive/archive-key.pass",
                        "tls/tls-key.pem", "officers/olga.p12", "cm.db"}) {
    EXPECT_EQ(mode_of(dir + "/" + f), 0600u) << f;
  }
  // The CA key is encrypted; its passphrase file opens it.
  EXPECT_NE(read_file(dir + "/ca/ca-key.pem").find("ENCRYPTED PRIVATE KEY"), std::string::npos);
  auto key = run({"openssl", "pkey", "-in", dir + "/ca/ca-key.pem", "-passin", "file:" + dir + "/ca/ca-key.pass",
                  "-noout"});
  EXPECT_EQ(key.exit_code, 0) << key.err;
  auto subject = run({"openssl", "x509", "-in", dir + "/ca/ca.pem", "-noout", "-subject", "-text"});
  EXPECT_NE(subject.out.find("CN = Test Root"), std::string::npos) << subject.out;
  EXPECT_NE(subject.out.find("Public-Key: (2048 bit)"), std::string::npos);
  // The officer's PKCS#12 opens with openssl and holds a certificate the CA verifies.
  auto p12 = run({"openssl", "pkcs12", "-in", dir + "/officers/olga.p12", "-passin", "pass:s3cret-pass", "-nokeys",
                  "-clcerts", "-out", tmp.file("olga.pem")});
  ASSERT_EQ(p12.exit_code, 0) << p12.err;
  auto v = run({"openssl", "verify", "-CAfile", dir + "/ca/ca.pem", tmp.file("olga.pem")});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  auto bad_pw = run({"openssl", "pkcs12", "-in", dir + "/officers/olga.p12", "-passin", "pass:wrong", "-nokeys"});
  EXPECT_NE(bad_pw.exit_code, 0);
  // The TLS certificate names IP 127.0.0.1 and localhost and verifies with both validators.
  auto tls = run({"openssl", "x509", "-in", dir + "/tls/tls.pem", "-noout", "-ext", "subjectAltName"});
  EXPECT_NE(tls.out.find("IP Address:127.0.0.1"), std::string::npos) << tls.out;
  EXPECT_NE(tls.out.find("DNS:localhost"), std::string::npos);
  EXPECT_EQ(run({"openssl", "verify", "-CAfile", dir + "/ca/ca.pem", "-purpose", "sslserver", dir + "/tls/tls.pem"})
                .exit_code,
            0);
  auto gnutls = run({"certtool", "--verify", "--load-ca-certificate", dir + "/ca/ca.pem", "--infile", dir + "/tls/tls.pem"});
  EXPECT_EQ(gnutls.exit_code, 0) << gnutls.out << gnutls.err;
  auto list = cm({"officer", "list", "--dir", dir, "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  auto officers = nlohmann::json::parse(list.out);
  ASSERT_EQ(officers.size(), 1u);
  EXPECT_EQ(officers[0]["name"], "olga");
  EXPECT_EQ(officers[0]["roles"], nlohmann::json({"issue", "recover"}));

  // The default key-archive key is RSA-3072: a generated key is archived and recovered through it.
  {
    auto host = CmHost::open(dir);
    ASSERT_TRUE(host.is_ok()) << host.status().to_string();
    Credential olga = read_p12(dir + "/officers/olga.p12", "s3cret-pass");
    GenerateArchiveRequest g;
    g.procedure = "smartcard-encrypt";
    g.subject = make_name("CN=RSA Archive User");
    g.recipient = share(olga.cert.get());
    g.confirmed = true;
    auto gen = (*host)->generate_and_archive(std::move(g));
    ASSERT_TRUE(gen.is_ok()) << gen.status().to_string();
    RecoverRequest rec;
    rec.search.cert_id = gen->certificate.cert_id;
    rec.certificate = "reuse";
    rec.recipient = share(olga.cert.get());
    auto back = (*host)->recover(std::move(rec));
    ASSERT_TRUE(back.is_ok()) << back.status().to_string();
    ASSERT_EQ(back->size(), 1u);
    auto a = open_envelope(gen->envelope_der, olga.cert.get(), olga.key.get());
    auto b = open_envelope(back->front().envelope_der, olga.cert.get(), olga.key.get());
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    EXPECT_EQ(*a, *b);

    // The same through the CLI: search by serial, recover for the officer's certificate.
    write_file(tmp.file("olga-cert.pem"), to_pem(olga.cert.get()));
    write_file(tmp.file("olga-key.pem"), key_pem(olga.key.get()));
    auto found = cm({"keys", "search", "--dir", dir, "--serial", gen->certificate.serial_hex, "--json"});
    ASSERT_EQ(found.exit_code, 0) << found.err;
    EXPECT_EQ(nlohmann::json::parse(found.out).size(), 1u);
    auto rec_cli = cm({"keys", "recover", "--dir", dir, "--subject", "RSA Archive User", "--recipient",
                       tmp.file("olga-cert.pem"), "--out", tmp.file("rec")});
    ASSERT_EQ(rec_cli.exit_code, 0) << rec_cli.err;
    auto dec = run({"openssl", "cms", "-decrypt", "-inform", "DER", "-in", tmp.file("rec-1.p7m"), "-recip",
                    tmp.file("olga-cert.pem"), "-inkey", tmp.file("olga-key.pem"), "-binary", "-out", tmp.file("rec.key")});
    EXPECT_EQ(dec.exit_code, 0) << dec.err;
    EXPECT_EQ(read_file(tmp.file("rec.key")), *a);
  }

  auto again = cm({"init", "--dir", dir});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_TRUE(one_line(again.err)) << again.err;
  EXPECT_NE(again.err.find("already holds a CA"), std::string::npos) << again.err;
}

TEST(CmCli, InitGeneratesAndShowsThePasswordOnce) {
  TempDir tmp;
  auto r = cm({"init", "--dir", tmp.file("cm")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto at = r.out.find("officer password (shown once, not stored): ");
  ASSERT_NE(at, std::string::npos) << r.out;
  std::string pw = r.out.substr(at + 43);
  pw = pw.substr(0, pw.find('\n'));
  EXPECT_GE(pw.size(), 16u);
  auto p12 = run({"openssl", "pkcs12", "-in", tmp.file("cm/officers/officer.p12"), "-passin", "pass:" + pw,
                  "-nokeys", "-noout"});
  EXPECT_EQ(p12.exit_code, 0) << p12.err;
}

class CmCliTest : public CmHostTest {};

TEST_F(CmCliTest, ProceduresListCoversTheRaTasks) {
  auto text = cm({"procedures", "list", "--dir", cm_dir()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("client.ra-key-generation = RSA:2048*, RSA:3072, RSA:4096, RSA:8192, EC:brainpoolP256r1, "
                          "EC:brainpoolP320r1, EC:brainpoolP384r1, EC:brainpoolP512r1, EC:secp256r1, EC:secp384r1, "
                          "EC:secp521r1, DSA:1024"),
            std::string::npos)
      << text.out;
  auto js = cm({"procedures", "list", "--dir", cm_dir(), "--json"});
  ASSERT_EQ(js.exit_code, 0) << js.err;
  auto j = nlohmann::json::parse(js.out);
  std::set<std::string> cert_procs, key_types, recover_modes, pin_deliveries;
  for (const auto& p : j["certificate_procedures"]) cert_procs.insert(p["name"]);
  for (const auto& k : j["key_procedures"]) {
    key_types.insert(k["type"]);
    if (k["type"] == "recover") recover_modes.insert(k["scope"].get<std::string>() + "/" + k["certificate"].get<std::string>());
  }
  for (const auto& p : j["pin_procedures"]) pin_deliveries.insert(p["delivery"]);
  for (const char* p : {"smartcard-auth", "smartcard-sign", "smartcard-encrypt", "softtoken", "officer", "reissue",
                        "qualified", "transport"}) {
    EXPECT_TRUE(cert_procs.count(p)) << p;
  }
  EXPECT_EQ(key_types, (std::set<std::string>{"archive", "recover"}));
  EXPECT_EQ(recover_modes, (std::set<std::string>{"last/new", "last/reuse", "all/new", "all/reuse"}));
  EXPECT_EQ(pin_deliveries, (std::set<std::string>{"entered", "shown", "mailer", "letter"}));
  bool tc = false, ca_on_card = false, softtoken = false, qc = false;
  for (const auto& t : j["token_procedures"]) {
    tc |= t["tc_validation"]["required"].get<bool>() && !t["tc_validation"]["trusted_issuers"].empty();
    ca_on_card |= t["ca_certificates_on_card"].get<bool>();
    softtoken |= t["media"] == "softtoken";
  }
  for (const auto& p : j["certificate_procedures"]) {
    qc |= p.contains("qc_statements") && p["qc_statements"]["compliance"].get<bool>();
  }
  EXPECT_TRUE(tc && ca_on_card && softtoken && qc);
}

TEST_F(CmCliTest, CertsOfficersCrlCommands) {
  auto c = issue("smartcard-auth", "CN=Listed User,O=Example", "EC:secp256r1");
  auto list = cm({"certs", "list", "--dir", cm_dir()});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find(c.serial_hex), std::string::npos);
  auto by_serial = cm({"certs", "show", "--dir", cm_dir(), "--serial", c.serial_hex, "--json"});
  ASSERT_EQ(by_serial.exit_code, 0) << by_serial.err;
  auto j = nlohmann::json::parse(by_serial.out);
  EXPECT_EQ(j["serial"], c.serial_hex);
  EXPECT_EQ(j["cert_id"], c.cert_id);
  EXPECT_EQ(j["status"], "valid");
  auto by_id = cm({"certs", "show", "--dir", cm_dir(), "--id", std::to_string(c.cert_id)});
  ASSERT_EQ(by_id.exit_code, 0);
  EXPECT_NE(by_id.out.find("BEGIN CERTIFICATE"), std::string::npos);
  auto by_subject = cm({"certs", "show", "--dir", cm_dir(), "--subject", "Listed User", "--json"});
  ASSERT_EQ(by_subject.exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(by_subject.out)["serial"], c.serial_hex);

  auto add = cm({"officer", "add", "dave", "--roles", "recover", "--dir", cm_dir()});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  EXPECT_NE(add.out.find("password (shown once, not stored)"), std::string::npos);
  auto revoke = cm({"officer", "revoke", "dave", "--dir", cm_dir()});
  ASSERT_EQ(revoke.exit_code, 0) << revoke.err;
  auto officers = cm({"officer", "list", "--dir", cm_dir()});
  EXPECT_NE(officers.out.find("revoked"), std::string::npos) << officers.out;

  ASSERT_EQ(cm({"revoke", "--dir", cm_dir(), "--serial", c.serial_hex, "--reason", "4"}).exit_code, 0);
  auto der = cm({"crl", "--dir", cm_dir(), "--out", file("cli.crl")});
  ASSERT_EQ(der.exit_code, 0) << der.err;
  auto check_der = run({"openssl", "crl", "-inform", "DER", "-in", file("cli.crl"), "-CAfile", ca_pem(), "-noout", "-text"});
  EXPECT_EQ(check_der.exit_code, 0) << check_der.err;
  EXPECT_NE(check_der.out.find(c.serial_hex), std::string::npos);
  EXPECT_NE(check_der.out.find("Superseded"), std::string::npos);
  auto pem = cm({"crl", "--dir", cm_dir(), "--out", file("cli.crl.pem")});
  ASSERT_EQ(pem.exit_code, 0);
  EXPECT_NE(read_file(file("cli.crl.pem")).find("BEGIN X509 CRL"), std::string::npos);
  auto after = openssl_verify(c.certificate.get(), {"-crl_check", "-CRLfile", file("cli.crl.pem")});
  EXPECT_NE(after.exit_code, 0);
}

TEST_F(CmCliTest, BadInputIsOneLineAndNonZero) {
  const std::vector<std::vector<std::string>> cases = {
      {"nosuch"},
      {"certs", "--dir", cm_dir()},
      {"certs", "frobnicate", "--dir", cm_dir()},
      {"certs", "show", "--dir", cm_dir()},
      {"certs", "show", "--dir", cm_dir(), "--serial", "xyz"},
      {"certs", "show", "--dir", cm_dir(), "--id", "12a"},
      {"certs", "show", "--dir", cm_dir(), "--serial", "0BADC0DE"},
      {"certs", "list", "--dir", cm_dir(), "--status", "sleeping"},
      {"officer", "add", "--dir", cm_dir()},
      {"officer", "add", "eve", "--roles", "admin", "--dir", cm_dir()},
      {"officer", "add", "alice", "--dir", cm_dir()},
      {"officer", "revoke", "nobody", "--dir", cm_dir()},
      {"officer", "add", "eve", "--password-file", "/nonexistent/pw", "--dir", cm_dir()},
      {"revoke", "--dir", cm_dir(), "--serial", "0BADC0DE"},
      {"revoke", "--dir", cm_dir(), "--serial", "01", "--reason", "7"},
      {"crl", "--dir", file("no-such-dir")},
      {"crl", "--dir", cm_dir(), "--out", "/nonexistent/dir/x.crl"},
      {"audit", "--dir", cm_dir()},
      {"keys", "search", "--dir", cm_dir()},
      {"keys", "search", "--dir", cm_dir(), "--serial", "01", "--id", "2"},
      {"keys", "recover", "--dir", cm_dir(), "--serial", "01"},
      {"keys", "recover", "--dir", cm_dir(), "--serial", "0BADC0DE", "--recipient", ca_pem(), "--out", file("r")},
      {"procedures", "list", "--dir", cm_dir(), "--bogus"},
      {"init", "--dir", file("fresh"), "--ca-key-alg", "rsa-512x"},
      {"init", "--dir", file("fresh2"), "--ca-subject", "CN"},
      {"init", "--dir", file("fresh3"), "--officer", "bad/name"},
      {"init", "--dir", file("fresh4"), "--archive-key-alg", "DSA:2048"},
  };
  for (const auto& args : cases) {
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    SCOPED_TRACE(joined);
    auto r = cm(args);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_TRUE(one_line(r.err)) << "stderr: [" << r.err << "]";
  }
  for (const char* sub : {"init", "procedures", "officer", "certs", "keys", "revoke", "crl", "audit"}) {
    auto h = cm({sub, "--help"});
    EXPECT_EQ(h.exit_code, 0) << sub;
    EXPECT_NE(h.out.find("Usage: persoflow cm"), std::string::npos) << sub;
  }
  EXPECT_EQ(cm({"--help"}).exit_code, 0);
}

}  // namespace
}  // namespace persoflow::cmhost::testing
