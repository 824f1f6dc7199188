// Numbered fault points: places where a crash test makes this process's environment fail on
// purpose (a card pulled, a full disk, the CM host gone, the process killed), so the station's
// recovery can be proven the way SQLite proves its own (inject at the N-th operation for
// N = 1, 2, ..., restart from disk, check the invariants). docs/faults.md has the table.
//
// A number is never reused or renumbered: crash-test reports, seeds and docs name points by it.
//
// Activation (read once, at static initialisation):
//   PERSOFLOW_FAULT=<number or name>:<nth>  the point's nth operation (1-based) fails; a sticky
//                                           point (a pulled card, pcscd gone) stays failed for
//                                           the rest of the process
//   PERSOFLOW_FAULT_COUNT=<file>            writes "number name count" lines: how many operations
//                                           of each point this process reached (a counting run)
// Unset, fault_fires() is one relaxed atomic load and returns false.
//
// The CM-link points (9-12) act in sim/fault_proxy (a TCP proxy the crash test puts between the
// station and the CM host), which counts connections instead of reading the variable; point 13
// is the crash points of common/crash_point.hpp (PERSOFLOW_FAULT=13:<k> kills the process after
// its k-th journal commit).
#pragma once

#include <atomic>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace persoflow {

enum class FaultPoint : int {
  kCardPulledBeforeWrite = 1,
  kCardPulledAfterWrite = 2,
  kCardDeviceError = 3,
  kCardPinBlocked = 4,
  kPcscdGone = 5,
  kSqliteFullOnCommit = 6,
  kSqliteIoerrOnCommit = 7,
  kSqliteBusyOnCommit = 8,
  kCmRefused = 9,
  kCmTimeout = 10,
  kCmDropAfterRequest = 11,
  kCmLateAnswer = 12,
  kProcessKilled = 13,
  kCardFull = 14,
};

struct FaultPointInfo {
  FaultPoint point;
  const char* name;       // "card.pulled_before_write"
  const char* layer;      // devices | storage | cm-link | process
  const char* operation;  // what one counted operation is
  const char* effect;     // what the fault does
  bool sticky;            // stays failed after firing
};

int fault_number(FaultPoint point);
std::span<const FaultPointInfo> fault_points();
const FaultPointInfo& fault_point_info(FaultPoint point);
// By number ("7") or name ("sqlite.ioerr_on_commit").
std::optional<FaultPoint> find_fault_point(std::string_view number_or_name);

// The armed fault of this process, if any.
struct FaultSpec {
  FaultPoint point;
  long nth = 1;
};
// Parses "<number or name>:<nth>"; nullopt with a reason in *why when it is not one.
std::optional<FaultSpec> parse_fault_spec(std::string_view text, std::string* why = nullptr);

namespace fault_detail {
extern std::atomic<bool> active;  // armed or counting
bool reached(FaultPoint point);
bool fired(FaultPoint point);
}  // namespace fault_detail

// Called where an operation of the point is about to happen: counts it, and returns true when
// the fault fires now (the nth operation, or any later one of a sticky point).
inline bool fault_fires(FaultPoint point) {
  if (!fault_detail::active.load(std::memory_order_relaxed)) return false;
  return fault_detail::reached(point);
}

// Whether a sticky point has fired in this process (without counting an operation).
inline bool fault_has_fired(FaultPoint point) {
  if (!fault_detail::active.load(std::memory_order_relaxed)) return false;
  return fault_detail::fired(point);
}

}  // namespace persoflow
