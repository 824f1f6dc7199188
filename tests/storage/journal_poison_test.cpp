// Poisoning: a commit whose outcome is unknown makes the journal refuse every later append until
// it is reopened from disk. The failure is real: SQLite runs out of pages (max_page_count, the
// way a full disk fails an append with SQLITE_FULL), for a single append and for the group
// commit writer. After reopening, the journal is intact and holds exactly the acknowledged
// appends.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <future>

#include "journal_support.hpp"
#include "persoflow/storage/journal.hpp"
#include "test_support.hpp"

namespace persoflow::storage {
namespace {

using test::request;
using testing::TempDir;

// A journal with its schema, capped a few pages above its current size.
std::uint32_t page_count(const std::string& path) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA page_count", -1, &s, nullptr);
  std::uint32_t n =
      sqlite3_step(s) == SQLITE_ROW ? static_cast<std::uint32_t>(sqlite3_column_int(s, 0)) : 0;
  sqlite3_finalize(s);
  sqlite3_close(db);
  return n;
}

const std::string kBig(1500, 'p');

TEST(Poison, FullJournalPoisonsUntilReopened) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  { ASSERT_TRUE(Journal::open(path, {}).is_ok()); }
  std::uint32_t pages = page_count(path);
  ASSERT_GT(pages, 0u);

  std::uint64_t acknowledged = 0;
  {
    auto j = Journal::open(path, {.max_page_count = pages + 8});
    ASSERT_TRUE(j.is_ok()) << j.status().message();
    Status failure;
    for (int i = 0; i < 200 && failure.is_ok(); ++i) {
      failure = (*j)->append(request("w", acknowledged, 1, "ticket", kBig));
      if (failure.is_ok()) ++acknowledged;
    }
    ASSERT_FALSE(failure.is_ok()) << "the cap was never reached";
    EXPECT_GT(acknowledged, 0u);
    EXPECT_EQ(failure.code().category(), sqlite_category()) << failure.message();
    EXPECT_EQ(failure.code().value() & 0xff, SQLITE_FULL) << failure.message();
    EXPECT_TRUE((*j)->poisoned());
    // Even a tiny append that would fit is refused now.
    Status later = (*j)->append(request("tiny", 0));
    EXPECT_EQ(later.code(), Errc::kPoisoned);
    EXPECT_NE(later.message().find("outcome is unknown"), std::string::npos) << later.message();
    EXPECT_EQ((*j)->append_batch(std::vector{request("tiny", 0)}).code(), Errc::kPoisoned);
  }
  // Reopened from disk without the cap: intact, exactly the acknowledged appends, and writable.
  auto j = Journal::open(path, {});
  ASSERT_TRUE(j.is_ok()) << j.status().message();
  EXPECT_FALSE((*j)->poisoned());
  auto report = (*j)->verify();
  ASSERT_TRUE(report.is_ok());
  EXPECT_TRUE(report->intact) << report->reason;
  EXPECT_EQ(report->records_checked, acknowledged);
  EXPECT_TRUE((*j)->append(request("w", acknowledged)).is_ok());
}

TEST(Poison, GroupCommitWriterFailsEveryLaterAppend) {
  TempDir dir;
  std::string path = dir.file("journal.db");
  { ASSERT_TRUE(Journal::open(path, {}).is_ok()); }
  std::uint32_t pages = page_count(path);
  auto j = Journal::open(path, {.max_page_count = pages + 8});
  ASSERT_TRUE(j.is_ok());
  auto writer = GroupCommitWriter::start(std::move(*j), 8);
  auto append = [&writer](AppendRequest r) {
    std::promise<Status> p;
    auto f = p.get_future();
    writer->append(std::move(r), [&p](Status s) { p.set_value(std::move(s)); });
    return f.get();
  };
  std::uint64_t acknowledged = 0;
  Status failure;
  for (int i = 0; i < 200 && failure.is_ok(); ++i) {
    failure = append(request("w", acknowledged, 1, "ticket", kBig));
    if (failure.is_ok()) ++acknowledged;
  }
  ASSERT_FALSE(failure.is_ok());
  EXPECT_TRUE(writer->poisoned());
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(append(request("x" + std::to_string(i), 0)).code(), Errc::kPoisoned);
  writer->stop();
  auto reopened = Journal::open(path, {.read_only = true});
  ASSERT_TRUE(reopened.is_ok());
  auto report = (*reopened)->verify();
  EXPECT_TRUE(report->intact) << report->reason;
  EXPECT_EQ(report->records_checked, acknowledged);
}

}  // namespace
}  // namespace persoflow::storage
