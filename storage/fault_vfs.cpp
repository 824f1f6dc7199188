// The fault-injecting VFS shim (fault_vfs.hpp). Each file opened through it wraps the real file
// of the default VFS, allocated right behind the shim's own struct (SQLite gives szOsFile bytes).
// Only WAL files are watched; main database, journals and temp files pass straight through.
#include "persoflow/storage/fault_vfs.hpp"

#include <sqlite3.h>

#include <cstring>

#include "persoflow/common/fault_points.hpp"

namespace persoflow::storage {
namespace {

struct FaultFile {
  sqlite3_file base;
  bool is_wal;
  bool in_commit;  // a write since the last sync: the commit's operation is counted
  sqlite3_file* real() { return reinterpret_cast<sqlite3_file*>(this + 1); }
};

sqlite3_vfs* g_real_vfs = nullptr;
sqlite3_vfs g_fault_vfs;

FaultFile* as_fault(sqlite3_file* f) { return reinterpret_cast<FaultFile*>(f); }
const sqlite3_io_methods* real_methods(sqlite3_file* f) { return as_fault(f)->real()->pMethods; }

int x_close(sqlite3_file* f) { return real_methods(f)->xClose(as_fault(f)->real()); }
int x_read(sqlite3_file* f, void* buf, int n, sqlite3_int64 off) {
  return real_methods(f)->xRead(as_fault(f)->real(), buf, n, off);
}
int x_write(sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
  FaultFile* ff = as_fault(f);
  if (ff->is_wal && !ff->in_commit) {
    ff->in_commit = true;
    if (fault_fires(FaultPoint::kSqliteFullOnCommit)) return SQLITE_FULL;
  }
  return real_methods(f)->xWrite(ff->real(), buf, n, off);
}
int x_truncate(sqlite3_file* f, sqlite3_int64 size) {
  return real_methods(f)->xTruncate(as_fault(f)->real(), size);
}
int x_sync(sqlite3_file* f, int flags) {
  FaultFile* ff = as_fault(f);
  if (ff->is_wal) {
    ff->in_commit = false;
    if (fault_fires(FaultPoint::kSqliteIoerrOnCommit)) return SQLITE_IOERR_FSYNC;
  }
  return real_methods(f)->xSync(ff->real(), flags);
}
int x_file_size(sqlite3_file* f, sqlite3_int64* size) {
  return real_methods(f)->xFileSize(as_fault(f)->real(), size);
}
int x_lock(sqlite3_file* f, int level) { return real_methods(f)->xLock(as_fault(f)->real(), level); }
int x_unlock(sqlite3_file* f, int level) {
  return real_methods(f)->xUnlock(as_fault(f)->real(), level);
}
int x_check_reserved_lock(sqlite3_file* f, int* out) {
  return real_methods(f)->xCheckReservedLock(as_fault(f)->real(), out);
}
int x_file_control(sqlite3_file* f, int op, void* arg) {
  return real_methods(f)->xFileControl(as_fault(f)->real(), op, arg);
}
int x_sector_size(sqlite3_file* f) { return real_methods(f)->xSectorSize(as_fault(f)->real()); }
int x_device_characteristics(sqlite3_file* f) {
  return real_methods(f)->xDeviceCharacteristics(as_fault(f)->real());
}
int x_shm_map(sqlite3_file* f, int page, int size, int extend, void volatile** out) {
  return real_methods(f)->xShmMap(as_fault(f)->real(), page, size, extend, out);
}
// WAL_WRITE_LOCK is shared-memory lock slot 0 (wal.c): a writer takes it exclusively at the
// start of each write transaction.
int x_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
  if (offset == 0 && n == 1 && flags == (SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE) &&
      fault_fires(FaultPoint::kSqliteBusyOnCommit)) {
    return SQLITE_BUSY;
  }
  return real_methods(f)->xShmLock(as_fault(f)->real(), offset, n, flags);
}
void x_shm_barrier(sqlite3_file* f) { real_methods(f)->xShmBarrier(as_fault(f)->real()); }
int x_shm_unmap(sqlite3_file* f, int delete_flag) {
  return real_methods(f)->xShmUnmap(as_fault(f)->real(), delete_flag);
}
int x_fetch(sqlite3_file* f, sqlite3_int64 off, int n, void** out) {
  return real_methods(f)->xFetch(as_fault(f)->real(), off, n, out);
}
int x_unfetch(sqlite3_file* f, sqlite3_int64 off, void* p) {
  return real_methods(f)->xUnfetch(as_fault(f)->real(), off, p);
}

const sqlite3_io_methods kMethods = {
    3,           x_close,     x_read,         x_write,      x_truncate,
    x_sync,      x_file_size, x_lock,         x_unlock,     x_check_reserved_lock,
    x_file_control, x_sector_size, x_device_characteristics, x_shm_map, x_shm_lock,
    x_shm_barrier, x_shm_unmap, x_fetch,      x_unfetch,
};

int x_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
  FaultFile* ff = as_fault(f);
  ff->base.pMethods = nullptr;
  ff->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
  ff->in_commit = false;
  int rc = g_real_vfs->xOpen(g_real_vfs, name, ff->real(), flags, out_flags);
  // The real file's methods must be at least version 3 for the shm forwarding (unix VFS is).
  if (ff->real()->pMethods) ff->base.pMethods = &kMethods;
  return rc;
}
int x_delete(sqlite3_vfs*, const char* name, int sync_dir) {
  return g_real_vfs->xDelete(g_real_vfs, name, sync_dir);
}
int x_access(sqlite3_vfs*, const char* name, int flags, int* out) {
  return g_real_vfs->xAccess(g_real_vfs, name, flags, out);
}
int x_full_pathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return g_real_vfs->xFullPathname(g_real_vfs, name, n, out);
}
void* x_dl_open(sqlite3_vfs*, const char* name) { return g_real_vfs->xDlOpen(g_real_vfs, name); }
void x_dl_error(sqlite3_vfs*, int n, char* out) { g_real_vfs->xDlError(g_real_vfs, n, out); }
void (*x_dl_sym(sqlite3_vfs*, void* h, const char* sym))(void) {
  return g_real_vfs->xDlSym(g_real_vfs, h, sym);
}
void x_dl_close(sqlite3_vfs*, void* h) { g_real_vfs->xDlClose(g_real_vfs, h); }
int x_randomness(sqlite3_vfs*, int n, char* out) {
  return g_real_vfs->xRandomness(g_real_vfs, n, out);
}
int x_sleep(sqlite3_vfs*, int us) { return g_real_vfs->xSleep(g_real_vfs, us); }
int x_current_time(sqlite3_vfs*, double* out) {
  return g_real_vfs->xCurrentTime(g_real_vfs, out);
}
int x_get_last_error(sqlite3_vfs*, int n, char* out) {
  return g_real_vfs->xGetLastError ? g_real_vfs->xGetLastError(g_real_vfs, n, out) : 0;
}
int x_current_time_int64(sqlite3_vfs*, sqlite3_int64* out) {
  return g_real_vfs->xCurrentTimeInt64(g_real_vfs, out);
}

}  // namespace

