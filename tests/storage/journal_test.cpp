// The journal on real SQLite files: appends read back exactly, the hash chain checked by an
// outside tool (openssl dgst), refused requests write nothing, and group commit of many
// workflows from many threads acknowledges only what is committed.
#include "persoflow/storage/journal.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <thread>

#include "journal_support.hpp"
#include "test_support.hpp"

namespace persoflow::storage {
namespace {

using test::request;
using testing::TempDir;

std::unique_ptr<Journal> open_rw(const std::string& path) {
  auto j = Journal::open(path, {});
  EXPECT_TRUE(j.is_ok()) << j.status().message();
  return j.is_ok() ? std::move(j.value()) : nullptr;
}

// Opens the journal read-only and verifies it: "" when it is intact and holds `records` records,
// else what is wrong.
std::string intact_with(const std::string& path, std::uint64_t records) {
  auto j = Journal::open(path, {.read_only = true});
  if (!j.is_ok()) return j.status().message();
  auto report = (*j)->verify();
  if (!report.is_ok()) return report.status().message();
  if (!report->intact) return report->reason;
  if (report->records_checked != records) {
    return std::to_string(report->records_checked) + " records, not " + std::to_string(records);
  }
  return "";
}

TEST(Journal, AppendsReadBackExactly) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  std::vector<AppendRequest> w1 = {request("w1", 0, 2), request("w1", 1, 0), request("w1", 2, 1)};
  w1[2].status = WorkflowStatus::kDone;
  {
    auto j = open_rw(path);
    ASSERT_TRUE(j);
    ASSERT_TRUE(j->append(w1[0]).is_ok());
    ASSERT_TRUE(j->append(request("w2", 0)).is_ok());
    ASSERT_TRUE(j->append(w1[1]).is_ok());
    ASSERT_TRUE(j->append(w1[2]).is_ok());
    auto recs = j->records("w1");
    ASSERT_TRUE(recs.is_ok()) << recs.status().message();
    ASSERT_EQ(recs->size(), 3u);
    for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ((*recs)[i].body, w1[i]);
    EXPECT_EQ((*recs)[0].seq, 1u);
    EXPECT_EQ((*recs)[1].seq, 3u);
    EXPECT_EQ((*recs)[0].prev_hash, std::string(64, '0'));
    auto all = j->all_records();
    ASSERT_TRUE(all.is_ok());
    ASSERT_EQ(all->size(), 4u);
    for (std::size_t i = 1; i < all->size(); ++i)
      EXPECT_EQ((*all)[i].prev_hash, (*all)[i - 1].hash);
    EXPECT_EQ(j->all_records(3, 1)->front().seq, 3u);
  }
  // Reopened from disk: the summaries, the unfinished list, and the chain continue.
  auto j = open_rw(path);
  ASSERT_TRUE(j);
  auto w = j->workflow("w1");
  ASSERT_TRUE(w.is_ok() && w->has_value());
  EXPECT_EQ((*w)->steps, 3u);
  EXPECT_EQ((*w)->state_name, "Step2");
  EXPECT_EQ((*w)->status, WorkflowStatus::kDone);
  EXPECT_FALSE(j->workflow("nope")->has_value());
  auto unfinished = j->unfinished();
  ASSERT_EQ(unfinished->size(), 1u);
  EXPECT_EQ(unfinished->front().workflow_id, "w2");
  EXPECT_EQ(j->workflows()->size(), 2u);
  ASSERT_TRUE(j->append(request("w2", 1)).is_ok());
  auto report = j->verify();
  ASSERT_TRUE(report.is_ok());
  EXPECT_TRUE(report->intact) << report->reason;
  EXPECT_EQ(report->records_checked, 5u);
  EXPECT_EQ(report->head_hash, j->all_records()->back().hash);
}

TEST(Journal, FileIsWalWithApplicationIdAndSchemaVersion) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  {
    auto j = open_rw(path);
    ASSERT_TRUE(j && j->append(request("w", 0)).is_ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  auto one = [db](const char* sql) {
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db, sql, -1, &s, nullptr);
    std::string out = sqlite3_step(s) == SQLITE_ROW
                          ? reinterpret_cast<const char*>(sqlite3_column_text(s, 0))
                          : "";
    sqlite3_finalize(s);
    return out;
  };
  EXPECT_EQ(one("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(one("PRAGMA application_id"), std::to_string(kJournalApplicationId));
  EXPECT_EQ(one("SELECT value FROM meta WHERE key = 'schema_version'"),
            std::to_string(kJournalSchemaVersion));
  sqlite3_close(db);
}

TEST(Journal, HashChainMatchesOpensslAndTheDocumentedLayout) {
  TempDir dir;
  auto j = open_rw(dir.file("journal.db"));
  ASSERT_TRUE(j);
  ASSERT_TRUE(j->append(request("w", 0)).is_ok());
  ASSERT_TRUE(j->append(request("w", 1)).is_ok());
  auto recs = j->all_records();
  ASSERT_TRUE(recs.is_ok());
  for (const JournalRecord& r : *recs) {
    std::string bytes = canonical_record_bytes(r);
    ASSERT_EQ(bytes.substr(0, 5), std::string("PFJR\x01"));
    EXPECT_EQ(bytes.substr(5, 8), std::string("\0\0\0\0\0\0\0", 7) + static_cast<char>(r.seq));
    // SHA-256(raw prev hash || canonical bytes), computed by openssl from a file.
    std::string raw_prev;
    for (std::size_t i = 0; i < 64; i += 2) {
      raw_prev += static_cast<char>(std::stoi(r.prev_hash.substr(i, 2), nullptr, 16));
    }
    std::string file = dir.file("record.bin");
    std::ofstream(file, std::ios::binary) << raw_prev << bytes;
    auto out = testing::run({"openssl", "dgst", "-sha256", "-r", file});
    ASSERT_EQ(out.exit_code, 0) << out.err;
    EXPECT_EQ(out.out.substr(0, 64), r.hash);
  }
}

TEST(Journal, RefusedRequestsWriteNothing) {
  TempDir dir;
  auto j = open_rw(dir.file("journal.db"));
  ASSERT_TRUE(j);
  ASSERT_TRUE(j->append(request("w", 0)).is_ok());

  Status gap = j->append(request("w", 2));
  EXPECT_EQ(gap.code(), Errc::kRejected);
  EXPECT_EQ(gap.message(),
            "workflow 'w': step 2 is not the next step (expected 1); nothing written");
  EXPECT_EQ(j->append(request("w", 0)).code(), Errc::kRejected);              // repeated step
  EXPECT_EQ(j->append(request("new", 1)).code(), Errc::kRejected);            // must start at 0
  EXPECT_EQ(j->append(request("w", 1, 1, "other")).code(), Errc::kRejected);  // other machine
  AppendRequest dup = request("v", 0);
  dup.commands[0].idempotency_key = "w/0/0";  // w's key: only v/0/0 is v's
  Status not_derived = j->append(dup);
  EXPECT_EQ(not_derived.code(), Errc::kInvalidArgument);
  EXPECT_EQ(not_derived.message(),
            "workflow 'v' step 0: command 0 has idempotency key 'w/0/0', not 'v/0/0' (workflow "
            "id/step/index); nothing written");
  for (const char* key : {"v/0/0/", "v/00/0", "v/0/1", "v/0", "v0/0", "", "/0/0"}) {
    AppendRequest other = request("v", 0);
    other.commands[0].idempotency_key = key;
    EXPECT_EQ(j->append(other).code(), Errc::kInvalidArgument) << key;
  }
  AppendRequest bad_index = request("v", 0, 2);
  bad_index.commands[1].index = 5;
  EXPECT_EQ(j->append(bad_index).code(), Errc::kInvalidArgument);
  AppendRequest no_id = request("", 0);
  EXPECT_EQ(j->append(no_id).code(), Errc::kInvalidArgument);

  EXPECT_FALSE(j->poisoned());
  EXPECT_EQ(j->all_records()->size(), 1u);
  EXPECT_EQ(j->workflows()->size(), 1u);
  auto report = j->verify();
  EXPECT_TRUE(report->intact) << report->reason;
  EXPECT_TRUE(j->append(request("w", 1)).is_ok());
}

TEST(Journal, AppendBatchIsAllOrNothing) {
  TempDir dir;
  auto j = open_rw(dir.file("journal.db"));
  ASSERT_TRUE(j);
  std::vector<AppendRequest> batch = {request("a", 0), request("b", 0), request("a", 5)};
  Status s = j->append_batch(batch);
  EXPECT_EQ(s.code(), Errc::kRejected);
  EXPECT_TRUE(j->all_records()->empty());
  batch.pop_back();
  batch.push_back(request("a", 1));
  EXPECT_TRUE(j->append_batch(batch).is_ok());
  EXPECT_EQ(j->all_records()->size(), 3u);
}

TEST(Journal, AppendEachFailsAnInvalidRequestAlone) {
  TempDir dir;
  auto j = open_rw(dir.file("journal.db"));
  ASSERT_TRUE(j);
  std::vector<AppendRequest> batch = {request("a", 0), request("b", 3), request("a", 1),
                                      request("c", 0)};
  GroupOutcome out = j->append_each(batch);
  EXPECT_TRUE(out.commit.is_ok());
  ASSERT_EQ(out.each.size(), 4u);
  EXPECT_TRUE(out.each[0].is_ok());
  EXPECT_EQ(out.each[1].code(), Errc::kRejected);
  EXPECT_TRUE(out.each[2].is_ok());
  EXPECT_TRUE(out.each[3].is_ok());
  auto all = j->all_records();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[2].body.workflow_id, "c");
  EXPECT_EQ((*all)[2].seq, 3u);  // no hole left by the refused request
  EXPECT_TRUE(j->verify()->intact);
}

// Makes the INSERT of a record fail for a state named "Refused": the one kind of failure the
// writer cannot foresee (every refusal of its own is found before it writes), inside the group's
// transaction.
void refuse_records_of_state_refused(const std::string& path) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "CREATE TRIGGER refuse_state BEFORE INSERT ON records WHEN "
                         "NEW.state_name = 'Refused' BEGIN SELECT RAISE(ABORT, 'refused by the "
                         "test'); END",
                         nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
}

AppendRequest refused_at_insert(const std::string& workflow, std::uint64_t step) {
  AppendRequest r = request(workflow, step, 2);
  r.state_name = "Refused";
  return r;
}

TEST(Journal, AppendEachFailsARequestAloneWhereverItFails) {
  TempDir dir;
  const std::string path = dir.file("journal.db");
  auto j = open_rw(path);
  ASSERT_TRUE(j);
  ASSERT_TRUE(j->append(request("old", 0)).is_ok());  // records key old/0/0
  refuse_records_of_state_refused(path);
  // Refused before any write: another workflow's key in the first command, and in a later one,
  // and a key recorded earlier in the same group; failing at its record's INSERT.
  AppendRequest first_dup = request("a", 0, 2);
  first_dup.commands[0].idempotency_key = "old/0/0";
  AppendRequest later_dup = request("b", 0, 3);
  later_dup.commands[2].idempotency_key = "old/0/0";
  AppendRequest same_group_dup = request("d", 0);
  same_group_dup.commands[0].idempotency_key = "c/0/0";
  std::vector<AppendRequest> batch = {first_dup,      request("c", 0), later_dup,
                                      same_group_dup, request("c", 1), request("a", 0),
                                      refused_at_insert("e", 0)};
  GroupOutcome out = j->append_each(batch);
  EXPECT_TRUE(out.commit.is_ok());
  ASSERT_EQ(out.each.size(), 7u);
  EXPECT_EQ(out.each[0].code(), Errc::kInvalidArgument) << out.each[0].message();
  EXPECT_TRUE(out.each[1].is_ok()) << out.each[1].message();
  EXPECT_EQ(out.each[2].code(), Errc::kInvalidArgument) << out.each[2].message();
  EXPECT_EQ(out.each[3].code(), Errc::kInvalidArgument) << out.each[3].message();
  EXPECT_TRUE(out.each[4].is_ok()) << out.each[4].message();
  EXPECT_TRUE(out.each[5].is_ok()) << out.each[5].message();
  EXPECT_FALSE(out.each[6].is_ok());
  EXPECT_NE(out.each[6].message().find("refused by the test"), std::string::npos)
      << out.each[6].message();
  EXPECT_FALSE(j->workflow("e")->has_value());

  auto all = j->all_records();
  ASSERT_TRUE(all.is_ok());
  ASSERT_EQ(all->size(), 4u);
  std::vector<std::string> order;
  for (const auto& r : *all) order.push_back(r.body.workflow_id + "/" + std::to_string(r.body.step));
  EXPECT_EQ(order, (std::vector<std::string>{"old/0", "c/0", "c/1", "a/0"}));
  EXPECT_EQ((*all)[3].seq, 4u);
  EXPECT_TRUE(j->records("b")->empty());
  EXPECT_FALSE(j->workflow("b")->has_value());
  EXPECT_FALSE(j->workflow("d")->has_value());
  auto report = j->verify();
  EXPECT_TRUE(report->intact) << report->reason;
  // The refused workflows start at step 0 later; the committed ones continue.
  EXPECT_TRUE(j->append(request("b", 0)).is_ok());
  EXPECT_TRUE(j->append(request("c", 2)).is_ok());
  EXPECT_EQ(j->append(request("a", 0)).code(), Errc::kRejected);
}

// The requests a group takes in while it is written: committed in the same transaction (none of
// them is visible to another connection when they are handed over), each failing alone,
// including a failure of its record's INSERT.
TEST(Journal, AppendEachTakingMoreCommitsTheLateRequestsWithTheGroup) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  auto j = open_rw(path);
  ASSERT_TRUE(j);
  ASSERT_TRUE(j->append(request("old", 0)).is_ok());  // records key old/0/0
  sqlite3* reader = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &reader, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  auto committed_records = [reader] {
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(reader, "SELECT count(*) FROM records", -1, &s, nullptr);
    int n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
    sqlite3_finalize(s);
    return n;
  };
  refuse_records_of_state_refused(path);
  std::vector<std::vector<AppendRequest>> arrivals = {
      {request("b", 0), request("a", 5)},  // a's step 5 is not its next step
      {refused_at_insert("dup", 0), request("a", 1)},
  };
  std::vector<int> committed_when_asked;
  std::vector<AppendRequest> group = {request("a", 0)};
  GroupOutcome out = j->append_each_taking_more(group, [&](std::vector<AppendRequest>& more) {
    committed_when_asked.push_back(committed_records());
    if (committed_when_asked.size() > arrivals.size()) return;
    for (auto& r : arrivals[committed_when_asked.size() - 1]) more.push_back(r);
  });
  EXPECT_TRUE(out.commit.is_ok()) << out.commit.message();
  // Asked once more after each arrival, until none came.
  EXPECT_EQ(committed_when_asked, (std::vector<int>{1, 1, 1}));
  ASSERT_EQ(group.size(), 5u);
  ASSERT_EQ(out.each.size(), 5u);
  EXPECT_TRUE(out.each[0].is_ok()) << out.each[0].message();
  EXPECT_TRUE(out.each[1].is_ok()) << out.each[1].message();
  EXPECT_EQ(out.each[2].code(), Errc::kRejected) << out.each[2].message();
  EXPECT_NE(out.each[3].message().find("refused by the test"), std::string::npos)
      << out.each[3].message();
  EXPECT_TRUE(out.each[4].is_ok()) << out.each[4].message();
  EXPECT_EQ(committed_records(), 4);
  sqlite3_close(reader);
  auto all = j->all_records();
  ASSERT_TRUE(all.is_ok());
  std::vector<std::string> order;
  for (const auto& r : *all) order.push_back(r.body.workflow_id + "/" + std::to_string(r.body.step));
  EXPECT_EQ(order, (std::vector<std::string>{"old/0", "a/0", "b/0", "a/1"}));
  EXPECT_FALSE(j->workflow("dup")->has_value());
  auto report = j->verify();
  EXPECT_TRUE(report->intact) << report->reason;
}

