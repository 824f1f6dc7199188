// The CM host: the CA, its database, its procedures and officers, key archive and recovery, and
// revocation with CRLs. The CMP service (cmp_service) and `persoflow cm` commands program against
// this class; it knows nothing of CMP messages or HTTP.
//
// Directory layout (created by init(), described in docs/cmhost.md):
//   DIR/cm.json                      configuration (config.hpp)
//   DIR/ca/ca.pem                    CA chain (CA first)
//   DIR/ca/ca-key.pem, ca-key.pass   CA key, encrypted PKCS#8 PEM, and its passphrase (0600)
//   DIR/archive/archive.pem          key-archive certificate (recipient of archived keys)
//   DIR/archive/archive-key.pem/.pass  key-archive key, encrypted, and its passphrase (0600)
//   DIR/tls/tls.pem, tls-key.pem     TLS server certificate (IP:127.0.0.1, DNS:localhost) + CA,
//                                    and its unencrypted key (0600)
//   DIR/officers/NAME.p12            officer credentials made by init / officer add
//   DIR/cm.db                        SQLite database (storage/cm_store.hpp)
//
// Thread safety: every method may be called from many threads at once (the HTTPS server runs
// requests on a pool). Signing uses the immutable CA key; the database serialises itself.
// Exactly-once: issue(), generate_and_archive() and recover() take an idempotency key; a call
// repeated with the same key returns what the first call made (same serial, same archived key)
// and never makes a second one; the same key with another public key or subject is refused.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "persoflow/cmhost/config.hpp"
#include "persoflow/cmhost/openssl_ptr.hpp"
#include "persoflow/common/status.hpp"
#include "persoflow/storage/cm_store.hpp"

