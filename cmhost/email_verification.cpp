// E-mail verification of certificate requests (reissue_cm.hpp): the gate in front of issuance,
// the code mailed over SMTP, its confirmation by `persoflow cm verify`, and the status query that
// issues the certificate once confirmed.
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <ctime>
#include <nlohmann/json.hpp>

#include "persoflow/cmhost/reissue_cm.hpp"
#include "relay_mail.hpp"
#include "reissue_genm.hpp"
#include "persoflow/protocol/base64.hpp"
#include "persoflow/protocol/smtp_client.hpp"

namespace persoflow::cmhost {
namespace {

using nlohmann::json;
using storage::EmailVerificationRecord;

constexpr int kCodeDigits = 8;
// Wrong codes tolerated for one request named by its transaction before it is locked.
constexpr int kMaxFailedAttempts = 5;

std::int64_t now_seconds() { return static_cast<std::int64_t>(std::time(nullptr)); }

std::string hex(const unsigned char* data, std::size_t size) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < size; ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 15];
  }
  return out;
}

std::string code_digest(const std::string& transaction_id, const std::string& code) {
  const std::string input = transaction_id + ":" + code;
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  return hex(digest, sizeof digest);
}

Result<std::string> new_code() {
  std::string code;
  while (code.size() < kCodeDigits) {
    unsigned char byte = 0;
    if (RAND_bytes(&byte, 1) != 1) return make_status(Errc::kInternal, "no random bytes");
    if (byte >= 250) continue;  // 250 = 25 * 10: keep the digits uniform
    code += static_cast<char>('0' + byte % 10);
  }
  return code;
}

std::string utc_text(std::int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%d %H:%M UTC", &tm);
  return buffer;
}

// The subject's emailAddress, else the rfc822Name of the certificate being replaced.
std::string email_of(const X509_NAME* subject, const X509* old_certificate) {
  int index = subject ? X509_NAME_get_index_by_NID(subject, NID_pkcs9_emailAddress, -1) : -1;
  if (index >= 0) {
    const ASN1_STRING* value =
        X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
    return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                       static_cast<std::size_t>(ASN1_STRING_length(value)));
  }
  if (!old_certificate) return {};
  std::string found;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(old_certificate, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && found.empty(); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type == GEN_EMAIL) {
      found.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(name->d.rfc822Name)),
                   static_cast<std::size_t>(ASN1_STRING_length(name->d.rfc822Name)));
    }
  }
  GENERAL_NAMES_free(names);
  return found;
}

Result<std::string> name_der(const X509_NAME* name) {
  unsigned char* der = nullptr;
  int len = i2d_X509_NAME(name, &der);
  if (len <= 0) return openssl_failure("encoding the subject");
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

Status mail_code(CmHost& host, const EmailVerificationRecord& record, const std::string& code,
                 const std::string& subject_text) {
  protocol::MailMessage mail;
  mail.to = {record.email};
  mail.subject = "Your certificate verification code";
  mail.body = "A certificate was requested for\n\n    " + subject_text +
              "\n\nunder the procedure '" + record.procedure +
              "'. To confirm that this e-mail address is yours, give this code to the "
              "registration officer:\n\n    " +
              code + "\n\nThe code is valid until " + utc_text(record.expires_at) +
              ". If you did not ask for a certificate, ignore this message; nothing will be "
              "issued.\n";
  return send_through_relay(host, std::move(mail));
}

Result<IssueRequest> issue_request_of(CmHost& host, const EmailVerificationRecord& record) {
  IssueRequest request;
  request.procedure = record.procedure;
  request.requester = record.requester;
  request.transaction_id = record.transaction_id;
  request.idempotency_key = record.idempotency_key;
  request.confirmed = true;  // answered in a genp: nothing confirms it later
  const auto* p = reinterpret_cast<const unsigned char*>(record.subject_der.data());
  request.subject.reset(d2i_X509_NAME(nullptr, &p, static_cast<long>(record.subject_der.size())));
  p = reinterpret_cast<const unsigned char*>(record.public_key_der.data());
  request.public_key.reset(
      d2i_PUBKEY(nullptr, &p, static_cast<long>(record.public_key_der.size())));
  if (!request.subject || !request.public_key) {
    openssl_errors();
    return make_status(Errc::kCorrupt, "the waiting request of transaction " +
                                           record.transaction_id + " is damaged in the database");
  }
  if (!record.old_serial_hex.empty()) {
    auto old = host.certificate(record.old_serial_hex);
    if (!old) {
      return make_status(Errc::kNotFound,
                         "the certificate " + record.old_serial_hex + " to update is unknown");
    }
    PF_ASSIGN_OR_RETURN(request.old_certificate, x509_from_der(old->der));
  }
  return request;
}

json issued_json(const storage::CertRecord& cert) {
  return json{{"status", "issued"},
              {"serial", cert.serial_hex},
              {"cert_id", cert.cert_id},
              {"certificate", protocol::base64_encode(cert.der)}};
}

}  // namespace