// Schema version 4: the workflows table is written once `summary_every` records followed its last
// write; between writes every reader still sees each workflow as of its last record, and a new
// writer instance picks the unwritten rows up from the records.
TEST(Journal, WorkflowsTableIsWrittenEverySoManyRecordsAndReadersSeeTheLatest) {
  TempDir dir;
  const std::string path = dir.file("journal.db");
  auto table = [&path] {
    std::map<std::string, std::string> rows;  // workflow -> "state_name/steps", plus "#seq"
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db,
                       "SELECT workflow_id, state_name || '/' || steps FROM workflows UNION ALL "
                       "SELECT '#seq', value FROM meta WHERE key = 'summary_seq'",
                       -1, &s, nullptr);
    while (sqlite3_step(s) == SQLITE_ROW) {
      rows[reinterpret_cast<const char*>(sqlite3_column_text(s, 0))] =
          reinterpret_cast<const char*>(sqlite3_column_text(s, 1));
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return rows;
  };
  auto seen = [](Journal& j, const std::string& workflow) {
    auto w = j.workflow(workflow);
    if (!w.is_ok() || !w->has_value()) return std::string("none");
    return (*w)->state_name + "/" + std::to_string((*w)->steps);
  };
  using Rows = std::map<std::string, std::string>;
  {
    auto j = Journal::open(path, {.summary_every = 3});
    ASSERT_TRUE(j.is_ok()) << j.status().message();
    ASSERT_TRUE((*j)->append(request("a", 0)).is_ok());
    ASSERT_TRUE((*j)->append(request("b", 0)).is_ok());
    EXPECT_EQ(table(), (Rows{{"#seq", "0"}}));
    EXPECT_EQ(seen(**j, "a"), "Step0/1");
    ASSERT_TRUE((*j)->append(request("a", 1)).is_ok());  // record 3: the table is written
    EXPECT_EQ(table(), (Rows{{"#seq", "3"}, {"a", "Step1/2"}, {"b", "Step0/1"}}));
    ASSERT_TRUE((*j)->append(request("a", 2)).is_ok());
    ASSERT_TRUE((*j)->append(request("c", 0)).is_ok());
    EXPECT_EQ(table(), (Rows{{"#seq", "3"}, {"a", "Step1/2"}, {"b", "Step0/1"}}));
    EXPECT_EQ(seen(**j, "a"), "Step2/3");  // its row, and records after it
    EXPECT_EQ(seen(**j, "b"), "Step0/1");  // only its row
    EXPECT_EQ(seen(**j, "c"), "Step0/1");  // only records after the table's write
    EXPECT_EQ(seen(**j, "nobody"), "none");
    ASSERT_EQ((*j)->workflows()->size(), 3u);
    EXPECT_EQ((*j)->records("a")->size(), 3u);
  }
  {
    // Another reader, and a new writer that continues a (table row and a later record) and c
    // (only in the records) and writes their rows with the next write of the table.
    auto ro = Journal::open(path, {.read_only = true});
    ASSERT_TRUE(ro.is_ok());
    EXPECT_EQ(seen(**ro, "a"), "Step2/3");
    auto unfinished = (*ro)->unfinished();
    ASSERT_TRUE(unfinished.is_ok());
    EXPECT_EQ(unfinished->size(), 3u);
    EXPECT_EQ(intact_with(path, 5), "");

    auto j = Journal::open(path, {.summary_every = 3});
    ASSERT_TRUE(j.is_ok());
    EXPECT_EQ((*j)->append(request("a", 2)).code(), Errc::kRejected);  // a's next step is 3
    ASSERT_TRUE((*j)->append(request("a", 3)).is_ok());                 // record 6
    EXPECT_EQ(table(), (Rows{{"#seq", "6"}, {"a", "Step3/4"}, {"b", "Step0/1"}, {"c", "Step0/1"}}));
    ASSERT_TRUE((*j)->append(request("c", 1)).is_ok());
    EXPECT_EQ(seen(**j, "c"), "Step1/2");
    auto a = (*j)->workflow("a");
    auto c = (*j)->workflow("c");
    ASSERT_TRUE(a.is_ok() && a->has_value() && c.is_ok() && c->has_value());
    auto a_records = (*j)->records("a");
    auto c_records = (*j)->records("c");
    ASSERT_TRUE(a_records.is_ok() && c_records.is_ok());
    ASSERT_EQ(a_records->size(), 4u);
    ASSERT_EQ(c_records->size(), 2u);
    EXPECT_EQ((*a)->created_at_ms, a_records->front().recorded_at_ms);
    EXPECT_EQ((*c)->created_at_ms, c_records->front().recorded_at_ms);
  }
  EXPECT_EQ(intact_with(path, 7), "");
}

