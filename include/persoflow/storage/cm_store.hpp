// The CM host's database: certificates, archived keys, officers, CMP transactions, CRL numbers and
// a hash-chained audit log, behind an interface that an SQLite backend implements here and a
// PostgreSQL backend can implement later.
//
// Guarantees of every backend:
// - Each mutating call is one database transaction: it happened completely or not at all.
// - Serial numbers are unique; a certificate's `idempotency_key` (when not empty) is unique, so a
//   retried request finds the certificate it already got instead of making a second one.
// - The audit log is append-only and hash-chained like the station journal: record n carries
//   SHA-256(prev_hash || canonical bytes of record n); verify_audit() names the first bad record.
// - Thread-safe: one instance may be called from many threads (the SQLite backend serialises
//   calls with a mutex; concurrency between processes is SQLite's WAL locking).
// Times are Unix seconds (UTC) unless named *_ms.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/common/status.hpp"

namespace persoflow::storage {

// pending: signed, not yet confirmed by the requester (certConf); valid: published;
// rejected: the requester refused it or the transaction failed (never published, never on a
// CRL); revoked: on the CRL.
enum class CertStatus { kPending, kValid, kRejected, kRevoked };
const char* to_string(CertStatus status);
std::optional<CertStatus> cert_status_from_string(std::string_view text);

struct CertRecord {
  std::int64_t cert_id = 0;  // the decimal certificate ID, assigned by the store on insert
  std::string serial_hex;    // uppercase hex, even number of digits (as BN_bn2hex prints it)
  std::string subject;       // one-line RFC 2253 form, e.g. "CN=Alice,O=Example"
  std::string issuer;
  std::int64_t not_before = 0;
  std::int64_t not_after = 0;
  CertStatus status = CertStatus::kPending;
  int revocation_reason = -1;  // CRLReason code (RFC 5280 5.3.1) when revoked, else -1
  std::int64_t revoked_at = 0;
  std::string procedure;        // the certificate procedure it was issued under
  std::string der;              // the certificate, DER
  std::string transaction_id;   // CMP transactionID (hex) it was issued in, or empty
  std::string idempotency_key;  // unique when not empty: the same key finds this certificate
  std::string requester;        // officer name, or "cli" / "init"
  std::int64_t created_at = 0;
};

// Search of certificates. Set fields are combined with AND; none set lists everything.
struct CertQuery {
  std::optional<std::string> serial_hex;  // exact (normalised by the caller)
  std::optional<std::int64_t> cert_id;
  std::optional<std::string> subject;     // exact RFC 2253 subject, or a substring when
  bool subject_substring = false;         //   subject_substring is set
  std::optional<CertStatus> status;
  std::optional<std::string> procedure;
  std::optional<std::string> transaction_id;  // CMP transactionID (hex) it was issued in
  std::size_t limit = 0;  // 0: no limit; results are ordered by cert_id ascending
};

struct ArchivedKeyRecord {
  std::int64_t key_id = 0;  // assigned by the store
  std::int64_t cert_id = 0;  // the certificate issued for this key when it was archived
  std::string encrypted;     // CMS EnvelopedData (DER) for the key-archive certificate
  std::string idempotency_key;  // unique when not empty
  std::int64_t created_at = 0;
};

struct OfficerRecord {
  std::string name;             // unique
  std::string cert_serial_hex;  // the officer certificate's serial, unique
  std::vector<std::string> roles;  // "issue", "recover"
  bool revoked = false;
  std::int64_t created_at = 0;
};

// One CMP transaction, for exactly-once answers: the same transactionID with the same request
// digest gets response_der again; with another digest it is refused by the caller.
struct TransactionRecord {
  std::string transaction_id;  // hex
  std::string request_digest;  // hex SHA-256 of what identifies the request's content
  std::string state;           // free text owned by the CMP layer, e.g. "open", "answered", "done"
  std::string response_der;    // the last answer sent, DER; empty until answered
  std::int64_t created_at = 0;
  std::int64_t updated_at = 0;
};

// A certificate request waiting for the subject's e-mail address to be verified (procedures
// with email_verification, docs/reissue.md). Keyed by the CMP transactionID of the request. The
// one-time code itself is never stored: code_digest is SHA-256 over transaction_id ":" code.
struct EmailVerificationRecord {
  std::string transaction_id;  // hex, primary key
  std::string email;           // where the code was sent
  std::string code_digest;     // hex
  std::string procedure;       // certificate procedure of the waiting request
  std::string requester;       // officer name
  std::string idempotency_key;  // of the certificate to issue ("<transactionID>/<certReqId>")
  std::string subject_der;      // X509_NAME, DER
  std::string public_key_der;   // SubjectPublicKeyInfo, DER
  std::string old_serial_hex;   // kur: the certificate being updated, else empty
  std::int64_t created_at = 0;
  std::int64_t expires_at = 0;
  std::int64_t mailed_at = 0;     // 0: the code could not be mailed yet (sent at the next poll)
  std::int64_t confirmed_at = 0;  // 0: not confirmed
  std::string issued_serial;      // the certificate issued once confirmed, else empty
  int failed_attempts = 0;        // wrong codes entered for this request
};

struct AuditRecord {
  std::uint64_t seq = 0;  // 1, 2, ... without gaps
  std::int64_t time_ms = 0;
  std::string actor;   // officer name, "cli", "init", "cmp"
  std::string action;  // e.g. "issue", "revoke", "refuse", "archive", "recover"
  std::string detail;  // free text for people; never a PIN or a private key
  std::string prev_hash;  // hex SHA-256; 64 zeros for the first record
  std::string hash;
};

// A PIN letter for the secure printer (migration 2). The PIN is held only as `envelope`, a CMS
// EnvelopedData for the CM host's key-archive certificate, and only until it is needed: a mailer
// letter's envelope is dropped when it is printed; a pre-printed letter's when it is bound to a
// token (the RA took its PIN).
struct PinLetterRecord {
  std::string letter_id;   // printed on the letter, e.g. "PL-7F3A9C21"
  std::string kind;        // "mailer" (queued by an RA) | "preprinted" (made by the CM host)
  std::string state;       // "queued" -> "printed" (-> "bound" for preprinted)
  std::string holder;      // subject of the token, "" for a preprinted letter
  std::string address;     // e-mail address of the holder, "" for a preprinted letter
  std::string token;       // what the PIN opens
  std::string envelope;    // DER; empty once dropped
  std::string idempotency_key;  // unique when not empty
  std::string bound_to;    // preprinted: the idempotency key of the binding
  std::int64_t created_at = 0;
  std::int64_t printed_at = 0;
  // The envelope holds "PIN\nPUK": a letter for a card with two PINs (migration 5).
  bool has_puk = false;
};

struct AuditVerifyReport {
  bool intact = true;
  std::uint64_t records_checked = 0;
  std::optional<std::uint64_t> first_bad_seq;
  std::string reason;
};

class CmStore {
 public:
  virtual ~CmStore() = default;

