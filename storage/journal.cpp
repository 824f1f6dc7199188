// The station journal on SQLite (journal.hpp; schema and guarantees in docs/journal.md).
//
// Guarantees:
// - WAL, synchronous=FULL: an append is durable when append() returns OK.
// - One transaction per append (or per group): record row + command rows + workflow summary +
//   journal head, all or nothing. Validation (next step, same machine, unique idempotency keys)
//   happens inside the transaction, so nothing of a refused request is written.
// - A file that is not a journal, a corrupt one, one of a newer schema, a read-only one opened for
//   writing, a path in a missing directory: refused with a clear error before anything is
//   written to it. The identity (application_id, schema version) is checked on a read-only
//   connection first.
// - One writer per journal: a writable open takes an exclusive flock on "<journal>.lock" (a
//   separate file, because closing any descriptor of the database file itself would drop
//   SQLite's POSIX locks held by this process).
// - A commit whose outcome is unknown (any COMMIT error; I/O error, full disk, corruption during
//   the transaction) poisons the instance: every later append fails with Errc::kPoisoned.
#include "persoflow/storage/journal.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "journal_codec.hpp"
#include "journal_vfs.hpp"
#include "persoflow/common/crash_point.hpp"

namespace persoflow::storage {
namespace {

const std::string kZeroHash(64, '0');
constexpr int kBusyTimeoutMs = 200;
// The WAL size (in frames, ~2 KiB each: 32 MiB) at which its frames are copied into the database
// file. Each cycle ends with a short checkpoint on the writer's path (two fdatasyncs), and a
// page rewritten by many commits (an index leaf, a summary) is copied once per cycle: rarer is
// cheaper per append, at the price of a larger WAL to recover after a crash.
constexpr int kCheckpointFrames = 16384;
// Records between two writes of the workflows table (schema version 4): a reader adds at most
// this many records to its rows, and the writer writes each workflow's row once per this many
// records instead of with each of its appends. A reader looking up one workflow that has no
// record among them reads each of them once (about 0.1 ms for 1,024).
constexpr std::uint64_t kSummaryEvery = 1024;

// The summary of workflow ?1 as workflow_summaries has it (columns of the view), without the
// view's pass over every record after summary_seq: its last record there, found from the newest
// down, else its row of the table.
constexpr const char* kOneWorkflow = R"sql(
WITH tail AS NOT MATERIALIZED (
  SELECT seq, step, recorded_at_ms FROM records
  WHERE seq > (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'summary_seq')
    AND workflow_id = ?1)
SELECT r.workflow_id, r.machine, r.state_name, r.status, r.step + 1 AS steps,
  coalesce((SELECT w.created_at_ms FROM workflows w WHERE w.workflow_id = ?1),
           (SELECT recorded_at_ms FROM tail WHERE step = 0)) AS created_at_ms,
  r.recorded_at_ms AS updated_at_ms, r.seq AS last_seq
FROM records r
WHERE r.seq = (SELECT seq FROM tail ORDER BY seq DESC LIMIT 1)
UNION ALL
SELECT workflow_id, machine, state_name, status, steps, created_at_ms, updated_at_ms, last_seq
FROM workflows
WHERE workflow_id = ?1 AND NOT EXISTS (SELECT 1 FROM tail))sql";

Status keys_derived(sqlite3* db, const std::string& path);

// A schema migration: its SQL, and a check that refuses, before the SQL runs, a journal the
// migration cannot take (the transaction is rolled back: the journal stays as it was).
struct Migration {
  const char* sql;
  Status (*check)(sqlite3* db, const std::string& path) = nullptr;
};

// Schema migrations: migration i brings a journal from version i to version i + 1. Never edit a
// released migration; add the next one.
constexpr Migration kMigrations[] = {
    // 0 -> 1: the first schema.
    {R"sql(
CREATE TABLE meta(
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE records(
  seq            INTEGER PRIMARY KEY,
  workflow_id    TEXT NOT NULL,
  step           INTEGER NOT NULL,
  machine        TEXT NOT NULL,
  event_type     TEXT NOT NULL,
  event          BLOB NOT NULL,
  result_of      TEXT NOT NULL,
  state_name     TEXT NOT NULL,
  state          BLOB NOT NULL,
  status         TEXT NOT NULL,
  commands       BLOB NOT NULL,
  recorded_at_ms INTEGER NOT NULL,
  prev_hash      TEXT NOT NULL,
  hash           TEXT NOT NULL,
  UNIQUE(workflow_id, step)
);
CREATE TABLE commands(
  idempotency_key TEXT PRIMARY KEY,
  seq             INTEGER NOT NULL,
  workflow_id     TEXT NOT NULL,
  step            INTEGER NOT NULL,
  idx             INTEGER NOT NULL,
  type            TEXT NOT NULL,
  payload         BLOB NOT NULL
);
CREATE INDEX commands_by_seq ON commands(seq, idx);
CREATE TABLE workflows(
  workflow_id   TEXT PRIMARY KEY,
  machine       TEXT NOT NULL,
  state_name    TEXT NOT NULL,
  status        TEXT NOT NULL,
  steps         INTEGER NOT NULL,
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL,
  last_seq      INTEGER NOT NULL
);
CREATE INDEX workflows_by_status ON workflows(status);
INSERT INTO meta(key, value) VALUES ('magic', 'persoflow-journal'), ('head_seq', '0'),
  ('head_hash', '0000000000000000000000000000000000000000000000000000000000000000');
)sql"},
    // 1 -> 2: fewer B-trees per append (docs/journal.md, "Schema version 2"). A record links to
    // its workflow's previous record instead of an index on (workflow_id, step); a command row
    // keeps only what finds its record (its type and payload are in the record's commands);
    // commands and workflows are keyed by their natural keys without a rowid; no index on the
    // workflows' status. Record values are copied unchanged: the hash chain still holds.
    {R"sql(
CREATE TABLE records_v2(
  seq            INTEGER PRIMARY KEY,
  workflow_id    TEXT NOT NULL,
  step           INTEGER NOT NULL,
  previous_seq   INTEGER NOT NULL,
  machine        TEXT NOT NULL,
  event_type     TEXT NOT NULL,
  event          BLOB NOT NULL,
  result_of      TEXT NOT NULL,
  state_name     TEXT NOT NULL,
  state          BLOB NOT NULL,
  status         TEXT NOT NULL,
  commands       BLOB NOT NULL,
  recorded_at_ms INTEGER NOT NULL,
  prev_hash      TEXT NOT NULL,
  hash           TEXT NOT NULL
);
INSERT INTO records_v2(seq, workflow_id, step, previous_seq, machine, event_type, event,
  result_of, state_name, state, status, commands, recorded_at_ms, prev_hash, hash)
SELECT r.seq, r.workflow_id, r.step,
  COALESCE((SELECT p.seq FROM records p WHERE p.workflow_id = r.workflow_id
            AND p.step = r.step - 1), 0),
  r.machine, r.event_type, r.event, r.result_of, r.state_name, r.state, r.status, r.commands,
  r.recorded_at_ms, r.prev_hash, r.hash
FROM records r;
DROP TABLE records;
ALTER TABLE records_v2 RENAME TO records;
CREATE TABLE commands_v2(
  idempotency_key TEXT PRIMARY KEY,
  seq             INTEGER NOT NULL,
  idx             INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO commands_v2(idempotency_key, seq, idx) SELECT idempotency_key, seq, idx FROM commands;
DROP TABLE commands;
ALTER TABLE commands_v2 RENAME TO commands;
CREATE TABLE workflows_v2(
  workflow_id   TEXT PRIMARY KEY,
  machine       TEXT NOT NULL,
  state_name    TEXT NOT NULL,
  status        TEXT NOT NULL,
  steps         INTEGER NOT NULL,
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL,
  last_seq      INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO workflows_v2 SELECT workflow_id, machine, state_name, status, steps, created_at_ms,
  updated_at_ms, last_seq FROM workflows;
DROP TABLE workflows;
ALTER TABLE workflows_v2 RENAME TO workflows;
)sql"},
    // 2 -> 3: no `commands` table (docs/journal.md, "Schema version 3"). A command's idempotency
    // key is its workflow id, step and index ("w/4/0"), which the writer requires and verify
    // checks, so keys are unique by the steps' own uniqueness; the table repeated that check at
    // the cost of one scattered index leaf per append. Its check refuses a journal holding any
    // other key (kKeysNotDerived): nothing is dropped that was not implied.
    {R"sql(
DROP TABLE commands;
)sql",
     keys_derived},
    // 3 -> 4: the workflows table is written every so many records instead of with each one
    // (docs/journal.md, "Schema version 4"). Its rows describe the records up to meta
    // `summary_seq`; the view workflow_summaries adds the records after it (the tail), and every
    // reader reads the view. The table is current when migrated.
    {R"sql(
INSERT INTO meta(key, value) SELECT 'summary_seq', value FROM meta WHERE key = 'head_seq';
CREATE VIEW workflow_summaries AS
WITH tail AS (
  SELECT workflow_id, max(seq) AS last_seq, min(seq) AS first_seq FROM records
  WHERE seq > (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'summary_seq')
  GROUP BY workflow_id)
SELECT workflow_id, machine, state_name, status, steps, created_at_ms, updated_at_ms, last_seq
  FROM workflows WHERE workflow_id NOT IN (SELECT workflow_id FROM tail)
UNION ALL
SELECT r.workflow_id, r.machine, r.state_name, r.status, r.step + 1,
  coalesce((SELECT w.created_at_ms FROM workflows w WHERE w.workflow_id = t.workflow_id),
           (SELECT f.recorded_at_ms FROM records f WHERE f.seq = t.first_seq)),
  r.recorded_at_ms, r.seq
  FROM tail t JOIN records r ON r.seq = t.last_seq;
)sql"},
};

// Finds a command whose idempotency key is not the one schema version 3 derives, in a journal
// of version 2 (its `commands` table names each key's record and index).
constexpr const char* kKeysNotDerived =
    "SELECT r.seq, c.idx, c.idempotency_key FROM commands c JOIN records r ON r.seq = c.seq "
    "WHERE c.idempotency_key <> r.workflow_id || '/' || r.step || '/' || c.idx "
    "ORDER BY r.seq, c.idx LIMIT 1";
static_assert(std::size(kMigrations) == kJournalSchemaVersion);

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool outcome_unknown(int rc) {
  switch (rc & 0xff) {
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_NOMEM:
    case SQLITE_CANTOPEN:
      return true;
    default:
      return false;
  }
}

Status sqlite_error(sqlite3* db, int rc, const std::string& what) {
  std::string detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return Status(std::error_code(rc, sqlite_category()), what + ": " + detail);
}

class Stmt {
 public:
  Stmt() = default;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() { sqlite3_finalize(stmt_); }
  Status prepare(sqlite3* db, const char* sql) {
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
    if (rc != SQLITE_OK) return sqlite_error(db, rc, std::string("preparing ") + sql);
    return Status::ok();
  }
  sqlite3_stmt* get() const { return stmt_; }
  void finalize() {
    sqlite3_finalize(stmt_);
    stmt_ = nullptr;
  }
  // Resets and clears the bindings, so each use starts clean.
  sqlite3_stmt* fresh() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    return stmt_;
  }
  // For the append path, where every parameter is bound again before each step and the last
  // step reset the statement (step_done): clearing the bindings would only cost time.
  sqlite3_stmt* rebound() {
    sqlite3_reset(stmt_);
    return stmt_;
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

void bind_text(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text64(s, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
}
// Without SQLite's copy: `v` must stay alive and unchanged until the statement is reset.
void bind_text_ref(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text64(s, i, v.data(), v.size(), SQLITE_STATIC, SQLITE_UTF8);
}
void bind_blob_ref(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_blob64(s, i, v.data(), v.size(), SQLITE_STATIC);
}
std::string column_string(sqlite3_stmt* s, int i) {
  const void* p = sqlite3_column_blob(s, i);
  int n = sqlite3_column_bytes(s, i);
  return p ? std::string(static_cast<const char*>(p), static_cast<std::size_t>(n)) : std::string();
}

Status exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  if (rc == SQLITE_OK) return Status::ok();
  std::string msg = err ? err : sqlite3_errstr(rc);
  sqlite3_free(err);
  return Status(std::error_code(rc, sqlite_category()), msg);
}

int sqlite_rc(const Status& s) {
  return s.code().category() == sqlite_category() ? s.code().value() : SQLITE_OK;
}

// A one-row, one-column query; nullopt when no row.
Result<std::optional<std::string>> query_one(sqlite3* db, const char* sql) {
  sqlite3_stmt* s = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &s, nullptr);
  if (rc != SQLITE_OK) {
    Status st = sqlite_error(db, rc, "reading the journal");
    sqlite3_finalize(s);
    return st;
  }
  rc = sqlite3_step(s);
  std::optional<std::string> out;
  if (rc == SQLITE_ROW) out = column_string(s, 0);
  Status st = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? Status::ok()
                                                      : sqlite_error(db, rc, "reading the journal");
  sqlite3_finalize(s);
  if (!st.is_ok()) return st;
  return out;
}

// Meta `summary_seq` (schema version 4): the last record the workflows table describes.
Result<std::uint64_t> read_summary_seq(sqlite3* db) {
  PF_ASSIGN_OR_RETURN(auto text, query_one(db, "SELECT value FROM meta WHERE key = 'summary_seq'"));
  if (!text) return make_status(Errc::kCorrupt, "the meta table has no summary_seq");
  std::uint64_t seq = 0;
  const char* end = text->data() + text->size();
  auto [at, ec] = std::from_chars(text->data(), end, seq);
  if (ec != std::errc() || at != end) {
    return make_status(Errc::kCorrupt,
                       "the meta table's summary_seq '" + *text + "' is not a record number");
  }
  return seq;
}

// A first read of the database: it opens the WAL (SQLite 3.40 checkpoints nothing, and gives no
// WAL file, on a connection that has not read yet), and rolls back a hot journal a killed writer
// left.
Status read_database(sqlite3* db) {
  return query_one(db, "SELECT count(*) FROM sqlite_schema").status();
}

const char* kRecordColumns =
    "seq, recorded_at_ms, workflow_id, step, machine, event_type, event, result_of, state_name, "
    "state, status, commands, prev_hash, hash";

// Reads a row of kRecordColumns; a malformed status or commands column is Errc::kCorrupt.
Result<JournalRecord> read_record(sqlite3_stmt* s) {
  JournalRecord r;
  r.seq = static_cast<std::uint64_t>(sqlite3_column_int64(s, 0));
  r.recorded_at_ms = sqlite3_column_int64(s, 1);
  r.body.workflow_id = column_string(s, 2);
  r.body.step = static_cast<std::uint64_t>(sqlite3_column_int64(s, 3));
  r.body.machine = column_string(s, 4);
  r.body.event_type = column_string(s, 5);
  r.body.event = column_string(s, 6);
  r.body.result_of = column_string(s, 7);
  r.body.state_name = column_string(s, 8);
  r.body.state = column_string(s, 9);
  auto status = parse_workflow_status(column_string(s, 10));
  if (!status.is_ok()) return status.status().with_context("record " + std::to_string(r.seq));
  r.body.status = *status;
  auto commands = decode_commands(column_string(s, 11));
  if (!commands.is_ok()) return commands.status().with_context("record " + std::to_string(r.seq));
  r.body.commands = std::move(*commands);
  r.prev_hash = column_string(s, 12);
  r.hash = column_string(s, 13);
  return r;
}

struct Probe {
  int schema_version = 0;
};

// Identifies an existing, non-empty file on a read-only connection, which never writes to it.
Result<Probe> probe(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  auto close = [&db] { sqlite3_close_v2(db); };
  if (rc != SQLITE_OK) {
    Status st = sqlite_error(db, rc, "journal " + path + " cannot be opened");
    close();
    return st;
  }
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  auto fail = [&](const Status& s) -> Status {
    int code = sqlite_rc(s) & 0xff;
    close();
    if (code == SQLITE_NOTADB) {
      return make_status(Errc::kCorrupt,
                         path + " is not a persoflow journal (not an SQLite database)");
    }
    if (code == SQLITE_CORRUPT) {
      return make_status(Errc::kCorrupt, "journal " + path + " is corrupt: " + s.message());
    }
    if (code == SQLITE_BUSY) {
      return make_status(Errc::kUnavailable, "journal " + path + " is locked by another process");
    }
    return s.with_context("journal " + path);
  };
  auto app_id = query_one(db, "PRAGMA application_id");
  if (!app_id.is_ok()) return fail(app_id.status());
  if (!app_id->has_value() || std::stol(**app_id) != kJournalApplicationId) {
    close();
    return make_status(Errc::kCorrupt,
                       path +
                           " is not a persoflow journal (an SQLite database of another "
                           "application)");
  }
  Probe p;
  auto has_meta =
      query_one(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'");
  if (!has_meta.is_ok()) return fail(has_meta.status());
  if (**has_meta != "0") {
    auto magic = query_one(db, "SELECT value FROM meta WHERE key = 'magic'");
    if (!magic.is_ok()) return fail(magic.status());
    if (magic->value_or("") != "persoflow-journal") {
      close();
      return make_status(Errc::kCorrupt, path +
                                             " is not a persoflow journal (its meta table "
                                             "lacks the persoflow-journal magic)");
    }
    auto version = query_one(db, "SELECT value FROM meta WHERE key = 'schema_version'");
    if (!version.is_ok()) return fail(version.status());
    if (!version->has_value()) {
      close();
      return make_status(Errc::kCorrupt,
                         "journal " + path + " is corrupt: its meta table has no schema_version");
    }
    p.schema_version = std::atoi((*version)->c_str());
  }
  close();
  if (p.schema_version > kJournalSchemaVersion) {
    return make_status(Errc::kUnsupported, "journal " + path + " has schema version " +
                                               std::to_string(p.schema_version) +
                                               ", newer than this persoflow supports (" +
                                               std::to_string(kJournalSchemaVersion) +
                                               "); use a newer persoflow");
  }
  return p;
}

// Checkpoints the WAL into the database file without blocking the writer, and lets the WAL start
// over from its beginning while appends go on.
//
// SQLite writes a transaction at the start of the WAL again (instead of appending to it) only when
// the transaction begins while every frame of the WAL is already copied into the database file.
// A checkpoint on another connection never catches up with continuous group commits, so the WAL
// would grow without bound, every commit appending to the file (new page-cache pages, and a file
// size for each fdatasync to write). So the work is split:
// - a pass on this thread and its own connection (PASSIVE: it never blocks the writer) copies the
//   bulk once the WAL holds `frames` frames, and runs again while more than kFinishFrames are left;
// - the writer copies the few frames committed meanwhile itself, before its next transaction
//   (finish_due(), finished()), which then starts the WAL over.
// A pass that a reader's snapshot kept from copying every frame leaves the WAL to grow until that
// reader ends: no checkpoint ever waits for a reader or for the writer.
class Checkpointer {
 public:
  // The writer copies at most this many frames itself (a few group commits' worth).
  static constexpr int kFinishFrames = 256;

  Checkpointer(const std::string& path, int frames) : frames_(frames) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      sqlite3_close_v2(db_);
      db_ = nullptr;
      return;
    }
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    if (!read_database(db_).is_ok()) {
      sqlite3_close_v2(db_);
      db_ = nullptr;
      return;
    }
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "journal-ckpt");
      run();
    });
  }
  ~Checkpointer() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
    sqlite3_close_v2(db_);
  }

  // From the writer's WAL hook after each commit: the WAL holds `n` frames.
  void committed(int n) {
    if (!db_) return;
    std::lock_guard lock(mutex_);
    if (n < wal_frames_) {  // the commit started the WAL over
      backfilled_ = 0;
      complete_ = false;
      next_pass_at_ = 0;
    }
    wal_frames_ = n;
    if (!running_ && n >= std::max(frames_, next_pass_at_) && n - backfilled_ > kFinishFrames) {
      running_ = true;
      wake_.notify_one();
    }
  }
  // The writer, before a transaction: true when a pass copied every frame the WAL held when it
  // began and at most kFinishFrames are left, for the writer to copy (then finished()).
  bool finish_due() {
    if (!db_) return false;
    std::lock_guard lock(mutex_);
    return complete_ && !running_ && wal_frames_ - backfilled_ <= kFinishFrames;
  }
  // The writer's own checkpoint: `done` of the WAL's `log` frames are in the database file
  // (both -1 when it failed).
  void finished(int log, int done) {
    std::lock_guard lock(mutex_);
    if (log >= 0) {
      backfilled_ = done;
      wal_frames_ = log;
    }
    complete_ = false;  // once per pass, even when a reader kept it from copying all
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stop_ || running_; });
      if (stop_) return;
      lock.unlock();
      int log = -1, done = -1;
      const int rc =
          sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
      lock.lock();
      running_ = false;
      // A WAL that started over since the pass began is smaller than what the pass reports.
      if (rc == SQLITE_OK && log >= 0 && log <= wal_frames_) {
        backfilled_ = done;
        complete_ = done == log;
        // Held back by a reader: the next pass waits for more frames rather than run per commit.
        next_pass_at_ = complete_ ? 0 : log + kFinishFrames;
      }
    }
  }

  const int frames_;
  sqlite3* db_ = nullptr;
  std::mutex mutex_;
  std::condition_variable wake_;
  int wal_frames_ = 0;   // after the last commit
  int backfilled_ = 0;   // frames known to be in the database file
  bool complete_ = false;  // the last pass copied every frame it saw
  int next_pass_at_ = 0;   // after a pass a reader held back: the WAL size for the next one
  bool running_ = false;
  bool stop_ = false;
  std::thread thread_;
};

