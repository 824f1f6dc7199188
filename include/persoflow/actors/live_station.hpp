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
#pragma once

#include <functional>
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

// The executors of a live station: the issue-card executors, card commands gated on the card's
// presence (`present(serial)`), and the acknowledged notices printed through `print`.
ExecutorRegistry live_station_executors(std::shared_ptr<Station> station,
                                        std::function<bool(const std::string&)> present,
                                        std::function<void(const std::string&)> print);

}  // namespace persoflow::actors