  // --- certificates
  // Inserts and returns the new cert_id. A duplicate serial or idempotency key: kAlreadyExists.
  virtual Result<std::int64_t> insert_certificate(const CertRecord& record) = 0;
  virtual Result<std::optional<CertRecord>> certificate_by_serial(const std::string& serial_hex) = 0;
  virtual Result<std::optional<CertRecord>> certificate_by_id(std::int64_t cert_id) = 0;
  virtual Result<std::optional<CertRecord>> certificate_by_idempotency_key(
      const std::string& key) = 0;
  virtual Result<std::vector<CertRecord>> find_certificates(const CertQuery& query) = 0;
  // pending -> valid / rejected. Any other change: kRejected with the current status named.
  virtual Status set_certificate_status(const std::string& serial_hex, CertStatus status) = 0;
  // valid (or pending) -> revoked with reason and time. Already revoked: kAlreadyExists.
  virtual Status revoke_certificate(const std::string& serial_hex, int reason,
                                    std::int64_t revoked_at) = 0;

  // --- CRL numbers: 1, 2, ... one per call, durable.
  virtual Result<std::int64_t> next_crl_number() = 0;

  // --- archived keys
  virtual Result<std::int64_t> insert_archived_key(const ArchivedKeyRecord& record) = 0;
  virtual Result<std::vector<ArchivedKeyRecord>> archived_keys_for(std::int64_t cert_id) = 0;
  virtual Result<std::optional<ArchivedKeyRecord>> archived_key_by_idempotency_key(
      const std::string& key) = 0;