class SqliteJournal final : public Journal {
 public:
  SqliteJournal(std::string path, sqlite3* db, int lock_fd, bool read_only)
      : path_(std::move(path)), db_(db), lock_fd_(lock_fd), read_only_(read_only) {}

  void set_wall_clock(std::function<std::int64_t()> wall_clock_ms) {
    wall_clock_ms_ = std::move(wall_clock_ms);
  }
  void set_summary_every(std::uint64_t records) { summary_every_ = records; }

  ~SqliteJournal() override {
    // Statements first, then the connection, then the writer lock.
    if (db_) sqlite3_wal_hook(db_, nullptr, nullptr);
    checkpointer_.reset();
    // Closing the last connection checkpoints the WAL into the database file, and that
    // checkpoint's own WAL sync would be deferred: make every frame durable first.
    if (deferred_wal_ != nullptr) (void)sync_committed();
    for (Stmt* st : {&tail_, &wf_get_, &rec_insert_, &wf_upsert_, &summary_seq_update_,
                     &head_seq_update_, &head_hash_update_, &begin_, &commit_}) {
      st->finalize();
    }
    sqlite3_close_v2(db_);
    if (lock_fd_ >= 0) ::close(lock_fd_);
  }

  // Moves checkpoints off the writer's path (Checkpointer above).
  Status start_checkpointer(int frames) {
    PF_RETURN_IF_ERROR(exec(db_, "PRAGMA wal_autocheckpoint = 0"));
    checkpointer_ = std::make_unique<Checkpointer>(path_, frames);
    sqlite3_wal_hook(
        db_,
        [](void* arg, sqlite3*, const char*, int frames) {
          static_cast<Checkpointer*>(arg)->committed(frames);
          return SQLITE_OK;
        },
        checkpointer_.get());
    return Status::ok();
  }

