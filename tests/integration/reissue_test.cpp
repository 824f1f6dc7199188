// `persoflow reissue` end to end on the demo's CM host and SoftHSM2 cards: CSRs made by
// `openssl req` (garbage, a flipped signature byte, RSA-1024 and a subject mismatch each refused
// with its own message, then a good one issued); keys generated on a SoftHSM2 card (kur, the
// certificate installed on the card); the previous certificates revoked and rejected by
// `openssl verify -crl_check`; e-mail verification with the code read from a real SMTP sink,
// the reissuing process killed (SIGKILL) while it waits, the code confirmed by `persoflow cm
// verify`, and the workflow finished by `persoflow reissue --resume`.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "smtp_sink.hpp"
#include "cm_server.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using persoflow::testing::CmServer;
using persoflow::testing::persoflow_binary;
using persoflow::testing::run;
using persoflow::testing::RunResult;
using persoflow::testing::SmtpSink;
using persoflow::testing::TempDir;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// A child process started with fork/exec, killed (SIGKILL) or reaped by the destructor.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv, const std::string& log_path = "/dev/null") {
    pid_ = ::fork();
    if (pid_ == 0) {
      FILE* log = std::fopen(log_path.c_str(), "w");
      if (log) {
        ::dup2(fileno(log), 1);
        ::dup2(fileno(log), 2);
      }
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Child() { kill(SIGKILL); }
  // Returns the wait status.
  int kill(int signal) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, signal);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == 0) return true;
    exit_status_ = status;
    pid_ = -1;
    return false;
  }
  // The exit code once the child ended by itself within `timeout`; -1 otherwise (then killed).
  int wait_exit(std::chrono::seconds timeout) {
    for (auto end = std::chrono::steady_clock::now() + timeout;
         running() && std::chrono::steady_clock::now() < end;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (pid_ > 0) {
      kill(SIGKILL);
      return -1;
    }
    return WIFEXITED(exit_status_) ? WEXITSTATUS(exit_status_) : -1;
  }

 private:
  pid_t pid_ = -1;
  int exit_status_ = 0;
};


// RFC 2253 ("emailAddress=a@b,O=Example,CN=Alice") -> openssl's -subj ("/CN=Alice/O=...").
std::string subj_of(const std::string& rfc2253) {
  std::vector<std::string> parts;
  std::stringstream ss(rfc2253);
  for (std::string part; std::getline(ss, part, ',');) parts.push_back(part);
  std::string out;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) out += "/" + *it;
  return out;
}

