// Readers over pcsc-lite: list_readers() takes a snapshot with SCardGetStatusChange(timeout 0);
// the watcher runs SCardGetStatusChange(INFINITE) on its own thread over every reader plus the
// "\\?PnP?\Notification" pseudo-reader, and survives pcscd restarts by re-establishing its
// context with a bounded backoff. SCARD_* codes are translated here, once, into pcsc_category()
// codes and messages that name the code.
#include "persoflow/devices/readers.hpp"

#include <PCSC/pcsclite.h>
#include <PCSC/winscard.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

namespace persoflow::devices {
namespace {

using namespace std::chrono_literals;

constexpr const char* kPnpReader = "\\\\?PnP?\\Notification";
constexpr auto kFirstBackoff = 100ms;
constexpr auto kMaxBackoff = 1000ms;

const char* scard_name(LONG code) {
  switch (code) {
#define PF_SCARD_CASE(c) \
  case c:                \
    return #c
    PF_SCARD_CASE(SCARD_S_SUCCESS);
    PF_SCARD_CASE(SCARD_F_INTERNAL_ERROR);
    PF_SCARD_CASE(SCARD_E_CANCELLED);
    PF_SCARD_CASE(SCARD_E_INVALID_HANDLE);
    PF_SCARD_CASE(SCARD_E_INVALID_PARAMETER);
    PF_SCARD_CASE(SCARD_E_INVALID_TARGET);
    PF_SCARD_CASE(SCARD_E_NO_MEMORY);
    PF_SCARD_CASE(SCARD_F_WAITED_TOO_LONG);
    PF_SCARD_CASE(SCARD_E_INSUFFICIENT_BUFFER);
    PF_SCARD_CASE(SCARD_E_UNKNOWN_READER);
    PF_SCARD_CASE(SCARD_E_TIMEOUT);
    PF_SCARD_CASE(SCARD_E_SHARING_VIOLATION);
    PF_SCARD_CASE(SCARD_E_NO_SMARTCARD);
    PF_SCARD_CASE(SCARD_E_UNKNOWN_CARD);
    PF_SCARD_CASE(SCARD_E_CANT_DISPOSE);
    PF_SCARD_CASE(SCARD_E_PROTO_MISMATCH);
    PF_SCARD_CASE(SCARD_E_NOT_READY);
    PF_SCARD_CASE(SCARD_E_INVALID_VALUE);
    PF_SCARD_CASE(SCARD_E_SYSTEM_CANCELLED);
    PF_SCARD_CASE(SCARD_F_COMM_ERROR);
    PF_SCARD_CASE(SCARD_F_UNKNOWN_ERROR);
    PF_SCARD_CASE(SCARD_E_INVALID_ATR);
    PF_SCARD_CASE(SCARD_E_NOT_TRANSACTED);
    PF_SCARD_CASE(SCARD_E_READER_UNAVAILABLE);
    PF_SCARD_CASE(SCARD_P_SHUTDOWN);
    PF_SCARD_CASE(SCARD_E_PCI_TOO_SMALL);
    PF_SCARD_CASE(SCARD_E_READER_UNSUPPORTED);
    PF_SCARD_CASE(SCARD_E_DUPLICATE_READER);
    PF_SCARD_CASE(SCARD_E_CARD_UNSUPPORTED);
    PF_SCARD_CASE(SCARD_E_NO_SERVICE);
    PF_SCARD_CASE(SCARD_E_SERVICE_STOPPED);
    PF_SCARD_CASE(SCARD_E_UNSUPPORTED_FEATURE);
    PF_SCARD_CASE(SCARD_E_ICC_INSTALLATION);
    PF_SCARD_CASE(SCARD_E_ICC_CREATEORDER);
    PF_SCARD_CASE(SCARD_E_DIR_NOT_FOUND);
    PF_SCARD_CASE(SCARD_E_FILE_NOT_FOUND);
    PF_SCARD_CASE(SCARD_E_NO_DIR);
    PF_SCARD_CASE(SCARD_E_NO_FILE);
    PF_SCARD_CASE(SCARD_E_NO_ACCESS);
    PF_SCARD_CASE(SCARD_E_WRITE_TOO_MANY);
    PF_SCARD_CASE(SCARD_E_BAD_SEEK);
    PF_SCARD_CASE(SCARD_E_INVALID_CHV);
    PF_SCARD_CASE(SCARD_E_UNKNOWN_RES_MNG);
    PF_SCARD_CASE(SCARD_E_NO_SUCH_CERTIFICATE);
    PF_SCARD_CASE(SCARD_E_CERTIFICATE_UNAVAILABLE);
    PF_SCARD_CASE(SCARD_E_NO_READERS_AVAILABLE);
    PF_SCARD_CASE(SCARD_E_COMM_DATA_LOST);
    PF_SCARD_CASE(SCARD_E_NO_KEY_CONTAINER);
    PF_SCARD_CASE(SCARD_E_SERVER_TOO_BUSY);
    PF_SCARD_CASE(SCARD_W_UNSUPPORTED_CARD);
    PF_SCARD_CASE(SCARD_W_UNRESPONSIVE_CARD);
    PF_SCARD_CASE(SCARD_W_UNPOWERED_CARD);
    PF_SCARD_CASE(SCARD_W_RESET_CARD);
    PF_SCARD_CASE(SCARD_W_REMOVED_CARD);
    PF_SCARD_CASE(SCARD_W_SECURITY_VIOLATION);
    PF_SCARD_CASE(SCARD_W_WRONG_CHV);
    PF_SCARD_CASE(SCARD_W_CHV_BLOCKED);
    PF_SCARD_CASE(SCARD_W_EOF);
    PF_SCARD_CASE(SCARD_W_CANCELLED_BY_USER);
    PF_SCARD_CASE(SCARD_W_CARD_NOT_AUTHENTICATED);
#undef PF_SCARD_CASE
    default:
      return nullptr;
  }
}

// The codes that say pcscd itself is gone (stopped, crashed, restarted). Any other failure of
// the wait also ends the session and is reported as a lost context.
bool is_service_gone(LONG code) {
  return code == SCARD_E_NO_SERVICE || code == SCARD_E_SERVICE_STOPPED ||
         code == SCARD_E_INVALID_HANDLE || code == SCARD_F_COMM_ERROR ||
         code == SCARD_F_INTERNAL_ERROR || code == SCARD_E_NO_MEMORY;
}

constexpr const char* kNoServiceMessage = "pcscd is not running (no PC/SC service)";

Status pcsc_status(LONG code, const std::string& what) {
  if (code == SCARD_E_NO_SERVICE) return make_status(Errc::kUnavailable, kNoServiceMessage);
  return make_status(std::error_code(static_cast<int>(code), pcsc_category()),
                     what + ": " + pcsc_error_text(code));
}

std::string to_hex(const unsigned char* data, std::size_t size) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[data[i] >> 4]);
    out.push_back(kDigits[data[i] & 0x0F]);
  }
  return out;
}

