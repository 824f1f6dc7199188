// Golden files that pin the journal's on-disk format, so a change shows in review:
// - tests/golden/journal/record_v1.txt: the canonical bytes (hex) and chain hash of fixed
//   records; a changed layout or hash rule fails here.
// - tests/golden/journal/journal_v1.db: a schema-version-1 journal written by this code; every
//   later build must still open it, verify it and append to it (after migrating, once there are
//   migrations). Copied to a temporary directory first: SQLite never touches the source tree.
// PERSOFLOW_UPDATE_GOLDEN=1 rewrites them (then review and commit the change).
#include <gtest/gtest.h>

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

TEST(JournalGolden, VersionOneJournalStillOpensVerifiesAndAppends) {
  std::string golden = golden_dir() + "/journal_v1.db";
  if (updating()) {
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
    std::filesystem::copy_file(path, golden, std::filesystem::copy_options::overwrite_existing);
  }
  ASSERT_TRUE(std::filesystem::exists(golden)) << golden;
  testing::TempDir dir;
  std::string path = dir.file("journal.db");
  std::filesystem::copy_file(golden, path);
  {
    auto j = Journal::open(path, {.read_only = true});
    ASSERT_TRUE(j.is_ok()) << j.status().message();
    auto report = (*j)->verify();
    ASSERT_TRUE(report.is_ok());
    EXPECT_TRUE(report->intact) << report->reason;
    EXPECT_EQ(report->records_checked, 6u);
    auto records = (*j)->records("card-2");
    ASSERT_TRUE(records.is_ok());
    ASSERT_EQ(records->size(), 3u);
    EXPECT_EQ(records->back().body, test::request("card-2", 2, 2));
  }
  auto j = Journal::open(path, {});
  ASSERT_TRUE(j.is_ok()) << j.status().message();
  EXPECT_TRUE((*j)->append(test::request("card-1", 3)).is_ok());
  EXPECT_TRUE((*j)->verify()->intact);
}

}  // namespace
}  // namespace persoflow::storage