bool install_fault_vfs_from_environment() {
  if (!fault_detail::active.load(std::memory_order_relaxed)) return false;
  if (g_real_vfs) return true;
  sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
  if (!real || real->iVersion < 2) return false;
  g_real_vfs = real;
  std::memset(&g_fault_vfs, 0, sizeof g_fault_vfs);
  g_fault_vfs.iVersion = 2;
  g_fault_vfs.szOsFile = static_cast<int>(sizeof(FaultFile)) + real->szOsFile;
  g_fault_vfs.mxPathname = real->mxPathname;
  g_fault_vfs.zName = "persoflow-fault";
  g_fault_vfs.xOpen = x_open;
  g_fault_vfs.xDelete = x_delete;
  g_fault_vfs.xAccess = x_access;
  g_fault_vfs.xFullPathname = x_full_pathname;
  g_fault_vfs.xDlOpen = x_dl_open;
  g_fault_vfs.xDlError = x_dl_error;
  g_fault_vfs.xDlSym = x_dl_sym;
  g_fault_vfs.xDlClose = x_dl_close;
  g_fault_vfs.xRandomness = x_randomness;
  g_fault_vfs.xSleep = x_sleep;
  g_fault_vfs.xCurrentTime = x_current_time;
  g_fault_vfs.xGetLastError = x_get_last_error;
  g_fault_vfs.xCurrentTimeInt64 = x_current_time_int64;
  return sqlite3_vfs_register(&g_fault_vfs, /*makeDflt=*/1) == SQLITE_OK;
}

}  // namespace persoflow::storage