// SCardListReaders into names. No reader at all is an empty list, not an error.
LONG list_reader_names(SCARDCONTEXT context, std::vector<std::string>& names) {
  names.clear();
  for (int attempt = 0; attempt < 4; ++attempt) {  // the list may grow between the two calls
    DWORD size = 0;
    LONG rv = SCardListReaders(context, nullptr, nullptr, &size);
    if (rv == SCARD_E_NO_READERS_AVAILABLE) return SCARD_S_SUCCESS;
    if (rv != SCARD_S_SUCCESS) return rv;
    std::string buffer(size, '\0');
    rv = SCardListReaders(context, nullptr, buffer.data(), &size);
    if (rv == SCARD_E_INSUFFICIENT_BUFFER) continue;
    if (rv == SCARD_E_NO_READERS_AVAILABLE) return SCARD_S_SUCCESS;
    if (rv != SCARD_S_SUCCESS) return rv;
    buffer.resize(std::min<std::size_t>(size, buffer.size()));
    // A multi-string: names separated by NUL, ended by an empty name.
    for (std::size_t pos = 0; pos < buffer.size() && buffer[pos] != '\0';) {
      std::size_t end = buffer.find('\0', pos);
      if (end == std::string::npos) end = buffer.size();
      names.push_back(buffer.substr(pos, end - pos));
      pos = end + 1;
    }
    return SCARD_S_SUCCESS;
  }
  return SCARD_E_INSUFFICIENT_BUFFER;
}

