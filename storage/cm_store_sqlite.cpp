// The SQLite backend of CmStore (include/persoflow/storage/cm_store.hpp).
//
// WAL, synchronous=FULL, foreign keys, busy timeout; schema versioned in the meta table and
// migrated forward on open. One connection per instance, serialised by a recursive mutex so a
// caller's atomically() block can call the other methods on the same thread. Every write runs in
// BEGIN IMMEDIATE ... COMMIT so another process sharing the file waits instead of failing late.
#include <openssl/evp.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>

#include "persoflow/storage/cm_store.hpp"

namespace persoflow::storage {
namespace {

constexpr int kSchemaVersion = 5;
constexpr const char* kKind = "persoflow-cm";
const std::string kZeroHash(64, '0');

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  PF_CHECK(EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) == 1,
           "SHA-256 failed");
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

void put_field(std::string& out, const std::string& field) {
  std::uint64_t n = field.size();
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += field;
}

std::string join_roles(const std::vector<std::string>& roles) {
  std::string out;
  for (const auto& r : roles) {
    if (!out.empty()) out += ",";
    out += r;
  }
  return out;
}

std::vector<std::string> split_roles(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

Status sqlite_status(sqlite3* db, int rc, const std::string& what) {
  const char* msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return Status(std::error_code(rc, sqlite_category()), what + ": " + msg);
}

// Prepared statements kept for the connection's lifetime, by SQL text: each CMP message runs the
// same dozen statements, and preparing them again each time cost more than running them. Used only
// under the store's mutex.
class StmtCache {
 public:
  ~StmtCache() {
    for (auto& [sql, entry] : entries_) sqlite3_finalize(entry.stmt);
  }
  // A cached statement not in use, or nullptr (the caller prepares its own).
  sqlite3_stmt* take(sqlite3* db, const char* sql) {
    auto [it, inserted] = entries_.try_emplace(sql);
    Entry& e = it->second;
    if (inserted && sqlite3_prepare_v2(db, sql, -1, &e.stmt, nullptr) != SQLITE_OK) {
      sqlite3_finalize(e.stmt);
      entries_.erase(it);
      return nullptr;
    }
    if (e.in_use) return nullptr;  // a nested use of the same statement
    e.in_use = true;
    return e.stmt;
  }
  void give_back(sqlite3_stmt* stmt) {
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    for (auto& [sql, e] : entries_) {
      if (e.stmt == stmt) e.in_use = false;
    }
  }

 private:
  struct Entry {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };
  std::map<std::string, Entry> entries_;
};

// A prepared statement: from the cache when one is given (reset and returned on destruction),
// else prepared here and finalized on destruction.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql, StmtCache* cache = nullptr) : db_(db) {
    if (cache && (stmt_ = cache->take(db, sql))) {
      cache_ = cache;
      return;
    }
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() {
    if (cache_) {
      cache_->give_back(stmt_);
    } else {
      sqlite3_finalize(stmt_);
    }
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Status prepared(const std::string& what) const {
    if (rc_ != SQLITE_OK) return sqlite_status(db_, rc_, what);
    return Status::ok();
  }
  Stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind_blob(int i, const std::string& v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind(int i, std::int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& bind_null(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  Stmt& bind_opt(int i, const std::string& v) { return v.empty() ? bind_null(i) : bind(i, v); }
  // SQLITE_ROW -> true, SQLITE_DONE -> false, else failure.
  Result<bool> step(const std::string& what) {
    if (rc_ != SQLITE_OK) return sqlite_status(db_, rc_, what);
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return sqlite_status(db_, rc, what);
  }
  Status run(const std::string& what) {
    auto r = step(what);
    if (!r.is_ok()) return r.status();
    return Status::ok();
  }
  std::string text(int col) const {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }
  std::string blob(int col) const {
    const void* p = sqlite3_column_blob(stmt_, col);
    return p ? std::string(static_cast<const char*>(p),
                           static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }
  std::int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  StmtCache* cache_ = nullptr;
  int rc_ = SQLITE_OK;
};

constexpr const char* kCertColumns =
    "cert_id, serial_hex, subject, issuer, not_before, not_after, status, revocation_reason, "
    "revoked_at, procedure, der, transaction_id, idempotency_key, requester, created_at";

CertRecord read_cert(const Stmt& s) {
  CertRecord r;
  r.cert_id = s.integer(0);
  r.serial_hex = s.text(1);
  r.subject = s.text(2);
  r.issuer = s.text(3);
  r.not_before = s.integer(4);
  r.not_after = s.integer(5);
  r.status = cert_status_from_string(s.text(6)).value_or(CertStatus::kPending);
  r.revocation_reason = static_cast<int>(s.integer(7));
  r.revoked_at = s.integer(8);
  r.procedure = s.text(9);
  r.der = s.blob(10);
  r.transaction_id = s.text(11);
  r.idempotency_key = s.text(12);
  r.requester = s.text(13);
  r.created_at = s.integer(14);
  return r;
}

constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE certificates(
  cert_id INTEGER PRIMARY KEY AUTOINCREMENT,
  serial_hex TEXT NOT NULL UNIQUE,
  subject TEXT NOT NULL,
  issuer TEXT NOT NULL,
  not_before INTEGER NOT NULL,
  not_after INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending','valid','rejected','revoked')),
  revocation_reason INTEGER NOT NULL DEFAULT -1,
  revoked_at INTEGER NOT NULL DEFAULT 0,
  procedure TEXT NOT NULL,
  der BLOB NOT NULL,
  transaction_id TEXT NOT NULL DEFAULT '',
  idempotency_key TEXT UNIQUE,
  requester TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL);
CREATE INDEX certificates_subject ON certificates(subject);
CREATE INDEX certificates_status ON certificates(status);
CREATE TABLE archived_keys(
  key_id INTEGER PRIMARY KEY AUTOINCREMENT,
  cert_id INTEGER NOT NULL REFERENCES certificates(cert_id),
  encrypted BLOB NOT NULL,
  idempotency_key TEXT UNIQUE,
  created_at INTEGER NOT NULL);
CREATE INDEX archived_keys_cert ON archived_keys(cert_id);
CREATE TABLE officers(
  name TEXT PRIMARY KEY,
  cert_serial_hex TEXT NOT NULL UNIQUE,
  roles TEXT NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL);
CREATE TABLE transactions(
  transaction_id TEXT PRIMARY KEY,
  request_digest TEXT NOT NULL,
  state TEXT NOT NULL,
  response_der BLOB NOT NULL DEFAULT x'',
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL);
CREATE TABLE audit_log(
  seq INTEGER PRIMARY KEY,
  time_ms INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  detail TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL);
)sql";

// Migration 2: PIN letters (cm_store.hpp, PinLetterRecord).
constexpr const char* kSchemaV2PinLetters = R"sql(
CREATE TABLE pin_letters(
  letter_id TEXT PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('mailer','preprinted')),
  state TEXT NOT NULL CHECK (state IN ('queued','printed','bound')),
  holder TEXT NOT NULL DEFAULT '',
  address TEXT NOT NULL DEFAULT '',
  token TEXT NOT NULL DEFAULT '',
  envelope BLOB NOT NULL DEFAULT x'',
  idempotency_key TEXT UNIQUE,
  bound_to TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  printed_at INTEGER NOT NULL DEFAULT 0);
)sql";

// Migration 3: certificate requests waiting for e-mail verification (EmailVerificationRecord).
constexpr const char* kSchemaV3EmailVerification = R"sql(
CREATE TABLE email_verifications(
  transaction_id TEXT PRIMARY KEY,
  email TEXT NOT NULL,
  code_digest TEXT NOT NULL,
  procedure TEXT NOT NULL,
  requester TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  subject_der BLOB NOT NULL,
  public_key_der BLOB NOT NULL,
  old_serial_hex TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  mailed_at INTEGER NOT NULL DEFAULT 0,
  confirmed_at INTEGER NOT NULL DEFAULT 0,
  issued_serial TEXT NOT NULL DEFAULT '',
  failed_attempts INTEGER NOT NULL DEFAULT 0);
CREATE INDEX email_verifications_open ON email_verifications(confirmed_at, expires_at);
)sql";

constexpr const char* kEmailVerificationColumns =
    "transaction_id, email, code_digest, procedure, requester, idempotency_key, subject_der, "
    "public_key_der, old_serial_hex, created_at, expires_at, mailed_at, confirmed_at, "
    "issued_serial, failed_attempts";

EmailVerificationRecord read_email_verification(const Stmt& s) {
  EmailVerificationRecord r;
  r.transaction_id = s.text(0);
  r.email = s.text(1);
  r.code_digest = s.text(2);
  r.procedure = s.text(3);
  r.requester = s.text(4);
  r.idempotency_key = s.text(5);
  r.subject_der = s.blob(6);
  r.public_key_der = s.blob(7);
  r.old_serial_hex = s.text(8);
  r.created_at = s.integer(9);
  r.expires_at = s.integer(10);
  r.mailed_at = s.integer(11);
  r.confirmed_at = s.integer(12);
  r.issued_serial = s.text(13);
  r.failed_attempts = static_cast<int>(s.integer(14));
  return r;
}

class SqliteCmStore final : public CmStore {
 public:
  SqliteCmStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteCmStore() override { sqlite3_close_v2(db_); }

  Status init_schema() {
    std::lock_guard lock(mu_);
    PF_RETURN_IF_ERROR(exec("PRAGMA journal_mode=WAL", "enabling WAL"));
    PF_RETURN_IF_ERROR(exec("PRAGMA synchronous=FULL", "setting synchronous=FULL"));
    PF_RETURN_IF_ERROR(exec("PRAGMA foreign_keys=ON", "enabling foreign keys"));
    return write([&]() -> Status {
      Stmt has(db_, "SELECT count(*) FROM sqlite_master WHERE type='table'", &cache_);
      PF_ASSIGN_OR_RETURN(bool row, has.step("reading the schema"));
      std::int64_t tables = row ? has.integer(0) : 0;
      int version = 0;
      if (tables > 0) {
        Stmt meta(db_, "SELECT value FROM meta WHERE key='kind'", &cache_);
        auto kind_row = meta.step("reading meta");
        if (!kind_row.is_ok() || !*kind_row || meta.text(0) != kKind) {
          return make_status(Errc::kCorrupt, "not a persoflow CM database (no 'kind' marker)");
        }
        Stmt v(db_, "SELECT value FROM meta WHERE key='schema_version'", &cache_);
        PF_ASSIGN_OR_RETURN(bool vrow, v.step("reading schema_version"));
        if (!vrow) return make_status(Errc::kCorrupt, "CM database has no schema_version");
        version = std::stoi(v.text(0));
        if (version > kSchemaVersion) {
          return make_status(Errc::kUnsupported,
                             "CM database schema version " + std::to_string(version) +
                                 " is newer than this program's (" +
                                 std::to_string(kSchemaVersion) + "); upgrade persoflow");
        }
      } else {
        PF_RETURN_IF_ERROR(exec("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                                "creating meta"));
        Stmt k(db_, "INSERT INTO meta(key, value) VALUES ('kind', ?1), ('schema_version', '0'), "
                    "('crl_number', '0')", &cache_);
        k.bind(1, std::string(kKind));
        PF_RETURN_IF_ERROR(k.run("writing meta"));
      }
      // Migrations, oldest first; each moves the schema one version forward.
      if (version < 1) {
        PF_RETURN_IF_ERROR(exec(kSchemaV1, "creating schema version 1"));
        version = 1;
      }
      if (version < 2) {
        PF_RETURN_IF_ERROR(exec(kSchemaV2PinLetters, "migrating the schema to version 2 (PIN letters)"));
        version = 2;
      }
      if (version < 3) {
        PF_RETURN_IF_ERROR(exec(kSchemaV3EmailVerification, "migrating the schema to version 3"));
        version = 3;
      }
      if (version < 4) {
        // Certificates by CMP transaction: confirmation of what a genm made (persoflowCertConfirm).
        PF_RETURN_IF_ERROR(exec("CREATE INDEX certificates_transaction ON "
                                "certificates(transaction_id)",
                                "migrating the schema to version 4"));
        version = 4;
      }
      if (version < 5) {
        // Pre-printed PIN/PUK letters: whether a letter carries a PUK after its PIN, known without
        // opening its envelope (and after the envelope is dropped).
        PF_RETURN_IF_ERROR(exec("ALTER TABLE pin_letters ADD COLUMN has_puk INTEGER NOT NULL "
                                "DEFAULT 0",
                                "migrating the schema to version 5 (PIN/PUK letters)"));
        version = 5;
      }
      Stmt up(db_, "UPDATE meta SET value=?1 WHERE key='schema_version'", &cache_);
      up.bind(1, std::to_string(version));
      return up.run("writing schema_version");
    });
  }

  Result<std::int64_t> insert_certificate(const CertRecord& r) override {
    std::lock_guard lock(mu_);
    std::int64_t id = 0;
    PF_RETURN_IF_ERROR(write([&]() -> Status {
      Stmt s(db_,
             "INSERT INTO certificates(serial_hex, subject, issuer, not_before, not_after, status, "
             "revocation_reason, revoked_at, procedure, der, transaction_id, idempotency_key, "
             "requester, created_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)", &cache_);
      s.bind(1, r.serial_hex).bind(2, r.subject).bind(3, r.issuer).bind(4, r.not_before);
      s.bind(5, r.not_after).bind(6, std::string(to_string(r.status)));
      s.bind(7, static_cast<std::int64_t>(r.revocation_reason)).bind(8, r.revoked_at);
      s.bind(9, r.procedure).bind_blob(10, r.der).bind(11, r.transaction_id);
      s.bind_opt(12, r.idempotency_key).bind(13, r.requester);
      s.bind(14, r.created_at ? r.created_at : now_ms() / 1000);
      Status st = s.run("inserting certificate " + r.serial_hex);
      if (!st.is_ok() && st.code().value() == SQLITE_CONSTRAINT_UNIQUE) {
        return make_status(Errc::kAlreadyExists, "a certificate with serial " + r.serial_hex +
                                                     " or idempotency key '" + r.idempotency_key +
                                                     "' already exists");
      }
      PF_RETURN_IF_ERROR(st);
      id = sqlite3_last_insert_rowid(db_);
      return Status::ok();
    }));
    return id;
  }

  Result<std::optional<CertRecord>> cert_where(const std::string& where,
                                               const std::function<void(Stmt&)>& binder) {
    std::lock_guard lock(mu_);
    std::string sql = std::string("SELECT ") + kCertColumns + " FROM certificates WHERE " + where;
    Stmt s(db_, sql.c_str(), &cache_);
    binder(s);
    PF_ASSIGN_OR_RETURN(bool row, s.step("reading certificate"));
    if (!row) return std::optional<CertRecord>();
    return std::optional<CertRecord>(read_cert(s));
  }

  Result<std::optional<CertRecord>> certificate_by_serial(const std::string& serial) override {
    return cert_where("serial_hex=?1", [&](Stmt& s) { s.bind(1, serial); });
  }
  Result<std::optional<CertRecord>> certificate_by_id(std::int64_t id) override {
    return cert_where("cert_id=?1", [&](Stmt& s) { s.bind(1, id); });
  }
  Result<std::optional<CertRecord>> certificate_by_idempotency_key(const std::string& k) override {
    return cert_where("idempotency_key=?1", [&](Stmt& s) { s.bind(1, k); });
  }

  Result<std::vector<CertRecord>> find_certificates(const CertQuery& q) override {
    std::lock_guard lock(mu_);
    std::string sql = std::string("SELECT ") + kCertColumns + " FROM certificates WHERE 1=1";
    int n = 0;
    if (q.serial_hex) sql += " AND serial_hex=?" + std::to_string(++n);
    if (q.cert_id) sql += " AND cert_id=?" + std::to_string(++n);
    if (q.subject) {
      sql += q.subject_substring ? " AND instr(subject, ?" + std::to_string(++n) + ") > 0"
                                 : " AND subject=?" + std::to_string(++n);
    }
    if (q.status) sql += " AND status=?" + std::to_string(++n);
    if (q.procedure) sql += " AND procedure=?" + std::to_string(++n);
    if (q.transaction_id) sql += " AND transaction_id=?" + std::to_string(++n);
    sql += " ORDER BY cert_id";
    if (q.limit) sql += " LIMIT " + std::to_string(q.limit);
    Stmt s(db_, sql.c_str(), &cache_);
    int i = 0;
    if (q.serial_hex) s.bind(++i, *q.serial_hex);
    if (q.cert_id) s.bind(++i, *q.cert_id);
    if (q.subject) s.bind(++i, *q.subject);
    if (q.status) s.bind(++i, std::string(to_string(*q.status)));
    if (q.procedure) s.bind(++i, *q.procedure);
    if (q.transaction_id) s.bind(++i, *q.transaction_id);
    std::vector<CertRecord> out;
    while (true) {
      PF_ASSIGN_OR_RETURN(bool row, s.step("searching certificates"));
      if (!row) break;
      out.push_back(read_cert(s));
    }
    return out;
  }

  Status set_certificate_status(const std::string& serial, CertStatus status) override {
    std::lock_guard lock(mu_);
    return write([&]() -> Status {
      PF_ASSIGN_OR_RETURN(auto current, certificate_by_serial(serial));
      if (!current) return make_status(Errc::kNotFound, "no certificate with serial " + serial);
      if (current->status == status) return Status::ok();
      if (current->status != CertStatus::kPending ||
          (status != CertStatus::kValid && status != CertStatus::kRejected)) {
        return make_status(Errc::kRejected, std::string("certificate ") + serial + " is " +
                                                to_string(current->status) + ", cannot become " +
                                                to_string(status));
      }
      Stmt s(db_, "UPDATE certificates SET status=?1 WHERE serial_hex=?2", &cache_);
      s.bind(1, std::string(to_string(status))).bind(2, serial);
      return s.run("updating certificate status");
    });
  }

  Status revoke_certificate(const std::string& serial, int reason, std::int64_t at) override {
    std::lock_guard lock(mu_);
    return write([&]() -> Status {
      PF_ASSIGN_OR_RETURN(auto current, certificate_by_serial(serial));
      if (!current) return make_status(Errc::kNotFound, "no certificate with serial " + serial);
      if (current->status == CertStatus::kRevoked) {
        return make_status(Errc::kAlreadyExists, "certificate " + serial + " is already revoked");
      }
      if (current->status == CertStatus::kRejected) {
        return make_status(Errc::kRejected,
                           "certificate " + serial + " was never published (rejected)");
      }
      Stmt s(db_, "UPDATE certificates SET status='revoked', revocation_reason=?1, revoked_at=?2 "
                  "WHERE serial_hex=?3", &cache_);
      s.bind(1, static_cast<std::int64_t>(reason)).bind(2, at).bind(3, serial);
      return s.run("revoking certificate");
    });
  }

  Result<std::int64_t> next_crl_number() override {
    std::lock_guard lock(mu_);
    std::int64_t n = 0;
    PF_RETURN_IF_ERROR(write([&]() -> Status {
      PF_RETURN_IF_ERROR(exec("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                              "WHERE key='crl_number'",
                              "incrementing the CRL number"));
      Stmt s(db_, "SELECT value FROM meta WHERE key='crl_number'", &cache_);
      PF_ASSIGN_OR_RETURN(bool row, s.step("reading the CRL number"));
      if (!row) return make_status(Errc::kCorrupt, "CM database has no crl_number");
      n = s.integer(0);
      return Status::ok();
    }));
    return n;
  }

  Result<std::int64_t> insert_archived_key(const ArchivedKeyRecord& r) override {
    std::lock_guard lock(mu_);
    std::int64_t id = 0;
    PF_RETURN_IF_ERROR(write([&]() -> Status {
      Stmt s(db_, "INSERT INTO archived_keys(cert_id, encrypted, idempotency_key, created_at) "
                  "VALUES (?1, ?2, ?3, ?4)", &cache_);
      s.bind(1, r.cert_id).bind_blob(2, r.encrypted).bind_opt(3, r.idempotency_key);
      s.bind(4, r.created_at ? r.created_at : now_ms() / 1000);
      Status st = s.run("archiving key");
      if (!st.is_ok() && st.code().value() == SQLITE_CONSTRAINT_UNIQUE) {
        return make_status(Errc::kAlreadyExists,
                           "a key with idempotency key '" + r.idempotency_key + "' is archived");
      }
      if (!st.is_ok() && st.code().value() == SQLITE_CONSTRAINT_FOREIGNKEY) {
        return make_status(Errc::kNotFound, "no certificate with id " + std::to_string(r.cert_id));
      }
      PF_RETURN_IF_ERROR(st);
      id = sqlite3_last_insert_rowid(db_);
      return Status::ok();
    }));
    return id;
  }

  Result<std::vector<ArchivedKeyRecord>> keys_where(const char* sql,
                                                    const std::function<void(Stmt&)>& binder) {
    std::lock_guard lock(mu_);
    Stmt s(db_, sql, &cache_);
    binder(s);
    std::vector<ArchivedKeyRecord> out;
    while (true) {
      PF_ASSIGN_OR_RETURN(bool row, s.step("reading archived keys"));
      if (!row) break;
      ArchivedKeyRecord r;
      r.key_id = s.integer(0);
      r.cert_id = s.integer(1);
      r.encrypted = s.blob(2);
      r.idempotency_key = s.text(3);
      r.created_at = s.integer(4);
      out.push_back(std::move(r));
    }
    return out;
  }

  Result<std::vector<ArchivedKeyRecord>> archived_keys_for(std::int64_t cert_id) override {
    return keys_where("SELECT key_id, cert_id, encrypted, idempotency_key, created_at FROM "
                      "archived_keys WHERE cert_id=?1 ORDER BY key_id",
                      [&](Stmt& s) { s.bind(1, cert_id); });
  }

  Result<std::optional<ArchivedKeyRecord>> archived_key_by_idempotency_key(
      const std::string& key) override {
    PF_ASSIGN_OR_RETURN(auto rows,
                        keys_where("SELECT key_id, cert_id, encrypted, idempotency_key, created_at "
                                   "FROM archived_keys WHERE idempotency_key=?1",
                                   [&](Stmt& s) { s.bind(1, key); }));
    if (rows.empty()) return std::optional<ArchivedKeyRecord>();
    return std::optional<ArchivedKeyRecord>(rows.front());
  }

  Status insert_officer(const OfficerRecord& r) override {
    std::lock_guard lock(mu_);
    return write([&]() -> Status {
      Stmt s(db_, "INSERT INTO officers(name, cert_serial_hex, roles, revoked, created_at) "
                  "VALUES (?1, ?2, ?3, ?4, ?5)", &cache_);
      s.bind(1, r.name).bind(2, r.cert_serial_hex).bind(3, join_roles(r.roles));
      s.bind(4, static_cast<std::int64_t>(r.revoked ? 1 : 0));
      s.bind(5, r.created_at ? r.created_at : now_ms() / 1000);
      Status st = s.run("inserting officer " + r.name);
      if (!st.is_ok() && (st.code().value() & 0xff) == SQLITE_CONSTRAINT) {
        return make_status(Errc::kAlreadyExists, "officer '" + r.name + "' already exists");
      }
      return st;
    });
  }

  Result<std::vector<OfficerRecord>> officers_where(const char* where,
                                                    const std::function<void(Stmt&)>& binder) {
    std::lock_guard lock(mu_);
    std::string sql = std::string("SELECT name, cert_serial_hex, roles, revoked, created_at FROM "
                                  "officers ") + where + " ORDER BY name";
    Stmt s(db_, sql.c_str(), &cache_);
    binder(s);
    std::vector<OfficerRecord> out;
    while (true) {
      PF_ASSIGN_OR_RETURN(bool row, s.step("reading officers"));
      if (!row) break;
      OfficerRecord r;
      r.name = s.text(0);
      r.cert_serial_hex = s.text(1);
      r.roles = split_roles(s.text(2));
      r.revoked = s.integer(3) != 0;
      r.created_at = s.integer(4);
      out.push_back(std::move(r));
    }
    return out;
  }

  Result<std::optional<OfficerRecord>> officer(const std::string& name) override {
    PF_ASSIGN_OR_RETURN(auto rows, officers_where("WHERE name=?1", [&](Stmt& s) { s.bind(1, name); }));
    if (rows.empty()) return std::optional<OfficerRecord>();
    return std::optional<OfficerRecord>(rows.front());
  }
  Result<std::optional<OfficerRecord>> officer_by_serial(const std::string& serial) override {
    PF_ASSIGN_OR_RETURN(auto rows, officers_where("WHERE cert_serial_hex=?1",
                                                  [&](Stmt& s) { s.bind(1, serial); }));
    if (rows.empty()) return std::optional<OfficerRecord>();
    return std::optional<OfficerRecord>(rows.front());
  }
  Result<std::vector<OfficerRecord>> officers() override {
    return officers_where("", [](Stmt&) {});
  }
  Status insert_pin_letter(const PinLetterRecord& r) override {
    std::lock_guard lock(mu_);
    return write([&]() -> Status {
      Stmt s(db_, "INSERT INTO pin_letters(letter_id, kind, state, holder, address, token, "
                  "envelope, idempotency_key, bound_to, created_at, has_puk) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
      s.bind(1, r.letter_id).bind(2, r.kind).bind(3, r.state).bind(4, r.holder);
      s.bind(5, r.address).bind(6, r.token).bind_blob(7, r.envelope);
      s.bind_opt(8, r.idempotency_key).bind(9, r.bound_to);
      s.bind(10, r.created_at ? r.created_at : now_ms() / 1000);
      s.bind(11, std::int64_t{r.has_puk ? 1 : 0});
      Status st = s.run("queueing a PIN letter");
      if (!st.is_ok() && (st.code().value() == SQLITE_CONSTRAINT_UNIQUE ||
                          st.code().value() == SQLITE_CONSTRAINT_PRIMARYKEY)) {
        return make_status(Errc::kAlreadyExists, "PIN letter " + r.letter_id + " exists");
      }
      return st;
    });
  }

  Result<std::vector<PinLetterRecord>> letters_where(const char* where,
                                                     const std::function<void(Stmt&)>& binder) {
    std::lock_guard lock(mu_);
    std::string sql = std::string("SELECT letter_id, kind, state, holder, address, token, "
                                  "envelope, ifnull(idempotency_key, ''), bound_to, created_at, "
                                  "printed_at, has_puk FROM pin_letters ") + where + " ORDER BY created_at, letter_id";
    Stmt s(db_, sql.c_str());
    binder(s);
    std::vector<PinLetterRecord> out;
    while (true) {
      PF_ASSIGN_OR_RETURN(bool row, s.step("reading PIN letters"));
      if (!row) break;
      PinLetterRecord r;
      r.letter_id = s.text(0);
      r.kind = s.text(1);
      r.state = s.text(2);
      r.holder = s.text(3);
      r.address = s.text(4);
      r.token = s.text(5);
      r.envelope = s.blob(6);
      r.idempotency_key = s.text(7);
      r.bound_to = s.text(8);
      r.created_at = s.integer(9);
      r.printed_at = s.integer(10);
      r.has_puk = s.integer(11) != 0;
      out.push_back(std::move(r));
    }
    return out;
  }
  Result<std::optional<PinLetterRecord>> pin_letter(const std::string& id) override {
    PF_ASSIGN_OR_RETURN(auto rows, letters_where("WHERE letter_id=?1",
                                                 [&](Stmt& s) { s.bind(1, id); }));
    if (rows.empty()) return std::optional<PinLetterRecord>();
    return std::optional<PinLetterRecord>(rows.front());
  }
  Result<std::optional<PinLetterRecord>> pin_letter_by_idempotency_key(
      const std::string& key) override {
    PF_ASSIGN_OR_RETURN(auto rows, letters_where("WHERE idempotency_key=?1",
                                                 [&](Stmt& s) { s.bind(1, key); }));
    if (rows.empty()) return std::optional<PinLetterRecord>();
    return std::optional<PinLetterRecord>(rows.front());
  }
  Result<std::vector<PinLetterRecord>> pin_letters() override {
    return letters_where("", [](Stmt&) {});
  }
  Status update_pin_letter(const std::string& id, const std::string& from_state,
                           const std::string& to_state, bool drop_envelope,
                           const std::string& bound_to) override {
    std::lock_guard lock(mu_);
    return write([&]() -> Status {
      Stmt s(db_, "UPDATE pin_letters SET state=?1, bound_to=?2, "
                  "envelope=CASE WHEN ?3 THEN x'' ELSE envelope END, "
                  "printed_at=CASE WHEN ?1='printed' THEN ?4 ELSE printed_at END "
                  "WHERE letter_id=?5 AND state=?6");
      s.bind(1, to_state).bind(2, bound_to).bind(3, std::int64_t{drop_envelope ? 1 : 0});
      s.bind(4, now_ms() / 1000).bind(5, id).bind(6, from_state);
      PF_RETURN_IF_ERROR(s.run("updating a PIN letter"));
      if (sqlite3_changes(db_) == 0) {
        Stmt q(db_, "SELECT state FROM pin_letters WHERE letter_id=?1");
        q.bind(1, id);
        PF_ASSIGN_OR_RETURN(bool row, q.step("reading a PIN letter"));
        if (!row) return make_status(Errc::kNotFound, "no PIN letter " + id);
        return make_status(Errc::kRejected, "PIN letter " + id + " is " + q.text(0) +
                                                ", not " + from_state);
      }
      return Status::ok();
    });
  }

  Status revoke_officer(const std::string& name) override {
    std::lock_guard lock(mu_);
    return write([&]() -> Status {
      Stmt s(db_, "UPDATE officers SET revoked=1 WHERE name=?1", &cache_);
      s.bind(1, name);
      PF_RETURN_IF_ERROR(s.run("revoking officer"));
      if (sqlite3_changes(db_) == 0) {
        return make_status(Errc::kNotFound, "no officer named '" + name + "'");
      }
      return Status::ok();
    });
  }

  Result<std::optional<TransactionRecord>> transaction(const std::string& id) override {
    std::lock_guard lock(mu_);
    Stmt s(db_, "SELECT transaction_id, request_digest, state, response_der, created_at, "
                "updated_at FROM transactions WHERE transaction_id=?1", &cache_);
    s.bind(1, id);
    PF_ASSIGN_OR_RETURN(bool row, s.step("reading transaction"));
    if (!row) return std::optional<TransactionRecord>();
    TransactionRecord r;
    r.transaction_id = s.text(0);
    r.request_digest = s.text(1);
    r.state = s.text(2);
    r.response_der = s.blob(3);
    r.created_at = s.integer(4);
    r.updated_at = s.integer(5);
    return std::optional<TransactionRecord>(std::move(r));
  }

  Result<std::optional<TransactionRecord>> begin_transaction(const TransactionRecord& r) override {
    std::lock_guard lock(mu_);
    std::optional<TransactionRecord> existing;
    PF_RETURN_IF_ERROR(write([&]() -> Status {
      PF_ASSIGN_OR_RETURN(existing, transaction(r.transaction_id));
      if (existing) return Status::ok();
      std::int64_t now = now_ms() / 1000;
      Stmt s(db_, "INSERT INTO transactions(transaction_id, request_digest, state, response_der, "
                  "created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)", &cache_);
      s.bind(1, r.transaction_id).bind(2, r.request_digest).bind(3, r.state);
      s.bind_blob(4, r.response_der).bind(5, r.created_at ? r.created_at : now);
      return s.run("recording transaction");
    }));
    return existing;
  }

  Status update_transaction(const std::string& id, const std::string& state,
                            const std::string& response_der) override {
    std::lock_guard lock(mu_);
    return write([&]() -> Status {
      Stmt s(db_, "UPDATE transactions SET state=?1, response_der=?2, updated_at=?3 "
                  "WHERE transaction_id=?4", &cache_);
      s.bind(1, state).bind_blob(2, response_der).bind(3, now_ms() / 1000).bind(4, id);
      PF_RETURN_IF_ERROR(s.run("updating transaction"));
      if (sqlite3_changes(db_) == 0) {
        return make_status(Errc::kNotFound, "no transaction '" + id + "'");
      }
      return Status::ok();
    });
  }

  // ----- e-mail verification (migration 3)

  Status insert_email_verification(const EmailVerificationRecord& r) override {
    std::lock_guard lock(mu_);
    return write([&]() -> Status {
      Stmt s(db_, (std::string("INSERT INTO email_verifications(") + kEmailVerificationColumns +
                   ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)")
                      .c_str());
      s.bind(1, r.transaction_id).bind(2, r.email).bind(3, r.code_digest).bind(4, r.procedure);
      s.bind(5, r.requester).bind(6, r.idempotency_key).bind_blob(7, r.subject_der);
      s.bind_blob(8, r.public_key_der).bind(9, r.old_serial_hex);
      s.bind(10, r.created_at ? r.created_at : now_ms() / 1000).bind(11, r.expires_at);
      s.bind(12, r.mailed_at).bind(13, r.confirmed_at).bind(14, r.issued_serial);
      s.bind(15, static_cast<std::int64_t>(r.failed_attempts));
      Status st = s.run("recording e-mail verification " + r.transaction_id);
      if (!st.is_ok() && st.code().value() == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return make_status(Errc::kAlreadyExists,
                           "transaction " + r.transaction_id + " already waits for e-mail verification");
      }
      return st;
    });
  }

  Result<std::optional<EmailVerificationRecord>> email_verification(
      const std::string& transaction_id) override {
    std::lock_guard lock(mu_);
    Stmt s(db_, (std::string("SELECT ") + kEmailVerificationColumns +
                 " FROM email_verifications WHERE transaction_id=?1")
                    .c_str());
    s.bind(1, transaction_id);
    PF_ASSIGN_OR_RETURN(bool row, s.step("reading e-mail verification"));
    if (!row) return std::optional<EmailVerificationRecord>();
    return std::optional<EmailVerificationRecord>(read_email_verification(s));
  }

  Result<std::vector<EmailVerificationRecord>> open_email_verifications(std::int64_t now) override {
    std::lock_guard lock(mu_);
    Stmt s(db_, (std::string("SELECT ") + kEmailVerificationColumns +
                 " FROM email_verifications WHERE confirmed_at=0 AND expires_at>?1 "
                 "ORDER BY created_at, transaction_id")
                    .c_str());
    s.bind(1, now);
    std::vector<EmailVerificationRecord> out;
    while (true) {
      PF_ASSIGN_OR_RETURN(bool row, s.step("listing e-mail verifications"));
      if (!row) break;
      out.push_back(read_email_verification(s));
    }
    return out;
  }

  Status update_email_verification(const EmailVerificationRecord& r) override {
    std::lock_guard lock(mu_);
    return write([&]() -> Status {
      Stmt s(db_, "UPDATE email_verifications SET mailed_at=?1, confirmed_at=?2, issued_serial=?3, "
                  "failed_attempts=?4, code_digest=?5 WHERE transaction_id=?6");
      s.bind(1, r.mailed_at).bind(2, r.confirmed_at).bind(3, r.issued_serial);
      s.bind(4, static_cast<std::int64_t>(r.failed_attempts)).bind(5, r.code_digest);
      s.bind(6, r.transaction_id);
      PF_RETURN_IF_ERROR(s.run("updating e-mail verification"));
      if (sqlite3_changes(db_) == 0) {
        return make_status(Errc::kNotFound, "no e-mail verification for transaction " +
                                                r.transaction_id);
      }
      return Status::ok();
    });
  }

  Result<AuditRecord> append_audit(const std::string& actor, const std::string& action,
                                   const std::string& detail) override {
    std::lock_guard lock(mu_);
    AuditRecord rec;
    PF_RETURN_IF_ERROR(write([&]() -> Status {
      Stmt last(db_, "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", &cache_);
      PF_ASSIGN_OR_RETURN(bool row, last.step("reading the audit log"));
      rec.seq = row ? static_cast<std::uint64_t>(last.integer(0)) + 1 : 1;
      rec.prev_hash = row ? last.text(1) : kZeroHash;
      rec.time_ms = now_ms();
      rec.actor = actor;
      rec.action = action;
      rec.detail = detail;
      rec.hash = sha256_hex(rec.prev_hash + audit_canonical_bytes(rec));
      Stmt s(db_, "INSERT INTO audit_log(seq, time_ms, actor, action, detail, prev_hash, hash) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", &cache_);
      s.bind(1, static_cast<std::int64_t>(rec.seq)).bind(2, rec.time_ms).bind(3, actor);
      s.bind(4, action).bind(5, detail).bind(6, rec.prev_hash).bind(7, rec.hash);
      return s.run("appending to the audit log");
    }));
    return rec;
  }

  Result<std::vector<AuditRecord>> audit_records(std::uint64_t from_seq,
                                                 std::size_t limit) override {
    std::lock_guard lock(mu_);
    std::string sql = "SELECT seq, time_ms, actor, action, detail, prev_hash, hash FROM audit_log "
                      "WHERE seq >= ?1 ORDER BY seq";
    if (limit) sql += " LIMIT " + std::to_string(limit);
    Stmt s(db_, sql.c_str(), &cache_);
    s.bind(1, static_cast<std::int64_t>(from_seq));
    std::vector<AuditRecord> out;
    while (true) {
      PF_ASSIGN_OR_RETURN(bool row, s.step("reading the audit log"));
      if (!row) break;
      AuditRecord r;
      r.seq = static_cast<std::uint64_t>(s.integer(0));
      r.time_ms = s.integer(1);
      r.actor = s.text(2);
      r.action = s.text(3);
      r.detail = s.text(4);
      r.prev_hash = s.text(5);
      r.hash = s.text(6);
      out.push_back(std::move(r));
    }
    return out;
  }

  Result<AuditVerifyReport> verify_audit() override {
    PF_ASSIGN_OR_RETURN(auto records, audit_records(0, 0));
    AuditVerifyReport report;
    std::string prev = kZeroHash;
    std::uint64_t expected_seq = 1;
    for (const auto& r : records) {
      auto fail = [&](const std::string& why) {
        report.intact = false;
        report.first_bad_seq = r.seq;
        report.reason = why;
        return report;
      };
      if (r.seq != expected_seq) {
        return fail("sequence gap: expected record " + std::to_string(expected_seq) + ", found " +
                    std::to_string(r.seq));
      }
      if (r.prev_hash != prev) return fail("prev_hash does not match the previous record's hash");
      if (sha256_hex(r.prev_hash + audit_canonical_bytes(r)) != r.hash) {
        return fail("hash does not match the record's content (record altered)");
      }
      prev = r.hash;
      ++expected_seq;
      ++report.records_checked;
    }
    return report;
  }

  Status atomically(const std::function<Status()>& fn) override {
    std::lock_guard lock(mu_);
    return write(fn);
  }

  const std::string& location() const override { return path_; }

 private:
  Status exec(const char* sql, const std::string& what) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      return Status(std::error_code(rc, sqlite_category()), what + ": " + msg);
    }
    return Status::ok();
  }

  // Runs fn in one write transaction (joining an enclosing one on this thread). Caller holds mu_.
  Status write(const std::function<Status()>& fn) {
    if (depth_ > 0) {
      ++depth_;
      Status st = fn();
      --depth_;
      return st;
    }
    PF_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE", "starting a transaction"));
    ++depth_;
    Status st = fn();
    --depth_;
    if (!st.is_ok()) {
      (void)exec("ROLLBACK", "rolling back");
      return st;
    }
    Status c = exec("COMMIT", "committing");
    if (!c.is_ok()) (void)exec("ROLLBACK", "rolling back");
    return c;
  }

  std::recursive_mutex mu_;
  StmtCache cache_;  // destroyed before the connection is closed
  int depth_ = 0;
  sqlite3* db_;
  std::string path_;
};

}  // namespace

const char* to_string(CertStatus status) {
  switch (status) {
    case CertStatus::kPending: return "pending";
    case CertStatus::kValid: return "valid";
    case CertStatus::kRejected: return "rejected";
    case CertStatus::kRevoked: return "revoked";
  }
  return "unknown";
}

std::optional<CertStatus> cert_status_from_string(std::string_view text) {
  if (text == "pending") return CertStatus::kPending;
  if (text == "valid") return CertStatus::kValid;
  if (text == "rejected") return CertStatus::kRejected;
  if (text == "revoked") return CertStatus::kRevoked;
  return std::nullopt;
}

std::string audit_canonical_bytes(const AuditRecord& r) {
  std::string out = "persoflow-cm-audit-v1";
  put_field(out, std::to_string(r.seq));
  put_field(out, std::to_string(r.time_ms));
  put_field(out, r.actor);
  put_field(out, r.action);
  put_field(out, r.detail);
  return out;
}

namespace {
Status no_pin_letters() {
  return make_status(Errc::kUnsupported, "this CM store keeps no PIN letters");
}
}  // namespace

Status CmStore::insert_pin_letter(const PinLetterRecord&) { return no_pin_letters(); }
Result<std::optional<PinLetterRecord>> CmStore::pin_letter(const std::string&) {
  return no_pin_letters();
}
Result<std::optional<PinLetterRecord>> CmStore::pin_letter_by_idempotency_key(const std::string&) {
  return no_pin_letters();
}
Result<std::vector<PinLetterRecord>> CmStore::pin_letters() { return no_pin_letters(); }
Status CmStore::update_pin_letter(const std::string&, const std::string&, const std::string&, bool,
                                  const std::string&) {
  return no_pin_letters();
}

Result<std::unique_ptr<CmStore>> open_sqlite_cm_store(const std::string& path,
                                                      CmStoreOptions options) {
  if (options.create_if_missing) {
    // The database holds archived keys (encrypted) and the audit log: owner-only from the start.
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
  }
  sqlite3* db = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX;
  if (options.create_if_missing) flags |= SQLITE_OPEN_CREATE;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    Status st = Status(std::error_code(rc, sqlite_category()),
                       "cannot open CM database " + path + ": " +
                           (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close_v2(db);
    return st;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 10000);
  auto store = std::make_unique<SqliteCmStore>(db, path);
  Status st = store->init_schema();
  if (!st.is_ok()) return st.with_context("opening CM database " + path);
  return std::unique_ptr<CmStore>(std::move(store));
}

}  // namespace persoflow::storage
