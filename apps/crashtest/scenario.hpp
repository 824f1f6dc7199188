// A crash-test scenario: one kind of station work (issue card, update with TC, soft token,
// reissue) that the harness runs, interrupts at every fault point and SIGKILL point, restarts,
// and checks. The harness owns the CM host, the fault proxy, the child processes and the generic
// checks (every workflow done or cleanly cancelled, `journal verify`, no PIN in clear); a
// scenario makes a fresh trial folder, names the station command that does the work (run again
// unchanged to resume), and checks what only it knows: certificates in the CM database, archived
// keys, the cards' contents.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "persoflow/common/status.hpp"

namespace persoflow::crashtest {

namespace fs = std::filesystem;

// What every trial of a run shares.
struct RunContext {
  fs::path persoflow;         // the persoflow program
  fs::path cm_dir;            // the CM host's folder (its database holds every trial's certs)
  fs::path officer_password;  // the officer's PKCS#12 password file
  std::string cm_url;         // https://127.0.0.1:PORT of the fault proxy in front of the CM host
  int cards = 1;              // cards per trial
  // A certificate and key of the harness's own, that archived keys are recovered for (cm keys
  // recover --recipient) so that a check can open them.
  fs::path recovery_cert;
  fs::path recovery_key;
};

struct Trial {
  std::string id;  // "t0007": also in every workflow id and subject of the trial
  fs::path dir;    // a fresh folder for this trial
  const RunContext* run = nullptr;
};

// A workflow's end as the journal records it (persoflow workflows show --json).
struct WorkflowEnd {
  std::string status;  // running | suspended | done | cancelled; "missing" when not in the journal
  std::string state;
  std::map<std::string, std::string> data;  // the last record's state data
};

struct CheckResult {
  std::vector<std::string> violations;  // each names the workflow or card it is about
  // Cards SoftHSM2 itself destroyed (token.object left empty by a kill during its in-place
  // rewrite): counted apart, they are the emulation's fault, not persoflow's.
  int tears = 0;
};

class Scenario {
 public:
  virtual ~Scenario() = default;
  virtual std::string name() const = 0;
  virtual std::string summary() const = 0;
  // Fills trial.dir: cards, station configuration, requests.
  virtual Status prepare(const Trial& trial) = 0;
  // The station command that does the work; run unchanged again after an interruption.
  virtual std::vector<std::string> station_command(const Trial& trial) const = 0;
  // The command a restart runs (by default the same one).
  virtual std::vector<std::string> restart_command(const Trial& trial) const {
    return station_command(trial);
  }
  // The exit status with which the station command says its workflow ended cancelled (a clean
  // end: it is not run again, and the journal must agree), if it has one.
  virtual std::optional<int> cancelled_exit_code() const { return std::nullopt; }
  // Where the station's journal is.
  virtual fs::path journal(const Trial& trial) const = 0;
  // The workflows the trial intends to finish.
  virtual std::vector<std::string> workflow_ids(const Trial& trial) const = 0;
  // Whether a card of the trial was torn by SoftHSM2 (see CheckResult::tears).
  virtual int torn_cards(const Trial& trial) const = 0;
  // PINs the trial gave the station itself (workflow id -> PIN): they may appear in clear nowhere.
  virtual std::map<std::string, std::string> given_pins(const Trial&) const { return {}; }
  // Checks the scenario's own invariants after the last restart. `pins`: workflow id -> the PIN
  // the station displayed for it (the only place a PIN may appear in clear), or was given.
  virtual void check(const Trial& trial, const std::map<std::string, WorkflowEnd>& ends,
                     const std::map<std::string, std::string>& pins, CheckResult& out) = 0;
};

// Every scenario this build knows, in the order they run.
std::vector<std::unique_ptr<Scenario>> make_scenarios();
std::unique_ptr<Scenario> make_softtoken_scenario();
std::unique_ptr<Scenario> make_reissue_scenario(bool on_card);

}  // namespace persoflow::crashtest