struct ContextGuard {
  SCARDCONTEXT context = 0;
  ~ContextGuard() {
    if (context != 0) SCardReleaseContext(context);
  }
};

// The watcher: one thread, one context at a time. The mutex guards what stop() needs (the
// current context to cancel, the stop flag) and nothing the thread holds during a wait.
class PcscWatcher final : public ReaderWatcher {
 public:
  explicit PcscWatcher(Callback callback) : callback_(std::move(callback)) {
    thread_ = std::thread([this] { run(); });
  }
  ~PcscWatcher() override { stop(); }

  void stop() override {
    std::lock_guard stop_lock(stop_mutex_);
    if (!thread_.joinable()) return;
    {
      std::unique_lock lock(mutex_);
      stopping_ = true;
      cv_.notify_all();
      // SCardCancel only interrupts a wait already in progress: one that the thread is about to
      // enter would be missed, so cancel again until the thread has noticed the flag.
      while (!finished_) {
        if (context_ != 0) SCardCancel(context_);
        cv_.wait_for(lock, 20ms);
      }
    }
    thread_.join();
  }

 private:
  struct Known {
    bool present = false;
    std::string atr_hex;
    DWORD state = SCARD_STATE_UNAWARE;  // last dwEventState, fed back as dwCurrentState
  };

  bool stopping() {
    std::lock_guard lock(mutex_);
    return stopping_;
  }