TEST(Journal, WriterSeesWorkflowsWrittenByAnEarlierInstance) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  {
    auto j = open_rw(path);
    ASSERT_TRUE(j);
    ASSERT_TRUE(j->append(request("w", 0)).is_ok());
    ASSERT_TRUE(j->append(request("w", 1)).is_ok());
    AppendRequest done = request("finished", 0);
    done.status = WorkflowStatus::kDone;
    ASSERT_TRUE(j->append(done).is_ok());
    // A finished workflow is not kept in memory; its summary on disk still decides.
    EXPECT_EQ(j->append(request("finished", 0)).code(), Errc::kRejected);
    EXPECT_TRUE(j->append(request("finished", 1)).is_ok());
  }
  auto j = open_rw(path);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->append(request("w", 1)).code(), Errc::kRejected);
  EXPECT_EQ(j->append(request("w", 2, 1, "other")).code(), Errc::kRejected);
  EXPECT_TRUE(j->append(request("w", 2)).is_ok());
  EXPECT_TRUE(j->append(request("finished", 2)).is_ok());
  auto report = j->verify();
  EXPECT_TRUE(report->intact) << report->reason;
  EXPECT_EQ(report->records_checked, 6u);
}

// A group far larger than SQLite's page cache and than the writer's WAL buffer: SQLite spills
// pages to the WAL inside the transaction and reads them back, and the buffer is written out in
// many pieces. Another connection then reads exactly what was appended.
TEST(Journal, GroupLargerThanTheCacheAndTheWalBuffer) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  auto j = open_rw(path);
  ASSERT_TRUE(j);
  std::vector<AppendRequest> batch;
  for (int i = 0; i < 300; ++i) {
    std::string payload(20000, static_cast<char>('a' + i % 26));
    batch.push_back(request("big-" + std::to_string(i), 0, 2, "ticket", payload));
  }
  GroupOutcome out = j->append_each(batch);
  ASSERT_TRUE(out.commit.is_ok()) << out.commit.message();
  for (const Status& s : out.each) EXPECT_TRUE(s.is_ok()) << s.message();
  EXPECT_TRUE(j->append(request("big-7", 1)).is_ok());

  auto reader = Journal::open(path, {.read_only = true});
  ASSERT_TRUE(reader.is_ok()) << reader.status().message();
  auto report = (*reader)->verify();
  ASSERT_TRUE(report.is_ok());
  EXPECT_TRUE(report->intact) << report->reason;
  EXPECT_EQ(report->records_checked, 301u);
  auto records = (*reader)->records("big-123");
  ASSERT_TRUE(records.is_ok());
  ASSERT_EQ(records->size(), 1u);
  EXPECT_EQ(records->front().body, batch[123]);
}