namespace persoflow::cmhost {

inline constexpr const char* kRoleIssue = "issue";      // "Issue certificate"
inline constexpr const char* kRoleRecover = "recover";  // "Recover key"

struct Officer {
  std::string name;
  std::string cert_serial_hex;
  std::vector<std::string> roles;
  bool revoked = false;
  bool has_role(const std::string& role) const;
};

// Values the RA entered for a qualified certificate (only those the procedure lets it enter).
struct QcValues {
  std::vector<std::string> types;  // esign | eseal | web
  std::vector<PdsLocation> pds;
};

// Database writes held back by a CmHost call so that its caller commits them in one database
// transaction together with its own (the CMP service stores a certificate together with the
// answer that carries it). Run each, in order, inside CmStore::atomically.
struct DeferredWrites {
  std::vector<std::function<Status()>> writes;
};

struct IssueRequest {
  std::string procedure;   // certificate procedure; empty: the configured default
  X509NamePtr subject;     // required
  EvpPkeyPtr public_key;   // required (a private key works too; only its public part is used)
  std::string requester;   // officer name (audit, requested_by); "cli" for local commands
  std::string transaction_id;   // CMP transactionID in hex, for the record; may be empty
  std::string idempotency_key;  // e.g. "<transactionID>/<certReqId>"; empty: no deduplication
  // kur / reissue: the certificate being replaced (must be one this CA issued, not revoked).
  X509Ptr old_certificate;
  // Key usage the request asks for (names as in config); empty: the procedure's. Must be a
  // subset of the procedure's.
  std::vector<std::string> key_usage;
  QcValues qc;
  // CRMF PKIArchiveOptions: a CMS EnvelopedData (ContentInfo DER) for the key-archive certificate
  // holding the private key of public_key. It must open and match; the key is archived in the
  // same database transaction as the certificate. Empty: nothing to archive.
  std::string archive_envelope;
  // Publish at once (implicit confirmation, or local issuance); otherwise the certificate stays
  // pending until confirm().
  bool confirmed = false;
  // Set: the certificate (and archived key) is checked and signed but not stored; its writes are
  // appended here for the caller to commit (the result's cert_id is then 0). Null: stored at once.
  DeferredWrites* defer = nullptr;
};

struct IssuedCertificate {
  X509Ptr certificate;
  std::string der;
  std::string serial_hex;
  std::int64_t cert_id = 0;
  storage::CertStatus status = storage::CertStatus::kPending;
  bool replayed = false;  // true when the idempotency key had already produced this certificate
};

// A parsed, signature-checked CSR (PKCS#10).
struct Csr {
  X509ReqPtr request;
  X509NamePtr subject;
  EvpPkeyPtr public_key;
};

// Search for archived keys by the certificate issued when the key was archived: exactly one of
// serial_hex (hexadecimal serial number), cert_id (decimal certificate ID) or subject (exact
// RFC 2253 subject; with subject_substring a substring) is set.
struct KeySearch {
  std::optional<std::string> serial_hex;
  std::optional<std::int64_t> cert_id;
  std::optional<std::string> subject;
  bool subject_substring = false;
};

struct ArchivedKeyInfo {
  std::int64_t key_id = 0;
  std::int64_t cert_id = 0;
  std::string serial_hex;
  std::string subject;
  std::int64_t not_before = 0;
  std::int64_t not_after = 0;
  storage::CertStatus cert_status = storage::CertStatus::kValid;
  std::int64_t archived_at = 0;
};

struct GenerateArchiveRequest {
  std::string procedure;      // certificate procedure of the new certificate
  std::string key_algorithm;  // "RSA:2048", "EC:secp256r1", ...; empty: the key procedure's
                              // or "RSA:2048"
  X509NamePtr subject;
  std::string requester;
  X509Ptr recipient;  // the requester's encryption certificate: the envelope is for its key
  std::string transaction_id;
  std::string idempotency_key;
  bool confirmed = false;  // as IssueRequest::confirmed
};

struct GeneratedKey {
  IssuedCertificate certificate;
  std::int64_t key_id = 0;  // the archived key
  std::string envelope_der;  // CMS EnvelopedData (DER) of the PKCS#8 private key, for recipient
};

struct RecoverRequest {
  KeySearch search;
  std::string scope = "last";       // last | all (of the user the search finds)
  std::string certificate = "new";  // new: a new certificate per key | reuse: the archived one
  std::string procedure;            // certificate procedure for new certificates; empty: the one
                                    // the key was archived under
  std::string requester;
  X509Ptr recipient;  // the requester's encryption certificate
  std::string transaction_id;
  std::string idempotency_key;  // new certificates get "<key>/<n>"
  bool confirmed = false;
};

struct RecoveredKey {
  ArchivedKeyInfo key;
  IssuedCertificate certificate;  // new, or the reused archived certificate
  std::string envelope_der;       // CMS EnvelopedData of the PKCS#8 private key, for recipient
};

struct InitOptions {
  std::string ca_key_algorithm = "ec-p256";  // ec-p256 | ec-p384 | rsa-2048 | rsa-3072 | rsa-4096
  std::string ca_subject = "CN=persoflow CA,O=persoflow";
  // Key-archive key: RSA (key transport, opened by every CMS implementation) or EC (ECDH).
  std::string archive_key_algorithm = "RSA:3072";
  int ca_validity_days = 3650;
  // A CA key in a PKCS#11 token instead of a PEM file: a "pkcs11:token=...;object=..." URI. The
  // key is generated there (ca_key_algorithm) when the token holds none under that label, and
  // used as it is otherwise. The module and the file with the token's user PIN are recorded in
  // cm.json, so `cm serve` starts unattended.
  std::string ca_key_uri;
  std::string ca_pkcs11_module;
  std::string ca_pin_file;
  std::string officer = "officer";  // first officer's name
  std::optional<std::string> officer_password;  // empty: generated (returned in InitResult)
};

struct InitResult {
  std::string officer_p12;  // path
  std::string officer_password;
  bool password_generated = false;
  std::string ca_chain;  // path
};

struct NewOfficer {
  Officer officer;
  std::string p12_path;
  std::string password;
  bool password_generated = false;
};

class CmHost {
 public:
  ~CmHost();
  CmHost(const CmHost&) = delete;
  CmHost& operator=(const CmHost&) = delete;

