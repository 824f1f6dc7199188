// A value of a journal's meta table read straight from the file, for tests that check what the
// Journal API does not show (such as how far the workflows table was written: summary_seq).
// Header-only: only the tests that link SQLite include it.
#pragma once

#include <sqlite3.h>

#include <optional>
#include <string>

namespace persoflow::testing {

inline std::optional<std::string> journal_meta_value(const std::string& journal,
                                                     const std::string& key) {
  sqlite3* db = nullptr;
  std::optional<std::string> value;
  if (sqlite3_open_v2(journal.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = ?", -1, &s, nullptr) ==
        SQLITE_OK) {
      sqlite3_bind_text(s, 1, key.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(s) == SQLITE_ROW) {
        value = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
      }
    }
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return value;
}

}  // namespace persoflow::testing
