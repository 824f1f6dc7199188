// The issue-card scenario: N pre-personalised SoftHSM2 cards, one `persoflow station run` queue
// issuing a certificate on each (key generated on the card, CMP ir through the fault proxy,
// certificate written, PIN generated, set and shown once).
//
// Its invariants, checked from outside:
// - the CM database holds exactly one certificate per card that ended Done (at most one for a
//   cancelled workflow), with the serial the workflow recorded;
// - the card (pkcs11-tool, logged in with the PIN the station displayed) holds exactly one key
//   pair and one certificate, with that serial, under the key's CKA_ID;
// - no key is archived for these subjects (issue-card generates on the card).
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "process.hpp"
#include "scenario.hpp"

namespace persoflow::crashtest {
namespace {

using nlohmann::json;

constexpr const char* kSoftHsmModule = "/usr/lib/softhsm/libsofthsm2.so";
constexpr const char* kCardPin = "123456";

std::string two_digits(int i) {
  std::ostringstream s;
  s << std::setw(2) << std::setfill('0') << i;
  return s.str();
}

Status write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return make_status(Errc::kUnavailable, "cannot write " + path.string());
  return Status::ok();
}

// Objects pkcs11-tool lists on a card.
struct CardObjects {
  bool login_ok = false;
  int private_keys = 0;
  int public_keys = 0;
  std::vector<std::pair<std::string, std::string>> certificates;  // (serial, id)
  std::vector<std::string> private_key_ids;
  std::vector<std::string> public_key_ids;
  // Key objects without CKA_ID: SoftHSM2 creates a key object and then sets its attributes in
  // further writes of its file store, so a process killed inside C_GenerateKeyPair (on another
  // card's thread) can leave a half-made object no workflow ever saw.
  int half_made() const {
    return private_keys - static_cast<int>(private_key_ids.size()) + public_keys -
           static_cast<int>(public_key_ids.size());
  }
};

CardObjects list_card(const fs::path& softhsm_conf, const std::string& label,
                      const std::string& pin) {
  CardObjects o;
  std::string text;
  auto r = run_capture({"/usr/bin/pkcs11-tool", "--module", kSoftHsmModule, "--token-label", label,
                        "--login", "--pin", pin, "--list-objects"},
                       {"SOFTHSM2_CONF=" + softhsm_conf.string()}, &text);
  o.login_ok = r.exit_code == 0;
  std::istringstream in(text);
  std::string line;
  enum { kNone, kCert, kPrivate, kPublic } kind = kNone;
  std::string serial;
  auto field = [&](const char* name) -> std::optional<std::string> {
    const auto at = line.find(name);
    if (at == std::string::npos) return std::nullopt;
    auto v = line.substr(at + std::string(name).size());
    v.erase(0, v.find_first_not_of(' '));
    return v;
  };
  while (std::getline(in, line)) {
    if (line.rfind("Certificate Object", 0) == 0) {
      kind = kCert;
    } else if (line.rfind("Private Key Object", 0) == 0) {
      kind = kPrivate;
      ++o.private_keys;
    } else if (line.rfind("Public Key Object", 0) == 0) {
      kind = kPublic;
      ++o.public_keys;
    } else if (auto s = field("serial:"); s && kind == kCert) {
      serial = *s;
    } else if (auto id = field("ID:")) {
      if (kind == kCert) o.certificates.emplace_back(serial, *id);
      if (kind == kPrivate) o.private_key_ids.push_back(*id);
      if (kind == kPublic) o.public_key_ids.push_back(*id);
    }
  }
  return o;
}

// "0A1B" and "A1B" are the same serial.
std::string normal_serial(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  s.erase(0, std::min(s.find_first_not_of('0'), s.size() - 1));
  return s;
}

class IssueCardScenario final : public Scenario {
 public:
  std::string name() const override { return "issue-card"; }
  std::string summary() const override {
    return "issue a certificate on each SoftHSM2 card (key on card, CMP ir, write, PIN)";
  }

