// The CM host's configuration (DIR/cm.json): where the CA, key-archive and TLS keys are, the
// public URL put into issued certificates, and the token procedures that say what may be issued
// to whom and how. docs/cmhost.md describes the file; default_config() is what `cm init` writes.
//
// Vocabulary (from the RA tasks, DESIGN.md):
// - a certificate procedure says what one certificate looks like (subject template, key usage,
//   EKU, validity, allowed key algorithms, QC statements); the CMP path
//   /.well-known/cmp/p/<name> names one;
// - a key procedure says how the CM host handles a key: archive (generate-and-archive, or archive
//   a key the RA generated), or recover (the last or all archived keys of a user, with a new
//   certificate or the old one reused);
// - a PIN procedure says how a card's PIN reaches its holder;
// - a token procedure groups them for one kind of token (a smart card or a PKCS#12 soft token),
//   with the transport-certificate (TC) validation rules and whether CA certificates go on cards.
// A loaded CmConfig is immutable and may be read from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "persoflow/common/status.hpp"

namespace persoflow::cmhost {

// One allowed key algorithm of a certificate procedure: "RSA" with a size range, "EC" with named
// curves, "DSA" with a size range, "Ed25519".
struct KeyAlgorithmRule {
  std::string algorithm;            // RSA | EC | DSA | Ed25519 | Ed448
  int min_bits = 0;                 // RSA/DSA; 0: no minimum
  int max_bits = 0;                 // RSA/DSA; 0: no maximum
  std::vector<std::string> curves;  // EC: OpenSSL / RFC names (secp256r1 == prime256v1)
};

struct SubjectTemplate {
  std::vector<std::string> required;  // attribute short names, e.g. "CN"
  std::vector<std::string> optional;  // anything else present is refused
};

// RFC 3739 / ETSI EN 319 412-5 statements put into a qualified certificate.
struct PdsLocation {
  std::string url;
  std::string language;  // ISO 639-1, two letters
};
struct QcStatements {
  bool compliance = false;            // id-etsi-qcs-QcCompliance
  bool sscd = false;                  // id-etsi-qcs-QcSSCD
  std::vector<std::string> types;     // esign | eseal | web (id-etsi-qct-*)
  std::vector<PdsLocation> pds;       // id-etsi-qcs-QcPDS
  // What the RA may enter per request (subset of: "types", "pds", "sscd"); values outside these
  // lists are refused.
  std::vector<std::string> ra_may_enter;
  std::vector<std::string> allowed_types;     // choices the RA may pick from
  std::vector<PdsLocation> allowed_pds;       // choices the RA may pick from
};

struct CertificateProcedure {
  std::string name;
  std::string description;
  SubjectTemplate subject;
  std::vector<std::string> key_usage;           // digitalSignature, nonRepudiation, ... ; empty: none
  std::vector<std::string> extended_key_usage;  // clientAuth, emailProtection, ... or dotted OIDs
  int validity_days = 365;
  std::vector<KeyAlgorithmRule> key_algorithms;  // empty: any algorithm
  std::optional<QcStatements> qc_statements;
  bool officer = false;          // certificates for RA officers (no key usage)
  bool transport = false;        // transport certificates (TC) put on pre-personalized cards
  // E-mail verification (docs/reissue.md): the CM host mails a one-time code to the subject's
  // emailAddress and answers the request 'waiting' until the code is confirmed
  // (`persoflow cm verify`), for at most verification_minutes; clients poll every
  // verification_check_after seconds.
  bool email_verification = false;
  int verification_minutes = 60;
  int verification_check_after = 30;
  std::vector<std::string> roles_required = {"issue"};  // officer roles needed to request it
};

struct KeyProcedure {
  std::string name;
  std::string description;
  std::string type;                   // archive | recover
  std::string certificate_procedure;  // the certificate procedure of the key's certificate
  std::string key_algorithm;          // archive: what the CM host generates, e.g. "RSA:2048"
  std::string scope = "last";         // recover: last | all
  std::string certificate = "new";    // recover: new | reuse
  std::vector<std::string> roles_required;  // archive: {"issue"}; recover: {"recover"} (+"issue"
                                            // when a new certificate is issued)
};

struct PinProcedure {
  std::string name;
  std::string delivery;  // entered | shown | mailer | letter
  int min_length = 6;
  int max_length = 8;
  bool puk = true;  // a PUK is set too
  std::string description;
};

struct TcValidation {
  bool required = false;
  std::vector<std::string> trusted_issuers;  // PEM files (relative to the CM dir)
};

struct TokenProcedure {
  std::string name;
  std::string description;
  std::string media;  // smartcard | softtoken
  std::vector<std::string> certificate_procedures;
  std::vector<std::string> key_procedures;
  std::string pin_procedure;
  TcValidation tc_validation;
  bool ca_certificates_on_card = false;
  bool operator_pin_required = false;
};

// One entry of client.ra-key-generation, e.g. RSA:2048* -> {RSA, "2048", default}.
struct RaKeyChoice {
  std::string algorithm;  // RSA | EC | DSA
  std::string parameter;  // bits, or curve name
  bool is_default = false;
  std::string to_string() const;  // "RSA:2048" (without the star)
};
// Parses the exact syntax "RSA:2048*, RSA:3072, EC:secp256r1, DSA:1024".
Result<std::vector<RaKeyChoice>> parse_ra_key_generation(const std::string& text);

// The mail relay the CM host sends through (e-mail verification codes, PIN-mailer notices):
// plain SMTP, no authentication; cm.json "smtp": {"host", "port", "from"}. An empty host means
// no relay: anything that needs mail fails with an error saying so.
struct SmtpRelay {
  std::string host = "127.0.0.1";
  int port = 25;
  std::string from = "persoflow-cm@localhost";  // envelope sender and From: header
  int timeout_seconds = 30;
};

struct CmConfig {
  int version = 1;
  // Paths are relative to the CM directory unless absolute.
  std::string ca_chain = "ca/ca.pem";           // CA certificate first, then its issuers
  // Encrypted PKCS#8 PEM, or a key in a PKCS#11 token: a "pkcs11:token=...;object=..." URI.
  std::string ca_key = "ca/ca-key.pem";
  std::string ca_key_passphrase_file = "ca/ca-key.pass";
  std::string ca_pkcs11_module;  // the token's PKCS#11 module (pkcs11: keys only)
  std::string ca_pin_file;       // first line: the token's user PIN (pkcs11: keys only)
  bool ca_key_in_token() const { return ca_key.rfind("pkcs11:", 0) == 0; }
  std::string archive_certificate = "archive/archive.pem";
  std::string archive_key = "archive/archive-key.pem";  // encrypted PKCS#8 PEM
  std::string archive_key_passphrase_file = "archive/archive-key.pass";
  std::string tls_certificate = "tls/tls.pem";  // TLS server certificate, then the CA
  std::string tls_key = "tls/tls-key.pem";      // unencrypted PEM, mode 0600
  std::string database = "cm.db";
  // Base of the URLs put into issued certificates: the CRL distribution point is
  // public_base_url + "/crl". The port is only known at serve time, so it is configured here.
  std::string public_base_url = "https://127.0.0.1:8443";
  std::string listen = "127.0.0.1:8443";  // default of `cm serve --listen`
  int crl_validity_hours = 24;
  SmtpRelay smtp;
  std::string default_procedure = "softtoken";  // certificate procedure for /.well-known/cmp
  std::string ra_key_generation;  // client.ra-key-generation, exact syntax
  std::vector<CertificateProcedure> certificate_procedures;
  std::vector<KeyProcedure> key_procedures;
  std::vector<PinProcedure> pin_procedures;
  std::vector<TokenProcedure> token_procedures;

  const CertificateProcedure* certificate_procedure(const std::string& name) const;
  const KeyProcedure* key_procedure(const std::string& name) const;
  const PinProcedure* pin_procedure(const std::string& name) const;
  const TokenProcedure* token_procedure(const std::string& name) const;
  std::string crl_url() const { return public_base_url + "/crl"; }
};

// What `cm init` writes: procedures covering every path of the RA tasks.
CmConfig default_config();

// Reads and checks DIR/cm.json: unknown procedure references, bad key-algorithm rules, bad
// ra-key-generation syntax, unknown key usage names are each one clear error naming the entry.
Result<CmConfig> load_config(const std::string& path);
Status save_config(const CmConfig& config, const std::string& path);
std::string config_to_json(const CmConfig& config, int indent = 2);
Result<CmConfig> config_from_json(const std::string& text);

}  // namespace persoflow::cmhost
