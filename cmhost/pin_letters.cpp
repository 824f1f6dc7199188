// The CM host's PIN letters (pin_letters.hpp).
#include "persoflow/cmhost/pin_letters.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>

#include "persoflow/devices/pin_delivery.hpp"
#include "persoflow/protocol/ossl.hpp"
#include "relay_mail.hpp"

namespace persoflow::cmhost {

namespace fs = std::filesystem;
namespace pr = persoflow::protocol;
using storage::PinLetterRecord;

struct PinLetters::Impl {
  CmHost* host = nullptr;
  pr::X509Ptr archive_cert;
  pr::EvpPkeyPtr archive_key;

  Result<std::string> open(const std::string& envelope) {
    return open_envelope(envelope, archive_cert.get(), archive_key.get());
  }
};

namespace {

std::string in_dir(const CmHost& host, const std::string& p) {
  return fs::path(p).is_absolute() ? p : (fs::path(host.dir()) / p).string();
}

Result<std::string> first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return make_status(Errc::kNotFound, "cannot read " + path);
  return line;
}

// "PL-" and 10 characters that do not look alike on paper.
Result<std::string> new_letter_id() {
  devices::PinRules rules;
  rules.length = 10;
  rules.alphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ";
  PF_ASSIGN_OR_RETURN(devices::Secret id, devices::generate_pin(rules));
  return "PL-" + std::string(id.view());
}

std::string iso_time(std::int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// The holder's notice: which letter to expect and what to do when it does not come. The PIN is
// only ever on the printed letter.
Status send_notice(const CmHost& host, const PinLetterRecord& letter) {
  protocol::MailMessage mail;
  mail.to = {letter.address};
  mail.subject = "Your PIN letter " + letter.letter_id + " is on its way";
  mail.body = "A PIN letter was prepared for\n\n    " + letter.holder + "\n\nfor " +
              (letter.token.empty() ? std::string("your token") : letter.token) +
              ". It is printed on the secure printer and delivered to you; its reference is " +
              letter.letter_id +
              ".\n\nThe PIN is only in that letter: nobody will ask you for it by e-mail or "
              "telephone. If the letter does not arrive, or arrives opened, tell your "
              "registration officer and quote the reference.\n";
  return send_through_relay(host, std::move(mail));
}

}  // namespace

PinLetters::PinLetters(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PinLetters::~PinLetters() = default;

Result<std::unique_ptr<PinLetters>> PinLetters::open(CmHost& host) {
  auto impl = std::make_unique<Impl>();
  impl->host = &host;
  const CmConfig& c = host.config();
  PF_ASSIGN_OR_RETURN(auto certs, pr::read_pem_certs(in_dir(host, c.archive_certificate)));
  if (certs.empty()) return make_status(Errc::kNotFound, "no key-archive certificate");
  impl->archive_cert = std::move(certs.front());
  PF_ASSIGN_OR_RETURN(std::string pass, first_line(in_dir(host, c.archive_key_passphrase_file)));
  PF_ASSIGN_OR_RETURN(impl->archive_key, pr::read_pem_key(in_dir(host, c.archive_key), pass));
  OPENSSL_cleanse(pass.data(), pass.size());
  return std::unique_ptr<PinLetters>(new PinLetters(std::move(impl)));
}

Result<QueuedPinLetter> PinLetters::queue(const std::string& holder, const std::string& address,
                                          const std::string& token, std::string_view pin,
                                          const std::string& idempotency_key,
                                          const std::string& actor) {
  storage::CmStore& store = impl_->host->store();
  if (!idempotency_key.empty()) {
    PF_ASSIGN_OR_RETURN(auto earlier, store.pin_letter_by_idempotency_key(idempotency_key));
    if (earlier) return QueuedPinLetter{*earlier, true, Status::ok()};
  }
  if (pin.empty()) return make_status(Errc::kInvalidArgument, "the PIN letter has no PIN");
  const auto at = address.find('@');
  if (at == std::string::npos || at == 0 || at + 1 == address.size()) {
    return make_status(Errc::kInvalidArgument, "'" + address + "' is not an e-mail address");
  }
  PinLetterRecord r;
  PF_ASSIGN_OR_RETURN(r.letter_id, new_letter_id());
  r.kind = "mailer";
  r.state = "queued";
  r.holder = holder;
  r.address = address;
  r.token = token;
  PF_ASSIGN_OR_RETURN(r.envelope, envelope_for(impl_->archive_cert.get(), pin));
  r.idempotency_key = idempotency_key;
  r.has_puk = pin.find('\n') != std::string_view::npos;  // a card's PIN and PUK
  r.created_at = static_cast<std::int64_t>(std::time(nullptr));
  PF_RETURN_IF_ERROR(store.atomically([&]() -> Status {
    PF_RETURN_IF_ERROR(store.insert_pin_letter(r));
    return impl_->host->audit(actor, "pin-letter-queue",
                              r.letter_id + " for " + holder + " <" + address + ">");
  }));
  // Mailed after the commit: a notice must never announce a letter that does not exist.
  QueuedPinLetter queued{r, false, send_notice(*impl_->host, r)};
  const std::string outcome = queued.notice.is_ok()
                                  ? ": notice mailed to " + address
                                  : ": notice not mailed to " + address + " (" +
                                        queued.notice.message() + ")";
  // The letter is committed whatever happens here: a failed audit append is reported, and the
  // RA's resend with the same idempotency key gets the letter without a second notice.
  PF_RETURN_IF_ERROR(impl_->host->audit(actor, "pin-letter-notice", r.letter_id + outcome));
  return queued;
}

Result<std::vector<std::string>> PinLetters::preprint(int count, int length, int puk_length,
                                                      const std::string& actor) {
  if (count < 1 || count > 10000) {
    return make_status(Errc::kInvalidArgument, "--count must be 1..10000");
  }
  storage::CmStore& store = impl_->host->store();
  std::vector<std::string> ids;
  devices::PinRules rules;
  rules.length = length;
  devices::PinRules puk_rules;
  puk_rules.length = puk_length;
  PF_RETURN_IF_ERROR(store.atomically([&]() -> Status {
    for (int i = 0; i < count; ++i) {
      PinLetterRecord r;
      PF_ASSIGN_OR_RETURN(r.letter_id, new_letter_id());
      r.kind = "preprinted";
      r.state = "queued";
      r.token = "PIN/PUK letter";
      PF_ASSIGN_OR_RETURN(devices::Secret pin, devices::generate_pin(rules));
      if (puk_length > 0) {
        // Printed as the letter's second line, as a mailer letter's PUK (render_pin_letter_*).
        PF_ASSIGN_OR_RETURN(devices::Secret puk, devices::generate_pin(puk_rules));
        std::string both = std::string(pin.view()) + "\n" + std::string(puk.view());
        auto sealed = envelope_for(impl_->archive_cert.get(), both);
        OPENSSL_cleanse(both.data(), both.size());
        if (!sealed) return sealed.status();
        r.envelope = std::move(*sealed);
        r.has_puk = true;
      } else {
        PF_ASSIGN_OR_RETURN(r.envelope, envelope_for(impl_->archive_cert.get(), pin.view()));
      }
      r.created_at = static_cast<std::int64_t>(std::time(nullptr));
      PF_RETURN_IF_ERROR(store.insert_pin_letter(r));
      ids.push_back(r.letter_id);
    }
    return impl_->host->audit(actor, "pin-letter-preprint",
                              std::to_string(count) + (puk_length > 0 ? " pre-printed PIN/PUK letters"
                                                                      : " pre-printed PIN letters"));
  }));
  return ids;
}

Result<std::vector<PinLetterRecord>> PinLetters::list() {
  PF_ASSIGN_OR_RETURN(auto letters, impl_->host->store().pin_letters());
  for (auto& l : letters) l.envelope.clear();  // nobody outside needs the envelope
  return letters;
}

Result<std::string> PinLetters::print(const std::string& letter_id, const std::string& format,
                                      const std::string& actor) {
  if (format != "pdf" && format != "text") {
    return make_status(Errc::kInvalidArgument, "the format is pdf or text, not '" + format + "'");
  }
  storage::CmStore& store = impl_->host->store();
  std::string rendered;
  PF_RETURN_IF_ERROR(store.atomically([&]() -> Status {
    PF_ASSIGN_OR_RETURN(auto letter, store.pin_letter(letter_id));
    if (!letter) return make_status(Errc::kNotFound, "no PIN letter " + letter_id);
    if (letter->state != "queued" || letter->envelope.empty()) {
      return make_status(Errc::kRejected,
                         "PIN letter " + letter_id + " was printed already (at " +
                             iso_time(letter->printed_at) + "); it is printed only once");
    }
    PF_ASSIGN_OR_RETURN(std::string pin, impl_->open(letter->envelope));
    devices::PinLetter l{letter->letter_id, letter->holder, letter->address, letter->token,
                         iso_time(letter->created_at)};
    rendered = format == "pdf" ? devices::render_pin_letter_pdf(l, pin)
                               : devices::render_pin_letter_text(l, pin);
    OPENSSL_cleanse(pin.data(), pin.size());
    // A mailer letter's PIN is on paper now; a pre-printed letter keeps it until it is bound.
    PF_RETURN_IF_ERROR(store.update_pin_letter(letter_id, "queued", "printed",
                                               letter->kind == "mailer", ""));
    return impl_->host->audit(actor, "pin-letter-print", letter_id);
  }));
  return rendered;
}

Result<std::string> PinLetters::bind(const std::string& letter_id, const X509* recipient,
                                     bool with_puk, const std::string& idempotency_key,
                                     const std::string& actor, DeferredWrites* defer) {
  storage::CmStore& store = impl_->host->store();
  std::string envelope;
  std::function<Status()> record_binding;
  PF_RETURN_IF_ERROR(store.atomically([&]() -> Status {
    PF_ASSIGN_OR_RETURN(auto letter, store.pin_letter(letter_id));
    if (!letter) return make_status(Errc::kNotFound, "no PIN letter " + letter_id);
    if (letter->kind != "preprinted") {
      return make_status(Errc::kRejected, "PIN letter " + letter_id +
                                              " is a mailer letter, not a pre-printed one");
    }
    if (letter->state == "bound" || letter->envelope.empty()) {
      return make_status(Errc::kRejected,
                         "PIN letter " + letter_id + " is bound to another token already");
    }
    if (with_puk && !letter->has_puk) {
      return make_status(Errc::kRejected,
                         "PIN letter " + letter_id +
                             " carries a PIN only; a card with two PINs (PIN and PUK) needs a "
                             "PIN/PUK letter (persoflow cm pin-letters preprint --puk-length N)");
    }
    if (!with_puk && letter->has_puk) {
      return make_status(Errc::kRejected, "PIN letter " + letter_id +
                                              " carries a PIN and a PUK; a token with one PIN "
                                              "needs a PIN-only letter");
    }
    PF_ASSIGN_OR_RETURN(std::string secrets, impl_->open(letter->envelope));
    auto sealed = envelope_for(recipient, secrets);
    OPENSSL_cleanse(secrets.data(), secrets.size());
    if (!sealed) return sealed.status();
    envelope = std::move(*sealed);
    // The state it was read in: a concurrent binding of the same letter makes this one fail.
    record_binding = [&store, host = impl_->host, letter_id, from = letter->state,
                      idempotency_key, actor]() -> Status {
      PF_RETURN_IF_ERROR(store.update_pin_letter(letter_id, from, "bound", true, idempotency_key));
      return host->audit(actor, "pin-letter-bind", letter_id);
    };
    return defer ? Status::ok() : record_binding();
  }));
  if (defer) defer->writes.push_back(std::move(record_binding));
  return envelope;
}

}  // namespace persoflow::cmhost