// Continuous appends, never an idle moment: the checkpointer copies the WAL into the database file
// in the background and the writer copies the last few frames itself, so the WAL starts over
// instead of growing by every commit. (On SQLite 3.40 the checkpointer used to copy nothing: its
// connection had not read the database, so it had no WAL open, and the WAL grew until the journal
// was closed.)
TEST(Journal, WalStartsOverUnderContinuousAppends) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  constexpr int kBatches = 600;
  constexpr int kWorkflows = 8;
  {
    auto j = Journal::open(path, {.checkpoint_frames = 64});
    ASSERT_TRUE(j.is_ok()) << j.status().message();
    for (std::uint64_t step = 0; step < kBatches; ++step) {
      std::vector<AppendRequest> batch;
      for (int w = 0; w < kWorkflows; ++w) batch.push_back(request("w" + std::to_string(w), step));
      ASSERT_TRUE((*j)->append_batch(batch).is_ok());
    }
    // About 15 frames (of 2 KiB pages) per commit: 19 MB if the WAL never started over; the
    // database file holds the records only if checkpoints copied them.
    const auto wal = std::filesystem::file_size(path + "-wal");
    const auto db = std::filesystem::file_size(path);
    EXPECT_LT(wal, 4u << 20) << "the WAL grew by every commit";
    EXPECT_GT(db, 512u << 10) << "no checkpoint copied the records into the database file";
  }
  EXPECT_EQ(intact_with(path, std::uint64_t{kBatches} * kWorkflows), "");
}