  // Creates a CM directory (layout above). A directory that already holds a CA: kAlreadyExists
  // "DIR already holds a CA (DIR/ca/ca.pem); refusing to overwrite it".
  static Result<InitResult> init(const std::string& dir, const InitOptions& options);
  // Loads DIR/cm.json, the CA chain and key, the key-archive certificate and the database.
  static Result<std::unique_ptr<CmHost>> open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const CmConfig& config() const { return config_; }
  X509* ca_certificate() const;  // owned by the host
  STACK_OF(X509)* ca_chain() const;  // CA first; owned by the host
  std::string ca_chain_pem() const;
  // The CA's key, for signing CMP responses (owned by the host, immutable).
  EVP_PKEY* ca_key() const;
  std::string tls_certificate_path() const;  // chain PEM: TLS certificate, then the CA
  std::string tls_key_path() const;          // unencrypted PEM
  storage::CmStore& store() { return *store_; }

  // --- procedures
  const CertificateProcedure* procedure(const std::string& name) const;
  const CertificateProcedure& default_procedure() const;
  // Names the certificate procedures an officer may use (their roles_required ⊆ roles).
  std::vector<std::string> procedures_for(const Officer& officer) const;

  // --- request checks: each refusal is kRejected with its own message, e.g.
  //   "procedure 'smartcard-auth': missing required subject field 'CN'"
  //   "procedure 'smartcard-auth': subject field 'L' is not allowed"
  //   "procedure 'smartcard-auth': key too small: RSA-1024 < 2048 required"
  //   "procedure 'smartcard-auth': key algorithm DSA is not allowed (allowed: RSA, EC)"
  //   "procedure 'smartcard-auth': EC curve secp224r1 is not allowed (allowed: ...)"
  //   "procedure 'officer': key usage 'keyEncipherment' is not allowed"
  Status check_request(const CertificateProcedure& procedure, const X509_NAME* subject,
                       const EVP_PKEY* public_key,
                       const std::vector<std::string>& key_usage = {}) const;
  // DER or PEM. Each failure its own message: "CSR is malformed: ..." (not a PKCS#10 request)
  // or "CSR signature is invalid (proof of possession failed)". kInvalidArgument / kRejected.
  Result<Csr> validate_csr(std::string_view der_or_pem) const;

  // --- issuance
  // Checks the request against its procedure, then signs (random positive 128-bit serial, SKI,
  // AKI, basicConstraints CA:FALSE, key usage, EKU, validity, CRL DP, QC statements) and stores
  // it as pending (or valid when request.confirmed). Unknown procedure: kNotFound.
  Result<IssuedCertificate> issue(IssueRequest request);
  // pending -> valid (certConf accepted, or implicit confirmation). Valid already: OK.
  Status confirm(const std::string& serial_hex, const std::string& actor);
  // pending -> rejected (certConf with a failure status, or the transaction failed).
  Status reject(const std::string& serial_hex, const std::string& actor);
  // Confirms (accept) or rejects the certificates issued in CMP transaction transaction_id_hex
  // (all of them, or those named by serial), all or none, and returns their serials. Used for
  // certificates that a key generation or recovery genm made without implicit confirmation.
  // Each must have been requested by `officer`. Repeating a confirmation is harmless; confirming
  // a rejected certificate or rejecting a published one is refused (kRejected). Nothing issued in
  // that transaction, or a serial not issued in it: kNotFound.
  Result<std::vector<std::string>> confirm_transaction(const std::string& transaction_id_hex,
                                                       const std::vector<std::string>& serials,
                                                       bool accept, const std::string& officer);
  // valid/pending -> revoked with a CRLReason (0..10 except 7). Unknown: kNotFound; already
  // revoked: kAlreadyExists.
  Status revoke(const std::string& serial_hex, int reason, const std::string& actor);
  // A fresh CRL signed now (CRL number incremented, nextUpdate = now + crl_validity_hours).
  Result<std::string> crl_der();
  std::optional<storage::CertRecord> certificate(const std::string& serial_hex);