  Status prepare() {
    PF_RETURN_IF_ERROR(
        tail_.prepare(db_, "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1"));
    PF_RETURN_IF_ERROR(wf_get_.prepare(
        db_,
        "SELECT machine, steps, created_at_ms, last_seq FROM workflows WHERE workflow_id = ?"));
    PF_RETURN_IF_ERROR(rec_insert_.prepare(
        db_,
        "INSERT INTO records(seq, workflow_id, step, previous_seq, machine, event_type, event, "
        "result_of, state_name, state, status, commands, recorded_at_ms, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    PF_RETURN_IF_ERROR(wf_upsert_.prepare(
        db_,
        "INSERT INTO workflows(workflow_id, machine, state_name, status, steps, created_at_ms, "
        "updated_at_ms, last_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
        "ON CONFLICT(workflow_id) DO UPDATE SET state_name = ?3, status = ?4, steps = ?5, "
        "updated_at_ms = ?7, last_seq = ?8"));
    PF_RETURN_IF_ERROR(summary_seq_update_.prepare(
        db_, "UPDATE meta SET value = ?1 WHERE key = 'summary_seq'"));
    // One row per statement: an UPDATE of two rows needs a statement journal, which SQLite
    // allocates and frees in every transaction.
    PF_RETURN_IF_ERROR(
        head_seq_update_.prepare(db_, "UPDATE meta SET value = ?1 WHERE key = 'head_seq'"));
    PF_RETURN_IF_ERROR(
        head_hash_update_.prepare(db_, "UPDATE meta SET value = ?1 WHERE key = 'head_hash'"));
    PF_RETURN_IF_ERROR(begin_.prepare(db_, "BEGIN IMMEDIATE"));
    PF_RETURN_IF_ERROR(commit_.prepare(db_, "COMMIT"));
    return Status::ok();
  }

  Status append(const AppendRequest& request) override {
    GroupOutcome out = run_group(std::span(&request, 1), /*isolate=*/false, /*group=*/false);
    return out.each.front();
  }

  Status append_batch(std::span<const AppendRequest> requests) override {
    GroupOutcome out = run_group(requests, /*isolate=*/false, /*group=*/true);
    for (const Status& s : out.each) {
      if (!s.is_ok()) return s;
    }
    return out.commit;
  }

  GroupOutcome append_each(std::span<const AppendRequest> requests) override {
    return run_group(requests, /*isolate=*/true, /*group=*/true);
  }

  GroupOutcome append_each_taking_more(std::vector<AppendRequest>& requests,
                                       const MoreRequests& more) override {
    return run_group(Requests{{}, &requests, &more}, /*isolate=*/true, /*group=*/true);
  }

  bool poisoned() const override { return poisoned_ || sync_failed_.load(); }

  bool defer_syncs() override {
    if (read_only_ || poisoned() || !db_) return false;
    if (!read_database(db_).is_ok()) return false;
    sqlite3_file* wal = nullptr;
    if (sqlite3_file_control(db_, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal) != SQLITE_OK ||
        !defer_wal_syncs(wal)) {
      return false;
    }
    deferred_wal_ = wal;
    return true;
  }

  Status sync_committed() override {
    if (deferred_wal_ == nullptr) return Status::ok();
    std::lock_guard lock(sync_mutex_);
    // After a failed fdatasync a later one may succeed without the lost pages: never trust it.
    if (!sync_failure_.empty()) return make_status(Errc::kPoisoned, sync_failure_);
    const int rc = sync_deferred_wal(deferred_wal_);
    if (rc == SQLITE_OK) return Status::ok();
    sync_failure_ = "journal " + path_ + ": syncing committed appends failed (" +
                    sqlite3_errstr(rc) + "); their outcome is unknown, restart from disk";
    sync_failed_.store(true);
    return Status(std::error_code(rc, sqlite_category()), sync_failure_);
  }

