// Synchronous SMTP client; see smtp_client.hpp. Each network step is an asynchronous Asio
// operation run on a private io_context for at most the configured timeout, so a silent server
// ends in kTimeout instead of a hang (Asio's blocking calls have no deadline).
#include "persoflow/protocol/smtp_client.hpp"

#include <utility>  // before Asio (GCC 12 + Boost 1.74)

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <ctime>
#include <istream>
#include <random>

#include "persoflow/protocol/base64.hpp"

namespace persoflow::protocol {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

constexpr std::size_t kMaxReplyBytes = 64 * 1024;

bool is_ascii(const std::string& s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return false;
  }
  return true;
}

bool has_line_break(const std::string& s) {
  return s.find_first_of("\r\n") != std::string::npos;
}

// "Wed, 02 Dec 2026 15:17:29 +0000" (RFC 5322 §3.3), in UTC.
std::string rfc5322_date() {
  static const char* const kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%s, %02d %s %04d %02d:%02d:%02d +0000", kDays[tm.tm_wday],
                tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buffer;
}

std::string random_hex(int bytes) {
  static thread_local std::random_device device;
  std::string out;
  for (int i = 0; i < bytes; ++i) {
    char hex[3];
    std::snprintf(hex, sizeof hex, "%02x", static_cast<unsigned>(device() & 0xff));
    out += hex;
  }
  return out;
}

// Lone LF and lone CR become CRLF; the text ends with CRLF.
std::string to_crlf(const std::string& text) {
  std::string out;
  out.reserve(text.size() + text.size() / 16 + 2);
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\r') {
      out += "\r\n";
      if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
    } else if (c == '\n') {
      out += "\r\n";
    } else {
      out += c;
    }
  }
  if (out.size() < 2 || out.compare(out.size() - 2, 2, "\r\n") != 0) out += "\r\n";
  return out;
}

struct Reply {
  int code = 0;
  std::vector<std::string> lines;  // the text after "NNN-" / "NNN "
  std::string text() const {
    std::string out = std::to_string(code);
    for (std::size_t i = 0; i < lines.size(); ++i) out += (i == 0 ? " " : " / ") + lines[i];
    return out;
  }
};

// One SMTP conversation; every step bounded by the timeout.
class Session {
 public:
  explicit Session(const SmtpClientOptions& options)
      : options_(options),
        where_("SMTP server " + options.host + ":" + std::to_string(options.port)),
        buffer_(kMaxReplyBytes) {}

  Status connect() {
    boost::system::error_code ec;
    tcp::resolver resolver(ioc_);
    auto endpoints = resolver.resolve(options_.host, std::to_string(options_.port), ec);
    if (ec) return make_status(Errc::kUnavailable, "resolving " + where_ + ": " + ec.message());
    ec = run([&](auto handler) {
      asio::async_connect(socket_, endpoints,
                          [handler](const boost::system::error_code& e, const tcp::endpoint&) {
                            handler(e);
                          });
    });
    if (ec == asio::error::timed_out) {
      return make_status(Errc::kTimeout, "connecting to " + where_ + ": no answer within " +
                                             timeout_text());
    }
    if (ec) return make_status(Errc::kUnavailable, "connecting to " + where_ + ": " + ec.message());
    socket_.set_option(tcp::no_delay(true), ec);
    return Status::ok();
  }

  // Reads one (possibly multi-line) reply; `after` names what it answers.
  Result<Reply> read_reply(const std::string& after) {
    Reply reply;
    while (true) {
      boost::system::error_code ec = run([&](auto handler) {
        asio::async_read_until(socket_, buffer_, "\r\n",
                               [handler](const boost::system::error_code& e, std::size_t) {
                                 handler(e);
                               });
      });
      if (ec == asio::error::timed_out) {
        return make_status(Errc::kTimeout, where_ + " did not answer " + after + " within " +
                                               timeout_text());
      }
      if (ec == asio::error::not_found) {
        return make_status(Errc::kCorrupt, where_ + " sent a reply line over " +
                                               std::to_string(kMaxReplyBytes) + " bytes");
      }
      if (ec) {
        return make_status(Errc::kUnavailable,
                           where_ + " closed the connection before answering " + after + " (" +
                               ec.message() + ")");
      }
      std::istream in(&buffer_);
      std::string line;
      std::getline(in, line);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.size() < 3 || !std::isdigit(static_cast<unsigned char>(line[0])) ||
          !std::isdigit(static_cast<unsigned char>(line[1])) ||
          !std::isdigit(static_cast<unsigned char>(line[2])) ||
          (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
        return make_status(Errc::kCorrupt,
                           where_ + " answered " + after + " with a line that is not SMTP: '" +
                               line.substr(0, 80) + "'");
      }
      int code = std::stoi(line.substr(0, 3));
      if (reply.code != 0 && code != reply.code) {
        return make_status(Errc::kCorrupt, where_ + " mixed reply codes " +
                                               std::to_string(reply.code) + " and " +
                                               std::to_string(code) + " in one reply");
      }
      reply.code = code;
      reply.lines.push_back(line.size() > 4 ? line.substr(4) : std::string());
      if (line.size() == 3 || line[3] == ' ') return reply;
    }
  }

