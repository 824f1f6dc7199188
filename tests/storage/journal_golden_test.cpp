// Golden files that pin the journal's on-disk format, so a change shows in review:
// - tests/golden/journal/record_v1.txt: the canonical bytes (hex) and chain hash of fixed
//   records; a changed layout or hash rule fails here.
// - tests/golden/journal/journal_v<N>.db: a journal of schema version N written by the build of
//   that version; every later build must migrate it, verify it, read it back and go on appending
//   to it. Copied to a temporary directory first: SQLite never touches the source tree.
// PERSOFLOW_UPDATE_GOLDEN=1 rewrites record_v1.txt and the journal of the current schema version
// (then review and commit the change); older journals are never rewritten.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "journal_support.hpp"
#include "persoflow/storage/journal.hpp"
#include "test_support.hpp"

namespace persoflow::storage {
namespace {

bool updating() {
  const char* u = std::getenv("PERSOFLOW_UPDATE_GOLDEN");
  return u && *u == '1';
}

std::string golden_dir() { return testing::source_dir() + "/tests/golden/journal"; }

std::string hex(const std::string& bytes) {
  static const char* k = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += k[c >> 4];
    out += k[c & 0xf];
  }
  return out;
}

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(JournalGolden, CanonicalBytesAndHashesAreStable) {
  std::ostringstream out;
  std::string prev(64, '0');
  for (std::uint64_t seq = 1; seq <= 3; ++seq) {
    JournalRecord r;
    r.seq = seq;
    r.recorded_at_ms = 1763780000000 + static_cast<std::int64_t>(seq);
    r.body = test::request("card-7", seq - 1, static_cast<std::size_t>(seq - 1));
    r.body.status = seq == 3 ? WorkflowStatus::kDone : WorkflowStatus::kRunning;
    r.prev_hash = prev;
    std::string bytes = canonical_record_bytes(r);
    r.hash = chain_hash(prev, bytes);
    out << "seq " << seq << "\nbytes " << hex(bytes) << "\nhash " << r.hash << "\n";
    prev = r.hash;
  }
  std::string path = golden_dir() + "/record_v1.txt";
  if (updating()) {
    std::filesystem::create_directories(golden_dir());
    std::ofstream(path, std::ios::binary) << out.str();
  }
  EXPECT_EQ(out.str(), read(path)) << "the journal's record layout or hash changed; if intended, "
                                      "it needs a new version byte (docs/journal.md)";
}

std::string golden_journal(int version) {
  return golden_dir() + "/journal_v" + std::to_string(version) + ".db";
}

// Writes the golden journal of this build's schema version: two workflows, three steps each.
void write_golden_journal() {
  testing::TempDir tmp;
  std::string path = tmp.file("journal.db");
  {
    auto j = Journal::open(path, {});
    ASSERT_TRUE(j.is_ok());
    for (std::uint64_t step = 0; step < 3; ++step) {
      for (const char* wf : {"card-1", "card-2"}) {
        ASSERT_TRUE((*j)->append(test::request(wf, step, 2)).is_ok());
      }
    }
  }
  std::filesystem::create_directories(golden_dir());
  std::filesystem::copy_file(path, golden_journal(kJournalSchemaVersion),
                             std::filesystem::copy_options::overwrite_existing);
}

std::string schema_version_of(const std::string& path) {
  std::string version;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'schema_version'", -1, &s,
                           nullptr) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
      version = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    }
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return version;
}

