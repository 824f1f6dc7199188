// Smart-card readers through pcsc-lite: listing, and a watcher that reports insertions and
// removals. Implemented in devices/ over SCardGetStatusChange; simulated readers (sim/) implement
// the same ReaderWatcher interface.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "persoflow/common/status.hpp"

namespace persoflow::devices {

struct ReaderInfo {
  std::string name;        // "Virtual PCD 00 00"
  bool card_present = false;
  std::string atr_hex;     // upper-case hex, empty without a card
};

// The readers pcscd knows now. pcscd not running: Errc::kUnavailable with a clear message.
Result<std::vector<ReaderInfo>> list_readers();

struct ReaderEvent {
  enum class Kind {
    kReaderAdded,
    kReaderRemoved,
    kCardInserted,
    kCardRemoved,
    kServiceLost,      // pcscd went away; the watcher keeps trying to reconnect
    kServiceRestored,  // pcscd is back; a fresh kCardInserted follows for cards present
  };
  Kind kind;
  std::string reader;
  std::string atr_hex;  // with kCardInserted
  std::string detail;   // a message for people (kServiceLost: why)
};

// Watches every reader on its own thread (SCardGetStatusChange blocks) and hands each event to
// the callback, from that thread: the callback must only post to its owner's strand. stop()
// cancels the wait (SCardCancel) and joins; it is also called by the destructor.
class ReaderWatcher {
 public:
  using Callback = std::function<void(const ReaderEvent&)>;
  virtual ~ReaderWatcher() = default;
  virtual void stop() = 0;
};

std::unique_ptr<ReaderWatcher> watch_readers(ReaderWatcher::Callback callback);

}  // namespace persoflow::devices
