// Opening what is not a usable journal: a path in a missing directory, a missing file, a
// read-only file opened for writing, a journal locked by another process, a corrupt file, a
// newer schema, a random file, another application's SQLite database. Each gets a clear error
// and the file is left exactly as it was (bytes and mtime).
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "journal_support.hpp"
#include "persoflow/storage/journal.hpp"
#include "test_support.hpp"

namespace persoflow::storage {
namespace {

using test::request;
using test::snapshot;
using testing::TempDir;

void make_journal(const std::string& path, int records = 3) {
  auto j = Journal::open(path, {});
  ASSERT_TRUE(j.is_ok()) << j.status().message();
  for (int i = 0; i < records; ++i) {
    ASSERT_TRUE((*j)->append(request("w", static_cast<std::uint64_t>(i))).is_ok());
  }
}

void sql(const std::string& path, const std::string& statement) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, statement.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << msg;
}

// Opens for writing and for reading; both must fail with `code` and a message containing
// `text`, leaving the file as it was.
// What is wrong with how `path` is refused ("" when both a writable and a read-only open fail
// with `code` and a one-line message holding `text`, and the file is left as it was).
std::string refusal_problems(const std::string& path, Errc code, const std::string& text,
                             bool also_read_only = true) {
  std::string problems;
  auto before = snapshot(path);
  for (bool read_only : {false, true}) {
    if (read_only && !also_read_only) continue;
    const std::string mode = read_only ? "read-only open: " : "writable open: ";
    auto j = Journal::open(path, {.read_only = read_only});
    if (j.is_ok()) {
      problems += mode + "succeeded; ";
      continue;
    }
    const std::string message = j.status().message();
    if (j.status().code() != code) problems += mode + "other error code: " + message + "; ";
    if (message.find(text) == std::string::npos) problems += mode + "message: " + message + "; ";
    if (message.find('\n') != std::string::npos) problems += mode + "message spans lines; ";
    if (snapshot(path) != before) problems += mode + "the file was modified; ";
  }
  return problems;
}

TEST(JournalOpen, PathInAMissingDirectory) {
  TempDir dir;
  std::string path = dir.file("no-such-dir/journal.db");
  auto j = Journal::open(path, {});
  ASSERT_FALSE(j.is_ok());
  EXPECT_EQ(j.status().code(), Errc::kNotFound);
  EXPECT_EQ(j.status().message(),
            "journal " + path + ": directory " + dir.file("no-such-dir") + " does not exist");
  EXPECT_FALSE(std::filesystem::exists(dir.file("no-such-dir")));
}

TEST(JournalOpen, MissingFileIsNotCreatedWhenNotAsked) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  for (OpenOptions o : {OpenOptions{.read_only = true}, OpenOptions{.create_if_missing = false}}) {
    auto j = Journal::open(path, o);
    ASSERT_FALSE(j.is_ok());
    EXPECT_EQ(j.status().code(), Errc::kNotFound);
    EXPECT_EQ(j.status().message(), "no journal at " + path);
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(JournalOpen, ReadOnlyFileOpenedForWriting) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  make_journal(path);
  ASSERT_EQ(::chmod(path.c_str(), 0444), 0);
  EXPECT_EQ(refusal_problems(path, Errc::kPermissionDenied, "is read-only", /*also_read_only=*/false), "");
  // Reading it is fine, and still changes nothing.
  auto before = snapshot(path);
  auto j = Journal::open(path, {.read_only = true});
  ASSERT_TRUE(j.is_ok()) << j.status().message();
  auto report = (*j)->verify();
  ASSERT_TRUE(report.is_ok());
  EXPECT_TRUE(report->intact) << report->reason;
  EXPECT_EQ((*j)->append(request("w", 3)).code(), Errc::kPermissionDenied);
  j = make_status(Errc::kCancelled, "closed");
  EXPECT_EQ(snapshot(path), before);
}

TEST(JournalOpen, LockedByAnotherProcess) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  make_journal(path);
  int ready[2], release[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(release), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The other process: a writer holding the journal open.
    auto j = Journal::open(path, {});
    char c = j.is_ok() ? 'y' : 'n';
    (void)!::write(ready[1], &c, 1);
    (void)!::read(release[0], &c, 1);
    ::_exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  EXPECT_EQ(refusal_problems(path, Errc::kUnavailable, "is locked by another process",
                 /*also_read_only=*/false), "");
  // Readers (an auditor, `journal verify`) are not blocked by the writer.
  auto reader = Journal::open(path, {.read_only = true});
  EXPECT_TRUE(reader.is_ok()) << reader.status().message();
  (void)!::write(release[1], "x", 1);
  int status = 0;
  ::waitpid(child, &status, 0);
  for (int fd : {ready[0], ready[1], release[0], release[1]}) ::close(fd);
  // Once the other writer is gone, the journal opens.
  auto j = Journal::open(path, {});
  EXPECT_TRUE(j.is_ok()) << j.status().message();
}

TEST(JournalOpen, LockedByAnSqliteWriteTransaction) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  make_journal(path);
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  EXPECT_EQ(refusal_problems(path, Errc::kUnavailable, "is locked by another process",
                 /*also_read_only=*/false), "");
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  EXPECT_TRUE(Journal::open(path, {}).is_ok());
}