// What is wrong with opening the golden journal of schema `version` in this build ("" when it is
// refused read-only while it is older, then a writable open migrates it, it verifies, reads back,
// lists its unfinished workflows and takes their next steps).
std::string golden_journal_problems(int version) {
  std::string problems;
  const std::string golden = golden_journal(version);
  if (!std::filesystem::exists(golden)) return golden + " is missing";
  testing::TempDir dir;
  std::string path = dir.file("journal.db");
  std::filesystem::copy_file(golden, path);
  if (schema_version_of(path) != std::to_string(version)) {
    return golden + " has schema version '" + schema_version_of(path) + "'";
  }
  if (version < kJournalSchemaVersion) {
    auto before = test::snapshot(path);
    auto ro = Journal::open(path, {.read_only = true});
    if (ro.is_ok()) {
      problems += "a read-only open of the older journal succeeded; ";
    } else if (ro.status().message().find("open it once for writing to migrate it") ==
               std::string::npos) {
      problems += "read-only refusal: " + ro.status().message() + "; ";
    }
    if (test::snapshot(path) != before) problems += "the refused read-only open changed it; ";
  }
  {
    auto j = Journal::open(path, {});
    if (!j.is_ok()) return problems + "writable open: " + j.status().message();
    auto report = (*j)->verify();
    if (!report.is_ok() || !report->intact || report->records_checked != 6) {
      problems += "not intact with 6 records after opening: " +
                  (report.is_ok() ? report->reason : report.status().message()) + "; ";
    }
    for (const char* wf : {"card-1", "card-2"}) {
      auto records = (*j)->records(wf);
      if (!records.is_ok() || records->size() != 3) {
        problems += std::string(wf) + ": not 3 records; ";
        continue;
      }
      for (std::uint64_t step = 0; step < 3; ++step) {
        if ((*records)[step].body != test::request(wf, step, 2)) {
          problems += std::string(wf) + " step " + std::to_string(step) + " reads back otherwise; ";
        }
      }
    }
    auto unfinished = (*j)->unfinished();
    if (!unfinished.is_ok() || unfinished->size() != 2 || (*unfinished)[0].steps != 3 ||
        (*unfinished)[1].steps != 3) {
      problems += "the unfinished workflows are not card-1 and card-2 at 3 steps; ";
    }
    // The workflows go on where they stopped.
    for (const char* wf : {"card-1", "card-2"}) {
      Status s = (*j)->append(test::request(wf, 3));
      if (!s.is_ok()) problems += std::string(wf) + " step 3: " + s.message() + "; ";
    }
    if (Status s = (*j)->append(test::request("card-1", 3)); s.is_ok()) {
      problems += "card-1 took step 3 twice; ";
    }
  }
  if (schema_version_of(path) != std::to_string(kJournalSchemaVersion)) {
    problems += "schema version after the writable open: " + schema_version_of(path) + "; ";
  }
  auto ro = Journal::open(path, {.read_only = true});
  if (!ro.is_ok()) return problems + "read-only open after migrating: " + ro.status().message();
  auto report = (*ro)->verify();
  if (!report.is_ok() || !report->intact || report->records_checked != 8) {
    problems += "not intact with 8 records at the end: " +
                (report.is_ok() ? report->reason : report.status().message()) + "; ";
  }
  auto records = (*ro)->records("card-2");
  if (!records.is_ok() || records->size() != 4 || records->back().body.step != 3) {
    problems += "card-2 does not read back 4 records after migrating; ";
  }
  return problems;
}

// Every schema version's journal, written by the build of its time, opens in every later build.
TEST(JournalGolden, VersionOneJournalMigratesVerifiesAndResumes) {
  EXPECT_EQ(golden_journal_problems(1), "");
}

TEST(JournalGolden, VersionTwoJournalMigratesVerifiesAndResumes) {
  EXPECT_EQ(golden_journal_problems(2), "");
}

// Schema version 3 records only derived idempotency keys and drops the `commands` table: a
// version-2 journal holding any other key is refused by name and left byte for byte as it was.
TEST(JournalGolden, VersionTwoJournalWithAnotherKeyIsRefusedUnchanged) {
  testing::TempDir dir;
  std::string path = dir.file("journal.db");
  std::filesystem::copy_file(golden_journal(2), path);
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "UPDATE commands SET idempotency_key = 'order-9' "
                           "WHERE seq = 4 AND idx = 1",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  auto before = test::snapshot(path);
  auto j = Journal::open(path, {});
  ASSERT_FALSE(j.is_ok());
  EXPECT_EQ(j.status().code(), Errc::kUnsupported);
  EXPECT_NE(j.status().message().find("command 1 of record 4 has idempotency key 'order-9'"),
            std::string::npos)
      << j.status().message();
  EXPECT_EQ(test::snapshot(path), before);
  EXPECT_EQ(schema_version_of(path), "2");
}

TEST(JournalGolden, VersionThreeJournalMigratesVerifiesAndResumes) {
  EXPECT_EQ(golden_journal_problems(3), "");
}

TEST(JournalGolden, CurrentVersionJournalOpensVerifiesAndResumes) {
  if (updating()) write_golden_journal();
  EXPECT_EQ(golden_journal_problems(kJournalSchemaVersion), "");
}

}  // namespace
}  // namespace persoflow::storage
