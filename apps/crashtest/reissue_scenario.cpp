// The reissue scenarios: `persoflow reissue` of a holder's certificate under the CM host's
// `reissue` procedure, revoking the previous one, one holder per trial. The previous certificate
// is a soft token's (`persoflow softtoken issue`, made while the trial is prepared).
// - reissue-csr: the new key comes as a CSR (openssl req);
// - reissue-card: the new key is generated on a blank SoftHSM2 card, the CSR built on the card.
// The first run starts the workflow; a restart resumes it (`--resume ID`), or starts it again
// when the killed run had not yet recorded it.
//
// Their invariants, checked from outside:
// - done: the CM database holds exactly one new certificate for the holder, with the serial the
//   workflow recorded, valid, and carrying the CSR's key (reissue-csr) or the card's: the card
//   holds one key pair and that certificate under the key's CKA_ID (reissue-card);
// - the previous certificate is revoked (reason superseded) exactly when the reissue is done;
//   cancelled, it is still valid and whatever was issued is revoked.
#include <fstream>
#include <sstream>

#include "checks.hpp"
#include "process.hpp"
#include "scenario.hpp"

namespace persoflow::crashtest {
namespace {

using nlohmann::json;

constexpr const char* kCardLabel = "card-01";
constexpr int kReasonSuperseded = 4;

std::string quoted(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& w : argv) s += "'" + w + "' ";
  return s;
}

class ReissueScenario final : public Scenario {
 public:
  explicit ReissueScenario(bool on_card) : on_card_(on_card) {}

  std::string name() const override { return on_card_ ? "reissue-card" : "reissue-csr"; }
  std::string summary() const override {
    return on_card_ ? "reissue with a key generated on a SoftHSM2 card; the previous revoked"
                    : "reissue from a CSR (openssl req); the previous certificate revoked";
  }

  Status prepare(const Trial& t) override {
    PF_RETURN_IF_ERROR(
        make_cards(t, on_card_ ? std::vector<std::string>{kCardLabel} : std::vector<std::string>{}));
    PF_RETURN_IF_ERROR(write_station_conf(t, {{"pkcs12_iterations", 2048}}));
    const fs::path prep = t.dir / "prep";
    std::error_code ec;
    fs::create_directories(prep, ec);
    if (ec) return make_status(Errc::kUnavailable, "cannot create " + prep.string());
    // The previous certificate: a soft token with an RA key.
    auto issued = run_program(
        {t.run->persoflow.string(), "softtoken", "issue", "--config", station_conf(t).string(),
         "--procedure", "softtoken-standard", "--field", "CN=" + common_name(t), "--field",
         "O=persoflow crashtest", "--out", prep.string(), "--name", "previous", "--algorithm",
         "EC:secp256r1", "--workflow-id", t.id + "-previous"},
        {}, (prep / "softtoken.out").string(), (prep / "softtoken.err").string(),
        std::chrono::seconds(60));
    if (issued.exit_code != 0) {
      return make_status(Errc::kUnavailable, "the previous certificate was not issued; see " +
                                                 (prep / "softtoken.err").string());
    }
    std::string serial;
    run_capture({"/usr/bin/openssl", "x509", "-inform", "DER", "-in",
                 (prep / "previous.der").string(), "-noout", "-serial"},
                {}, &serial);
    serial = serial.substr(serial.find('=') + 1);
    while (!serial.empty() && std::isspace(static_cast<unsigned char>(serial.back()))) {
      serial.pop_back();
    }
    if (serial.empty()) return make_status(Errc::kCorrupt, "no serial in previous.der");
    PF_RETURN_IF_ERROR(write_text(prep / "previous.serial", serial));
    if (!on_card_) {
      std::string ignored;
      if (run_capture({"/usr/bin/openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                       "ec_paramgen_curve:P-256", "-nodes", "-keyout", (prep / "new.key").string(),
                       "-subj", "/CN=" + common_name(t) + "/O=persoflow crashtest", "-out",
                       (prep / "new.csr").string()},
                      {}, &ignored)
              .exit_code != 0) {
        return make_status(Errc::kUnavailable, "openssl req failed");
      }
    }
    return Status::ok();
  }

  std::vector<std::string> station_command(const Trial& t) const override {
    std::vector<std::string> argv = {t.run->persoflow.string(), "reissue", "--config",
                                     station_conf(t).string(), "--serial", previous_serial(t),
                                     "--procedure", "reissue", "--workflow-id", workflow_id(t)};
    if (on_card_) {
      argv.insert(argv.end(), {"--card-token", kCardLabel, "--key-alg", "EC:secp256r1"});
    } else {
      argv.insert(argv.end(), {"--csr", (t.dir / "prep" / "new.csr").string()});
    }
    return argv;
  }

  std::vector<std::string> restart_command(const Trial& t) const override {
    const std::string show = quoted({t.run->persoflow.string(), "workflows", "show",
                                     workflow_id(t), "--journal", journal(t).string()});
    const std::string resume = quoted({t.run->persoflow.string(), "reissue", "--config",
                                       station_conf(t).string(), "--resume", workflow_id(t)});
    return {"/bin/sh", "-c",
            "if " + show + ">/dev/null 2>&1; then exec " + resume + "; else exec " +
                quoted(station_command(t)) + "; fi"};
  }

