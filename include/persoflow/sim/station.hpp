// A simulated personalization station: the issue-card machine run by the real
// actors::Runtime and the real SQLite journal, with simulated readers, cards, a
// card feeder and CM link (devices.hpp) on a virtual clock (virtual_clock.hpp),
// at the latencies of latency.hpp.
//
// Each reader asks the feeder for the next card of the hopper, the card goes in
// after the feed latency, the workflow "card-<serial>" starts with
// CardInserted, and when it is Done the card is taken out and the reader asks
// for the next one. Every command is carried out by a non-blocking executor
// that draws its latency from the seeded Rng and completes on the virtual
// clock, acting on the simulated card at that moment. A pulled card is reported
// to its workflow as CardRemoved (Runtime::post_event, as the reader watcher
// does): the machine suspends awaiting the card and asks for it back
// (AskOperator reinsert_card), which the simulation answers with CardInserted
// once the card is back; the machine re-enters the state it left and issues its
// commands again. A command that completes while the card is out fails with
// Errc::kUnavailable (the engine retries, then suspends the workflow, and the
// simulation resumes it once the card is back).
//
// Reproducible (the default): the runtime is driven by the caller, one handler
// and one append at a time, time moves only by the clock, and the journal is
// stamped with virtual time; the same options give the same journal (head hash)
// and the same trace, byte for byte. With `charge_processing_time` the real
// time the engine spends (handlers, commits) is added to the virtual clock and
// appends share group commits: a measurement of the engine's overhead, not
// reproducible.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "persoflow/common/status.hpp"
#include "persoflow/sim/latency.hpp"

namespace persoflow::sim {

inline constexpr std::chrono::milliseconds kSimCmTimeout{10'000};
inline constexpr std::chrono::milliseconds kSimCmLateBy{2'000};

struct SimStationOptions {
  std::size_t readers = 16;
  std::size_t cards = 32;
  std::uint64_t seed = 1;
  std::string journal;     // the journal file (created when missing)
  double rsa_share = 0.5;  // cards that get an on-card RSA-2048 key; the others EC P-256
  // Cards pulled out once, during one of their card commands chosen at random,
  // for 1 to 6 s, then put back.
  double removal_share = 0.0;
  // Simulated CM link faults (fault points 9-12 of docs/faults.md): this share of the CM
  // submission attempts meets one of them, drawn from the seed: the connection refused (nothing
  // issued), a timeout (no answer for kSimCmTimeout, nothing issued), the connection dropped after
  // the request (the CM issued; the answer is lost, the retry is answered from its store), or the
  // answer late (kSimCmLateBy more).
  double cm_fault_share = 0.0;
  bool charge_processing_time = false;
  bool keep_trace = false;  // keep the trace lines in the report (the digest is always made)
  LatencyModel latency;

  // Resume mode: the journal holds the unfinished workflows of an earlier
  // (killed) run of the same options. Card i goes straight back into reader i,
  // every unfinished workflow is resumed, and SimReport::resume_seconds
  // measures the real time from opening the runtime until each of them has its
  // outstanding commands running again.
  bool resume = false;
  // Called once (on the driving thread) when every reader's workflow has its
  // GenerateKeyOnCard running: the moment the in-flight benchmark kills the
  // process.
  std::function<void()> on_every_reader_in_keygen;
};

struct SimReport {
  std::size_t cards_done = 0;
  std::size_t cards_not_done = 0;  // ended otherwise (failed, cancelled) or never finished
  std::size_t suspensions = 0;     // workflows suspended (a card pulled too long)
  std::size_t resumes = 0;
  std::size_t card_removals = 0;  // cards pulled (reported to the workflow as CardRemoved)
  std::size_t commands_run = 0;
  std::size_t certificates_issued = 0;  // by the simulated CM link
  std::size_t cm_repeats = 0;           // requests answered from the CM's store
  std::size_t cm_refused = 0;           // simulated CM faults met (cm_fault_share)
  std::size_t cm_timeouts = 0;
  std::size_t cm_dropped = 0;
  std::size_t cm_late = 0;
  std::vector<std::string> problems;    // broken invariants, for a person; empty when all is well

  double virtual_seconds = 0;  // from the first feed to the last card out
  double device_seconds = 0;   // sum over cards of the device latencies (feed included)
  double cycle_seconds = 0;    // sum over cards of feed start .. card out
  double cpu_seconds = 0;      // user + system CPU of the process during the run
  double wall_seconds = 0;
  double resume_seconds = 0;  // resume mode: see SimStationOptions::resume
  std::size_t resumed = 0;

  std::string journal_head_hash;   // `journal verify` of the journal after the run
  std::string trace_digest;        // FNV-1a 64 over the trace lines, hex
  std::vector<std::string> trace;  // with keep_trace: "<virtual ms> <what>"
};

// Runs the station until every card of the hopper is done (or nothing can move
// any more). Errors: the journal cannot be opened, or a bad option.
Result<SimReport> run_simulated_station(const SimStationOptions& options);

}  // namespace persoflow::sim
