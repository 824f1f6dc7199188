// A SQLite VFS shim that injects the storage layer's numbered fault points
// (common/fault_points.hpp): SQLITE_FULL on a commit's first WAL write, SQLITE_IOERR_FSYNC on the
// WAL's fsync (frames written, outcome unknown), SQLITE_BUSY when a write transaction takes the
// WAL write lock. It forwards everything else to the default VFS.
#pragma once

namespace persoflow::storage {

// When PERSOFLOW_FAULT or PERSOFLOW_FAULT_COUNT is set, registers the shim as SQLite's default
// VFS (every later sqlite3_open in the process goes through it) and returns true; otherwise does
// nothing. Call once, before the first database is opened (apps/main.cpp does).
bool install_fault_vfs_from_environment();

}  // namespace persoflow::storage
