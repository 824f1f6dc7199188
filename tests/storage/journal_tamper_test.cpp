// Tampering with a closed journal through SQLite itself (as an attacker with file access would):
// one changed byte, a deleted record, two records swapped, a record rewritten with a recomputed
// hash, a forged command key. verify() must fail and name the first bad record.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include "journal_support.hpp"
#include "persoflow/storage/journal.hpp"
#include "test_support.hpp"

namespace persoflow::storage {
namespace {

using test::request;

class Tamper : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("journal.db");
    // The workflows table is written with records 4 and 8; record 9 follows it.
    auto j = Journal::open(path_, {.summary_every = 4});
    ASSERT_TRUE(j.is_ok()) << j.status().message();
    // 9 records over three interleaved workflows: seq 1..9.
    for (std::uint64_t step = 0; step < 3; ++step) {
      for (const char* wf : {"a", "b", "c"}) ASSERT_TRUE((*j)->append(request(wf, step)).is_ok());
    }
  }

  void sql(const std::string& statement) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    int rc = sqlite3_exec(db, statement.c_str(), nullptr, nullptr, &err);
    std::string msg = err ? err : "";
    sqlite3_free(err);
    sqlite3_close(db);
    ASSERT_EQ(rc, SQLITE_OK) << msg << " in: " << statement;
  }

  // Changes one byte of a blob column of one record, as a disk or an editor would.
  void flip_byte(std::uint64_t seq, const std::string& column, std::size_t offset) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    std::string select = "SELECT " + column + " FROM records WHERE seq = ?";
    ASSERT_EQ(sqlite3_prepare_v2(db, select.c_str(), -1, &s, nullptr), SQLITE_OK);
    sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(seq));
    ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
    std::string blob(static_cast<const char*>(sqlite3_column_blob(s, 0)),
                     static_cast<std::size_t>(sqlite3_column_bytes(s, 0)));
    sqlite3_finalize(s);
    ASSERT_LT(offset, blob.size());
    blob[offset] = static_cast<char>(blob[offset] ^ 0x01);
    std::string update = "UPDATE records SET " + column + " = ? WHERE seq = ?";
    ASSERT_EQ(sqlite3_prepare_v2(db, update.c_str(), -1, &s, nullptr), SQLITE_OK);
    sqlite3_bind_blob(s, 1, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, static_cast<sqlite3_int64>(seq));
    EXPECT_EQ(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    sqlite3_close(db);
  }

  VerifyReport verify() {
    auto j = Journal::open(path_, {.read_only = true});
    EXPECT_TRUE(j.is_ok()) << j.status().message();
    if (!j.is_ok()) return {};
    auto report = (*j)->verify();
    EXPECT_TRUE(report.is_ok()) << report.status().message();
    return report.is_ok() ? *report : VerifyReport{};
  }

  // What is wrong with the verification of a tampered journal ("" when both the library and
  // `journal verify` name record `seq` as the first bad one, with `reason_part`).
  std::string bad_record_problems(std::uint64_t seq, const std::string& reason_part) {
    std::string problems;
    VerifyReport r = verify();
    if (r.intact) problems += "verify says intact; ";
    if (!r.first_bad_seq.has_value()) {
      problems += "no first bad record named (" + r.reason + "); ";
    } else if (*r.first_bad_seq != seq) {
      problems += "first bad record " + std::to_string(*r.first_bad_seq) + ", not " +
                  std::to_string(seq) + " (" + r.reason + "); ";
    }
    if (r.reason.find(reason_part) == std::string::npos) {
      problems += "reason '" + r.reason + "' lacks '" + reason_part + "'; ";
    }
    // The command line says the same and exits 1.
    auto cli = testing::run({testing::persoflow_binary(), "journal", "verify", "--journal", path_});
    if (cli.exit_code != 1) problems += "exit " + std::to_string(cli.exit_code) + "; ";
    if (cli.out.find("record " + std::to_string(seq)) == std::string::npos) {
      problems += "command output does not name the record: " + cli.out;
    }
    return problems;
  }

  testing::TempDir dir_;
  std::string path_;
};

TEST_F(Tamper, UntouchedJournalIsIntact) {
  VerifyReport r = verify();
  EXPECT_TRUE(r.intact) << r.reason;
  EXPECT_EQ(r.records_checked, 9u);
  auto cli = testing::run({testing::persoflow_binary(), "journal", "verify", "--journal", path_});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_EQ(cli.out.rfind("journal intact: 9 records", 0), 0u) << cli.out;
}

TEST_F(Tamper, OneChangedByteOfAnEvent) {
  flip_byte(4, "event", 7);
  EXPECT_EQ(bad_record_problems(4, "do not match its hash"), "");
}

TEST_F(Tamper, OneChangedByteOfACommandList) {
  flip_byte(8, "commands", 20);
  EXPECT_EQ(bad_record_problems(8, "record 8"), "");
}

TEST_F(Tamper, OneChangedByteOfAState) {
  sql("UPDATE records SET state_name = 'Step9' WHERE seq = 7");
  EXPECT_EQ(bad_record_problems(7, "do not match its hash"), "");
}

TEST_F(Tamper, ChangedTimestamp) {
  sql("UPDATE records SET recorded_at_ms = recorded_at_ms + 1 WHERE seq = 2");
  EXPECT_EQ(bad_record_problems(2, "do not match its hash"), "");
}