  Result<std::vector<JournalRecord>> records(const std::string& workflow_id) override {
    // From the workflow's last record back along previous_seq (schema version 2 keeps no index
    // on workflow_id). Each link must point back, so a damaged link cannot loop.
    std::string sql = std::string(
                          "WITH RECURSIVE chain(seq) AS ("
                          "SELECT last_seq FROM (") +
                      kOneWorkflow +
                      std::string(
                          ") "
                          "UNION ALL SELECT r.previous_seq FROM records r JOIN chain c "
                          "ON r.seq = c.seq WHERE r.previous_seq > 0 AND r.previous_seq < r.seq) "
                          "SELECT ") +
                      kRecordColumns +
                      " FROM records WHERE seq IN (SELECT seq FROM chain) AND workflow_id = ?1 "
                      "ORDER BY seq";
    return select_records(sql.c_str(), [&](sqlite3_stmt* s) { bind_text(s, 1, workflow_id); });
  }

  Result<std::vector<JournalRecord>> all_records(std::uint64_t from_seq,
                                                 std::size_t limit) override {
    std::string sql = std::string("SELECT ") + kRecordColumns +
                      " FROM records WHERE seq >= ? ORDER BY seq LIMIT ?";
    return select_records(sql.c_str(), [&](sqlite3_stmt* s) {
      sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(from_seq));
      sqlite3_bind_int64(s, 2, limit == 0 ? -1 : static_cast<sqlite3_int64>(limit));
    });
  }

  Result<std::vector<WorkflowSummary>> workflows() override {
    return select_workflows("1 ORDER BY created_at_ms, workflow_id", {});
  }

  Result<std::optional<WorkflowSummary>> workflow(const std::string& workflow_id) override {
    const std::string one = "(" + std::string(kOneWorkflow) + ")";
    PF_ASSIGN_OR_RETURN(auto list, select_workflows("1", workflow_id, one.c_str()));
    if (list.empty()) return std::optional<WorkflowSummary>();
    return std::optional<WorkflowSummary>(std::move(list.front()));
  }

  Result<std::vector<WorkflowSummary>> unfinished() override {
    return select_workflows(
        "status IN ('running', 'suspended') ORDER BY created_at_ms, workflow_id", {});
  }

  Result<VerifyReport> verify() override;

  const std::string& path() const override { return path_; }

 private:
  void poison(const Status& cause) {
    poisoned_ = true;
    poison_reason_ = cause.message();
    if (!sqlite3_get_autocommit(db_)) (void)exec(db_, "ROLLBACK");
  }

  Status poisoned_status() {
    if (!poisoned_ && sync_failed_.load()) {
      std::lock_guard lock(sync_mutex_);
      poisoned_ = true;
      poison_reason_ = sync_failure_;
    }
    return make_status(Errc::kPoisoned, "journal " + path_ +
                                            " refuses appends: an earlier commit's outcome is "
                                            "unknown (" +
                                            poison_reason_ + "); restart from disk");
  }

  GroupOutcome fail_all(std::size_t n, const Status& s) {
    GroupOutcome out;
    out.commit = s;
    out.each.assign(n, s);
    return out;
  }

  // How the requests of one transaction are kept apart.
  enum class Isolation {
    kAllOrNothing,  // append / append_batch: the first failure fails them all
    // append_each: a request fails alone. Every refusal is found before the request writes, and
    // its one write (the record's INSERT) leaves nothing when it fails, so no savepoint is needed.
    kEachAlone,
  };

  // The requests of one transaction: a fixed span, or a vector that `more` extends while the
  // transaction is open (append_each_taking_more).
  struct Requests {
    std::span<const AppendRequest> fixed;
    std::vector<AppendRequest>* growing = nullptr;
    const MoreRequests* more = nullptr;

    std::size_t size() const { return growing ? growing->size() : fixed.size(); }
    const AppendRequest& operator[](std::size_t i) const {
      return growing ? (*growing)[i] : fixed[i];
    }
    // True when `more` added requests.
    bool take_more() const {
      if (!more || !*more) return false;
      const std::size_t had = growing->size();
      (*more)(*growing);
      return growing->size() > had;
    }
  };

  GroupOutcome run_group(std::span<const AppendRequest> requests, bool isolate, bool group) {
    return run_group(Requests{requests}, isolate, group);
  }

  GroupOutcome run_group(Requests requests, bool isolate, bool group) {
    const std::size_t n = requests.size();
    if (poisoned()) return fail_all(n, poisoned_status());
    if (read_only_) {
      return fail_all(
          n, make_status(Errc::kPermissionDenied, "journal " + path_ + " is open read-only"));
    }
    if (n == 0) return GroupOutcome{Status::ok(), {}};
    finish_checkpoint();
    return run_transaction(requests, isolate ? Isolation::kEachAlone : Isolation::kAllOrNothing,
                           group);
  }

  // One transaction over `requests`.
  GroupOutcome run_transaction(const Requests& requests, Isolation isolation, bool group) {
    GroupOutcome out;
    out.each.assign(requests.size(), Status::ok());
    const std::size_t n = requests.size();
    // Fails every request taken so far, `more`'s included.
    auto abort_all = [&](const Status& s) { return abort_group(requests.size(), s); };
    if (Status s = step_done(begin_, "beginning a transaction"); !s.is_ok()) {
      if ((sqlite_rc(s) & 0xff) == SQLITE_BUSY) {
        return fail_all(n, make_status(Errc::kUnavailable,
                                       "journal " + path_ + " is locked by another process"));
      }
      if (outcome_unknown(sqlite_rc(s))) poison(s);
      return fail_all(n, s.with_context("journal " + path_));
    }
    if (!tail_known_) {
      if (Status s = load_tail(tail_seq_, tail_hash_); !s.is_ok()) return abort_group(n, s);
      tail_known_ = true;
    }
    if (!pending_known_) {
      if (Status s = load_pending(); !s.is_ok()) return abort_group(n, s);
      pending_known_ = true;
    }
    std::uint64_t seq = tail_seq_;
    std::string prev = tail_hash_;
    finished_flows_.clear();

    const std::int64_t at = wall_clock_ms_ ? wall_clock_ms_() : now_ms();
    std::size_t written = 0;
    // Whenever every request so far is written, `more` may add the ones that arrived meanwhile.
    for (std::size_t i = 0; i < requests.size() || requests.take_more(); ++i) {
      out.each.resize(requests.size(), Status::ok());
      Status s = insert_one(requests[i], seq + 1, prev, at);
      if (s.is_ok()) {
        ++seq;
        prev.swap(hash_);
        ++written;
        continue;
      }
      if (outcome_unknown(sqlite_rc(s)) || isolation == Isolation::kAllOrNothing) {
        return abort_all(s);
      }
      out.each[i] = s;
    }
    if (written == 0) {
      (void)exec(db_, "ROLLBACK");
      return out;
    }
    const bool summaries_due = seq - summary_seq_ >= summary_every_;
    if (summaries_due) {
      if (Status w = write_summaries(seq); !w.is_ok()) return abort_all(w);
    }
    // The head (last seq and hash) once per transaction: it lets verify notice a record removed
    // from the end, which leaves no gap.
    bind_text(head_seq_update_.fresh(), 1, std::to_string(seq));
    if (Status h = step_done(head_seq_update_, "updating the journal head"); !h.is_ok()) {
      return abort_all(h);
    }
    bind_text_ref(head_hash_update_.fresh(), 1, prev);
    if (Status h = step_done(head_hash_update_, "updating the journal head"); !h.is_ok()) {
      return abort_all(h);
    }
    if (group) crash_point("journal.group.before_commit");
    if (Status s = step_done(commit_, "commit"); !s.is_ok()) {
      // Any COMMIT failure: the transaction may or may not be on disk.
      Status cause = s.with_context("journal " + path_ + ": commit");
      poison(cause);
      for (auto& e : out.each) {
        if (e.is_ok()) e = cause;
      }
      out.commit = cause;
      return out;
    }
    tail_seq_ = seq;
    tail_hash_ = std::move(prev);
    if (summaries_due) {
      summary_seq_ = seq;
      pending_.clear();
    }
    // A finished workflow is not kept in memory (its summary on disk still decides).
    for (const std::string& id : finished_flows_) flows_.erase(id);
    finished_flows_.clear();
    crash_point("journal.after_commit");
    return out;
  }

  // Copies the frames committed since the checkpointer's last pass, so that the transaction about
  // to begin starts the WAL over (Checkpointer). Its failure loses nothing: the frames stay in the
  // WAL for the next checkpoint.
  void finish_checkpoint() {
    if (!checkpointer_ || !checkpointer_->finish_due()) return;
    // A checkpoint may copy only frames that are durable in the WAL (a torn database page is
    // repaired from them after a power loss): its own WAL sync is deferred here, so sync first.
    if (!sync_committed().is_ok()) return;
    int log = -1, done = -1;
    if (sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done) !=
        SQLITE_OK) {
      log = done = -1;
    }
    checkpointer_->finished(log, done);
  }

  // A failure inside the transaction: roll it back, poisoning first when its outcome is unknown.
  GroupOutcome abort_group(std::size_t n, const Status& s) {
    // Whatever went wrong, the next transaction reads the tail and the workflows from disk.
    tail_known_ = false;
    forget_flows();
    if (outcome_unknown(sqlite_rc(s))) {
      Status cause = s.with_context("journal " + path_);
      poison(cause);
      return fail_all(n, cause);
    }
    if (!sqlite3_get_autocommit(db_)) (void)exec(db_, "ROLLBACK");
    return fail_all(n, s);
  }

  Status load_tail(std::uint64_t& seq, std::string& hash) {
    seq = 0;
    hash = kZeroHash;
    sqlite3_stmt* s = tail_.fresh();
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
      seq = static_cast<std::uint64_t>(sqlite3_column_int64(s, 0));
      hash = column_string(s, 1);
      unsigned char raw[32];
      if (!parse_hash_hex(hash, raw)) {
        sqlite3_reset(s);
        return make_status(Errc::kCorrupt, "journal " + path_ + ": the hash of the last record (" +
                                               std::to_string(seq) + ") is malformed");
      }
    } else if (rc != SQLITE_DONE) {
      return sqlite_error(db_, rc, "journal " + path_ + ": reading the last record");
    }
    sqlite3_reset(s);
    return Status::ok();
  }

  // Steps a statement that returns no row. `what` names the action in an error; it may be a
  // callable, so that the name is only built when there is an error.
  template <typename What>
  Status step_done(Stmt& stmt, const What& what) {
    int rc = sqlite3_step(stmt.get());
    Status st = Status::ok();
    if (rc != SQLITE_DONE) {
      if constexpr (std::is_invocable_v<What>) {
        st = sqlite_error(db_, rc, what());
      } else {
        st = sqlite_error(db_, rc, what);
      }
    }
    sqlite3_reset(stmt.get());
    return st;
  }

  // What the writer knows of a workflow to check its next append: its summary row, kept in
  // memory because this instance is the journal's only writer (the flock).
  struct FlowInfo {
    std::string machine;
    std::uint64_t steps = 0;  // the step its next append must have
    std::int64_t created_at_ms = 0;
    std::uint64_t last_seq = 0;  // its last record, the next record's previous_seq
    bool finished = false;  // done or cancelled: not kept once committed
  };
  // Bounds the memory of a long-running station: past this many workflows the cache starts over
  // (a miss costs one indexed read).
  static constexpr std::size_t kMaxCachedFlows = 1 << 16;

  // A workflow's row of the workflows table, waiting in memory for the table's next write.
  struct SummaryRow {
    std::string machine, state_name;
    WorkflowStatus status = WorkflowStatus::kRunning;
    std::uint64_t steps = 0;
    std::int64_t created_at_ms = 0, updated_at_ms = 0;
    std::uint64_t last_seq = 0;
  };

  // After a rolled-back transaction: what the writer keeps in memory is read from disk again.
  void forget_flows() {
    flows_.clear();
    pending_.clear();
    pending_known_ = false;
  }

  // The rows the records after the table's last write (meta summary_seq) make, from disk.
  Status load_pending() {
    pending_.clear();
    auto since = read_summary_seq(db_);
    if (!since.is_ok()) return since.status().with_context("journal " + path_);
    summary_seq_ = *since;
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v2(db_,
                                "SELECT seq, workflow_id, machine, state_name, status, step, "
                                "recorded_at_ms FROM records WHERE seq > ? ORDER BY seq",
                                -1, &s, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(s);
      return sqlite_error(db_, rc, "journal " + path_ + ": reading the latest records");
    }
    sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(summary_seq_));
    Status st = Status::ok();
    while (st.is_ok() && (rc = sqlite3_step(s)) == SQLITE_ROW) {
      const std::string id = column_string(s, 1);
      auto status = parse_workflow_status(column_string(s, 4));
      if (!status.is_ok()) {
        st = status.status().with_context("journal " + path_ + ": record " +
                                          std::to_string(sqlite3_column_int64(s, 0)));
        break;
      }
      const std::uint64_t step = static_cast<std::uint64_t>(sqlite3_column_int64(s, 5));
      const std::int64_t at = sqlite3_column_int64(s, 6);
      auto [it, is_new] = pending_.try_emplace(id);
      SummaryRow& row = it->second;
      if (is_new) {
        // Created in the tail, or earlier: then the table's row says when.
        row.created_at_ms = at;
        if (step > 0) {
          auto created = table_created_at(id);
          if (!created.is_ok()) {
            st = created.status();
            break;
          }
          if (*created) row.created_at_ms = **created;
        }
      }
      row.machine = column_string(s, 2);
      row.state_name = column_string(s, 3);
      row.status = *status;
      row.steps = step + 1;
      row.updated_at_ms = at;
      row.last_seq = static_cast<std::uint64_t>(sqlite3_column_int64(s, 0));
    }
    if (st.is_ok() && rc != SQLITE_DONE) {
      st = sqlite_error(db_, rc, "journal " + path_ + ": reading the latest records");
    }
    sqlite3_finalize(s);
    return st;
  }

  Result<std::optional<std::int64_t>> table_created_at(const std::string& workflow_id) {
    sqlite3_stmt* s = wf_get_.fresh();
    bind_text_ref(s, 1, workflow_id);
    const int rc = sqlite3_step(s);
    std::optional<std::int64_t> created;
    if (rc == SQLITE_ROW) created = sqlite3_column_int64(s, 2);
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      return sqlite_error(db_, rc, "journal " + path_ + ": reading workflow '" + workflow_id + "'");
    }
    return created;
  }

  // Writes the rows waiting in memory to the workflows table, which then describes every record
  // up to `seq` (the transaction's last).
  Status write_summaries(std::uint64_t seq) {
    for (const auto& [id, row] : pending_) {
      sqlite3_stmt* ws = wf_upsert_.rebound();
      bind_text_ref(ws, 1, id);
      bind_text_ref(ws, 2, row.machine);
      bind_text_ref(ws, 3, row.state_name);
      bind_text_ref(ws, 4, to_string(row.status));
      sqlite3_bind_int64(ws, 5, static_cast<sqlite3_int64>(row.steps));
      sqlite3_bind_int64(ws, 6, row.created_at_ms);
      sqlite3_bind_int64(ws, 7, row.updated_at_ms);
      sqlite3_bind_int64(ws, 8, static_cast<sqlite3_int64>(row.last_seq));
      PF_RETURN_IF_ERROR(step_done(wf_upsert_, [&] {
        return "journal " + path_ + ": writing the summary of '" + id + "'";
      }));
    }
    bind_text(summary_seq_update_.fresh(), 1, std::to_string(seq));
    return step_done(summary_seq_update_, "journal " + path_ + ": writing the summaries' seq");
  }

  // The workflow as this transaction sees it, its earlier appends in this transaction included:
  // from memory, else from its rows (pending, then the table). nullptr for a new workflow.
  // flows_ is updated in place by each written append; every rolled-back transaction clears it.
  Result<FlowInfo*> find_flow(const std::string& workflow_id) {
    if (auto it = flows_.find(workflow_id); it != flows_.end()) return &it->second;
    if (auto it = pending_.find(workflow_id); it != pending_.end()) {
      const SummaryRow& row = it->second;
      if (flows_.size() >= kMaxCachedFlows) flows_.clear();
      return &flows_
                  .insert_or_assign(workflow_id, FlowInfo{row.machine, row.steps,
                                                          row.created_at_ms, row.last_seq, false})
                  .first->second;
    }
    sqlite3_stmt* s = wf_get_.fresh();
    bind_text_ref(s, 1, workflow_id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
      sqlite3_reset(s);
      return static_cast<FlowInfo*>(nullptr);
    }
    if (rc != SQLITE_ROW) {
      Status st = sqlite_error(db_, rc, "reading workflow '" + workflow_id + "'");
      sqlite3_reset(s);
      return st;
    }
    // The row as this transaction sees it (a workflow forgotten by the clear below, or finished,
    // may have been written earlier in it).
    FlowInfo info{column_string(s, 0), static_cast<std::uint64_t>(sqlite3_column_int64(s, 1)),
                  sqlite3_column_int64(s, 2),
                  static_cast<std::uint64_t>(sqlite3_column_int64(s, 3)), false};
    sqlite3_reset(s);
    if (flows_.size() >= kMaxCachedFlows) flows_.clear();
    return &flows_.insert_or_assign(workflow_id, std::move(info)).first->second;
  }

  // Validates and writes one request as record `seq`; on success its hash is in hash_. Every
  // refusal is found before the record's INSERT, and a failed INSERT leaves nothing.
  Status insert_one(const AppendRequest& r, std::uint64_t seq, const std::string& prev,
                    std::int64_t at) {
    auto who = [&r] { return "workflow '" + r.workflow_id + "'"; };
    if (r.workflow_id.empty() || r.machine.empty() || r.event_type.empty() ||
        r.state_name.empty()) {
      return make_status(Errc::kInvalidArgument,
                         "an append needs a workflow id, a machine, an event type and a state "
                         "name (" +
                             who() + ")");
    }
    for (std::size_t i = 0; i < r.commands.size(); ++i) {
      const CommandEntry& c = r.commands[i];
      if (c.index != i) {
        return make_status(Errc::kInvalidArgument, who() + " step " + std::to_string(r.step) +
                                                       ": command " + std::to_string(i) +
                                                       " has index " + std::to_string(c.index));
      }
      if (c.type.empty()) {
        return make_status(Errc::kInvalidArgument, who() + ": every command needs a type");
      }
      // The key is derived, so two commands can share one only if two records share a step,
      // which the step check below refuses.
      if (!is_derived_key(c.idempotency_key, r.workflow_id, r.step, c.index)) {
        return make_status(Errc::kInvalidArgument,
                           who() + " step " + std::to_string(r.step) + ": command " +
                               std::to_string(i) + " has idempotency key '" + c.idempotency_key +
                               "', not '" + idempotency_key_of(r.workflow_id, r.step, c.index) +
                               "' (workflow id/step/index); nothing written");
      }
    }
    // The workflow's summary decides the next step.
    PF_ASSIGN_OR_RETURN(FlowInfo* flow, find_flow(r.workflow_id));
    const std::uint64_t expected = flow ? flow->steps : 0;
    const std::int64_t created = flow ? flow->created_at_ms : at;
    if (flow && flow->machine != r.machine) {
      return make_status(Errc::kRejected,
                         who() + " runs machine '" + flow->machine + "', not '" + r.machine + "'");
    }
    if (r.step != expected) {
      return make_status(Errc::kRejected, who() + ": step " + std::to_string(r.step) +
                                              " is not the next step (expected " +
                                              std::to_string(expected) + "); nothing written");
    }

    bytes_.clear();
    const std::size_t commands_at = append_canonical_record_bytes(bytes_, seq, at, r);
    hasher_.hash(prev, bytes_, hash_);
    const std::string_view commands = std::string_view(bytes_).substr(commands_at);
    const char* status = to_string(r.status);

    sqlite3_stmt* s = rec_insert_.rebound();
    sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(seq));
    bind_text_ref(s, 2, r.workflow_id);
    sqlite3_bind_int64(s, 3, static_cast<sqlite3_int64>(r.step));
    sqlite3_bind_int64(s, 4, static_cast<sqlite3_int64>(flow ? flow->last_seq : 0));
    bind_text_ref(s, 5, r.machine);
    bind_text_ref(s, 6, r.event_type);
    bind_blob_ref(s, 7, r.event);
    bind_text_ref(s, 8, r.result_of);
    bind_text_ref(s, 9, r.state_name);
    bind_blob_ref(s, 10, r.state);
    bind_text_ref(s, 11, status);
    bind_blob_ref(s, 12, commands);
    sqlite3_bind_int64(s, 13, at);
    bind_text_ref(s, 14, prev);
    bind_text_ref(s, 15, hash_);
    PF_RETURN_IF_ERROR(step_done(rec_insert_, [&] { return "recording " + who(); }));

    // The summary row waits in memory for the next write of the table (write_summaries).
    SummaryRow& row = pending_[r.workflow_id];
    row.machine = r.machine;
    row.state_name = r.state_name;
    row.status = r.status;
    row.steps = r.step + 1;
    row.created_at_ms = created;
    row.updated_at_ms = at;
    row.last_seq = seq;

    const bool finished = r.status == WorkflowStatus::kDone ||
                          r.status == WorkflowStatus::kCancelled;
    if (flow) {
      flow->steps = r.step + 1;
      flow->last_seq = seq;
      flow->finished = finished;
    } else {
      if (flows_.size() >= kMaxCachedFlows) flows_.clear();
      flows_.emplace(r.workflow_id, FlowInfo{r.machine, r.step + 1, created, seq, finished});
    }
    if (finished) finished_flows_.push_back(r.workflow_id);
    return Status::ok();
  }

  template <typename Bind>
  Result<std::vector<JournalRecord>> select_records(const char* sql, Bind bind) {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql, -1, &s, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(s);
      return sqlite_error(db_, rc, "journal " + path_ + ": reading records");
    }
    bind(s);
    std::vector<JournalRecord> out;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      auto r = read_record(s);
      if (!r.is_ok()) {
        sqlite3_finalize(s);
        return r.status().with_context("journal " + path_);
      }
      out.push_back(std::move(*r));
    }
    Status st = rc == SQLITE_DONE ? Status::ok()
                                  : sqlite_error(db_, rc, "journal " + path_ + ": reading records");
    sqlite3_finalize(s);
    if (!st.is_ok()) return st;
    return out;
  }

  // From the view every reader reads, or from `from`.
  Result<std::vector<WorkflowSummary>> select_workflows(
      const std::string& where, std::optional<std::string> arg,
      const char* from = "workflow_summaries") {
    std::string sql =
        std::string(
            "SELECT workflow_id, machine, state_name, status, steps, created_at_ms, "
            "updated_at_ms FROM ") +
        from + " WHERE " + where;
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(s);
      return sqlite_error(db_, rc, "journal " + path_ + ": reading workflows");
    }
    if (arg) bind_text(s, 1, *arg);
    std::vector<WorkflowSummary> out;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      WorkflowSummary w;
      w.workflow_id = column_string(s, 0);
      w.machine = column_string(s, 1);
      w.state_name = column_string(s, 2);
      auto status = parse_workflow_status(column_string(s, 3));
      if (!status.is_ok()) {
        sqlite3_finalize(s);
        return status.status().with_context("journal " + path_ + ": workflow " + w.workflow_id);
      }
      w.status = *status;
      w.steps = static_cast<std::uint64_t>(sqlite3_column_int64(s, 4));
      w.created_at_ms = sqlite3_column_int64(s, 5);
      w.updated_at_ms = sqlite3_column_int64(s, 6);
      out.push_back(std::move(w));
    }
    Status st = rc == SQLITE_DONE
                    ? Status::ok()
                    : sqlite_error(db_, rc, "journal " + path_ + ": reading workflows");
    sqlite3_finalize(s);
    if (!st.is_ok()) return st;
    return out;
  }

  std::string path_;
  std::function<std::int64_t()> wall_clock_ms_;  // empty: the system clock
  sqlite3* db_;
  int lock_fd_;
  bool read_only_;
  bool poisoned_ = false;
  std::string poison_reason_;
  // The committed tail of the chain, read from disk by the first transaction (and after a
  // failed one), then carried forward by each commit.
  bool tail_known_ = false;
  std::uint64_t tail_seq_ = 0;
  std::string tail_hash_;
  std::unordered_map<std::string, FlowInfo> flows_;  // see FlowInfo and find_flow
  // The workflows table describes the records up to summary_seq_; pending_ holds the rows of the
  // workflows appended since, written to the table once summary_every_ records have followed
  // (write_summaries). Read from disk by the first transaction and after a failed one.
  bool pending_known_ = false;
  std::uint64_t summary_seq_ = 0;
  std::uint64_t summary_every_ = kSummaryEvery;
  std::unordered_map<std::string, SummaryRow> pending_;
  std::vector<std::string> finished_flows_;  // finished in this transaction: forgotten at its commit
  // Scratch reused by every append: the record's canonical bytes and its hash.
  std::string bytes_;
  std::string hash_;
  ChainHasher hasher_;
  Stmt tail_, wf_get_, rec_insert_, wf_upsert_, summary_seq_update_;
  Stmt head_seq_update_, head_hash_update_;
  Stmt begin_, commit_;
  std::unique_ptr<Checkpointer> checkpointer_;
  // Sync behind the writer (defer_syncs): the writer connection's WAL, and a failed sync, which
  // poisons the instance from whichever thread synced.
  sqlite3_file* deferred_wal_ = nullptr;
  std::mutex sync_mutex_;
  std::string sync_failure_;  // guarded by sync_mutex_
  std::atomic<bool> sync_failed_{false};
};