  // --- officers
  virtual Status insert_officer(const OfficerRecord& record) = 0;  // duplicate: kAlreadyExists
  virtual Result<std::optional<OfficerRecord>> officer(const std::string& name) = 0;
  virtual Result<std::optional<OfficerRecord>> officer_by_serial(const std::string& serial_hex) = 0;
  virtual Result<std::vector<OfficerRecord>> officers() = 0;
  virtual Status revoke_officer(const std::string& name) = 0;  // unknown: kNotFound

  // --- CMP transactions (exactly-once)
  // Inserts when absent and returns nullopt; when present returns the stored record unchanged.
  virtual Result<std::optional<TransactionRecord>> begin_transaction(
      const TransactionRecord& record) = 0;
  virtual Result<std::optional<TransactionRecord>> transaction(const std::string& id) = 0;
  // Updates state and response of an existing transaction (unknown: kNotFound).
  virtual Status update_transaction(const std::string& id, const std::string& state,
                                    const std::string& response_der) = 0;

  // --- e-mail verification (schema migration 3). Duplicate transaction: kAlreadyExists.
  virtual Status insert_email_verification(const EmailVerificationRecord& record) = 0;
  virtual Result<std::optional<EmailVerificationRecord>> email_verification(
      const std::string& transaction_id) = 0;
  // Not confirmed and expires_at > now, oldest first.
  virtual Result<std::vector<EmailVerificationRecord>> open_email_verifications(
      std::int64_t now) = 0;
  // Stores code_digest, mailed_at, confirmed_at, issued_serial and failed_attempts (unknown:
  // kNotFound).
  virtual Status update_email_verification(const EmailVerificationRecord& record) = 0;

  // --- audit log
  virtual Result<AuditRecord> append_audit(const std::string& actor, const std::string& action,
                                           const std::string& detail) = 0;
  // Records with seq >= from_seq, at most limit (0: all), ascending.
  virtual Result<std::vector<AuditRecord>> audit_records(std::uint64_t from_seq,
                                                         std::size_t limit) = 0;
  virtual Result<AuditVerifyReport> verify_audit() = 0;

  // PIN letters (PinLetterRecord). Stores without them answer kUnsupported.
  // A letter id or idempotency key used before: kAlreadyExists.
  virtual Status insert_pin_letter(const PinLetterRecord& record);
  virtual Result<std::optional<PinLetterRecord>> pin_letter(const std::string& letter_id);
  virtual Result<std::optional<PinLetterRecord>> pin_letter_by_idempotency_key(
      const std::string& key);
  virtual Result<std::vector<PinLetterRecord>> pin_letters();
  // Moves a letter from `from_state` to `to_state` (printed_at set when printed), dropping its
  // envelope when asked. Not in from_state: kRejected naming the state it is in.
  virtual Status update_pin_letter(const std::string& letter_id, const std::string& from_state,
                                   const std::string& to_state, bool drop_envelope,
                                   const std::string& bound_to);

  // Runs fn inside one database transaction: all of fn's calls on this store commit together,
  // or none does when fn returns a failure. Other threads wait until it ends. A nested call on
  // the same thread joins the outer transaction.
  virtual Status atomically(const std::function<Status()>& fn) = 0;

  virtual const std::string& location() const = 0;
};

struct CmStoreOptions {
  bool create_if_missing = true;
};

// Opens (creating when allowed) the SQLite database at path: WAL, synchronous=FULL, foreign keys,
// schema_version migrations. A missing directory, a file that is not a CM database, or a newer
// schema: a clear error, the file untouched.
Result<std::unique_ptr<CmStore>> open_sqlite_cm_store(const std::string& path,
                                                      CmStoreOptions options = {});

// The canonical bytes an audit record's hash covers (exposed so tests and auditors can recompute
// it): seq, time_ms, actor, action, detail, each length-prefixed.
std::string audit_canonical_bytes(const AuditRecord& record);

}  // namespace persoflow::storage