  Status write(const std::string& data, const std::string& what) {
    boost::system::error_code ec = run([&](auto handler) {
      asio::async_write(socket_, asio::buffer(data),
                        [handler](const boost::system::error_code& e, std::size_t) {
                          handler(e);
                        });
    });
    if (ec == asio::error::timed_out) {
      return make_status(Errc::kTimeout,
                         where_ + " did not accept " + what + " within " + timeout_text());
    }
    if (ec) {
      return make_status(Errc::kUnavailable,
                         "sending " + what + " to " + where_ + ": " + ec.message());
    }
    return Status::ok();
  }

  // Sends a command line and reads its reply, which must have one of the expected codes.
  Result<Reply> command(const std::string& line, std::initializer_list<int> expected) {
    PF_RETURN_IF_ERROR(write(line + "\r\n", line));
    return expect(line, expected);
  }

  Result<Reply> expect(const std::string& what, std::initializer_list<int> expected) {
    PF_ASSIGN_OR_RETURN(Reply reply, read_reply(what));
    for (int code : expected) {
      if (reply.code == code) return reply;
    }
    const Errc errc = reply.code >= 400 && reply.code < 500 ? Errc::kUnavailable
                      : reply.code >= 500                   ? Errc::kRejected
                                                            : Errc::kCorrupt;
    return make_status(errc, where_ + " refused " + what + ": " + reply.text());
  }

  // Best effort: the conversation failed, say goodbye without waiting long.
  void abandon() {
    boost::system::error_code ec;
    if (!socket_.is_open()) return;
    asio::write(socket_, asio::buffer(std::string("QUIT\r\n")), ec);
    socket_.close(ec);
  }

  const std::string& where() const { return where_; }

 private:
  std::string timeout_text() const {
    return std::to_string(options_.timeout.count()) + " ms";
  }

  // Starts an asynchronous operation and runs the io_context until it completes or the timeout
  // passes; on timeout the socket is closed (cancelling the operation) and timed_out returned.
  template <typename Start>
  boost::system::error_code run(Start start) {
    bool done = false;
    boost::system::error_code result;
    start([&done, &result](const boost::system::error_code& ec) {
      result = ec;
      done = true;
    });
    ioc_.restart();
    ioc_.run_for(options_.timeout);
    if (!done) {
      boost::system::error_code ignored;
      socket_.close(ignored);
      ioc_.restart();
      ioc_.run();
      return asio::error::timed_out;
    }
    return result;
  }

  const SmtpClientOptions& options_;
  std::string where_;
  asio::io_context ioc_;
  tcp::socket socket_{ioc_};
  asio::streambuf buffer_;
};

}  // namespace

Status check_mail_address(const std::string& address) {
  auto at = address.rfind('@');
  if (address.empty()) return make_status(Errc::kInvalidArgument, "empty e-mail address");
  if (at == std::string::npos || at == 0 || at + 1 == address.size()) {
    return make_status(Errc::kInvalidArgument,
                       "e-mail address '" + address + "' is not of the form local@domain");
  }
  for (unsigned char c : address) {
    if (c <= 0x20 || c == 0x7f || c == '<' || c == '>' || c == ',') {
      return make_status(Errc::kInvalidArgument,
                         "e-mail address '" + address +
                             "' contains a space, a control character, ',' or angle brackets");
    }
  }
  if (address.size() > 254) {
    return make_status(Errc::kInvalidArgument, "e-mail address longer than 254 characters");
  }
  return Status::ok();
}

