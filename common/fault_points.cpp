// The table of numbered fault points and their activation from the environment
// (fault_points.hpp). Numbers are positions in this table plus one, so entries are only ever
// appended.
#include "persoflow/common/fault_points.hpp"

#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>
#include <string>

namespace persoflow {
namespace {

constexpr FaultPointInfo kTable[] = {
    {FaultPoint::kCardPulledBeforeWrite, "card.pulled_before_write", "devices",
     "a write to a card (key generation, certificate or object store/delete, PIN change)",
     "the card is pulled before the write: it and every later call fail CKR_DEVICE_REMOVED",
     true},
    {FaultPoint::kCardPulledAfterWrite, "card.pulled_after_write", "devices",
     "a write to a card",
     "the write is done, then the card is pulled: the call fails CKR_DEVICE_REMOVED, as do all "
     "later calls on that card",
     true},
    {FaultPoint::kCardDeviceError, "card.device_error", "devices", "any call on a card",
     "that one call fails CKR_DEVICE_ERROR without effect", false},
    {FaultPoint::kCardPinBlocked, "card.pin_blocked", "devices", "a login or PIN change",
     "the user PIN reports blocked: that call and every later login on the card fail "
     "CKR_PIN_LOCKED",
     true},
    {FaultPoint::kPcscdGone, "pcscd.gone", "devices",
     "any card call, card opening or token listing",
     "the reader service is gone: this and every later card operation of the process fail "
     "(SCARD_E_NO_SERVICE as CKR_DEVICE_ERROR)",
     true},
    {FaultPoint::kSqliteFullOnCommit, "sqlite.full_on_commit", "storage",
     "a commit of a SQLite write transaction (its first WAL write)",
     "the WAL write fails SQLITE_FULL: nothing of the transaction reaches the file", false},
    {FaultPoint::kSqliteIoerrOnCommit, "sqlite.ioerr_on_commit", "storage",
     "a commit of a SQLite write transaction (the WAL fsync)",
     "the WAL frames are written but the fsync fails SQLITE_IOERR_FSYNC: the outcome is unknown "
     "to the writer (the commit may be there after a restart)",
     false},
    {FaultPoint::kSqliteBusyOnCommit, "sqlite.busy_on_commit", "storage",
     "the start of a SQLite write transaction (taking the WAL write lock)",
     "the lock answers SQLITE_BUSY once (another writer holds it)", false},
    {FaultPoint::kCmRefused, "cm.refused", "cm-link", "a TCP connection to the CM host",
     "the connection is reset at once (connection refused)", false},
    {FaultPoint::kCmTimeout, "cm.timeout", "cm-link", "a TCP connection to the CM host",
     "the CM host never answers: the connection is held open and silent until the client gives "
     "up",
     false},
    {FaultPoint::kCmDropAfterRequest, "cm.drop_after_request", "cm-link",
     "a TCP connection to the CM host",
     "the request reaches the CM host (which acts on it), then the connection is reset before "
     "the answer reaches the station",
     false},
    {FaultPoint::kCmLateAnswer, "cm.late_answer", "cm-link", "a TCP connection to the CM host",
     "the CM host's answer is held back (2 s by default) before it is delivered", false},
    {FaultPoint::kProcessKilled, "process.killed", "process",
     "a journal commit (crash point journal.after_commit)",
     "SIGKILL right after the commit, before its appends are acknowledged; the other crash "
     "points are reached with PERSOFLOW_CRASH_AT",
     false},
    {FaultPoint::kCardFull, "card.full", "devices",
     "a write that makes an object on a card (key generation, key import, certificate store)",
     "that write fails CKR_DEVICE_MEMORY without effect: the card has no room left", false},
};

struct Armed {
  std::optional<FaultSpec> spec;
  std::string count_path;
};

Armed& armed() {
  static Armed a;
  return a;
}

std::mutex mu;
std::map<int, long> counts;
std::map<int, bool> fired_points;

void write_counts() {
  const std::string& path = armed().count_path;
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) return;
  for (const auto& [number, n] : counts) {
    std::fprintf(f, "%d %s %ld\n", number, kTable[number - 1].name, n);
  }
  std::fclose(f);
  std::rename(tmp.c_str(), path.c_str());
}

// Reads the environment once, before main().
const bool kActivated = [] {
  Armed& a = armed();
  if (const char* spec = std::getenv("PERSOFLOW_FAULT"); spec && *spec) {
    std::string why;
    a.spec = parse_fault_spec(spec, &why);
    if (!a.spec) std::fprintf(stderr, "persoflow: ignoring PERSOFLOW_FAULT: %s\n", why.c_str());
  }
  if (const char* path = std::getenv("PERSOFLOW_FAULT_COUNT"); path && *path) a.count_path = path;
  const bool on = a.spec.has_value() || !a.count_path.empty();
  fault_detail::active.store(on, std::memory_order_relaxed);
  return on;
}();

}  // namespace

namespace fault_detail {

std::atomic<bool> active{false};

bool reached(FaultPoint point) {
  const Armed& a = armed();
  const int number = fault_number(point);
  std::lock_guard lock(mu);
  const long n = ++counts[number];
  write_counts();
  if (!a.spec || a.spec->point != point) return false;
  if (n == a.spec->nth || (fault_point_info(point).sticky && n > a.spec->nth)) {
    fired_points[number] = true;
    return true;
  }
  return false;
}

bool fired(FaultPoint point) {
  std::lock_guard lock(mu);
  auto it = fired_points.find(fault_number(point));
  return it != fired_points.end() && it->second;
}

}  // namespace fault_detail

int fault_number(FaultPoint point) { return static_cast<int>(point); }

std::span<const FaultPointInfo> fault_points() { return kTable; }

const FaultPointInfo& fault_point_info(FaultPoint point) {
  return kTable[fault_number(point) - 1];
}

std::optional<FaultPoint> find_fault_point(std::string_view text) {
  const std::string s(text);
  char* end = nullptr;
  const long number = std::strtol(s.c_str(), &end, 10);
  if (!s.empty() && end && *end == '\0') {
    if (number >= 1 && number <= static_cast<long>(std::size(kTable))) {
      return kTable[number - 1].point;
    }
    return std::nullopt;
  }
  for (const auto& p : kTable) {
    if (s == p.name) return p.point;
  }
  return std::nullopt;
}

std::optional<FaultSpec> parse_fault_spec(std::string_view text, std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<FaultSpec> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    return fail("'" + std::string(text) + "' is not <number or name>:<nth>");
  }
  auto point = find_fault_point(text.substr(0, colon));
  if (!point) return fail("no fault point '" + std::string(text.substr(0, colon)) + "'");
  const std::string nth(text.substr(colon + 1));
  char* end = nullptr;
  const long n = std::strtol(nth.c_str(), &end, 10);
  if (nth.empty() || *end != '\0' || n < 1) {
    return fail("the operation number '" + nth + "' is not a positive integer");
  }
  return FaultSpec{*point, n};
}

}  // namespace persoflow