TEST_F(Tamper, DeletedRecordInTheMiddle) {
  sql("DELETE FROM records WHERE seq = 5");
  EXPECT_EQ(bad_record_problems(5, "record 5 is missing"), "");
}

TEST_F(Tamper, DeletedLastRecord) {
  sql("DELETE FROM records WHERE seq = 9");
  EXPECT_EQ(bad_record_problems(9, "record 9 is missing"), "");
}

TEST_F(Tamper, DeletedFirstRecord) {
  sql("DELETE FROM records WHERE seq = 1");
  EXPECT_EQ(bad_record_problems(1, "record 1 is missing"), "");
}

TEST_F(Tamper, TwoRecordsSwapped) {
  // Records 3 (workflow c, step 0) and 5 (workflow b, step 1) trade places, each intact.
  sql("BEGIN; CREATE TEMP TABLE t AS SELECT * FROM records WHERE seq IN (3, 5); "
      "DELETE FROM records WHERE seq IN (3, 5); "
      "INSERT INTO records SELECT CASE seq WHEN 3 THEN 5 ELSE 3 END, workflow_id, step, "
      "previous_seq, machine, "
      "event_type, event, result_of, state_name, state, status, commands, recorded_at_ms, "
      "prev_hash, hash FROM t; COMMIT;");
  EXPECT_EQ(bad_record_problems(3, "prev_hash does not match"), "");
}

TEST_F(Tamper, RecordRewrittenWithARecomputedHash) {
  // An attacker who recomputes record 4's own hash still breaks the link to record 5.
  JournalRecord r;
  {
    auto j = Journal::open(path_, {.read_only = true});
    ASSERT_TRUE(j.is_ok());
    r = (*j)->all_records(4, 1)->front();
  }
  r.body.state_name = "Forged";
  std::string hash = chain_hash(r.prev_hash, canonical_record_bytes(r));
  sql("UPDATE records SET state_name = 'Forged', hash = '" + hash + "' WHERE seq = 4");
  EXPECT_EQ(bad_record_problems(5, "prev_hash does not match"), "");
}

// The whole tail rewritten, head included, so the chain holds: a command key that repeats
// another workflow's (schema version 3 keeps no table of keys) is still named.
TEST_F(Tamper, LastRecordForgedWithAnotherWorkflowsKeyAndTheHead) {
  JournalRecord r;
  {
    auto j = Journal::open(path_, {.read_only = true});
    ASSERT_TRUE(j.is_ok());
    r = (*j)->all_records(9, 1)->front();
  }
  ASSERT_EQ(r.body.commands.at(0).idempotency_key, "c/2/0");
  r.body.commands[0].idempotency_key = "a/0/0";
  const std::string hash = chain_hash(r.prev_hash, canonical_record_bytes(r));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "UPDATE records SET commands = ?, hash = ? WHERE seq = 9", -1,
                               &s, nullptr),
            SQLITE_OK);
  const std::string commands = encode_commands(r.body.commands);
  sqlite3_bind_blob(s, 1, commands.data(), static_cast<int>(commands.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(s, 2, hash.c_str(), -1, SQLITE_TRANSIENT);
  EXPECT_EQ(sqlite3_step(s), SQLITE_DONE);
  sqlite3_finalize(s);
  sqlite3_close(db);
  sql("UPDATE meta SET value = '" + hash + "' WHERE key = 'head_hash'");
  EXPECT_EQ(bad_record_problems(9, "idempotency key 'a/0/0', not 'c/2/0'"), "");
}

TEST_F(Tamper, BrokenLinkToTheWorkflowsPreviousRecord) {
  // Record 7 is workflow a's step 2; its previous record is 4, not 1.
  sql("UPDATE records SET previous_seq = 1 WHERE seq = 7");
  EXPECT_EQ(bad_record_problems(7, "link to the workflow's previous record"), "");
}

TEST_F(Tamper, ChangedWorkflowSummary) {
  sql("UPDATE workflows SET status = 'done' WHERE workflow_id = 'b'");
  EXPECT_EQ(bad_record_problems(8, "summary of workflow 'b'"), "");
}

// Readers see c's record 9 instead of its row in the table, but verify checks the row too.
TEST_F(Tamper, ChangedSummaryOfAWorkflowWithALaterRecord) {
  sql("UPDATE workflows SET state_name = 'Elsewhere' WHERE workflow_id = 'c'");
  EXPECT_EQ(bad_record_problems(6, "summary of workflow 'c' in the workflows table"), "");
}

TEST_F(Tamper, SummariesClaimingAnotherRecord) {
  // The table holds a's row after record 7; up to record 4 a's last record is 4.
  sql("UPDATE meta SET value = '4' WHERE key = 'summary_seq'");
  EXPECT_EQ(bad_record_problems(4, "summary of workflow 'a' in the workflows table"), "");
  sql("UPDATE meta SET value = '12' WHERE key = 'summary_seq'");
  VerifyReport r = verify();
  EXPECT_FALSE(r.intact);
  EXPECT_NE(r.reason.find("claims to describe record 12 but the last record is 9"),
            std::string::npos)
      << r.reason;
  sql("UPDATE meta SET value = 'four' WHERE key = 'summary_seq'");
  r = verify();
  EXPECT_FALSE(r.intact);
  EXPECT_NE(r.reason.find("summary_seq 'four' is not a record number"), std::string::npos)
      << r.reason;
}

}  // namespace
}  // namespace persoflow::storage
