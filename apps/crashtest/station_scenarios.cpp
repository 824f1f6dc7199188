// The `persoflow station run` scenarios on N SoftHSM2 cards, one queue per trial:
// - issue-card: blank cards; on each a key generated on the card, CMP ir through the fault proxy,
//   the certificate written, a PIN generated, set and shown once;
// - update-tc: cards from the "card bureau" (`persoflow prepersonalise card`: a key and a
//   transport certificate, TC); update-card with tc=redo replaces the TC's key and certificate;
// - interleaved: both at once in one station run, on twice --cards cards (odd cards issue-card,
//   even cards update-tc), so that faults and kills land while several workflows are in flight.
//
// Their invariants, checked from outside:
// - the CM database holds exactly one certificate per card that ended Done (at most one for a
//   cancelled workflow), with the serial the workflow recorded;
// - the card (pkcs11-tool, logged in with the PIN the station displayed, or the card's own PIN
//   for an update) holds exactly one key pair and one certificate, with that serial, under the
//   key's CKA_ID; after an update the TC is gone; a cancelled update left the TC as it was;
// - no key is archived for these subjects (both generate on the card);
// - no card holds a certificate of another card's workflow, or one the CM host never issued for
//   it (every certificate on a card is its own CN's or its TC's in the CM database).
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "checks.hpp"
#include "process.hpp"
#include "scenario.hpp"

namespace persoflow::crashtest {
namespace {

using nlohmann::json;

constexpr const char* kTransportLabel = "Transport certificate";

class StationScenario final : public Scenario {
 public:
  enum class Kind { kIssue, kUpdateTc, kInterleaved };
  explicit StationScenario(Kind kind) : kind_(kind) {}

  std::string name() const override {
    switch (kind_) {
      case Kind::kIssue:
        return "issue-card";
      case Kind::kUpdateTc:
        return "update-tc";
      case Kind::kInterleaved:
        return "interleaved";
    }
    return "";
  }
  std::string summary() const override {
    switch (kind_) {
      case Kind::kIssue:
        return "issue a certificate on each SoftHSM2 card (key on card, CMP ir, write, PIN)";
      case Kind::kUpdateTc:
        return "update-card tc=redo on cards holding a transport certificate (new key and "
               "certificate, TC removed)";
      case Kind::kInterleaved:
        return "issue-card and update-tc at once in one station, on 2 x --cards cards (odd: "
               "issue, even: update), every workflow in flight together";
    }
    return "";
  }

  Status prepare(const Trial& t) override {
    std::vector<std::string> labels;
    for (int i = 1; i <= cards(t); ++i) labels.push_back(label(i));
    PF_RETURN_IF_ERROR(make_cards(t, labels));
    // smartcard-tc needs the cards' operator PIN (SoftHSM2's SO PIN), which the CM database does
    // not hold.
    const fs::path operator_pin = t.dir / "station" / "operator.pin";
    PF_RETURN_IF_ERROR(write_station_conf(
        t, {{"token_procedure", "smartcard-tc"}, {"operator_pin_file", operator_pin.string()}}));
    PF_RETURN_IF_ERROR(write_text(operator_pin, "12345678\n"));
    std::string queue;
    for (int i = 1; i <= cards(t); ++i) {
      json line = {{"workflow_id", workflow_id(t, i)},
                   {"token_label", label(i)},
                   {"subject", {{"CN", common_name(t, i)}, {"O", "persoflow crashtest"}}}};
      if (card_kind(i) == Kind::kUpdateTc) {
        // What a card bureau does: a key on the card and its TC from the CM host.
        auto r = run_program({t.run->persoflow.string(), "prepersonalise", "card", "--config",
                              station_conf(t).string(), "--token", label(i), "--field",
                              "CN=" + common_name(t, i) + " Transport"},
                             {}, (t.dir / "setup.out").string(), (t.dir / "setup.err").string(),
                             std::chrono::seconds(60));
        if (r.exit_code != 0) {
          return make_status(Errc::kUnavailable, "persoflow prepersonalise card failed for " +
                                                     label(i) + "; see " +
                                                     (t.dir / "setup.err").string());
        }
        line["workflow"] = "update";
        line["actions"] = {{"tc", "redo"}};
        line["token_procedure"] = "smartcard-tc";
      }
      queue += line.dump() + "\n";
    }
    return write_text(t.dir / "station" / "queue.jsonl", queue);
  }

