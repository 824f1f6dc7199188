// The SQLite VFS of the journal's writer connection (journal_vfs.cpp): the default VFS, with
// the frames SQLite writes to the WAL gathered into one write per commit. Correct only with a
// WAL commit that syncs (synchronous=FULL, which the journal always sets): the buffer reaches
// the file before the sync that precedes SQLite publishing the frames.
#pragma once

namespace persoflow::storage {

// The VFS's name for sqlite3_open_v2, registered on first use; nullptr if SQLite's default
// VFS cannot be wrapped (then the default VFS is used).
const char* journal_vfs();

}  // namespace persoflow::storage