  // Waits for the backoff or until stop(); true when stopping.
  bool wait_or_stop(std::chrono::milliseconds delay) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, delay, [this] { return stopping_; });
  }

  void emit(ReaderEvent::Kind kind, const std::string& reader, std::string atr_hex = {},
            std::string detail = {}) {
    callback_(ReaderEvent{kind, reader, std::move(atr_hex), std::move(detail)});
  }

  void run() {
    auto backoff = std::chrono::milliseconds(kFirstBackoff);
    bool lost_reported = false;
    while (!stopping()) {
      SCARDCONTEXT context = 0;
      LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, nullptr, nullptr, &context);
      if (rv != SCARD_S_SUCCESS) {
        if (!lost_reported) {
          emit(ReaderEvent::Kind::kServiceLost, {}, {},
               rv == SCARD_E_NO_SERVICE ? kNoServiceMessage : pcsc_error_text(rv));
          lost_reported = true;
        }
        if (wait_or_stop(backoff)) break;
        backoff = std::min(backoff * 2, std::chrono::milliseconds(kMaxBackoff));
        continue;
      }
      {
        std::lock_guard lock(mutex_);
        context_ = context;
      }
      if (lost_reported) {
        emit(ReaderEvent::Kind::kServiceRestored, {}, {}, "pcscd is running again");
        lost_reported = false;
      }
      backoff = kFirstBackoff;
      LONG end = session(context);
      {
        std::lock_guard lock(mutex_);
        context_ = 0;
      }
      SCardReleaseContext(context);
      if (end == SCARD_S_SUCCESS) break;  // stopping
      emit(ReaderEvent::Kind::kServiceLost, {}, {}, loss_detail(end));
      lost_reported = true;
      if (wait_or_stop(backoff)) break;
    }
    std::lock_guard lock(mutex_);
    finished_ = true;
    cv_.notify_all();
  }

  // Why the session ended, for people. When pcscd dies under a waiting client, libpcsclite
  // 1.9.9 may answer with an unrelated code (SCARD_W_SECURITY_VIOLATION was seen): ask pcscd
  // whether it is still there before blaming the code.
  static std::string loss_detail(LONG end) {
    if (is_service_gone(end)) return "pcscd went away: " + pcsc_error_text(end);
    SCARDCONTEXT probe = 0;
    LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, nullptr, nullptr, &probe);
    if (rv == SCARD_S_SUCCESS) {
      SCardReleaseContext(probe);
      return "lost the PC/SC context: " + pcsc_error_text(end);
    }
    return "pcscd went away (the wait ended with " + pcsc_error_text(end) + ")";
  }

  // One context's life. Returns SCARD_S_SUCCESS when stopping, else the code that ended it.
  LONG session(SCARDCONTEXT context) {
    // Cards are reported afresh in every session (after kServiceRestored the owner learns
    // presence again); readers are diffed against what the owner was told before.
    for (auto& [name, known] : known_) known = Known{};

    std::vector<std::string> names;
    std::vector<SCARD_READERSTATE> states;
    DWORD pnp_state = SCARD_STATE_UNAWARE;

    auto relist = [&]() -> LONG {
      std::vector<std::string> fresh;
      if (LONG rv = list_reader_names(context, fresh); rv != SCARD_S_SUCCESS) return rv;
      for (auto it = known_.begin(); it != known_.end();) {
        if (std::find(fresh.begin(), fresh.end(), it->first) == fresh.end()) {
          if (it->second.present) emit(ReaderEvent::Kind::kCardRemoved, it->first);
          emit(ReaderEvent::Kind::kReaderRemoved, it->first);
          it = known_.erase(it);
        } else {
          ++it;
        }
      }
      for (const auto& name : fresh) {
        if (known_.emplace(name, Known{}).second) emit(ReaderEvent::Kind::kReaderAdded, name);
      }
      names = std::move(fresh);
      states.assign(names.size() + 1, SCARD_READERSTATE{});
      states[0].szReader = kPnpReader;
      states[0].dwCurrentState = pnp_state;
      for (std::size_t i = 0; i < names.size(); ++i) {
        states[i + 1].szReader = names[i].c_str();
        states[i + 1].dwCurrentState = known_[names[i]].state;
      }
      return SCARD_S_SUCCESS;
    };

    if (LONG rv = relist(); rv != SCARD_S_SUCCESS) return rv;
    while (true) {
      LONG rv =
          SCardGetStatusChange(context, INFINITE, states.data(), static_cast<DWORD>(states.size()));
      if (stopping()) return SCARD_S_SUCCESS;
      if (rv == SCARD_E_CANCELLED || rv == SCARD_E_TIMEOUT) continue;
      if (rv == SCARD_E_UNKNOWN_READER || rv == SCARD_E_READER_UNAVAILABLE) {
        // A reader went away between the listing and the wait: list again.
        if (LONG list_rv = relist(); list_rv != SCARD_S_SUCCESS) return list_rv;
        continue;
      }
      if (rv != SCARD_S_SUCCESS) return rv;

      bool readers_changed = false;
      if (states[0].dwEventState & SCARD_STATE_CHANGED) readers_changed = true;
      pnp_state = states[0].dwEventState & ~static_cast<DWORD>(SCARD_STATE_CHANGED);
      states[0].dwCurrentState = pnp_state;
      for (std::size_t i = 1; i < states.size(); ++i) {
        SCARD_READERSTATE& st = states[i];
        if (!(st.dwEventState & SCARD_STATE_CHANGED)) continue;
        const DWORD event = st.dwEventState & ~static_cast<DWORD>(SCARD_STATE_CHANGED);
        st.dwCurrentState = event;
        if (event & (SCARD_STATE_UNKNOWN | SCARD_STATE_IGNORE)) {
          readers_changed = true;
          continue;
        }
        Known& known = known_[names[i - 1]];
        known.state = event;
        const bool present = (event & SCARD_STATE_PRESENT) != 0;
        std::string atr = present ? to_hex(st.rgbAtr, std::min<std::size_t>(st.cbAtr, MAX_ATR_SIZE))
                                  : std::string();
        if (present && (!known.present || atr != known.atr_hex)) {
          if (known.present) emit(ReaderEvent::Kind::kCardRemoved, names[i - 1]);
          known.present = true;
          known.atr_hex = atr;
          emit(ReaderEvent::Kind::kCardInserted, names[i - 1], atr,
               (event & SCARD_STATE_MUTE) ? "the card does not answer (mute)" : "");
        } else if (!present && known.present) {
          known.present = false;
          known.atr_hex.clear();
          emit(ReaderEvent::Kind::kCardRemoved, names[i - 1]);
        }
      }
      if (readers_changed) {
        if (LONG list_rv = relist(); list_rv != SCARD_S_SUCCESS) return list_rv;
      }
    }
  }

  Callback callback_;
  std::map<std::string, Known> known_;  // the watcher thread's only
  std::mutex stop_mutex_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool finished_ = false;
  SCARDCONTEXT context_ = 0;
  std::thread thread_;
};

}  // namespace