// One demo installation shared by the tests of this file: CM host (its SMTP relay the sink, the
// reissue-verified procedure polled every second), station, SoftHSM2 cards.
class ReissueTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir("persoflow-reissue");
    dir_ = tmp_->path() / "demo";
    auto demo = run({persoflow_binary(), "demo", "--dir", dir_.string(), "--cards", "1"});
    ASSERT_EQ(demo.exit_code, 0) << demo.out << demo.err;
    conf_ = (dir_ / "station" / "station.conf").string();
    const std::string s = read_text(conf_);
    const auto at = s.find("127.0.0.1:");
    ASSERT_NE(at, std::string::npos) << s;
    auto end = at + 10;
    while (end < s.size() && std::isdigit(static_cast<unsigned char>(s[end]))) ++end;
    sink_ = new SmtpSink();
    sink_->start();
    const fs::path cm_json = dir_ / "cm" / "cm.json";
    json cm = json::parse(read_text(cm_json));
    cm["smtp"] = {{"host", "127.0.0.1"}, {"port", sink_->port()}, {"from", "ra@example.org"}};
    for (auto& p : cm["certificate_procedures"]) {
      if (p["name"] == "reissue-verified") {
        p["verification_check_after"] = 1;
        p["verification_minutes"] = 10;
      }
    }
    write_text(cm_json, cm.dump(2));
    server_ = new CmServer(dir_ / "cm", s.substr(at, end - at));
    ASSERT_TRUE(server_->listening());
    softhsm_env_ = "SOFTHSM2_CONF=" + (dir_ / "tokens" / "softhsm2.conf").string();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete sink_;
    delete tmp_;
  }

  // A card with a certificate issued by `persoflow issue card`; returns the certificate's
  // search record (serial, subject, cert_id, certificate).
  static json issued_card(const std::string& label, const std::string& cn) {
    EXPECT_EQ(run({"/usr/bin/env", softhsm_env_, "softhsm2-util", "--init-token", "--free",
                   "--label", label, "--pin", "123456", "--so-pin", "12345678"})
                  .exit_code,
              0);
    auto issued = run({persoflow_binary(), "issue", "card", "--config", conf_, "--token", label,
                       "--field", "CN=" + cn, "--field", "O=Example", "--field",
                       "emailAddress=" + email_of(cn)});
    EXPECT_EQ(issued.exit_code, 0) << issued.out << issued.err;
    // issue-card gave the card a new PIN, shown once: "... shown once): 12345678".
    const std::string marker = "shown once): ";
    const auto at = issued.out.find(marker);
    EXPECT_NE(at, std::string::npos) << issued.out;
    std::string pin;
    for (auto i = at + marker.size(); at != std::string::npos && i < issued.out.size() &&
                                      std::isdigit(static_cast<unsigned char>(issued.out[i]));
         ++i) {
      pin += issued.out[i];
    }
    auto found = run({persoflow_binary(), "keys", "search", "--config", conf_, "--subject",
                      "CN=" + cn, "--substring", "--json"});
    EXPECT_EQ(found.exit_code, 0) << found.err;
    json list = json::parse(found.out);
    EXPECT_EQ(list.size(), 1u) << found.out;
    json record = list.empty() ? json::object() : list.at(0);
    record["pin"] = pin;
    return record;
  }

  // A copy of the station configuration whose cards' PIN is `pin` (the card's after issue-card).
  static std::string config_with_pin(const std::string& name, const std::string& pin) {
    const std::string pin_file = tmp_->file(name + ".pin");
    write_text(pin_file, pin + "\n");
    json conf = json::parse(read_text(conf_));
    conf["card_pin_file"] = pin_file;
    const std::string path = (dir_ / "station" / (name + ".conf")).string();
    write_text(path, conf.dump(2));
    return path;
  }

  static std::string email_of(const std::string& cn) {
    std::string local;
    for (char c : cn) local += c == ' ' ? '.' : static_cast<char>(std::tolower(c));
    return local + "@example.org";
  }

  static RunResult reissue(const std::vector<std::string>& extra, const std::string& in = {}) {
    std::vector<std::string> argv = {persoflow_binary(), "reissue", "--config", conf_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run(argv, in);
  }

  // openssl req: a new key and CSR; returns the CSR's path.
  static std::string make_csr(const std::string& name, const std::string& subj,
                              const std::string& newkey = "rsa:2048") {
    const std::string csr = tmp_->file(name + ".csr");
    auto r = run({"openssl", "req", "-new", "-newkey", newkey, "-nodes", "-keyout",
                  tmp_->file(name + ".key"), "-subj", subj, "-out", csr});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return csr;
  }

  static std::string pem_of(const json& found, const std::string& name) {
    const std::string der = tmp_->file(name + ".der");
    const std::string pem = tmp_->file(name + ".pem");
    auto decoded = run({"/usr/bin/base64", "-d"}, found.at("certificate").get<std::string>());
    write_text(der, decoded.out);
    EXPECT_EQ(run({"openssl", "x509", "-inform", "DER", "-in", der, "-out", pem}).exit_code, 0);
    return pem;
  }

  // openssl verify -crl_check against a fresh CRL from the CM host.
  static RunResult verify_with_crl(const std::string& pem) {
    const std::string crl = tmp_->file("now.crl.pem");
    auto made = run({persoflow_binary(), "cm", "crl", "--dir", (dir_ / "cm").string(), "--out",
                     crl});
    EXPECT_EQ(made.exit_code, 0) << made.err;
    return run({"openssl", "verify", "-crl_check", "-CAfile",
                (dir_ / "cm" / "ca" / "ca.pem").string(), "-CRLfile", crl, pem});
  }

  static json search_serial(const std::string& serial) {
    auto found = run({persoflow_binary(), "keys", "search", "--config", conf_, "--serial", serial,
                      "--json"});
    EXPECT_EQ(found.exit_code, 0) << found.err;
    json list = json::parse(found.out);
    return list.empty() ? json::object() : list.at(0);
  }

  // The serial after "new certificate " in the command's output.
  static std::string new_serial(const std::string& out) {
    const std::string marker = "new certificate ";
    auto at = out.find(marker);
    if (at == std::string::npos) return {};
    std::string serial;
    for (at += marker.size(); at < out.size() && std::isxdigit(static_cast<unsigned char>(out[at]));
         ++at) {
      serial += out[at];
    }
    return serial;
  }

  // The 8-digit code on its own indented line of the mail.
  static std::string code_in(const std::string& body) {
    for (auto at = body.find("\n    "); at != std::string::npos; at = body.find("\n    ", at + 1)) {
      const std::string candidate = body.substr(at + 5, 8);
      if (candidate.size() == 8 && candidate.find_first_not_of("0123456789") == std::string::npos &&
          (at + 13 >= body.size() || body[at + 13] == '\r' || body[at + 13] == '\n')) {
        return candidate;
      }
    }
    return {};
  }

  static TempDir* tmp_;
  static fs::path dir_;
  static std::string conf_;
  static std::string softhsm_env_;
  static SmtpSink* sink_;
  static CmServer* server_;
};