TEST(GroupCommit, ManyWorkflowsFromManyThreads) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  auto j = open_rw(path);
  ASSERT_TRUE(j);
  // An outside reader proves each acknowledged append is already committed.
  sqlite3* reader = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &reader, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  std::mutex reader_mutex;
  auto committed = [&](const std::string& wf, std::uint64_t step) {
    std::lock_guard lock(reader_mutex);
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(reader, "SELECT count(*) FROM records WHERE workflow_id = ? AND step = ?",
                       -1, &s, nullptr);
    sqlite3_bind_text(s, 1, wf.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, static_cast<sqlite3_int64>(step));
    int n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
    sqlite3_finalize(s);
    return n == 1;
  };

  auto writer = GroupCommitWriter::start(std::move(j), 32);
  constexpr int kThreads = 16, kFlowsPerThread = 4, kSteps = 12;
  std::atomic<int> not_committed_at_ack{0}, failures{0}, refused_ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int step = 0; step < kSteps; ++step) {
        for (int f = 0; f < kFlowsPerThread; ++f) {
          std::string wf = "t" + std::to_string(t) + "-f" + std::to_string(f);
          std::promise<Status> done;
          auto fut = done.get_future();
          auto st = static_cast<std::uint64_t>(step);
          writer->append(request(wf, st), [&, wf, st](Status s) {
            if (s.is_ok() && !committed(wf, st)) ++not_committed_at_ack;
            done.set_value(std::move(s));
          });
          if (!fut.get().is_ok()) ++failures;
          if (t == 0 && f == 0 && step == 5) {
            // A wrong step in the middle of everyone's batches fails alone.
            std::promise<Status> bad;
            auto bad_fut = bad.get_future();
            writer->append(request(wf, 99), [&bad](Status s) { bad.set_value(std::move(s)); });
            if (bad_fut.get().code() == Errc::kRejected) ++refused_ok;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  writer->stop();
  sqlite3_close(reader);
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(not_committed_at_ack.load(), 0);
  EXPECT_EQ(refused_ok.load(), 1);
  EXPECT_FALSE(writer->poisoned());

  std::promise<Status> after;
  writer->append(request("late", 0), [&after](Status s) { after.set_value(std::move(s)); });
  EXPECT_EQ(after.get_future().get().code(), Errc::kCancelled);

  auto reopened = Journal::open(path, {.read_only = true});
  ASSERT_TRUE(reopened.is_ok()) << reopened.status().message();
  auto report = (*reopened)->verify();
  ASSERT_TRUE(report.is_ok());
  EXPECT_TRUE(report->intact) << report->reason;
  EXPECT_EQ(report->records_checked,
            static_cast<std::uint64_t>(kThreads * kFlowsPerThread * kSteps));
  auto flows = (*reopened)->workflows();
  ASSERT_TRUE(flows.is_ok());
  EXPECT_EQ(flows->size(), static_cast<std::size_t>(kThreads * kFlowsPerThread));
  for (const auto& w : *flows) EXPECT_EQ(w.steps, static_cast<std::uint64_t>(kSteps));
}

// The group commit writer's commits do not wait for the disk: its acknowledger syncs the WAL
// before it runs any callback (Journal::defer_syncs). With small checkpoints the writer also
// copies the last frames into the database file between groups (syncing them first) and starts
// the WAL over; every acknowledged append is in the journal afterwards.
TEST(GroupCommit, SyncsBehindTheWriterAndCheckpointsBetweenGroups) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  {
    auto plain = Journal::open(path, {});
    ASSERT_TRUE(plain.is_ok()) << plain.status().message();
    ASSERT_TRUE((*plain)->append(request("first", 0)).is_ok());
  }
  {
    auto reader = Journal::open(path, {.read_only = true});
    ASSERT_TRUE(reader.is_ok()) << reader.status().message();
    EXPECT_FALSE((*reader)->defer_syncs());  // nothing to sync
  }
  auto j = Journal::open(path, {.checkpoint_frames = 32});
  ASSERT_TRUE(j.is_ok()) << j.status().message();
  ASSERT_TRUE((*j)->defer_syncs());
  auto writer = GroupCommitWriter::start(std::move(*j), 16);
  constexpr int kThreads = 4, kFlowsPerThread = 8, kSteps = 80;
  std::atomic<int> acknowledged{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int step = 0; step < kSteps; ++step) {
        std::vector<std::future<Status>> pending;
        std::vector<std::promise<Status>> done(kFlowsPerThread);
        for (int f = 0; f < kFlowsPerThread; ++f) {
          pending.push_back(done[static_cast<std::size_t>(f)].get_future());
          writer->append(request("t" + std::to_string(t) + "-f" + std::to_string(f),
                                 static_cast<std::uint64_t>(step)),
                         [&done, f](Status s) {
                           done[static_cast<std::size_t>(f)].set_value(std::move(s));
                         });
        }
        for (auto& p : pending) (p.get().is_ok() ? acknowledged : failures)++;
      }
    });
  }
  for (auto& t : threads) t.join();
  writer->stop();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(acknowledged.load(), kThreads * kFlowsPerThread * kSteps);
  EXPECT_FALSE(writer->poisoned());
  // Checkpoints ran while the writer deferred its syncs (how often depends on the checkpointer
  // thread's share of a loaded machine: Journal.WalStartsOverUnderContinuousAppends bounds the
  // WAL): the records are in the database file before the journal is closed.
  EXPECT_GT(std::filesystem::file_size(path), 256u << 10);
  writer.reset();
  EXPECT_EQ(intact_with(path, kThreads * kFlowsPerThread * kSteps + 1), "");
}