std::string pcsc_error_text(long code) {
  const char* name = scard_name(static_cast<LONG>(code));
  std::string meaning = pcsc_stringify_error(static_cast<LONG>(code));
  if (name == nullptr) return meaning;
  return std::string(name) + " (" + meaning + ")";
}

namespace {

Result<std::vector<ReaderInfo>> list_readers_once(int attempts_left) {
  ContextGuard guard;
  LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, nullptr, nullptr, &guard.context);
  if (rv != SCARD_S_SUCCESS) {
    guard.context = 0;
    return pcsc_status(rv, "connecting to pcscd");
  }
  std::vector<std::string> names;
  rv = list_reader_names(guard.context, names);
  if (rv != SCARD_S_SUCCESS) return pcsc_status(rv, "listing readers");
  std::vector<ReaderInfo> readers;
  if (names.empty()) return readers;

  std::vector<SCARD_READERSTATE> states(names.size(), SCARD_READERSTATE{});
  for (std::size_t i = 0; i < names.size(); ++i) {
    states[i].szReader = names[i].c_str();
    states[i].dwCurrentState = SCARD_STATE_UNAWARE;
  }
  rv = SCardGetStatusChange(guard.context, 0, states.data(), static_cast<DWORD>(states.size()));
  if (rv == SCARD_E_UNKNOWN_READER || rv == SCARD_E_READER_UNAVAILABLE) {
    // A reader vanished between the two calls: try again on a fresh listing.
    if (attempts_left > 1) return list_readers_once(attempts_left - 1);
  }
  if (rv != SCARD_S_SUCCESS && rv != SCARD_E_TIMEOUT)
    return pcsc_status(rv, "reading reader states");
  for (std::size_t i = 0; i < names.size(); ++i) {
    ReaderInfo info;
    info.name = names[i];
    info.card_present = (states[i].dwEventState & SCARD_STATE_PRESENT) != 0;
    if (info.card_present) {
      info.atr_hex = to_hex(states[i].rgbAtr, std::min<std::size_t>(states[i].cbAtr, MAX_ATR_SIZE));
    }
    readers.push_back(std::move(info));
  }
  return readers;
}

}  // namespace

Result<std::vector<ReaderInfo>> list_readers() { return list_readers_once(3); }

bool reader_matches_slot(std::string_view reader_name, std::string_view slot_description) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.remove_suffix(1);
    return s;
  };
  constexpr std::size_t kSlotDescriptionSize = 64;  // CK_SLOT_INFO.slotDescription
  std::string_view description = trim(slot_description);
  if (description.empty()) return false;
  return trim(reader_name.substr(0, kSlotDescriptionSize)) == description;
}

const char* to_string(ReaderEvent::Kind kind) {
  switch (kind) {
    case ReaderEvent::Kind::kReaderAdded:
      return "reader-added";
    case ReaderEvent::Kind::kReaderRemoved:
      return "reader-removed";
    case ReaderEvent::Kind::kCardInserted:
      return "card-inserted";
    case ReaderEvent::Kind::kCardRemoved:
      return "card-removed";
    case ReaderEvent::Kind::kServiceLost:
      return "service-lost";
    case ReaderEvent::Kind::kServiceRestored:
      return "service-restored";
  }
  return "unknown";
}

std::unique_ptr<ReaderWatcher> watch_readers(ReaderWatcher::Callback callback) {
  return std::make_unique<PcscWatcher>(std::move(callback));
}

}  // namespace persoflow::devices