Result<std::string> format_mail(const MailMessage& message) {
  PF_RETURN_IF_ERROR(check_mail_address(message.from).with_context("sender"));
  if (message.to.empty()) return make_status(Errc::kInvalidArgument, "a mail needs a recipient");
  std::string to_header;
  for (const auto& to : message.to) {
    PF_RETURN_IF_ERROR(check_mail_address(to).with_context("recipient"));
    to_header += (to_header.empty() ? "" : ", ") + to;
  }
  if (has_line_break(message.subject)) {
    return make_status(Errc::kInvalidArgument, "mail subject contains a line break");
  }
  const std::string subject = is_ascii(message.subject)
                                  ? message.subject
                                  : "=?UTF-8?B?" + base64_encode(message.subject) + "?=";
  const std::string domain = message.from.substr(message.from.rfind('@') + 1);
  std::string out;
  out += "From: " + message.from + "\r\n";
  out += "To: " + to_header + "\r\n";
  out += "Subject: " + subject + "\r\n";
  out += "Date: " + rfc5322_date() + "\r\n";
  out += "Message-ID: <" + random_hex(16) + "@" + domain + ">\r\n";
  out += "MIME-Version: 1.0\r\n";
  out += "Content-Type: text/plain; charset=utf-8\r\n";
  out += std::string("Content-Transfer-Encoding: ") +
         (is_ascii(message.body) ? "7bit" : "8bit") + "\r\n";
  out += "\r\n";
  out += to_crlf(message.body);
  return out;
}

std::string dot_stuff(const std::string& crlf_text) {
  std::string out;
  out.reserve(crlf_text.size() + 8);
  bool line_start = true;
  for (std::size_t i = 0; i < crlf_text.size(); ++i) {
    char c = crlf_text[i];
    if (line_start && c == '.') out += '.';
    out += c;
    line_start = c == '\n' && i > 0 && crlf_text[i - 1] == '\r';
  }
  if (out.size() < 2 || out.compare(out.size() - 2, 2, "\r\n") != 0) out += "\r\n";
  out += ".\r\n";
  return out;
}

SmtpClient::SmtpClient(SmtpClientOptions options) : options_(std::move(options)) {}

Status SmtpClient::send(const MailMessage& message) {
  PF_ASSIGN_OR_RETURN(std::string text, format_mail(message));
  if (options_.timeout.count() <= 0) {
    return make_status(Errc::kInvalidArgument, "SMTP timeout must be positive");
  }
  if (has_line_break(options_.helo_name) || options_.helo_name.empty()) {
    return make_status(Errc::kInvalidArgument, "SMTP HELO name is empty or has a line break");
  }
  Session session(options_);
  PF_RETURN_IF_ERROR(session.connect());
  auto converse = [&]() -> Status {
    PF_ASSIGN_OR_RETURN(Reply greeting, session.expect("the connection", {220}));
    (void)greeting;
    auto ehlo = session.command("EHLO " + options_.helo_name, {250});
    bool eight_bit_mime = false;
    if (!ehlo.is_ok()) {
      // A server from before RFC 1869 answers 500/502 to EHLO: fall back to HELO.
      if (ehlo.status().code() != make_error_code(Errc::kRejected)) return ehlo.status();
      PF_ASSIGN_OR_RETURN(Reply helo, session.command("HELO " + options_.helo_name, {250}));
      (void)helo;
    } else {
      for (const auto& line : ehlo->lines) {
        std::string upper;
        for (char c : line) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (upper == "8BITMIME") eight_bit_mime = true;
      }
    }
    std::string mail_from = "MAIL FROM:<" + message.from + ">";
    if (eight_bit_mime && !is_ascii(text)) mail_from += " BODY=8BITMIME";
    PF_ASSIGN_OR_RETURN(Reply mail, session.command(mail_from, {250}));
    (void)mail;
    for (const auto& to : message.to) {
      PF_ASSIGN_OR_RETURN(Reply rcpt, session.command("RCPT TO:<" + to + ">", {250, 251}));
      (void)rcpt;
    }
    PF_ASSIGN_OR_RETURN(Reply data, session.command("DATA", {354}));
    (void)data;
    PF_RETURN_IF_ERROR(session.write(dot_stuff(text), "the message"));
    PF_ASSIGN_OR_RETURN(Reply accepted, session.expect("the message", {250}));
    (void)accepted;
    // The message is accepted; a failed QUIT changes nothing about that.
    (void)session.command("QUIT", {221});
    return Status::ok();
  };
  Status status = converse();
  if (!status.is_ok()) session.abandon();
  return status;
}

}  // namespace persoflow::protocol