  // --- transport certificates (TC) on pre-personalized cards
  // Validates a card's TC for a token procedure before the RA replaces it: the token procedure
  // must require TC validation; the TC must chain to one of its trusted issuers and be within its
  // validity; when this CA issued it, it must be a certificate of a transport procedure and not be
  // revoked. Unknown token procedure: kNotFound; otherwise kRejected naming the reason.
  Status validate_transport_certificate(const std::string& token_procedure, const X509* tc);

  // --- officers
  // The officer whose certificate this is: issued by this CA (signature checked), known to the
  // store, not revoked and its certificate not revoked. Otherwise kPermissionDenied naming why.
  Result<Officer> officer_for(const X509* sender_certificate);
  // Issues an officer certificate (procedure "officer", P-256 key) and writes DIR/officers/NAME.p12.
  Result<NewOfficer> add_officer(const std::string& name, const std::vector<std::string>& roles,
                                 std::optional<std::string> password, const std::string& actor);
  // Marks the officer revoked and revokes its certificate (reason affiliationChanged = 3).
  Status revoke_officer(const std::string& name, const std::string& actor);
  Result<std::vector<Officer>> officers();

  // --- key archive and recovery
  // Generates a key pair, issues its certificate, archives the private key (CMS EnvelopedData for
  // the key-archive certificate) and returns it enveloped for request.recipient.
  Result<GeneratedKey> generate_and_archive(GenerateArchiveRequest request);
  // Archives a key the RA generated (CRMF PKIArchiveOptions): the certificate must be one this CA
  // issued and private_key must match its public key. Returns the archived key's id.
  Result<std::int64_t> archive_key(const std::string& serial_hex, const EVP_PKEY* private_key,
                                   const std::string& actor, const std::string& idempotency_key = {});
  Result<std::vector<ArchivedKeyInfo>> search_keys(const KeySearch& search);
  // Finds the user's archived keys (scope last: the newest; all: every one of the user the search
  // names), and returns each private key enveloped for request.recipient, with a new certificate
  // or the archived one. Nothing found: kNotFound.
  Result<std::vector<RecoveredKey>> recover(RecoverRequest request);

  // --- audit: appends to the hash-chained audit log. Never pass a PIN or a key.
  Status audit(const std::string& actor, const std::string& action, const std::string& detail);

 private:
  struct Impl;
  explicit CmHost(std::string dir);
  // Opens a key-archive envelope sent by the RA, checks that its key belongs to public_key, and
  // returns it enveloped again as every archived key is (PKCS#8 content). kRejected otherwise.
  Result<std::string> rewrap_key_to_archive(const std::string& envelope,
                                            const EVP_PKEY* public_key);
  std::string dir_;
  CmConfig config_;
  std::unique_ptr<storage::CmStore> store_;
  std::unique_ptr<Impl> impl_;
};

// Generates a key pair: "RSA:2048", "EC:secp256r1" (any name of client.ra-key-generation),
// "DSA:1024", "Ed25519", or the CA forms "ec-p256", "rsa-3072". Unknown: kInvalidArgument.
Result<EvpPkeyPtr> generate_key(const std::string& spec);

// Envelopes data (e.g. a PKCS#8 private key) as CMS EnvelopedData (AES-256-CBC) for recipient's
// key; returns DER. Exposed for tests and for the station's verification of recovered keys.
Result<std::string> envelope_for(const X509* recipient, std::string_view data);
// Opens an envelope with the recipient's key and certificate. Wrong key: kPermissionDenied.
Result<std::string> open_envelope(std::string_view envelope_der, const X509* recipient,
                                  const EVP_PKEY* key);

}  // namespace persoflow::cmhost
