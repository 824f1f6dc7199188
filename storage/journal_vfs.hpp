// The SQLite VFS of the journal's writer connection (journal_vfs.cpp): the default VFS, with
// the frames SQLite writes to the WAL gathered into one write per commit. Correct only with a
// WAL commit that syncs (synchronous=FULL, which the journal always sets): the buffer reaches
// the file before the sync that precedes SQLite publishing the frames.
#pragma once

struct sqlite3_file;

namespace persoflow::storage {

// The VFS's name for sqlite3_open_v2, registered on first use; nullptr if SQLite's default
// VFS cannot be wrapped (then the default VFS is used).
const char* journal_vfs();

// Sync behind the writer (group commit): after this, a sync that SQLite asks of this WAL writes
// the buffer out and returns without waiting for the disk; sync_deferred_wal() then makes every
// frame written so far durable, on any thread. The WAL's first sync (which also syncs its
// directory when SQLite created the file) and the sync after a new WAL header (a WAL that starts
// over) still happen at once. False, and nothing changes,
// when `wal` is not a WAL of this VFS or the VFS under it is not SQLite's own unix VFS (a fault
// injecting VFS counts each sync as its commit's and stays synchronous).
bool defer_wal_syncs(sqlite3_file* wal);
// The deferred sync: SQLite's own sync of the WAL file (fdatasync). Called while the writer
// writes further frames: the unix VFS's sync only reads the file's descriptor.
int sync_deferred_wal(sqlite3_file* wal);

}  // namespace persoflow::storage