TempDir* ReissueTest::tmp_ = nullptr;
fs::path ReissueTest::dir_;
std::string ReissueTest::conf_;
std::string ReissueTest::softhsm_env_;
SmtpSink* ReissueTest::sink_ = nullptr;
CmServer* ReissueTest::server_ = nullptr;

TEST_F(ReissueTest, CsrRefusalsEachNamedThenAGoodCsrAndThePreviousRevoked) {
  json previous = issued_card("card-r1", "Alice Reissue");
  ASSERT_TRUE(previous.contains("serial"));
  const std::string serial = previous["serial"];
  const std::string subj = subj_of(previous["subject"]);
  const std::string previous_pem = pem_of(previous, "alice-previous");
  ASSERT_EQ(verify_with_crl(previous_pem).exit_code, 0);

  const std::vector<std::string> base = {"--serial", serial, "--procedure", "reissue"};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> all = base;
    all.insert(all.end(), more.begin(), more.end());
    return reissue(all);
  };

  write_text(tmp_->file("garbage.csr"), "this is not a certificate request\n");
  auto garbage = with({"--csr", tmp_->file("garbage.csr")});
  EXPECT_EQ(garbage.exit_code, 1);
  EXPECT_NE(garbage.err.find("it does not parse as a PKCS#10 request"), std::string::npos)
      << garbage.err;

  // A good CSR with one byte of its signature flipped.
  const std::string good = make_csr("alice-new", subj);
  const std::string der = tmp_->file("alice-new.der");
  ASSERT_EQ(run({"openssl", "req", "-in", good, "-outform", "DER", "-out", der}).exit_code, 0);
  std::string bytes = read_text(der);
  bytes[bytes.size() - 5] ^= 0x01;
  write_text(tmp_->file("flipped.der"), bytes);
  auto flipped = with({"--csr", tmp_->file("flipped.der")});
  EXPECT_EQ(flipped.exit_code, 1);
  EXPECT_NE(flipped.err.find("its signature does not verify with its own public key"),
            std::string::npos)
      << flipped.err;
  EXPECT_EQ(flipped.err.find("not allowed"), std::string::npos) << flipped.err;

  auto weak = with({"--csr", make_csr("alice-weak", subj, "rsa:1024")});
  EXPECT_EQ(weak.exit_code, 1);
  EXPECT_NE(weak.err.find("its key RSA:1024 is not allowed by procedure reissue"),
            std::string::npos)
      << weak.err;
  EXPECT_EQ(weak.err.find("signature"), std::string::npos) << weak.err;

  auto other = with({"--csr", make_csr("mallory", "/CN=Mallory/O=Example")});
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("its subject 'O=Example,CN=Mallory' does not match the previous "
                           "certificate's"),
            std::string::npos)
      << other.err;

  // The good CSR, pasted on stdin.
  auto done = reissue({"--serial", serial, "--procedure", "reissue", "--csr-pem", "-"},
                      read_text(good));
  ASSERT_EQ(done.exit_code, 0) << done.out << done.err;
  EXPECT_NE(done.out.find("revoked (superseded)"), std::string::npos) << done.out;
  const std::string issued = new_serial(done.out);
  ASSERT_FALSE(issued.empty()) << done.out;
  json fresh = search_serial(issued);
  EXPECT_EQ(fresh.value("subject", ""), previous["subject"]);
  EXPECT_EQ(fresh.value("status", ""), "valid");
  const std::string fresh_pem = pem_of(fresh, "alice-fresh");
  // The new certificate holds the CSR's key.
  auto cert_key = run({"openssl", "x509", "-in", fresh_pem, "-noout", "-pubkey"});
  auto csr_key = run({"openssl", "req", "-in", good, "-noout", "-pubkey"});
  EXPECT_EQ(cert_key.out, csr_key.out);
  EXPECT_EQ(verify_with_crl(fresh_pem).exit_code, 0);
  auto rejected = verify_with_crl(previous_pem);
  EXPECT_NE(rejected.exit_code, 0);
  EXPECT_NE((rejected.out + rejected.err).find("certificate revoked"), std::string::npos)
      << rejected.out << rejected.err;
  EXPECT_EQ(search_serial(serial).value("status", ""), "revoked");
}