using storage::EmailVerificationRecord;

std::string mask_email(const std::string& email) {
  const auto at = email.rfind('@');
  if (at == std::string::npos || at == 0) return "***";
  const std::string local = email.substr(0, at);
  std::string masked(1, local[0]);
  if (local.size() > 2) masked += std::string(local.size() - 2, '*');
  if (local.size() > 1) masked += local.back();
  return masked + email.substr(at);
}

Result<VerificationGate> gate_certificate_request(CmHost& host,
                                                  const CertificateProcedure& procedure,
                                                  const std::string& transaction_id,
                                                  const IssueRequest& request) {
  PF_ASSIGN_OR_RETURN(auto existing, host.store().email_verification(transaction_id));
  const std::string check_after =
      "; ask again after " + std::to_string(procedure.verification_check_after) + " s";
  if (existing) {
    const auto& r = *existing;
    if (r.confirmed_at != 0) return VerificationGate{true, {}};
    if (now_seconds() >= r.expires_at) {
      return make_status(Errc::kRejected, "the e-mail verification of transaction " +
                                              transaction_id + " expired at " +
                                              utc_text(r.expires_at) + "; request again");
    }
    return VerificationGate{false, "waiting for the code mailed to " + mask_email(r.email) +
                                       " to be confirmed" + check_after};
  }
  // Check the request against the procedure first: a request that would be refused gets its
  // refusal now, not after the subject went to the trouble of confirming a code.
  PF_RETURN_IF_ERROR(
      host.check_request(procedure, request.subject.get(), request.public_key.get(),
                         request.key_usage));
  EmailVerificationRecord record;
  record.transaction_id = transaction_id;
  record.email = email_of(request.subject.get(), request.old_certificate.get());
  if (record.email.empty()) {
    return make_status(Errc::kRejected,
                       "procedure '" + procedure.name +
                           "' verifies the subject's e-mail address, but the request's subject "
                           "has no emailAddress");
  }
  PF_RETURN_IF_ERROR(protocol::check_mail_address(record.email)
                         .with_context("procedure '" + procedure.name + "'"));
  PF_ASSIGN_OR_RETURN(std::string code, new_code());
  record.code_digest = code_digest(transaction_id, code);
  record.procedure = procedure.name;
  record.requester = request.requester;
  record.idempotency_key = request.idempotency_key;
  PF_ASSIGN_OR_RETURN(record.subject_der, name_der(request.subject.get()));
  PF_ASSIGN_OR_RETURN(record.public_key_der, public_key_der(request.public_key.get()));
  if (request.old_certificate) record.old_serial_hex = serial_hex(request.old_certificate.get());
  record.created_at = now_seconds();
  record.expires_at = record.created_at + std::int64_t{60} * procedure.verification_minutes;
  // Mailed inside the database transaction of the request: when the CM host fails before the
  // commit the client sends the request again and gets a new code; the first one is then void.
  Status mailed = mail_code(host, record, code, name_to_string(request.subject.get()));
  if (mailed.is_ok()) record.mailed_at = now_seconds();
  PF_RETURN_IF_ERROR(host.store().insert_email_verification(record));
  PF_RETURN_IF_ERROR(host.audit(request.requester, "email-verification",
                                "transaction " + transaction_id + ": code " +
                                    (mailed.is_ok() ? "mailed" : "not mailed yet") + " to " +
                                    record.email + " for " +
                                    name_to_string(request.subject.get())));
  if (!mailed.is_ok()) {
    // Kept waiting: the code is not lost with the mail; a status query sends a new one.
    return VerificationGate{false, "the verification code could not be mailed to " +
                                       mask_email(record.email) + " (" + mailed.message() +
                                       "); it is sent again when the client asks" + check_after};
  }
  return VerificationGate{false, "a verification code was mailed to " + mask_email(record.email) +
                                     "; confirm it with 'persoflow cm verify --code CODE'" +
                                     check_after};
}

