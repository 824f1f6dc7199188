// The station journal: SQLite (WAL, synchronous=FULL), write-ahead intent, hash-chained.
//
// One append = one event of one workflow, the state it led to and the commands it produced, in
// one transaction, committed before any command runs (DESIGN.md, "The persistence contract").
// Every record carries a journal-wide sequence number and SHA-256(previous hash || canonical
// bytes of this record), so `verify` can prove the journal unaltered and name the first bad
// record. Values (event, state, command payloads) are stored as opaque canonical bytes produced
// by machines/codec; the journal never interprets them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/common/status.hpp"

namespace persoflow::storage {

struct CommandEntry {
  std::uint32_t index = 0;      // position among the commands of this step
  std::string idempotency_key;  // derived from (workflow id, step, index)
  std::string type;
  std::string payload;  // canonical bytes of the machines::Command
  friend bool operator==(const CommandEntry&, const CommandEntry&) = default;
};

enum class WorkflowStatus { kRunning, kSuspended, kDone, kCancelled };
const char* to_string(WorkflowStatus status);

struct AppendRequest {
  std::string workflow_id;
  std::string machine;       // machine name, e.g. "issue-card"
  std::uint64_t step = 0;    // 0 for the workflow's first event, then 1, 2, ... without gaps
  std::string event_type;
  std::string event;         // canonical bytes of the machines::Event
  std::string result_of;     // idempotency key of the command this event answers, or empty
  std::string state_name;
  std::string state;         // canonical bytes of the machines::State after the event
  WorkflowStatus status = WorkflowStatus::kRunning;
  std::vector<CommandEntry> commands;
  friend bool operator==(const AppendRequest&, const AppendRequest&) = default;
};

struct JournalRecord {
  std::uint64_t seq = 0;  // journal-wide, 1, 2, ... without gaps
  std::int64_t recorded_at_ms = 0;  // wall clock, for people; not part of any machine's input
  AppendRequest body;
  std::string prev_hash;  // hex SHA-256; 64 zeros for the first record
  std::string hash;       // hex SHA-256 over prev_hash and the canonical bytes of this record
};

struct WorkflowSummary {
  std::string workflow_id;
  std::string machine;
  std::string state_name;
  WorkflowStatus status = WorkflowStatus::kRunning;
  std::uint64_t steps = 0;  // number of events recorded
  std::int64_t created_at_ms = 0;
  std::int64_t updated_at_ms = 0;
};

struct VerifyReport {
  bool intact = true;
  std::uint64_t records_checked = 0;
  std::optional<std::uint64_t> first_bad_seq;  // the first record that fails, when not intact
  std::string reason;                          // what is wrong with it, for a person
  std::string head_hash;                       // hash of the last record (64 zeros if none)
};

struct OpenOptions {
  bool create_if_missing = true;
  bool read_only = false;
  // A cap on the journal file's size in pages (SQLite's max_page_count); 0 = no cap. Reaching it
  // fails the append with SQLITE_FULL, like a full disk (and poisons the instance).
  std::uint32_t max_page_count = 0;
  // The WAL size in frames (pages) at which a background checkpoint copies it into the database
  // file, so that the WAL starts over (docs/journal.md, "Checkpoints"); 0 = 16384.
  std::uint32_t checkpoint_frames = 0;
  // How many records the writer appends before it writes the workflows table again (docs/
  // journal.md, "Schema version 4"); readers add the records since its last write. 0 = 1024;
  // 1 = with every transaction.
  std::uint32_t summary_every = 0;
  // The wall clock stamped on records (recorded_at_ms, milliseconds since the epoch); default the
  // system clock. A simulated station passes its virtual clock so its journal is reproducible.
  std::function<std::int64_t()> wall_clock_ms{};
};

// One append's outcome inside a group (Journal::append_each).
struct GroupOutcome {
  Status commit;                // the transaction's outcome; not OK: every request failed
  std::vector<Status> each;     // per request: its own validation failure, or `commit`
};

// The canonical bytes of a record that the hash chain covers (layout in journal.cpp and
// docs/journal.md), and the chain: hex SHA-256 over the 32 raw bytes of prev_hash followed by
// those bytes. Exposed so a test or an outside tool can check the layout independently.
std::string canonical_record_bytes(const JournalRecord& record);
std::string chain_hash(const std::string& prev_hash_hex, const std::string& canonical_bytes);
// A record's commands as stored in its `commands` column (the command part of the canonical
// bytes), and back; decode fails with Errc::kCorrupt on anything encode cannot produce.
std::string encode_commands(const std::vector<CommandEntry>& commands);
Result<std::vector<CommandEntry>> decode_commands(std::string_view bytes);
Result<WorkflowStatus> parse_workflow_status(std::string_view text);

// The idempotency key of command `index` of a workflow's record `step`: "<workflow id>/<step>/
// <index>". The journal records no other key (schema version 3), so keys are unique because a
// workflow's steps are.
std::string idempotency_key_of(std::string_view workflow_id, std::uint64_t step,
                               std::uint32_t index);
bool is_derived_key(std::string_view key, std::string_view workflow_id, std::uint64_t step,
                    std::uint32_t index);

// The schema version this build writes; older journals are migrated on a writable open, newer
// ones refused.
inline constexpr int kJournalSchemaVersion = 4;
// SQLite's application_id of a persoflow journal ("PFJN"), checked before anything else.
inline constexpr std::int32_t kJournalApplicationId = 0x50464A4E;

// A journal file. One instance is used by one thread at a time; the GroupCommitWriter below
// serialises the appends of many workflows onto one instance.
class Journal {
 public:
  virtual ~Journal() = default;