TEST_F(ReissueTest, KeyGeneratedOnTheCardIssuedByKurAndInstalled) {
  json previous = issued_card("card-r2", "Bob Reissue");
  ASSERT_TRUE(previous.contains("cert_id"));
  const std::string previous_pem = pem_of(previous, "bob-previous");
  const std::string pin = previous["pin"];
  ASSERT_FALSE(pin.empty());
  const std::string conf = config_with_pin("bob", pin);
  // Found by its decimal certificate ID this time.
  auto done = run({persoflow_binary(), "reissue", "--config", conf, "--id",
                   std::to_string(previous["cert_id"].get<long>()), "--procedure", "reissue",
                   "--card-token", "card-r2", "--key-alg", "EC:secp256r1", "--workflow-id",
                   "bob-card"});
  ASSERT_EQ(done.exit_code, 0) << done.out << done.err;
  const std::string issued = new_serial(done.out);
  ASSERT_FALSE(issued.empty()) << done.out;
  auto objects = run({"/usr/bin/env", softhsm_env_, "pkcs11-tool", "--module",
                      "/usr/lib/softhsm/libsofthsm2.so", "--token-label", "card-r2", "--login",
                      "--pin", pin, "--list-objects", "--type", "cert"});
  EXPECT_EQ(objects.exit_code, 0) << objects.err;
  // Two certificates on the card now: the previous one and the new one, on a new EC key.
  std::size_t count = 0;
  for (std::size_t at = objects.out.find("Certificate Object"); at != std::string::npos;
       at = objects.out.find("Certificate Object", at + 1)) {
    ++count;
  }
  EXPECT_EQ(count, 2u) << objects.out;
  json fresh = search_serial(issued);
  const std::string fresh_pem = pem_of(fresh, "bob-fresh");
  auto text = run({"openssl", "x509", "-in", fresh_pem, "-noout", "-text"});
  EXPECT_NE(text.out.find("prime256v1"), std::string::npos) << text.out;
  EXPECT_EQ(verify_with_crl(fresh_pem).exit_code, 0);
  EXPECT_NE(verify_with_crl(previous_pem).exit_code, 0);
  // The journal says it went by kur (the card holds the previous key).
  auto shown = run({persoflow_binary(), "journal", "show", "--journal",
                    (dir_ / "station" / "journal.db").string(), "--workflow", "bob-card", "--json"});
  EXPECT_NE(shown.out.find("\"kur\""), std::string::npos) << shown.out;
}

