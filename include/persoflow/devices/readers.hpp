// Smart-card readers through pcsc-lite: listing, and a watcher that reports insertions and
// removals. Implemented in devices/ over SCardGetStatusChange; simulated readers (sim/) implement
// the same ReaderWatcher interface.
//
// Which pcscd is used: libpcsclite's, i.e. /run/pcscd/pcscd.comm unless the environment variable
// PCSCLITE_CSOCK_NAME names another socket. libpcsclite reads that variable once per process, at
// its first call, so set it before the first list_readers() / watch_readers().
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/common/status.hpp"

namespace persoflow::devices {

struct ReaderInfo {
  std::string name;  // "Virtual PCD 00 00"
  bool card_present = false;
  std::string atr_hex;  // upper-case hex, empty without a card
};

// The readers pcscd knows now, in pcscd's order, with card presence and ATR (a snapshot: it does
// not wait). pcscd not running: Errc::kUnavailable "pcscd is not running (no PC/SC service)".
// Other PC/SC failures carry pcsc_category() with the SCARD_* code as value.
Result<std::vector<ReaderInfo>> list_readers();

// A PC/SC return code by name and meaning: "SCARD_E_NO_SERVICE (Service not available.)".
std::string pcsc_error_text(long code);

// Whether a PKCS#11 slot belongs to a PC/SC reader. OpenSC names each slot after its reader:
// CK_SLOT_INFO.slotDescription is the reader name, blank-padded (not NUL-terminated) to 64 bytes
// and cut there when longer. slot_description may be given raw (padded) or trimmed.
bool reader_matches_slot(std::string_view reader_name, std::string_view slot_description);

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

// "card-inserted", "service-lost", ... (for logs and --json).
const char* to_string(ReaderEvent::Kind kind);

// Watches every reader on its own thread (SCardGetStatusChange blocks) and hands each event to
// the callback, from that thread: the callback must only post to its owner's strand. stop()
// cancels the wait (SCardCancel) and joins, within milliseconds; no callback runs after it
// returns. It is also called by the destructor. Never call stop() from the callback (it would
// join its own thread).
//
// Order of events: at start, kReaderAdded for each reader and kCardInserted for each card
// present (or kServiceLost when pcscd is not running). When pcscd goes away, kServiceLost once;
// the watcher then retries with a backoff of 100 ms doubling to 1 s, and when pcscd answers again
// it reports kServiceRestored, the reader changes, and kCardInserted for every card present.
class ReaderWatcher {
 public:
  using Callback = std::function<void(const ReaderEvent&)>;
  virtual ~ReaderWatcher() = default;
  virtual void stop() = 0;
};

std::unique_ptr<ReaderWatcher> watch_readers(ReaderWatcher::Callback callback);

}  // namespace persoflow::devices
