// The journal's SQLite VFS (journal_vfs.hpp): the default VFS, except that writes to a WAL file
// are gathered in memory and reach the file in a few large writes, at the latest when SQLite
// syncs it.
//
// Why: SQLite writes each WAL frame with two pwrite calls (its 24-byte header, then the page),
// and a group commit of 64 appends writes 100-150 frames. On a virtual machine, where every
// system call traps to the hypervisor, those calls cost more than everything else in the commit
// (≈ 3.5 µs per frame against ≈ 0.5 µs for the same bytes in a few large calls).
//
// Why it is safe: SQLite publishes new frames to other connections (in the wal-index) only after
// it has written and synced them, and a commit returns only after that sync; the buffer is
// written out before every sync, so nothing SQLite or a reader relies on is ever only in the
// buffer. Before every read, size query, truncation, file-control or close of the WAL the
// buffer is written out too, so SQLite sees its file exactly as if it had been written directly.
// A process killed with writes still buffered loses frames of a transaction that had not
// committed, as if it had been killed a moment earlier. A failed write is reported by the call
// that wrote the buffer out (a sync, so the commit fails and poisons the journal).
#include "journal_vfs.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <new>
#include <string>

namespace persoflow::storage {
namespace {

constexpr const char* kVfsName = "persoflow-journal";
// Flushed earlier when a transaction spills this much (a huge transaction, cache spills).
constexpr std::size_t kMaxBuffered = 4 << 20;

sqlite3_vfs* real_vfs(sqlite3_vfs* vfs) { return static_cast<sqlite3_vfs*>(vfs->pAppData); }

// A WAL file: our methods in front of the default VFS's file, which follows it in memory.
struct BufferedWal {
  sqlite3_file base;
  sqlite3_file* real;
  sqlite3_int64 start;  // file offset of buffer[0]
  std::string buffer;
  bool defer_syncs = false;  // defer_wal_syncs()
  bool synced_once = false;
  // A WAL header (offset 0) written since the last real sync: a WAL that starts over.
  bool header_written = false;
};

BufferedWal* wal(sqlite3_file* f) { return reinterpret_cast<BufferedWal*>(f); }

// The unix VFS writes at most 128 KiB - 1 per call (it masks the length with 0x1ffff).
constexpr std::size_t kMaxWrite = 124 << 10;

int flush(BufferedWal* w) {
  int rc = SQLITE_OK;
  for (std::size_t at = 0; at < w->buffer.size() && rc == SQLITE_OK; at += kMaxWrite) {
    const std::size_t n = std::min(kMaxWrite, w->buffer.size() - at);
    rc = w->real->pMethods->xWrite(w->real, w->buffer.data() + at, static_cast<int>(n),
                                   w->start + static_cast<sqlite3_int64>(at));
  }
  w->buffer.clear();
  return rc;
}

int wal_close(sqlite3_file* f) {
  BufferedWal* w = wal(f);
  int rc = flush(w);
  int close_rc = w->real->pMethods->xClose(w->real);
  w->~BufferedWal();
  return rc != SQLITE_OK ? rc : close_rc;
}

int wal_read(sqlite3_file* f, void* out, int amount, sqlite3_int64 offset) {
  BufferedWal* w = wal(f);
  if (int rc = flush(w); rc != SQLITE_OK) return rc;
  return w->real->pMethods->xRead(w->real, out, amount, offset);
}

int wal_write(sqlite3_file* f, const void* data, int amount, sqlite3_int64 offset) {
  BufferedWal* w = wal(f);
  if (offset == 0) w->header_written = true;
  const bool follows = !w->buffer.empty() &&
                       offset == w->start + static_cast<sqlite3_int64>(w->buffer.size());
  if (!follows) {
    if (int rc = flush(w); rc != SQLITE_OK) return rc;
    w->start = offset;
  }
  try {
    w->buffer.append(static_cast<const char*>(data), static_cast<std::size_t>(amount));
  } catch (const std::bad_alloc&) {
    // Out of memory for the buffer: write this piece directly (the buffer is empty or ends
    // where it starts, so the order of writes is kept).
    if (int rc = flush(w); rc != SQLITE_OK) return rc;
    return w->real->pMethods->xWrite(w->real, data, amount, offset);
  }
  return w->buffer.size() >= kMaxBuffered ? flush(w) : SQLITE_OK;
}

int wal_truncate(sqlite3_file* f, sqlite3_int64 size) {
  BufferedWal* w = wal(f);
  if (int rc = flush(w); rc != SQLITE_OK) return rc;
  return w->real->pMethods->xTruncate(w->real, size);
}

int wal_sync(sqlite3_file* f, int flags) {
  BufferedWal* w = wal(f);
  if (int rc = flush(w); rc != SQLITE_OK) return rc;
  if (w->defer_syncs && w->synced_once && !w->header_written) {
    // The frames are in the file, so SQLite may publish them to readers; durable only after
    // sync_deferred_wal(), which the group commit writer awaits before acknowledging.
    return SQLITE_OK;
  }
  // Never deferred: the sync after a new WAL header, which SQLite makes before the first frame
  // of a WAL that starts over (without it, a power loss could leave the old header in front of
  // new frames and recovery would read old pages: SQLite ticket ff5be73dee).
  const int rc = w->real->pMethods->xSync(w->real, flags);
  if (rc == SQLITE_OK) {
    w->synced_once = true;
    w->header_written = false;
  }
  return rc;
}

int wal_file_size(sqlite3_file* f, sqlite3_int64* size) {
  BufferedWal* w = wal(f);
  if (int rc = flush(w); rc != SQLITE_OK) return rc;
  return w->real->pMethods->xFileSize(w->real, size);
}

int wal_lock(sqlite3_file* f, int level) {
  BufferedWal* w = wal(f);
  return w->real->pMethods->xLock(w->real, level);
}

int wal_unlock(sqlite3_file* f, int level) {
  BufferedWal* w = wal(f);
  return w->real->pMethods->xUnlock(w->real, level);
}

int wal_check_reserved_lock(sqlite3_file* f, int* out) {
  BufferedWal* w = wal(f);
  return w->real->pMethods->xCheckReservedLock(w->real, out);
}

int wal_file_control(sqlite3_file* f, int op, void* arg) {
  BufferedWal* w = wal(f);
  if (int rc = flush(w); rc != SQLITE_OK) return rc;
  return w->real->pMethods->xFileControl(w->real, op, arg);
}

int wal_sector_size(sqlite3_file* f) {
  BufferedWal* w = wal(f);
  return w->real->pMethods->xSectorSize(w->real);
}

int wal_device_characteristics(sqlite3_file* f) {
  BufferedWal* w = wal(f);
  return w->real->pMethods->xDeviceCharacteristics(w->real);
}

// Version 1: SQLite maps no shared memory and no pages of a WAL file.
const sqlite3_io_methods kWalMethods = {
    1,
    wal_close,
    wal_read,
    wal_write,
    wal_truncate,
    wal_sync,
    wal_file_size,
    wal_lock,
    wal_unlock,
    wal_check_reserved_lock,
    wal_file_control,
    wal_sector_size,
    wal_device_characteristics,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

constexpr int kHeader = (sizeof(BufferedWal) + 7) & ~7;

int vfs_open(sqlite3_vfs* vfs, const char* name, sqlite3_file* f, int flags, int* out_flags) {
  sqlite3_vfs* real = real_vfs(vfs);
  if (!(flags & SQLITE_OPEN_WAL)) {
    // Every other file is the default VFS's own, in the same memory.
    return real->xOpen(real, name, f, flags, out_flags);
  }
  auto* real_file = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + kHeader);
  std::memset(real_file, 0, static_cast<std::size_t>(real->szOsFile));
  int rc = real->xOpen(real, name, real_file, flags, out_flags);
  if (rc != SQLITE_OK || real_file->pMethods == nullptr) {
    if (real_file->pMethods) real_file->pMethods->xClose(real_file);
    f->pMethods = nullptr;
    return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
  }
  auto* w = new (f) BufferedWal{};
  w->base.pMethods = &kWalMethods;
  w->real = real_file;
  return SQLITE_OK;
}

// The rest is the default VFS's, called with the default VFS.
int vfs_delete(sqlite3_vfs* v, const char* name, int sync_dir) {
  return real_vfs(v)->xDelete(real_vfs(v), name, sync_dir);
}
int vfs_access(sqlite3_vfs* v, const char* name, int flags, int* out) {
  return real_vfs(v)->xAccess(real_vfs(v), name, flags, out);
}
int vfs_full_pathname(sqlite3_vfs* v, const char* name, int n, char* out) {
  return real_vfs(v)->xFullPathname(real_vfs(v), name, n, out);
}
void* vfs_dl_open(sqlite3_vfs* v, const char* name) {
  return real_vfs(v)->xDlOpen(real_vfs(v), name);
}
void vfs_dl_error(sqlite3_vfs* v, int n, char* out) {
  real_vfs(v)->xDlError(real_vfs(v), n, out);
}
void (*vfs_dl_sym(sqlite3_vfs* v, void* handle, const char* symbol))(void) {
  return real_vfs(v)->xDlSym(real_vfs(v), handle, symbol);
}
void vfs_dl_close(sqlite3_vfs* v, void* handle) { real_vfs(v)->xDlClose(real_vfs(v), handle); }
int vfs_randomness(sqlite3_vfs* v, int n, char* out) {
  return real_vfs(v)->xRandomness(real_vfs(v), n, out);
}
int vfs_sleep(sqlite3_vfs* v, int micros) { return real_vfs(v)->xSleep(real_vfs(v), micros); }
int vfs_current_time(sqlite3_vfs* v, double* out) {
  return real_vfs(v)->xCurrentTime(real_vfs(v), out);
}
int vfs_get_last_error(sqlite3_vfs* v, int n, char* out) {
  return real_vfs(v)->xGetLastError(real_vfs(v), n, out);
}
int vfs_current_time_int64(sqlite3_vfs* v, sqlite3_int64* out) {
  return real_vfs(v)->xCurrentTimeInt64(real_vfs(v), out);
}

sqlite3_vfs make_vfs(sqlite3_vfs* real) {
  sqlite3_vfs v{};
  v.iVersion = 2;
  v.szOsFile = kHeader + real->szOsFile;
  v.mxPathname = real->mxPathname;
  v.zName = kVfsName;
  v.pAppData = real;
  v.xOpen = vfs_open;
  v.xDelete = vfs_delete;
  v.xAccess = vfs_access;
  v.xFullPathname = vfs_full_pathname;
  v.xDlOpen = vfs_dl_open;
  v.xDlError = vfs_dl_error;
  v.xDlSym = vfs_dl_sym;
  v.xDlClose = vfs_dl_close;
  v.xRandomness = vfs_randomness;
  v.xSleep = vfs_sleep;
  v.xCurrentTime = vfs_current_time;
  v.xGetLastError = vfs_get_last_error;
  v.xCurrentTimeInt64 = vfs_current_time_int64;
  return v;
}

}  // namespace

bool defer_wal_syncs(sqlite3_file* file) {
  if (file == nullptr || file->pMethods != &kWalMethods) return false;
  sqlite3_vfs* unix_vfs = sqlite3_vfs_find("unix");
  sqlite3_vfs* ours = sqlite3_vfs_find(kVfsName);
  if (unix_vfs == nullptr || ours == nullptr || real_vfs(ours) != unix_vfs) return false;
  wal(file)->defer_syncs = true;
  return true;
}

int sync_deferred_wal(sqlite3_file* file) {
  BufferedWal* w = wal(file);
  // The unix VFS syncs with fdatasync whatever the flags (SQLite's WAL asks for NORMAL).
  return w->real->pMethods->xSync(w->real, SQLITE_SYNC_NORMAL);
}

const char* journal_vfs() {
  static sqlite3_vfs vfs;
  static std::once_flag once;
  static bool registered = false;
  std::call_once(once, [] {
    sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
    if (real == nullptr || real->iVersion < 2) return;
    vfs = make_vfs(real);
    registered = sqlite3_vfs_register(&vfs, /*makeDflt=*/0) == SQLITE_OK;
  });
  return registered ? kVfsName : nullptr;
}

}  // namespace persoflow::storage