TEST_F(ReissueTest, EmailVerificationAcrossAKilledStation) {
  json previous = issued_card("card-r3", "Carol Reissue");
  ASSERT_TRUE(previous.contains("serial"));
  const std::string serial = previous["serial"];
  const std::string csr = make_csr("carol-new", subj_of(previous["subject"]));
  const std::string journal = (dir_ / "station" / "journal.db").string();
  const std::size_t mails_before = sink_->messages().size();

  // The default procedure reissue-verified: the CM host mails a code and answers 'waiting'.
  Child station({persoflow_binary(), "reissue", "--config", conf_, "--serial", serial, "--csr",
                 csr, "--workflow-id", "carol-verified"},
                tmp_->file("carol-first.log"));
  auto mails = sink_->wait_for(mails_before + 1, std::chrono::seconds(120));
  const auto& mail = mails.back();
  EXPECT_EQ(mail.rcpt_to, std::vector<std::string>{"carol.reissue@example.org"});
  EXPECT_EQ(mail.mail_from, "ra@example.org");
  const std::string code = code_in(mail.body());
  ASSERT_EQ(code.size(), 8u) << mail.body();

  // Killed while it waits: its journal says AwaitingEmailVerification (it has polled).
  bool waiting = false;
  for (int i = 0; i < 600 && !waiting; ++i) {
    auto shown = run({persoflow_binary(), "journal", "show", "--journal", journal, "--workflow",
                      "carol-verified", "--json"});
    waiting = shown.out.find("AwaitingEmailVerification") != std::string::npos;
    if (!waiting) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(waiting) << read_text(tmp_->file("carol-first.log"));
  ASSERT_TRUE(station.running()) << read_text(tmp_->file("carol-first.log"));
  const int status = station.kill(SIGKILL);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  const std::string cm = (dir_ / "cm").string();
  auto wrong = run({persoflow_binary(), "cm", "verify", "--dir", cm, "--code", "00000000"});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("no request waiting for e-mail verification matches this code"),
            std::string::npos)
      << wrong.err;
  auto verified = run({persoflow_binary(), "cm", "verify", "--dir", cm, "--code", "-"}, code + "\n");
  ASSERT_EQ(verified.exit_code, 0) << verified.err;
  EXPECT_NE(verified.out.find("c***********e@example.org"), std::string::npos) << verified.out;

  auto resumed = reissue({"--resume", "carol-verified"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  const std::string issued = new_serial(resumed.out);
  ASSERT_FALSE(issued.empty()) << resumed.out;
  EXPECT_EQ(search_serial(issued).value("subject", ""), previous["subject"]);
  EXPECT_EQ(search_serial(serial).value("status", ""), "revoked");
  // Exactly one new certificate for Carol: the previous one and this one.
  auto all = run({persoflow_binary(), "keys", "search", "--config", conf_, "--subject",
                  "CN=Carol Reissue", "--substring", "--json"});
  EXPECT_EQ(json::parse(all.out).size(), 2u) << all.out;
  // The code is in neither the station's journal nor the CM host's database or audit log.
  for (const fs::path& file : {fs::path(journal), dir_ / "cm" / "cm.db", dir_ / "cm" / "cm.db-wal",
                               fs::path(journal + "-wal")}) {
    if (fs::exists(file)) {
      EXPECT_EQ(read_text(file).find(code), std::string::npos) << file;
    }
  }
}

// An outside CMP client under a procedure with e-mail verification: `openssl cmp` gets 'waiting'
// and polls by itself with pollReq (RFC 4210 5.3.22), answered with pollRep while the code mailed
// to the subject is not confirmed; after `persoflow cm verify` its next poll gets the certificate.
TEST_F(ReissueTest, OpensslCmpPollsUntilTheCodeIsConfirmed) {
  const json conf = json::parse(read_text(conf_));
  const std::string officer_pem = tmp_->file("poll-officer.pem");
  const std::string officer_key = tmp_->file("poll-officer.key");
  const std::string passin = "file:" + conf.at("officer_password_file").get<std::string>();
  const std::string p12 = conf.at("officer_p12");
  ASSERT_EQ(run({"openssl", "pkcs12", "-in", p12, "-passin", passin, "-clcerts", "-nokeys",
                 "-out", officer_pem}).exit_code, 0);
  ASSERT_EQ(run({"openssl", "pkcs12", "-in", p12, "-passin", passin, "-nocerts", "-nodes",
                 "-out", officer_key}).exit_code, 0);
  const std::string ca = (dir_ / "cm" / "ca" / "ca.pem").string();
  const std::string email = "dave.poll@example.org";
  const std::string subj = "/CN=Dave Poll/O=Example/emailAddress=" + email;
  struct Case {
    std::string name;
    std::vector<std::string> args;
  };
  const std::string csr = make_csr("dave-p10cr", subj);
  make_csr("dave-ir", subj);  // for its key
  const std::vector<Case> cases = {
      {"p10cr", {"-cmd", "p10cr", "-csr", csr}},
      {"ir", {"-cmd", "ir", "-newkey", tmp_->file("dave-ir.key"), "-subject", subj}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string cert = tmp_->file("dave-" + c.name + ".pem");
    const std::string log = tmp_->file("dave-" + c.name + ".log");
    std::vector<std::string> argv = {
        "/usr/bin/openssl", "cmp", "-server", "127.0.0.1:" + server_->port(), "-path",
        "/.well-known/cmp/p/reissue-verified", "-tls_used", "-tls_trusted", ca, "-trusted", ca,
        "-cert", officer_pem, "-key", officer_key, "-certout", cert, "-verbosity", "7"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const std::size_t mails_before = sink_->messages().size();
    Child client(argv, log);
    auto mails = sink_->wait_for(mails_before + 1, std::chrono::seconds(60));
    ASSERT_EQ(mails.back().rcpt_to, std::vector<std::string>{email});
    const std::string code = code_in(mails.back().body());
    ASSERT_EQ(code.size(), 8u) << mails.back().body();
    // It polls and is told to wait while nobody confirmed the code.
    std::this_thread::sleep_for(std::chrono::seconds(3));
    ASSERT_TRUE(client.running()) << read_text(log);
    EXPECT_FALSE(fs::exists(cert));
    auto verified = run({persoflow_binary(), "cm", "verify", "--dir", (dir_ / "cm").string(),
                         "--code", code});
    ASSERT_EQ(verified.exit_code, 0) << verified.err;
    ASSERT_EQ(client.wait_exit(std::chrono::seconds(60)), 0) << read_text(log);
    const std::string text = read_text(log);
    EXPECT_NE(text.find("POLLREP"), std::string::npos) << text;
    auto parsed = run({"openssl", "x509", "-in", cert, "-noout", "-subject", "-serial"});
    ASSERT_EQ(parsed.exit_code, 0) << parsed.err;
    EXPECT_NE(parsed.out.find("emailAddress = " + email), std::string::npos) << parsed.out;
    // Issued once: a later search finds it valid (confirmed by certConf).
    const std::string serial = parsed.out.substr(parsed.out.find("serial=") + 7, 32);
    EXPECT_EQ(search_serial(serial).value("status", ""), "valid") << serial;
  }
}

// A refused CSR asks again in the same workflow when the operator can answer (--ask-fd): each
// refusal names what is wrong, a missing file is asked again, and the corrected CSR is issued.
TEST_F(ReissueTest, RefusedCsrAsksAgainUntilACorrectedOne) {
  json previous = issued_card("card-r4", "Erin Again");
  ASSERT_TRUE(previous.contains("serial"));
  const std::string subj = subj_of(previous["subject"]);
  const std::string weak = make_csr("erin-weak", subj, "rsa:1024");
  const std::string other = make_csr("erin-other", "/CN=Mallory/O=Example");
  const std::string good = make_csr("erin-good", subj);
  const std::string answers = other + "\n" + tmp_->file("no-such.csr") + "\n" + good + "\n";
  auto done = reissue({"--serial", previous["serial"], "--procedure", "reissue", "--csr", weak,
                       "--workflow-id", "erin-again", "--ask-fd", "0"},
                      answers);
  ASSERT_EQ(done.exit_code, 0) << done.out << done.err;
  EXPECT_NE(done.err.find("its key RSA:1024 is not allowed by procedure reissue"),
            std::string::npos)
      << done.err;
  EXPECT_NE(done.err.find("its subject 'O=Example,CN=Mallory' does not match"), std::string::npos)
      << done.err;
  EXPECT_NE(done.err.find("cannot read a CSR from " + tmp_->file("no-such.csr")),
            std::string::npos)
      << done.err;
  const std::string issued = new_serial(done.out);
  ASSERT_FALSE(issued.empty()) << done.out;
  const std::string fresh_pem = pem_of(search_serial(issued), "erin-fresh");
  auto cert_key = run({"openssl", "x509", "-in", fresh_pem, "-noout", "-pubkey"});
  auto csr_key = run({"openssl", "req", "-in", good, "-noout", "-pubkey"});
  EXPECT_EQ(cert_key.out, csr_key.out);
  // One workflow: its journal holds both refusals and the issuance.
  auto shown = run({persoflow_binary(), "journal", "show", "--journal",
                    (dir_ / "station" / "journal.db").string(), "--workflow", "erin-again"});
  EXPECT_NE(shown.out.find("CsrRejected"), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find("Done"), std::string::npos) << shown.out;

  // Nobody answers (the end of the input): the refusal ends the workflow, naming it.
  auto ended = reissue({"--serial", previous["serial"], "--procedure", "reissue", "--csr", weak,
                        "--ask-fd", "0"});
  EXPECT_EQ(ended.exit_code, 1);
  EXPECT_NE(ended.err.find("the CSR is refused: its key RSA:1024"), std::string::npos)
      << ended.err;
}

TEST(ReissueCli, BadInputsAreOneLineErrors) {
  TempDir tmp("persoflow-reissue-cli");
  auto r = run({persoflow_binary(), "reissue", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--card-token"), std::string::npos);
  r = run({persoflow_binary(), "reissue", "--serial", "0A"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--config FILE is required"), std::string::npos) << r.err;
  r = run({persoflow_binary(), "keys", "search", "--config", tmp.file("none.conf"), "--id", "x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--id 'x' is not a positive decimal number"), std::string::npos) << r.err;
  r = run({persoflow_binary(), "keys", "search", "--config", tmp.file("none.conf")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("exactly one of"), std::string::npos) << r.err;
  r = run({persoflow_binary(), "reissue", "--config", tmp.file("none.conf"), "--ask-fd", "77"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--ask-fd 77 is not an open descriptor"), std::string::npos) << r.err;
  r = run({persoflow_binary(), "cm", "verify", "--dir", tmp.path().string(), "--code", "12"});
  EXPECT_NE(r.exit_code, 0);
}

}  // namespace