// ----- verify -----

// What is wrong with `rows` as the summaries of `expected` (a fold of the records): the record
// to name, if one, and the reason ("" if nothing is wrong).
struct SummariesProblem {
  std::optional<std::uint64_t> seq;
  std::string reason;
};
template <typename Expected>
SummariesProblem summaries_problem(const std::vector<WorkflowSummary>& rows,
                                   const std::map<std::string, Expected>& expected,
                                   const std::string& what) {
  if (rows.size() != expected.size()) {
    return {std::nullopt, "the " + what + " list " + std::to_string(rows.size()) +
                              " workflows, the records " + std::to_string(expected.size())};
  }
  for (const WorkflowSummary& w : rows) {
    auto f = expected.find(w.workflow_id);
    if (f == expected.end()) {
      return {std::nullopt, "the " + what + " list '" + w.workflow_id + "', which has no records"};
    }
    const Expected& e = f->second;
    if (w.machine != e.machine || w.state_name != e.state_name || w.status != e.status ||
        w.steps != e.steps || w.created_at_ms != e.created || w.updated_at_ms != e.updated) {
      return {e.last_seq, "the summary of workflow '" + w.workflow_id + "' in the " + what +
                              " disagrees with its records (last record " +
                              std::to_string(e.last_seq) + ")"};
    }
  }
  return {};
}

