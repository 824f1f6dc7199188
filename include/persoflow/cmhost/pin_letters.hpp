// The CM host's PIN mailer: PIN letters for the secure printer (DESIGN.md task 5).
//
// - An RA queues a *mailer* letter for a token's holder (genm persoflowPinLetterQueue): the PIN
//   is enveloped at once for the key-archive certificate (CMS, the same key that protects archived
//   keys) and only that envelope is stored; the holder gets an e-mail notice that a letter is on
//   its way (no PIN in it).
// - The CM host makes *pre-printed* PIN/PUK letters (`persoflow cm pin-letters preprint`), with
//   a PIN, or a PIN and a PUK for cards with two PINs; an RA binds one to a token by its letter ID
//   (genm persoflowPinLetterBind) and receives its PIN (and PUK) enveloped for the officer; the
//   letter's envelope is dropped then, so it binds only once.
// - `print` renders a letter (text or PDF) exactly once: a second print is refused. A mailer
//   letter's envelope is dropped when it is printed.
// Each step is one database transaction with its audit record (never the PIN). Thread-safe as
// the store is.
#pragma once

#include <openssl/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/cmhost/cm_host.hpp"
#include "persoflow/common/status.hpp"
#include "persoflow/storage/cm_store.hpp"

namespace persoflow::cmhost {

// What queue() did: the letter, and whether its e-mail notice reached the relay.
struct QueuedPinLetter {
  storage::PinLetterRecord letter;
  bool replayed = false;  // queued before under the same idempotency key; no second notice
  Status notice;          // ok: the relay accepted the notice; otherwise why it was not sent
};

class PinLetters {
 public:
  // Loads the key-archive certificate and key of the host's directory.
  static Result<std::unique_ptr<PinLetters>> open(CmHost& host);
  ~PinLetters();

  // A mailer letter, then its e-mail notice to `address` through the SMTP relay (cm.json
  // `smtp`): a letter with the PIN is on its way; the notice never carries the PIN. The letter
  // stays queued when the notice cannot be sent (audited; the letter is what matters). The same
  // idempotency key again: the letter queued the first time, no second notice.
  Result<QueuedPinLetter> queue(const std::string& holder, const std::string& address,
                                         const std::string& token, std::string_view pin,
                                         const std::string& idempotency_key,
                                         const std::string& actor);

  // `count` pre-printed letters, each with a PIN of `length` digits and, when puk_length > 0, a
  // PUK of puk_length digits; returns their ids.
  Result<std::vector<std::string>> preprint(int count, int length, int puk_length,
                                            const std::string& actor);

  Result<std::vector<storage::PinLetterRecord>> list();

  // The letter rendered ("pdf" or "text"); marks it printed. Printed before: kRejected.
  Result<std::string> print(const std::string& letter_id, const std::string& format,
                            const std::string& actor);

  // Binds a pre-printed letter to a token with one PIN (with_puk false) or with a PIN and a PUK
  // (with_puk true): its PIN, or "PIN\nPUK", as a CMS envelope for `recipient`. A letter bound
  // before, a mailer letter, a letter whose secrets do not fit the token (a PIN-only letter for
  // a card with two PINs, or the reverse), an unknown id: kRejected / kNotFound naming it, the
  // letter left as it was. With `defer`, the binding (the letter's state and its audit record)
  // is appended there for the caller to commit together with its answer, so that a repeated
  // request finds either both or neither; without, it is committed at once.
  Result<std::string> bind(const std::string& letter_id, const X509* recipient, bool with_puk,
                           const std::string& idempotency_key, const std::string& actor,
                           DeferredWrites* defer = nullptr);

  struct Impl;

 private:
  explicit PinLetters(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace persoflow::cmhost