  // A path in a missing directory, a read-only file opened for writing, a locked, corrupt or
  // newer-schema journal, or a file that is not a journal: a clear error, the file untouched.
  static Result<std::unique_ptr<Journal>> open(const std::string& path, OpenOptions options);

  // One transaction. A failed commit whose outcome is unknown poisons this instance: every later
  // append fails with Errc::kPoisoned until it is reopened from disk.
  virtual Status append(const AppendRequest& request) = 0;
  // All in one transaction (group commit); all or nothing.
  virtual Status append_batch(std::span<const AppendRequest> requests) = 0;
  // One transaction for all, but each request stands alone: one that is invalid (wrong step,
  // an idempotency key that is not the derived one) fails by itself, having written nothing,
  // while the others commit. A commit whose outcome is unknown poisons the instance and fails
  // them all.
  virtual GroupOutcome append_each(std::span<const AppendRequest> requests) = 0;
  // append_each, and before the commit also the requests that `more` adds to `requests`: it is
  // called each time every request so far is written, until it adds none, so a group commit
  // takes in the appends that arrived while it wrote instead of leaving them to wait for one
  // more commit. On return `requests` holds them all and `each` has an outcome per request.
  using MoreRequests = std::function<void(std::vector<AppendRequest>&)>;
  virtual GroupOutcome append_each_taking_more(std::vector<AppendRequest>& requests,
                                               const MoreRequests& more) = 0;
  // True once a commit's outcome was unknown; the reason is in every later append's Status.
  virtual bool poisoned() const = 0;

  // Sync behind the writer, for the group commit writer: from now on a commit returns once its
  // frames are written, without waiting for the disk, and an append is durable only after a later
  // sync_committed() returned OK. False (commits stay synchronous) when this instance cannot:
  // read-only, or not on SQLite's own unix VFS (a fault injecting VFS).
  virtual bool defer_syncs() = 0;
  // Makes every commit so far durable (fdatasync of the WAL). May run on another thread while
  // the owning thread appends. A failure poisons the instance (the outcome of those commits is
  // unknown) and every later call fails too. OK at once when syncs are not deferred.
  virtual Status sync_committed() = 0;

  // The records of one workflow in step order (empty for an unknown id).
  virtual Result<std::vector<JournalRecord>> records(const std::string& workflow_id) = 0;
  // Records in seq order, starting at from_seq, at most `limit` (0 = all).
  virtual Result<std::vector<JournalRecord>> all_records(std::uint64_t from_seq = 1,
                                                         std::size_t limit = 0) = 0;
  virtual Result<std::vector<WorkflowSummary>> workflows() = 0;
  virtual Result<std::optional<WorkflowSummary>> workflow(const std::string& workflow_id) = 0;
  // Workflows whose status is running or suspended.
  virtual Result<std::vector<WorkflowSummary>> unfinished() = 0;
  virtual Result<VerifyReport> verify() = 0;
  virtual const std::string& path() const = 0;
};

// Batches the appends of many workflows into one transaction. Thread-safe; the callback runs on
// the writer's acknowledging thread once the commit is durable (its fdatasync, which the
// acknowledger does behind the writer: Journal::defer_syncs) or has failed, in the order the
// appends were queued, so a caller acknowledges an append only once it is durable. Callbacks must not
// block; they post back to their own strand.
class GroupCommitWriter {
 public:
  using Done = std::function<void(Status)>;
  // At most this many appends per transaction. A cap below the appends in flight lets the next
  // group be written while the last one syncs, instead of every workflow waiting for one group
  // (docs/journal.md, "A cap on the group").
  static constexpr std::size_t kDefaultMaxBatch = 32;
  virtual ~GroupCommitWriter() = default;
  static std::unique_ptr<GroupCommitWriter> start(std::unique_ptr<Journal> journal,
                                                  std::size_t max_batch = kDefaultMaxBatch);
  virtual void append(AppendRequest request, Done done) = 0;
  // Commits what is queued, runs its callbacks, then stops the writer's threads. Idempotent;
  // called by the destructor.
  // An append after stop fails at once with Errc::kCancelled (on the caller's thread).
  virtual void stop() = 0;
  // True once a group commit's outcome was unknown: every later append fails with kPoisoned.
  virtual bool poisoned() const = 0;
};

}  // namespace persoflow::storage