TEST(JournalOpen, CorruptFile) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  make_journal(path);
  {
    // Overwrite the schema page after the 100-byte header with garbage.
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    std::mt19937 rng(7);
    for (int i = 0; i < 3000; ++i) f.put(static_cast<char>(rng()));
  }
  EXPECT_EQ(refusal_problems(path, Errc::kCorrupt, "is corrupt"), "");
}

TEST(JournalOpen, NewerSchema) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  make_journal(path);
  sql(path, "UPDATE meta SET value = '7' WHERE key = 'schema_version'");
  EXPECT_EQ(refusal_problems(path, Errc::kUnsupported,
                             "has schema version 7, newer than this persoflow supports (" +
                                 std::to_string(kJournalSchemaVersion) + ")"),
            "");
}

TEST(JournalOpen, NextSchemaVersionIsRefused) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  make_journal(path);
  const std::string next = std::to_string(kJournalSchemaVersion + 1);
  sql(path, "UPDATE meta SET value = '" + next + "' WHERE key = 'schema_version'");
  EXPECT_EQ(refusal_problems(path, Errc::kUnsupported, "has schema version " + next + ", newer"),
            "");
}

TEST(JournalOpen, RandomFileIsNotAJournal) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  {
    std::ofstream f(path, std::ios::binary);
    std::mt19937 rng(11);
    for (int i = 0; i < 8192; ++i) f.put(static_cast<char>(rng()));
  }
  EXPECT_EQ(refusal_problems(path, Errc::kCorrupt, "is not a persoflow journal (not an SQLite database)"), "");
  std::ofstream(dir.file("notes.txt")) << "shopping list\n";
  EXPECT_EQ(refusal_problems(dir.file("notes.txt"), Errc::kCorrupt, "is not a persoflow journal"), "");
}

TEST(JournalOpen, OtherSqliteDatabaseIsNotAJournal) {
  TempDir dir;
  std::string path = dir.file("other.db");
  sql(path,
      "CREATE TABLE accounts(id INTEGER PRIMARY KEY, name TEXT); "
      "INSERT INTO accounts(name) VALUES ('ada');");
  EXPECT_EQ(refusal_problems(path, Errc::kCorrupt, "an SQLite database of another application"), "");
}

TEST(JournalOpen, JournalIdWithoutMagicIsNotAJournal) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  make_journal(path);
  sql(path, "UPDATE meta SET value = 'something-else' WHERE key = 'magic'");
  EXPECT_EQ(refusal_problems(path, Errc::kCorrupt, "lacks the persoflow-journal magic"), "");
}

TEST(JournalOpen, DirectoryIsNotAJournal) {
  TempDir dir;
  auto j = Journal::open(dir.path().string(), {});
  ASSERT_FALSE(j.is_ok());
  EXPECT_NE(j.status().message().find("is not a regular file"), std::string::npos);
}

TEST(JournalOpen, SecondWriterInOneProcessIsRefused) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  auto first = Journal::open(path, {});
  ASSERT_TRUE(first.is_ok());
  auto second = Journal::open(path, {});
  ASSERT_FALSE(second.is_ok());
  EXPECT_EQ(second.status().code(), Errc::kUnavailable);
}

}  // namespace
}  // namespace persoflow::storage