  fs::path journal(const Trial& t) const override { return station_journal(t); }

  std::vector<std::string> workflow_ids(const Trial& t) const override {
    return {workflow_id(t)};
  }

  int torn_cards(const Trial& t) const override { return count_torn_tokens(t); }

  void check(const Trial& t, const std::map<std::string, WorkflowEnd>& ends,
             const std::map<std::string, std::string>&, CheckResult& out) override {
    const std::string wf = workflow_id(t);
    const auto it = ends.find(wf);
    if (it == ends.end()) return;
    const WorkflowEnd& end = it->second;
    const auto certs = cm_certificates(t, common_name(t));
    if (!certs) {
      out.violations.push_back("persoflow cm certs list --json gave no JSON");
      return;
    }
    const std::string previous = normal_serial(previous_serial(t));
    std::optional<json> old;
    std::vector<json> fresh;
    for (const auto& c : with_common_name(*certs, common_name(t))) {
      if (normal_serial(c.value("serial", "")) == previous) {
        old = c;
      } else {
        fresh.push_back(c);
      }
    }
    if (!old) {
      out.violations.push_back(wf + ": the previous certificate " + previous +
                               " is not in the CM database");
      return;
    }
    const bool revoked = old->value("status", "") == "revoked";
    if (end.status == "cancelled") {
      if (revoked) {
        out.violations.push_back(wf + ": cancelled, yet the previous certificate is revoked");
      }
      for (const auto& c : fresh) {
        if (c.value("status", "") != "revoked") {
          out.violations.push_back(wf + ": cancelled, yet " + c.value("serial", "") +
                                   " is still " + c.value("status", ""));
        }
      }
      if (fresh.size() > 1) {
        out.violations.push_back(wf + ": cancelled, yet " + std::to_string(fresh.size()) +
                                 " new certificates");
      }
      return;
    }
    if (end.status != "done") return;
    if (!revoked || old->value("revocation_reason", -1) != kReasonSuperseded) {
      out.violations.push_back(wf + ": done, but the previous certificate " + previous + " is " +
                               old->value("status", "") + " (want revoked, superseded)");
    }
    const auto recorded = end.data.find("cert.serial");
    const std::string serial =
        recorded == end.data.end() ? std::string() : normal_serial(recorded->second);
    if (fresh.size() != 1 || serial.empty() ||
        normal_serial(fresh[0].value("serial", "")) != serial) {
      out.violations.push_back(wf + ": " + std::to_string(fresh.size()) +
                               " new certificates in the CM database, the workflow recorded '" +
                               serial + "' (want exactly that one)");
      return;
    }
    if (fresh[0].value("status", "") != "valid") {
      out.violations.push_back(wf + ": the new certificate is " + fresh[0].value("status", ""));
    }
    if (on_card_) {
      check_card(t, serial, out);
    } else {
      check_csr_key(t, recorded->second, out);
    }
  }

 private:
  void check_card(const Trial& t, const std::string& serial, CheckResult& out) const {
    const std::string wf = workflow_id(t);
    CardObjects card = list_card(t, kCardLabel, kCardPin);
    if (card.drop_half_made()) ++out.tears;
    if (!card.login_ok || card.private_keys != 1 || card.public_keys != 1 ||
        card.certificates.size() != 1) {
      out.violations.push_back(wf + ": the card holds " + std::to_string(card.private_keys) +
                               " private keys, " + std::to_string(card.public_keys) +
                               " public keys, " + std::to_string(card.certificates.size()) +
                               " certificates (want 1, 1, 1)");
      return;
    }
    if (normal_serial(card.certificates[0].serial) != serial) {
      out.violations.push_back(wf + ": the card's certificate is " + card.certificates[0].serial +
                               ", the workflow's " + serial);
    }
    if (card.certificates[0].id != card.private_key_ids[0]) {
      out.violations.push_back(wf + ": the certificate is not under the key's CKA_ID");
    }
  }

  // The new certificate (saved by the station under its serial) carries the CSR's key.
  void check_csr_key(const Trial& t, const std::string& serial, CheckResult& out) const {
    const std::string wf = workflow_id(t);
    std::optional<fs::path> saved;
    std::error_code ec;
    for (auto f = fs::recursive_directory_iterator(t.dir / "station", ec);
         f != fs::recursive_directory_iterator(); f.increment(ec)) {
      if (f->path().filename() == serial + ".der") saved = f->path();
    }
    if (!saved) {
      out.violations.push_back(wf + ": the station kept no " + serial + ".der");
      return;
    }
    const std::string key = public_key_of_private_key(t.dir / "prep" / "new.key");
    if (key.empty() || public_key_of_certificate(*saved, true) != key) {
      out.violations.push_back(wf + ": the new certificate does not carry the CSR's key");
    }
  }

  static std::string previous_serial(const Trial& t) {
    std::ifstream in(t.dir / "prep" / "previous.serial");
    std::string s;
    std::getline(in, s);
    return s;
  }
  std::string workflow_id(const Trial& t) const { return t.id + "-" + name(); }
  static std::string common_name(const Trial& t) { return "ct-" + t.id + "-r01"; }

  bool on_card_;
};

}  // namespace

std::unique_ptr<Scenario> make_reissue_scenario(bool on_card) {
  return std::make_unique<ReissueScenario>(on_card);
}

}  // namespace persoflow::crashtest