  std::vector<std::string> station_command(const Trial& t) const override {
    return {t.run->persoflow.string(), "station", "run", "--config", station_conf(t).string(),
            "--queue", (t.dir / "station" / "queue.jsonl").string()};
  }

  fs::path journal(const Trial& t) const override { return station_journal(t); }

  std::vector<std::string> workflow_ids(const Trial& t) const override {
    std::vector<std::string> ids;
    for (int i = 1; i <= cards(t); ++i) ids.push_back(workflow_id(t, i));
    return ids;
  }

  int torn_cards(const Trial& t) const override { return count_torn_tokens(t); }

  void check(const Trial& t, const std::map<std::string, WorkflowEnd>& ends,
             const std::map<std::string, std::string>& pins, CheckResult& out) override {
    // Every certificate the CM host issued for this trial.
    const auto certs = cm_certificates(t, "ct-" + t.id + "-");
    if (!certs) {
      out.violations.push_back("persoflow cm certs list --json gave no JSON");
      return;
    }
    for (int i = 1; i <= cards(t); ++i) {
      const Kind kind = card_kind(i);
      const std::string wf = workflow_id(t, i);
      std::vector<std::string> serials;
      for (const auto& c : with_common_name(*certs, common_name(t, i))) {
        serials.push_back(normal_serial(c.value("serial", "")));
      }
      const auto it = ends.find(wf);
      if (it == ends.end()) continue;  // the harness reported it
      const WorkflowEnd& end = it->second;
      if (end.status == "cancelled") {
        if (serials.size() > 1) {
          out.violations.push_back(wf + ": cancelled, yet " + std::to_string(serials.size()) +
                                   " certificates in the CM database");
        }
        if (kind == Kind::kUpdateTc) check_tc_untouched(t, i, *certs, out);
        continue;
      }
      if (end.status != "done") continue;
      if (serials.size() != 1) {
        out.violations.push_back(wf + ": " + std::to_string(serials.size()) +
                                 " certificates in the CM database for CN=" + common_name(t, i) +
                                 " (want 1)");
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
      std::string pin = kCardPin;  // update-card keeps the card's PIN
      if (kind == Kind::kIssue) {
        const auto shown = pins.find(wf);
        if (shown == pins.end()) {
          out.violations.push_back(wf + ": done, but its PIN was never shown (lost)");
          continue;
        }
        pin = shown->second;
      }
      CardObjects card = without_ca_certificates(list_card(t, label(i), pin));
      if (!card.login_ok) {
        out.violations.push_back(wf + ": " + label(i) + " does not open with the PIN " +
                                 (kind == Kind::kIssue ? "shown" : "it had"));
        continue;
      }
      if (card.drop_half_made()) ++out.tears;  // SoftHSM2's (CardObjects::half_made)
      if (card.private_keys != 1 || card.public_keys != 1 || card.certificates.size() != 1) {
        out.violations.push_back(wf + ": " + label(i) + " holds " +
                                 std::to_string(card.private_keys) + " private keys, " +
                                 std::to_string(card.public_keys) + " public keys, " +
                                 std::to_string(card.certificates.size()) +
                                 " certificates (want 1, 1, 1)");
        continue;
      }
      const auto& on_card = card.certificates[0];
      if (normal_serial(on_card.serial) != serial) {
        out.violations.push_back(wf + ": the card's certificate is " + on_card.serial +
                                 ", the workflow's " + serial);
      }
      if (on_card.label == kTransportLabel) {
        out.violations.push_back(wf + ": the transport certificate is still on " + label(i));
      }
      if (on_card.id != card.private_key_ids[0]) {
        out.violations.push_back(wf + ": the certificate is not under the key's CKA_ID");
      }
    }
    check_no_foreign_certificates(t, *certs, pins, out);
    // Both generate keys on the card: nothing may be archived for these subjects.
    std::string archived;
    run_capture({t.run->persoflow.string(), "cm", "keys", "search", "--dir",
                 t.run->cm_dir.string(), "--subject", "ct-" + t.id + "-", "--json"},
                {}, &archived);
    try {
      const json keys = json::parse(archived);
      if (keys.is_array() && !keys.empty()) {
        out.violations.push_back(std::to_string(keys.size()) + " keys archived for a " + name() +
                                 " trial (want 0)");
      }
    } catch (const std::exception&) {
      // No JSON: an empty search prints nothing to parse.
    }
  }

 private:
  // A cancelled update leaves the card as the bureau made it: its key and the TC, nothing else.
  void check_tc_untouched(const Trial& t, int i, const json& certs, CheckResult& out) const {
    const auto tcs = with_common_name(certs, common_name(t, i) + " Transport");
    CardObjects card = without_ca_certificates(list_card(t, label(i), kCardPin));
    if (card.drop_half_made()) ++out.tears;
    const std::string wf = workflow_id(t, i);
    if (tcs.size() != 1 || !card.login_ok || card.certificates.size() != 1 ||
        card.private_keys != 1 ||
        normal_serial(card.certificates[0].serial) != normal_serial(tcs[0].value("serial", ""))) {
      out.violations.push_back(wf + ": cancelled, but " + label(i) +
                               " no longer holds exactly its key and its TC");
    }
  }

  // Every certificate on every card is its own: issued by the CM host for the card's CN or its
  // TC's, never another card's (a workflow writing to the wrong card, or a stale object).
  void check_no_foreign_certificates(const Trial& t, const json& certs,
                                     const std::map<std::string, std::string>& pins,
                                     CheckResult& out) const {
    std::map<std::string, int> owner;  // serial -> card
    for (int i = 1; i <= cards(t); ++i) {
      for (const std::string& cn : {common_name(t, i), common_name(t, i) + " Transport"}) {
        for (const auto& c : with_common_name(certs, cn)) {
          owner[normal_serial(c.value("serial", ""))] = i;
        }
      }
    }
    for (int i = 1; i <= cards(t); ++i) {
      const auto shown = pins.find(workflow_id(t, i));
      CardObjects card = without_ca_certificates(
          list_card(t, label(i), shown == pins.end() ? kCardPin : shown->second));
      if (!card.login_ok && shown != pins.end()) {
        card = without_ca_certificates(list_card(t, label(i), kCardPin));
      }
      if (!card.login_ok) continue;  // the per-card checks above report a card that won't open
      for (const auto& c : card.certificates) {
        const auto it = owner.find(normal_serial(c.serial));
        if (it == owner.end()) {
          out.violations.push_back(label(i) + " holds certificate " + c.serial +
                                   ", which the CM host never issued for it");
        } else if (it->second != i) {
          out.violations.push_back(label(i) + " holds certificate " + c.serial + " of " +
                                   workflow_id(t, it->second) + " (another card's workflow)");
        }
      }
    }
  }

  int cards(const Trial& t) const {
    return kind_ == Kind::kInterleaved ? 2 * t.run->cards : t.run->cards;
  }
  Kind card_kind(int i) const {
    if (kind_ != Kind::kInterleaved) return kind_;
    return i % 2 == 1 ? Kind::kIssue : Kind::kUpdateTc;
  }
  std::string prefix(int i) const {
    return card_kind(i) == Kind::kIssue ? "-issue-c" : "-update-c";
  }
  // The CM host's CA certificates, which smartcard-tc has written to the card beside the
  // cardholder's: not the workflow's certificate.
  static CardObjects without_ca_certificates(CardObjects card) {
    std::erase_if(card.certificates,
                  [](const CardObjects::Certificate& c) { return c.label == "CA certificate"; });
    return card;
  }

  static std::string label(int i) { return "card-" + two_digits(i); }
  std::string workflow_id(const Trial& t, int i) const {
    return t.id + prefix(i) + two_digits(i);
  }
  static std::string common_name(const Trial& t, int i) {
    return "ct-" + t.id + "-c" + two_digits(i);
  }

  Kind kind_;
};

}  // namespace

std::vector<std::unique_ptr<Scenario>> make_scenarios() {
  std::vector<std::unique_ptr<Scenario>> all;
  all.push_back(std::make_unique<StationScenario>(StationScenario::Kind::kIssue));
  all.push_back(std::make_unique<StationScenario>(StationScenario::Kind::kUpdateTc));
  all.push_back(make_softtoken_scenario());
  all.push_back(make_reissue_scenario(/*on_card=*/false));
  all.push_back(make_reissue_scenario(/*on_card=*/true));
  all.push_back(std::make_unique<StationScenario>(StationScenario::Kind::kInterleaved));
  return all;
}

}  // namespace persoflow::crashtest