Result<ConfirmedVerification> confirm_email_code(CmHost& host, const std::string& code,
                                                 const std::string& actor,
                                                 const std::optional<std::string>& transaction_id) {
  if (code.size() != kCodeDigits ||
      code.find_first_not_of("0123456789") != std::string::npos) {
    return make_status(Errc::kInvalidArgument,
                       "a verification code is " + std::to_string(kCodeDigits) + " digits");
  }
  ConfirmedVerification confirmed;
  Status status = host.store().atomically([&]() -> Status {
    PF_ASSIGN_OR_RETURN(auto open, host.store().open_email_verifications(now_seconds()));
    for (auto& r : open) {
      if (transaction_id && r.transaction_id != *transaction_id) continue;
      if (r.failed_attempts >= kMaxFailedAttempts) {
        if (transaction_id) {
          return make_status(Errc::kPermissionDenied,
                             "transaction " + r.transaction_id + " is locked after " +
                                 std::to_string(kMaxFailedAttempts) +
                                 " wrong codes; the request must be made again");
        }
        continue;
      }
      if (r.code_digest != code_digest(r.transaction_id, code)) {
        if (transaction_id) {
          ++r.failed_attempts;
          PF_RETURN_IF_ERROR(host.store().update_email_verification(r));
          PF_RETURN_IF_ERROR(host.audit(actor, "email-verification-failed",
                                        "transaction " + r.transaction_id + ": wrong code (" +
                                            std::to_string(r.failed_attempts) + ")"));
          // The failed attempt is counted (committed); the caller still gets the refusal.
          confirmed.transaction_id.clear();
          return Status::ok();
        }
        continue;
      }
      r.confirmed_at = now_seconds();
      PF_RETURN_IF_ERROR(host.store().update_email_verification(r));
      PF_RETURN_IF_ERROR(host.audit(actor, "email-verified",
                                    "transaction " + r.transaction_id + ": " + r.email));
      confirmed = {r.transaction_id, r.email, r.procedure};
      return Status::ok();
    }
    return Status::ok();
  });
  PF_RETURN_IF_ERROR(status);
  if (confirmed.transaction_id.empty()) {
    return make_status(Errc::kNotFound,
                       "no request waiting for e-mail verification matches this code (wrong, "
                       "already used or expired)");
  }
  return confirmed;
}

// persoflowEmailVerification: {"transaction_id": hex} -> {"status": "waiting" | "issued" |
// "expired", ...}. Issues the certificate once the code is confirmed.
Result<std::string> email_verification_status(CmHost& host, const Officer& officer,
                                              const json& request) {
  if (!officer.has_role(kRoleIssue)) {
    return make_status(Errc::kPermissionDenied,
                       "officer '" + officer.name + "' lacks the role 'issue' (Issue certificate)");
  }
  if (!request.contains("transaction_id") || !request.at("transaction_id").is_string()) {
    return make_status(Errc::kInvalidArgument, "the request names no transaction_id");
  }
  // transactionIDs are kept in upper-case hex, as the CMP service prints them.
  std::string tid = request.at("transaction_id").get<std::string>();
  for (auto& c : tid) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  PF_ASSIGN_OR_RETURN(VerificationPoll poll, poll_email_verification(host, tid));
  EmailVerificationRecord& record = poll.record;
  if (!record.issued_serial.empty()) {
    auto cert = host.certificate(record.issued_serial);
    if (!cert) return make_status(Errc::kCorrupt, "issued certificate missing");
    return issued_json(*cert).dump();
  }
  if (poll.state == VerificationPoll::State::kConfirmed) {
    PF_ASSIGN_OR_RETURN(IssueRequest issue, issue_request_of(host, record));
    PF_ASSIGN_OR_RETURN(IssuedCertificate issued, host.issue(std::move(issue)));
    record.issued_serial = issued.serial_hex;
    PF_RETURN_IF_ERROR(host.store().update_email_verification(record));
    auto cert = host.certificate(record.issued_serial);
    if (!cert) return make_status(Errc::kCorrupt, "issued certificate missing");
    return issued_json(*cert).dump();
  }
  if (poll.state == VerificationPoll::State::kExpired) {
    return json{{"status", "expired"}, {"expired_at", record.expires_at}}.dump();
  }
  return json{{"status", "waiting"},
              {"email", mask_email(record.email)},
              {"mailed", record.mailed_at != 0},
              {"expires_at", record.expires_at},
              {"check_after", poll.check_after}}
      .dump();
}

Result<VerificationPoll> poll_email_verification(CmHost& host, const std::string& transaction_id) {
  PF_ASSIGN_OR_RETURN(auto found, host.store().email_verification(transaction_id));
  if (!found) {
    return make_status(Errc::kNotFound, "no request of transaction " + transaction_id +
                                            " waits for e-mail verification");
  }
  VerificationPoll poll;
  poll.record = std::move(*found);
  EmailVerificationRecord& record = poll.record;
  const CertificateProcedure* procedure = host.procedure(record.procedure);
  if (procedure) poll.check_after = procedure->verification_check_after;
  if (record.confirmed_at != 0) {
    poll.state = VerificationPoll::State::kConfirmed;
    return poll;
  }
  if (now_seconds() >= record.expires_at) {
    poll.state = VerificationPoll::State::kExpired;
    return poll;
  }
  if (record.mailed_at == 0) {
    // The first mail failed: a new code replaces the one nobody received.
    PF_ASSIGN_OR_RETURN(std::string code, new_code());
    X509NamePtr subject;
    const auto* p = reinterpret_cast<const unsigned char*>(record.subject_der.data());
    subject.reset(d2i_X509_NAME(nullptr, &p, static_cast<long>(record.subject_der.size())));
    Status mailed = mail_code(host, record, code, subject ? name_to_string(subject.get()) : "");
    if (mailed.is_ok()) {
      record.code_digest = code_digest(transaction_id, code);
      record.mailed_at = now_seconds();
      PF_RETURN_IF_ERROR(host.store().update_email_verification(record));
    }
  }
  return poll;
}

}  // namespace persoflow::cmhost