  Status prepare(const Trial& t) override {
    const fs::path tokens = t.dir / "tokens";
    const fs::path station = t.dir / "station";
    std::error_code ec;
    fs::create_directories(tokens / "store", ec);
    fs::create_directories(station, ec);
    if (ec) return make_status(Errc::kUnavailable, "cannot create " + t.dir.string());
    PF_RETURN_IF_ERROR(write_text(tokens / "softhsm2.conf",
                                  "directories.tokendir = " + (tokens / "store").string() +
                                      "\nobjectstore.backend = file\nlog.level = ERROR\n"));
    for (int i = 1; i <= t.run->cards; ++i) {
      auto r = run_program({"/usr/bin/softhsm2-util", "--init-token", "--free", "--label",
                            label(i), "--pin", kCardPin, "--so-pin", "12345678"},
                           {"SOFTHSM2_CONF=" + (tokens / "softhsm2.conf").string()}, "",
                           (t.dir / "setup.err").string(), std::chrono::seconds(60));
      if (r.exit_code != 0) {
        return make_status(Errc::kUnavailable, "softhsm2-util --init-token failed for " + label(i));
      }
    }
    PF_RETURN_IF_ERROR(write_text(station / "card.pin", std::string(kCardPin) + "\n"));
    const fs::path cm = t.run->cm_dir;
    json conf = {{"cm_url", t.run->cm_url},
                 {"cm_ca", (cm / "ca" / "ca.pem").string()},
                 {"pkcs11_module", kSoftHsmModule},
                 {"softhsm2_conf", (tokens / "softhsm2.conf").string()},
                 {"officer_p12", (cm / "officers" / "officer.p12").string()},
                 {"officer_password_file", t.run->officer_password.string()},
                 {"card_pin_file", (station / "card.pin").string()},
                 {"journal", journal(t).string()},
                 {"state_dir", station.string()},
                 {"procedure", "smartcard-auth"},
                 {"key_algorithm", "EC:secp256r1"},
                 {"key_entries", 1}};
    PF_RETURN_IF_ERROR(write_text(station / "station.conf", conf.dump(2) + "\n"));
    std::string queue;
    for (int i = 1; i <= t.run->cards; ++i) {
      json line = {{"workflow_id", workflow_id(t, i)},
                   {"token_label", label(i)},
                   {"subject", {{"CN", common_name(t, i)}, {"O", "persoflow crashtest"}}}};
      queue += line.dump() + "\n";
    }
    return write_text(station / "queue.jsonl", queue);
  }

  std::vector<std::string> station_command(const Trial& t) const override {
    return {t.run->persoflow.string(), "station", "run", "--config",
            (t.dir / "station" / "station.conf").string(), "--queue",
            (t.dir / "station" / "queue.jsonl").string()};
  }

  fs::path journal(const Trial& t) const override { return t.dir / "station" / "journal.db"; }

  std::vector<std::string> workflow_ids(const Trial& t) const override {
    std::vector<std::string> ids;
    for (int i = 1; i <= t.run->cards; ++i) ids.push_back(workflow_id(t, i));
    return ids;
  }

  int torn_cards(const Trial& t) const override {
    int torn = 0;
    std::error_code ec;
    for (const auto& dir : fs::directory_iterator(t.dir / "tokens" / "store", ec)) {
      const fs::path object = dir.path() / "token.object";
      if (fs::exists(object) && fs::file_size(object, ec) == 0) ++torn;
    }
    return torn;
  }

