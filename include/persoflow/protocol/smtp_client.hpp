// A small synchronous SMTP client (RFC 5321) on Boost.Asio for the CM host's outgoing mail: the
// one-time codes of e-mail verification and the PIN-mailer notices. It speaks EHLO (HELO when the
// server does not know EHLO), MAIL FROM, RCPT TO, DATA and QUIT over plain TCP to a configured
// relay; the message is a text/plain UTF-8 mail with CRLF line ends and dot-stuffing. Every step
// has a deadline; a refusal names the command and quotes the server's reply.
//
// Not thread-safe: one client per thread. Each send() opens and closes its own connection, so a
// client may be kept for a long time without holding a socket.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "persoflow/common/status.hpp"

namespace persoflow::protocol {

struct SmtpClientOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 25;
  std::string helo_name = "persoflow.localdomain";  // our name in EHLO/HELO
  std::chrono::milliseconds timeout{30000};         // per step (connect, each reply, DATA)
};

struct MailMessage {
  std::string from;             // envelope sender and From: header, e.g. "ra@example.org"
  std::vector<std::string> to;  // envelope recipients and To: header
  std::string subject;          // UTF-8; one line
  std::string body;             // UTF-8 text; LF or CRLF line ends
};

// The message as it goes after DATA, before dot-stuffing: headers (From, To, Subject, Date,
// Message-ID, MIME-Version, Content-Type text/plain; charset=utf-8, 8bit), a blank line, the body
// with CRLF line ends. A non-ASCII subject is encoded as an RFC 2047 word.
Result<std::string> format_mail(const MailMessage& message);

// Dot-stuffing (RFC 5321 §4.5.2): every line starting with '.' gets one more; the text must
// already use CRLF. Appends the terminating "\r\n.\r\n".
std::string dot_stuff(const std::string& crlf_text);

// Whether an address is usable in MAIL FROM / RCPT TO: local@domain, no spaces, no angle
// brackets, no control characters.
Status check_mail_address(const std::string& address);

class SmtpClient {
 public:
  explicit SmtpClient(SmtpClientOptions options);
  const SmtpClientOptions& options() const { return options_; }

  // Sends one message. Errors: kInvalidArgument (a bad address or header), kUnavailable (no
  // connection, connection lost, or a 4xx reply: try again later), kRejected (a 5xx reply),
  // kTimeout (the server did not answer within the timeout), kCorrupt (a reply that is not SMTP).
  Status send(const MailMessage& message);

 private:
  SmtpClientOptions options_;
};

}  // namespace persoflow::protocol