Result<VerifyReport> SqliteJournal::verify() {
  VerifyReport report;
  report.head_hash = kZeroHash;
  auto bad = [&report](std::optional<std::uint64_t> seq, std::string reason) {
    report.intact = false;
    report.first_bad_seq = seq;
    report.reason = std::move(reason);
    return report;
  };
  // Read everything in one read transaction, so a concurrent writer cannot move the head.
  PF_RETURN_IF_ERROR(exec(db_, "BEGIN").with_context("journal " + path_));
  struct EndRead {
    sqlite3* db;
    ~EndRead() { (void)exec(db, "COMMIT"); }
  } end_read{db_};

  auto check = query_one(db_, "PRAGMA quick_check(1)");
  if (!check.is_ok())
    return bad(std::nullopt, "SQLite cannot read the journal: " + check.status().message());
  if (!check->has_value() || **check != "ok") {
    return bad(std::nullopt, "the SQLite file is damaged: " + check->value_or("no answer"));
  }

  // previous_seq comes after the record's own columns (read_record reads those).
  std::string sql =
      std::string("SELECT ") + kRecordColumns + ", previous_seq FROM records ORDER BY seq";
  sqlite3_stmt* s = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(s);
    return bad(std::nullopt, std::string("cannot read records: ") + sqlite3_errmsg(db_));
  }
  struct Finalize {
    sqlite3_stmt* s;
    ~Finalize() { sqlite3_finalize(s); }
  } finalize{s};

  struct Expected {
    std::string machine, state_name;
    WorkflowStatus status;
    std::uint64_t steps = 0;
    std::int64_t created = 0, updated = 0;
    std::uint64_t last_seq = 0;
  };
  std::map<std::string, Expected> flows;
  // The workflows table describes the records up to summary_seq (schema version 4).
  auto summary_seq_read = read_summary_seq(db_);
  if (!summary_seq_read.is_ok()) return bad(std::nullopt, summary_seq_read.status().message());
  const std::uint64_t summary_seq = *summary_seq_read;
  std::map<std::string, Expected> flows_at_summary;
  std::uint64_t expected_seq = 1;
  std::string prev = kZeroHash;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    std::uint64_t seq = static_cast<std::uint64_t>(sqlite3_column_int64(s, 0));
    if (seq != expected_seq) {
      return bad(expected_seq, "record " + std::to_string(expected_seq) +
                                   " is missing (the next record is " + std::to_string(seq) + ")");
    }
    auto rec = read_record(s);
    if (!rec.is_ok())
      return bad(seq, "record " + std::to_string(seq) + " is malformed: " + rec.status().message());
    const JournalRecord& r = *rec;
    const std::string at = "record " + std::to_string(seq) + " (workflow '" + r.body.workflow_id +
                           "', step " + std::to_string(r.body.step) + ")";
    auto [it, is_new] = flows.try_emplace(r.body.workflow_id);
    Expected& flow = it->second;
    if (r.body.step != flow.steps) {
      return bad(seq, at + ": expected step " + std::to_string(flow.steps) +
                          " of this workflow (steps out of order or missing)");
    }
    if (!is_new && r.body.machine != flow.machine) {
      return bad(seq, at + ": machine '" + r.body.machine + "' differs from the workflow's '" +
                          flow.machine + "'");
    }
    if (r.prev_hash != prev) {
      return bad(seq, at + ": prev_hash does not match the hash of the record before it "
                           "(records removed, inserted or reordered)");
    }
    if (chain_hash(prev, canonical_record_bytes(r)) != r.hash) {
      return bad(seq, at + ": its contents do not match its hash (the record was altered)");
    }
    // The record must link to its workflow's previous record (records() follows the links).
    const std::uint64_t previous_seq = static_cast<std::uint64_t>(sqlite3_column_int64(s, 14));
    if (previous_seq != (is_new ? 0 : flow.last_seq)) {
      return bad(seq, at + ": its link to the workflow's previous record is wrong (names record " +
                          std::to_string(previous_seq) + ")");
    }
    // Each command's key is the one derived from its workflow, step and index: with the steps
    // checked above, no key is recorded twice.
    for (std::size_t i = 0; i < r.body.commands.size(); ++i) {
      const CommandEntry& c = r.body.commands[i];
      if (c.index != i || !is_derived_key(c.idempotency_key, r.body.workflow_id, r.body.step,
                                          c.index)) {
        return bad(seq, at + ": command " + std::to_string(i) + " has index " +
                            std::to_string(c.index) + " and idempotency key '" +
                            c.idempotency_key + "', not '" +
                            idempotency_key_of(r.body.workflow_id, r.body.step,
                                               static_cast<std::uint32_t>(i)) +
                            "'");
      }
    }
    if (is_new) {
      flow.machine = r.body.machine;
      flow.created = r.recorded_at_ms;
    }
    flow.state_name = r.body.state_name;
    flow.status = r.body.status;
    flow.updated = r.recorded_at_ms;
    flow.last_seq = seq;
    ++flow.steps;
    prev = r.hash;
    ++expected_seq;
    ++report.records_checked;
    if (seq == summary_seq) flows_at_summary = flows;
  }
  if (rc != SQLITE_DONE) {
    return bad(expected_seq, "record " + std::to_string(expected_seq) +
                                 " cannot be read: " + sqlite3_errmsg(db_));
  }
  report.head_hash = prev;
  const std::uint64_t last = expected_seq - 1;

  // The head: a record removed from the end leaves no gap, but the head still names it.
  auto head_seq = query_one(db_, "SELECT value FROM meta WHERE key = 'head_seq'");
  auto head_hash = query_one(db_, "SELECT value FROM meta WHERE key = 'head_hash'");
  if (!head_seq.is_ok() || !head_hash.is_ok() || !head_seq->has_value() ||
      !head_hash->has_value()) {
    return bad(std::nullopt, "the journal head (meta head_seq, head_hash) is missing");
  }
  std::uint64_t head = std::strtoull((*head_seq)->c_str(), nullptr, 10);
  if (head > last) {
    return bad(last + 1, "record " + std::to_string(last + 1) +
                             " is missing: the journal's head names record " +
                             std::to_string(head) + " but the last record is " +
                             std::to_string(last));
  }
  if (head != last || **head_hash != prev) {
    return bad(last, "record " + std::to_string(last) +
                         " does not match the journal's head (head names record " +
                         std::to_string(head) + ")");
  }
  if (summary_seq > last) {
    return bad(std::nullopt, "the workflows table claims to describe record " +
                                 std::to_string(summary_seq) + " but the last record is " +
                                 std::to_string(last));
  }
  // The summaries must agree with the records: the table with those up to summary_seq, and what
  // every reader sees (the view, the table with the records after it) with all of them.
  auto table = select_workflows("1", {}, "workflows");
  if (!table.is_ok()) {
    return bad(std::nullopt, "the workflows table cannot be read: " + table.status().message());
  }
  if (auto p = summaries_problem(*table, flows_at_summary, "workflows table");
      !p.reason.empty()) {
    return bad(p.seq, p.reason + "; the table describes the records up to " +
                          std::to_string(summary_seq));
  }
  auto summaries = workflows();
  if (!summaries.is_ok()) {
    return bad(std::nullopt, "the workflows cannot be read: " + summaries.status().message());
  }
  if (auto p = summaries_problem(*summaries, flows, "workflow summaries"); !p.reason.empty()) {
    return bad(p.seq, p.reason);
  }
  return report;
}