// The cap on a group (GroupCommitWriter::start's max_batch): appends queued faster than the
// writer commits them fill groups up to the cap and never past it. The journal's clock ticks once
// per transaction, so the records of one transaction share their recorded_at_ms.
TEST(GroupCommit, NoGroupHoldsMoreThanItsCap) {
  TempDir dir;
  const std::string path = dir.file("journal.db");
  std::atomic<std::int64_t> tick{1'700'000'000'000};
  auto j = Journal::open(path, {.wall_clock_ms = [&tick] { return tick++; }});
  ASSERT_TRUE(j.is_ok()) << j.status().message();
  constexpr std::size_t kCap = 8;
  auto writer = GroupCommitWriter::start(std::move(*j), kCap);
  constexpr int kFlows = 40, kSteps = 5;
  std::vector<std::promise<Status>> done(kFlows * kSteps);
  for (int step = 0; step < kSteps; ++step) {
    for (int f = 0; f < kFlows; ++f) {  // every flow's next step only once the last is in
      const std::size_t i = static_cast<std::size_t>(step * kFlows + f);
      writer->append(request("f" + std::to_string(f), static_cast<std::uint64_t>(step)),
                     [&done, i](Status s) { done[i].set_value(std::move(s)); });
    }
    for (int f = 0; f < kFlows; ++f) {
      EXPECT_TRUE(done[static_cast<std::size_t>(step * kFlows + f)].get_future().get().is_ok());
    }
  }
  writer.reset();
  auto reader = Journal::open(path, {.read_only = true});
  ASSERT_TRUE(reader.is_ok()) << reader.status().message();
  auto all = (*reader)->all_records();
  ASSERT_TRUE(all.is_ok());
  ASSERT_EQ(all->size(), static_cast<std::size_t>(kFlows * kSteps));
  std::map<std::int64_t, std::size_t> per_transaction;
  for (const auto& r : *all) ++per_transaction[r.recorded_at_ms];
  std::size_t largest = 0;
  for (const auto& [at, n] : per_transaction) largest = std::max(largest, n);
  EXPECT_EQ(largest, kCap) << per_transaction.size() << " transactions";
}

TEST(GroupCommit, StopCommitsWhatIsQueued) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  auto j = open_rw(path);
  ASSERT_TRUE(j);
  auto writer = GroupCommitWriter::start(std::move(j), 4);
  std::atomic<int> ok{0};
  for (int i = 0; i < 20; ++i) {
    writer->append(request("w" + std::to_string(i), 0), [&ok](Status s) {
      if (s.is_ok()) ++ok;
    });
  }
  writer->stop();
  EXPECT_EQ(ok.load(), 20);
  auto reopened = Journal::open(path, {.read_only = true});
  ASSERT_TRUE(reopened.is_ok());
  EXPECT_EQ((*reopened)->all_records()->size(), 20u);
}

}  // namespace
}  // namespace persoflow::storage
