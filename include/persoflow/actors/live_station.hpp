// The live station: personalises cards as they are inserted into the station's readers.
//
// - The station thread owns the readers through devices::watch_readers and keeps, per reader, the
//   card in it (recognised by the token serial its ATR carries, devices/card_atr.hpp) and the
//   workflow that card belongs to: everything touching a reader's card is decided there, one
//   event at a time.
// - Each card's workflow (issue-card) runs in the workflow runtime. A card inserted starts the
//   workflow of its request (the queue names the token serial, or "next" for the next card with
//   no request of its own); a card removed is a CardRemoved outside event (the workflow suspends,
//   its outstanding card commands are dropped); the same card reinserted is a CardInserted
//   outside event (it resumes where it was); another card in a reader whose workflow waits for
//   its card is offered to that workflow, which refuses it (RefuseCard: nothing is written).
// - Card commands run only while their card is in a reader (else they fail and are retried);
//   NotifyOperator, RefuseCard and AskOperator(reinsert_card) are printed and acknowledged.
// - An unfinished workflow of the journal (a crash) is resumed when its card is inserted.
// - A workflow suspended with its card still in (retries exhausted) is retried by the station
//   (LiveStationOptions::station_retries); one suspended on a refusal waits for the operator.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <memory>
#include <string>
#include <vector>

#include "persoflow/actors/station.hpp"
#include "persoflow/common/status.hpp"

namespace persoflow::actors {

struct LiveStationOptions {
  bool keep_running = false;  // else: return once every request's workflow has ended
  // One line of progress per call ("Virtual PCD 00 00  card-01  KeysRequested"); thread-safe.
  std::function<void(const std::string&)> print;
  // Also a line as each card command begins and ends on its reader's actor ("<reader>  card
  // <serial>  begin|end <Type> <key>"): shows that a card's commands never overlap.
  bool trace_commands = false;
  // A workflow suspended for another reason than its card or a refusal (retries exhausted: the
  // CM host down, the card not answering) while its card stays in its reader is resumed by the
  // station after `retry_delay`, up to `station_retries` times; the card need not be pulled.
  unsigned station_retries = 3;
  std::chrono::milliseconds retry_delay{5'000};
};

struct LiveResult {
  std::string workflow_id;
  std::string token_serial;
  std::string reader;
  std::string state;  // the last journaled state
  std::string outcome;  // done | cancelled | failed | suspended | not started
  std::string reason;
};

// Runs the station until every request has ended (or until stop() with keep_running). Requests
// whose token_serial is "next" take the next card inserted that has no request of its own.
Result<std::vector<LiveResult>> run_live_station(std::shared_ptr<Station> station,
                                                 std::vector<CardRequest> requests,
                                                 LiveStationOptions options);

// A reader's actor: its own thread (strand) runs, one at a time and in order, every command that
// touches the card in its reader, so a card's commands never overlap (a dropped command still
// running when its workflow's next state starts included), while the readers work side by side.
class ReaderActor {
 public:
  explicit ReaderActor(std::string reader);
  ~ReaderActor();  // stop()
  ReaderActor(const ReaderActor&) = delete;
  ReaderActor& operator=(const ReaderActor&) = delete;
  const std::string& reader() const { return reader_; }
  // Queues a job behind the others; false once stopping (the job is not run).
  bool post(std::function<void()> job);
  // Runs the jobs already queued, then ends the thread.
  void stop();

 private:
  std::string reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

// The actor of the reader a card (token serial) is in; null when it is in no reader.
using ReaderOfCard = std::function<std::shared_ptr<ReaderActor>(const std::string& serial)>;

// The executors of a live station: the issue-card executors, each card command run on the actor
// of the reader its card is in (failing while the card is in none), and the acknowledged notices
// printed through `print`.
ExecutorRegistry live_station_executors(std::shared_ptr<Station> station, ReaderOfCard reader_of,
                                        std::function<void(const std::string&)> print,
                                        bool trace_commands = false);

}  // namespace persoflow::actors