// ----- open -----

bool read_only_file(const struct stat& st, const std::string& path) {
  // Root may write anything; the mode bits still say what the operator meant.
  return (st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)) == 0 || ::access(path.c_str(), W_OK) != 0;
}

// SQLite counts every allocation under one process-wide mutex unless told not to before its
// first use; the journal's writer allocates per statement step, and no one here reads the
// counts. Too late (and harmless) when another part of the process used SQLite first.
void configure_sqlite_once() {
  static std::once_flag once;
  std::call_once(once, [] { (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
}

// Before the migration to schema version 3 drops the `commands` table: every recorded key must
// be the derived one, else the journal is refused and left as it is.
Status keys_derived(sqlite3* db, const std::string& path) {
  sqlite3_stmt* s = nullptr;
  int rc = sqlite3_prepare_v2(db, kKeysNotDerived, -1, &s, nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_step(s);
  Status out = Status::ok();
  if (rc == SQLITE_ROW) {
    out = make_status(
        Errc::kUnsupported,
        "journal " + path + " cannot be migrated to schema version 3: command " +
            std::to_string(sqlite3_column_int64(s, 1)) + " of record " +
            std::to_string(sqlite3_column_int64(s, 0)) + " has idempotency key '" +
            column_string(s, 2) +
            "', and version 3 records only keys made of workflow id/step/index; the journal "
            "is left unchanged");
  } else if (rc != SQLITE_DONE) {
    out = sqlite_error(db, rc, "journal " + path + ": checking its idempotency keys");
  }
  sqlite3_finalize(s);
  return out;
}

Result<std::unique_ptr<Journal>> open_journal(const std::string& path, OpenOptions options) {
  namespace fs = std::filesystem;
  configure_sqlite_once();
  if (path.empty()) return make_status(Errc::kInvalidArgument, "no journal path given");
  fs::path p(path);
  fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return make_status(Errc::kNotFound,
                       "journal " + path + ": directory " + dir.string() + " does not exist");
  }
  struct stat st {};
  bool exists = ::stat(path.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) {
    return make_status(Errc::kPermissionDenied,
                       "journal " + path + " cannot be read: " + std::strerror(errno));
  }
  if (!exists && (options.read_only || !options.create_if_missing)) {
    return make_status(Errc::kNotFound, "no journal at " + path);
  }
  if (exists && !S_ISREG(st.st_mode)) {
    return make_status(Errc::kInvalidArgument, path + " is not a regular file");
  }
  if (!options.read_only) {
    if (exists && read_only_file(st, path)) {
      return make_status(Errc::kPermissionDenied,
                         "journal " + path +
                             " is read-only; it can only be opened for reading "
                             "(fix its permissions to write to it)");
    }
    if (::access(dir.c_str(), W_OK) != 0) {
      return make_status(Errc::kPermissionDenied,
                         "journal " + path + ": directory " + dir.string() +
                             " is not writable (the journal keeps its -wal and -shm files there)");
    }
  }
  if (exists && ::access(path.c_str(), R_OK) != 0) {
    return make_status(Errc::kPermissionDenied, "journal " + path + " is not readable");
  }
  if (exists && !options.read_only && fs::file_size(path + "-journal", ec) > 0 && !ec) {
    // A process killed while it created the journal (before WAL mode) left a hot rollback
    // journal, which only a writer may roll back: the read-only probe below would fail with
    // SQLITE_READONLY forever (found by persoflow-crashtest, a SIGKILL 106 ms into a first run).
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK) {
      sqlite3_busy_timeout(db, kBusyTimeoutMs);
      (void)read_database(db);
    }
    sqlite3_close_v2(db);
    exists = ::stat(path.c_str(), &st) == 0;
  }
  bool fresh = !exists || st.st_size == 0;
  if (fresh && options.read_only) {
    return make_status(Errc::kCorrupt, path + " is empty: not a persoflow journal");
  }
  if (!fresh) {
    PF_ASSIGN_OR_RETURN(Probe pr, probe(path));
    if (options.read_only && pr.schema_version < kJournalSchemaVersion) {
      return make_status(Errc::kUnsupported, "journal " + path + " has the older schema version " +
                                                 std::to_string(pr.schema_version) +
                                                 "; open it once for writing to migrate it");
    }
  }

  int lock_fd = -1;
  if (!options.read_only) {
    std::string lock_path = path + ".lock";
    lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0) {
      return make_status(Errc::kPermissionDenied, "journal " + path + ": cannot open " + lock_path +
                                                      ": " + std::strerror(errno));
    }
    if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      ::close(lock_fd);
      if (err == EWOULDBLOCK) {
        return make_status(Errc::kUnavailable, "journal " + path +
                                                   " is locked by another process (another writer "
                                                   "has it open)");
      }
      return make_status(Errc::kUnavailable, "journal " + path + ": cannot lock " + lock_path +
                                                 ": " + std::strerror(err));
    }
  }

  sqlite3* db = nullptr;
  int flags = options.read_only ? SQLITE_OPEN_READONLY
                                : (SQLITE_OPEN_READWRITE | (fresh ? SQLITE_OPEN_CREATE : 0));
  // One thread at a time uses an instance (journal.hpp): SQLite's per-call connection mutex is
  // pure overhead.
  flags |= SQLITE_OPEN_NOMUTEX;
  // The writer's WAL frames reach the file in one write per commit (journal_vfs.hpp).
  const char* vfs = options.read_only ? nullptr : journal_vfs();
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, vfs);
  auto journal = std::make_unique<SqliteJournal>(path, db, lock_fd, options.read_only);
  journal->set_wall_clock(options.wall_clock_ms);
  journal->set_summary_every(options.summary_every > 0 ? options.summary_every : kSummaryEvery);
  if (rc != SQLITE_OK) return sqlite_error(db, rc, "journal " + path + " cannot be opened");
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);

  auto fail = [&path](const Status& s) -> Status {
    int code = sqlite_rc(s) & 0xff;
    if (code == SQLITE_BUSY) {
      return make_status(Errc::kUnavailable, "journal " + path + " is locked by another process");
    }
    if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) {
      return make_status(Errc::kCorrupt, "journal " + path + " is corrupt: " + s.message());
    }
    return s.with_context("journal " + path);
  };

  if (!options.read_only) {
    PF_RETURN_IF_ERROR(fail(exec(db, "PRAGMA synchronous = FULL")));
    // The index pages an append touches stay in memory (SQLite's default keeps only 2 MiB).
    PF_RETURN_IF_ERROR(fail(exec(db, "PRAGMA cache_size = -32768")));
    // A group commit writes every page it dirtied to the WAL, and most of them are index leaves
    // touched by one small entry each (docs/journal.md, "Performance"): smaller pages write
    // fewer bytes per append. Only a new file takes it; an existing journal keeps its size.
    if (fresh) PF_RETURN_IF_ERROR(fail(exec(db, "PRAGMA page_size = 2048")));
    if (options.max_page_count > 0) {
      std::string pragma = "PRAGMA max_page_count = " + std::to_string(options.max_page_count);
      PF_RETURN_IF_ERROR(fail(exec(db, pragma.c_str())));
    }
    // A fresh journal gets its identity and schema in rollback mode, so the application_id is
    // in the database file itself (not only in the WAL) once the creating commit returns.
    PF_RETURN_IF_ERROR(fail(exec(db, "BEGIN IMMEDIATE")));
    auto has_meta =
        query_one(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'");
    if (!has_meta.is_ok()) {
      (void)exec(db, "ROLLBACK");
      return fail(has_meta.status());
    }
    int v = 0;
    if (has_meta->value_or("0") != "0") {
      auto version = query_one(db, "SELECT value FROM meta WHERE key = 'schema_version'");
      if (!version.is_ok()) {
        (void)exec(db, "ROLLBACK");
        return fail(version.status());
      }
      v = std::atoi(version->value_or("0").c_str());
    }
    if (v > kJournalSchemaVersion) {
      (void)exec(db, "ROLLBACK");
      return make_status(Errc::kUnsupported, "journal " + path + " has a newer schema version");
    }
    if (v < kJournalSchemaVersion) {
      if (v == 0) {
        std::string app = "PRAGMA application_id = " + std::to_string(kJournalApplicationId);
        if (Status s = exec(db, app.c_str()); !s.is_ok()) {
          (void)exec(db, "ROLLBACK");
          return fail(s);
        }
      }
      for (int m = v; m < kJournalSchemaVersion; ++m) {
        if (kMigrations[m].check) {
          if (Status s = kMigrations[m].check(db, path); !s.is_ok()) {
            (void)exec(db, "ROLLBACK");
            return s;
          }
        }
        if (Status s = exec(db, kMigrations[m].sql); !s.is_ok()) {
          (void)exec(db, "ROLLBACK");
          return fail(s.with_context("migrating to schema version " + std::to_string(m + 1)));
        }
      }
      std::string set = "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', '" +
                        std::to_string(kJournalSchemaVersion) + "')";
      if (Status s = exec(db, set.c_str()); !s.is_ok()) {
        (void)exec(db, "ROLLBACK");
        return fail(s);
      }
    }
    PF_RETURN_IF_ERROR(fail(exec(db, "COMMIT")));
    auto mode = query_one(db, "PRAGMA journal_mode = WAL");
    if (!mode.is_ok()) return fail(mode.status());
    if (mode->value_or("") != "wal") {
      return make_status(Errc::kUnsupported, "journal " + path + ": SQLite refused WAL mode (" +
                                                 mode->value_or("?") + ")");
    }
  } else {
    PF_RETURN_IF_ERROR(fail(exec(db, "PRAGMA query_only = 1")));
  }
  PF_RETURN_IF_ERROR(fail(journal->prepare()));
  if (!options.read_only) {
    const int frames = options.checkpoint_frames > 0
                           ? static_cast<int>(std::min<std::uint32_t>(options.checkpoint_frames,
                                                                      1u << 30))
                           : kCheckpointFrames;
    PF_RETURN_IF_ERROR(fail(journal->start_checkpointer(frames)));
  }
  return std::unique_ptr<Journal>(std::move(journal));
}

}  // namespace

Result<std::unique_ptr<Journal>> Journal::open(const std::string& path, OpenOptions options) {
  return open_journal(path, options);
}

}  // namespace persoflow::storage