  void check(const Trial& t, const std::map<std::string, WorkflowEnd>& ends,
             const std::map<std::string, std::string>& pins, CheckResult& out) override {
    const std::string conf = (t.dir / "tokens" / "softhsm2.conf").string();
    // Every certificate the CM host issued for this trial.
    std::string listed;
    run_capture({t.run->persoflow.string(), "cm", "certs", "list", "--dir",
                 t.run->cm_dir.string(), "--subject", "ct-" + t.id + "-", "--json"},
                {}, &listed);
    json certs = json::array();
    try {
      certs = json::parse(listed);
    } catch (const std::exception&) {
      out.violations.push_back("persoflow cm certs list --json gave no JSON");
      return;
    }
    for (int i = 1; i <= t.run->cards; ++i) {
      const std::string wf = workflow_id(t, i);
      const std::string cn = "CN=" + common_name(t, i);
      std::vector<std::string> serials;
      for (const auto& c : certs) {
        const std::string subject = c.value("subject", "");
        const auto at = subject.find(cn);
        const auto end = at + cn.size();
        if (at != std::string::npos && (end == subject.size() || subject[end] == ',')) {
          serials.push_back(normal_serial(c.value("serial", "")));
        }
      }
      const auto it = ends.find(wf);
      if (it == ends.end()) continue;  // the harness reported it
      const WorkflowEnd& end = it->second;
      if (end.status == "cancelled") {
        if (serials.size() > 1) {
          out.violations.push_back(wf + ": cancelled, yet " + std::to_string(serials.size()) +
                                   " certificates in the CM database");
        }
        continue;
      }
      if (end.status != "done") continue;
      if (serials.size() != 1) {
        out.violations.push_back(wf + ": " + std::to_string(serials.size()) +
                                 " certificates in the CM database for " + cn + " (want 1)");
      }
      const auto issued = end.data.find("issued.0");
      const std::string serial =
          issued == end.data.end() ? std::string() : normal_serial(issued->second);
      if (serial.empty()) {
        out.violations.push_back(wf + ": done without an issued certificate in its state");
        continue;
      }
      if (serials.size() == 1 && serials[0] != serial) {
        out.violations.push_back(wf + ": the journal says serial " + serial +
                                 ", the CM database " + serials[0]);
      }
      const auto pin = pins.find(wf);
      if (pin == pins.end()) {
        out.violations.push_back(wf + ": done, but its PIN was never shown (lost)");
        continue;
      }
      CardObjects card = list_card(conf, label(i), pin->second);
      if (!card.login_ok) {
        out.violations.push_back(wf + ": " + label(i) + " does not open with the PIN shown");
        continue;
      }
      if (card.half_made() > 0) {
        ++out.tears;  // SoftHSM2's, counted apart (see CardObjects::half_made)
        card.private_keys = static_cast<int>(card.private_key_ids.size());
        card.public_keys = static_cast<int>(card.public_key_ids.size());
      }
      if (card.private_keys != 1 || card.public_keys != 1 || card.certificates.size() != 1) {
        out.violations.push_back(wf + ": " + label(i) + " holds " +
                                 std::to_string(card.private_keys) + " private keys, " +
                                 std::to_string(card.public_keys) + " public keys, " +
                                 std::to_string(card.certificates.size()) +
                                 " certificates (want 1, 1, 1)");
        continue;
      }
      if (normal_serial(card.certificates[0].first) != serial) {
        out.violations.push_back(wf + ": the card's certificate is " +
                                 card.certificates[0].first + ", the workflow's " + serial);
      }
      if (card.certificates[0].second != card.private_key_ids[0]) {
        out.violations.push_back(wf + ": the certificate is not under the key's CKA_ID");
      }
    }
    // issue-card generates keys on the card: nothing may be archived for these subjects.
    std::string archived;
    run_capture({t.run->persoflow.string(), "cm", "keys", "search", "--dir",
                 t.run->cm_dir.string(), "--subject", "ct-" + t.id + "-", "--json"},
                {}, &archived);
    try {
      const json keys = json::parse(archived);
      if (keys.is_array() && !keys.empty()) {
        out.violations.push_back(std::to_string(keys.size()) +
                                 " keys archived for an issue-card trial (want 0)");
      }
    } catch (const std::exception&) {
      // No JSON: an empty search prints nothing to parse.
    }
  }

 private:
  static std::string label(int i) { return "card-" + two_digits(i); }
  static std::string workflow_id(const Trial& t, int i) {
    return t.id + "-issue-c" + two_digits(i);
  }
  static std::string common_name(const Trial& t, int i) {
    return "ct-" + t.id + "-c" + two_digits(i);
  }
};

}  // namespace

std::vector<std::unique_ptr<Scenario>> make_scenarios() {
  std::vector<std::unique_ptr<Scenario>> all;
  all.push_back(std::make_unique<IssueCardScenario>());
  return all;
}

}  // namespace persoflow::crashtest
