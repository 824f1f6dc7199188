// Running issue-card and update-card workflows for a batch of card requests through the workflow runtime, shared
// by `persoflow station run` and `persoflow demo`: resumes the journal's unfinished workflows
// first, starts one workflow per request not yet in the journal, waits, and reports each workflow
// from the journal (state, steps, certificate serial, time).
#pragma once

#include <boost/program_options.hpp>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

#include "persoflow/actors/station.hpp"
#include "persoflow/common/status.hpp"

namespace persoflow::apps {

struct BatchRow {
  std::string workflow_id;
  std::string token_label;
  std::string token_serial;
  std::string machine;      // issue-card | update-card
  std::string state;
  std::string status;       // running | suspended | done | cancelled
  std::string reason;       // why it is not done (suspension reason, failure)
  std::uint64_t steps = 0;
  std::string cert_serial;  // empty until issued
  double seconds = 0;       // first to last record
  bool resumed = false;     // was unfinished in the journal when the batch began
  std::string pin_shown;    // the PIN shown once in this run (demo table only)
};

struct BatchReport {
  std::vector<BatchRow> rows;
  bool all_done = true;
  double seconds = 0;
  // Whether this workflow of the batch ended Done (a one-card command's own, whatever became of
  // the other unfinished workflows the station resumed with it).
  bool done(const std::string& workflow_id) const;
};

// Reads a JSON Lines queue file (one actors::CardRequest per line; blank lines skipped). Each bad
// line is an error naming its line number.
Result<std::vector<actors::CardRequest>> read_queue(const std::string& path);

// Runs the batch against the station of `config_path`. `show_pins`: print each generated PIN to
// `out` once (else it appears only in the returned rows' pin_shown).
Result<BatchReport> run_station_batch(const std::string& config_path,
                                      std::vector<actors::CardRequest> requests,
                                      std::ostream& out, bool show_pins);

// Cancels a workflow of the station through its machine (Runtime::post_event: resumed first when
// it is not running): what it may have written to its card is removed (RollbackCard: keys and
// certificates by CKA_ID / serial) and its issued certificates are revoked, all journaled.
// Prints what happened to `out`; the state it ended in (Cancelled when all went well).
Result<std::string> cancel_with_rollback(const std::string& config_path,
                                         const std::string& workflow_id,
                                         const std::string& reason, std::ostream& out);

// Parses `persoflow GROUP card OPTIONS`: -1 to go on, else the exit code (0 after --help; 2 with
// a one-line error for an unknown option, anything but 'card', or a missing required option).
int parse_card_command(const std::string& group, const char* usage,
                       const boost::program_options::options_description& options,
                       const std::vector<std::string>& required, int argc, char** argv,
                       boost::program_options::variables_map& vm);

// "NAME=VALUE" split at the first '=' (both sides non-empty); otherwise a one-line error naming
// the option, e.g. "--field wants NAME=VALUE, not 'CN'".
Result<std::pair<std::string, std::string>> split_assignment(const std::string& text,
                                                             const std::string& option);
// actors::new_workflow_id: "<label>-<kind>-<UTC time, ms>-<random>", unique within a millisecond.
std::string default_workflow_id(const std::string& label, const std::string& kind);

// A table a person reads.
void print_batch_table(const BatchReport& report, std::ostream& out, bool with_pins);

}  // namespace persoflow::apps
