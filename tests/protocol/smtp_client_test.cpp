// The SMTP client against a real SMTP server (aiosmtpd, tests/support/smtp_sink.hpp), and against
// raw sockets for what a well-behaved server never does (stay silent, answer something else).
#include "persoflow/protocol/smtp_client.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "smtp_sink.hpp"

namespace persoflow::protocol {
namespace {

using testing::SmtpSink;

// A TCP listener on 127.0.0.1 with a kernel-chosen port; closed at the end of the test.
class RawListener {
 public:
  RawListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 4) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error("cannot listen on 127.0.0.1");
    }
    port_ = ntohs(addr.sin_port);
  }
  ~RawListener() {
    if (server_.joinable()) server_.join();
    ::close(fd_);
  }
  std::uint16_t port() const { return port_; }
  // Accepts one connection, writes `greeting`, and closes it after the peer closes its side.
  void answer_once(std::string greeting) {
    server_ = std::thread([this, greeting] {
      int client = ::accept(fd_, nullptr, nullptr);
      if (client < 0) return;
      (void)!::write(client, greeting.data(), greeting.size());
      char buffer[256];
      while (::read(client, buffer, sizeof buffer) > 0) {
      }
      ::close(client);
    });
  }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread server_;
};

SmtpClientOptions options_for(std::uint16_t port) {
  SmtpClientOptions options;
  options.host = "127.0.0.1";
  options.port = port;
  options.timeout = std::chrono::seconds(10);
  return options;
}

MailMessage sample_message() {
  MailMessage m;
  m.from = "ra@example.org";
  m.to = {"carol@example.org"};
  m.subject = "Your verification code";
  m.body = "Hello Carol,\n\nyour code is 123456.\n";
  return m;
}

TEST(DotStuff, DoublesLeadingDotsAndTerminates) {
  EXPECT_EQ(dot_stuff("a\r\n.\r\n.b\r\n..c\r\nd.e\r\n"), "a\r\n..\r\n..b\r\n...c\r\nd.e\r\n.\r\n");
  EXPECT_EQ(dot_stuff(".first"), "..first\r\n.\r\n");
  EXPECT_EQ(dot_stuff(""), "\r\n.\r\n");
}

TEST(FormatMail, HeadersAndCrlfBody) {
  auto text = format_mail(sample_message());
  ASSERT_TRUE(text.is_ok()) << text.status().message();
  EXPECT_NE(text->find("From: ra@example.org\r\n"), std::string::npos);
  EXPECT_NE(text->find("To: carol@example.org\r\n"), std::string::npos);
  EXPECT_NE(text->find("Subject: Your verification code\r\n"), std::string::npos);
  EXPECT_NE(text->find("Message-ID: <"), std::string::npos);
  EXPECT_NE(text->find("\r\n\r\nHello Carol,\r\n\r\nyour code is 123456.\r\n"), std::string::npos);
  EXPECT_EQ(text->find("\n\n"), std::string::npos);  // no bare LF left
}

TEST(FormatMail, RefusesBadAddressesAndHeaderInjection) {
  auto m = sample_message();
  m.to = {"carol"};
  auto r = format_mail(m);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), make_error_code(Errc::kInvalidArgument));
  EXPECT_NE(r.status().message().find("'carol' is not of the form local@domain"),
            std::string::npos);

  m = sample_message();
  m.to = {"carol@example.org>\r\nRCPT TO:<eve@example.org"};
  r = format_mail(m);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("control character"), std::string::npos);

  m = sample_message();
  m.subject = "code\r\nBcc: eve@example.org";
  r = format_mail(m);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().message(), "mail subject contains a line break");

  m = sample_message();
  m.to.clear();
  r = format_mail(m);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().message(), "a mail needs a recipient");
}

TEST(SmtpClient, DeliversToARealServerWithDotStuffing) {
  SmtpSink sink;
  sink.start();
  SmtpClient client(options_for(sink.port()));
  MailMessage m = sample_message();
  m.to = {"carol@example.org", "dave@example.org"};
  m.subject = "Prüfcode für Carol";  // non-ASCII: an RFC 2047 word
  m.body = "line one\n.\n.hidden\n..two dots\nGrüße\n";
  ASSERT_TRUE(client.send(m).is_ok());

  auto mails = sink.wait_for(1);
  ASSERT_EQ(mails.size(), 1u);
  const auto& mail = mails[0];
  EXPECT_EQ(mail.mail_from, "ra@example.org");
  EXPECT_EQ(mail.rcpt_to, (std::vector<std::string>{"carol@example.org", "dave@example.org"}));
  EXPECT_EQ(mail.header("From"), "ra@example.org");
  EXPECT_EQ(mail.header("To"), "carol@example.org, dave@example.org");
  EXPECT_EQ(mail.header("Subject"), "=?UTF-8?B?UHLDvGZjb2RlIGbDvHIgQ2Fyb2w=?=");
  EXPECT_EQ(mail.header("Content-Type"), "text/plain; charset=utf-8");
  // The server removed exactly the dots the client added.
  EXPECT_EQ(mail.body(), "line one\r\n.\r\n.hidden\r\n..two dots\r\nGrüße\r\n");

  // A second message on a new connection.
  ASSERT_TRUE(client.send(sample_message()).is_ok());
  EXPECT_EQ(sink.wait_for(2).size(), 2u);
}

TEST(SmtpClient, PermanentRefusalNamesTheCommandAndQuotesTheServer) {
  SmtpSink sink;
  sink.start();
  SmtpClient client(options_for(sink.port()));
  MailMessage m = sample_message();
  m.to = {"nobody@refuse.invalid"};
  Status status = client.send(m);
  ASSERT_FALSE(status.is_ok());
  EXPECT_EQ(status.code(), make_error_code(Errc::kRejected));
  EXPECT_EQ(status.message(), "SMTP server 127.0.0.1:" + std::to_string(sink.port()) +
                                  " refused RCPT TO:<nobody@refuse.invalid>: 550 5.1.1 mailbox "
                                  "unavailable");
  EXPECT_TRUE(sink.messages().empty());
}

TEST(SmtpClient, TemporaryRefusalIsUnavailable) {
  SmtpSink sink;
  sink.start();
  SmtpClient client(options_for(sink.port()));
  MailMessage m = sample_message();
  m.to = {"carol@example.org", "busy@later.invalid"};
  Status status = client.send(m);
  ASSERT_FALSE(status.is_ok());
  EXPECT_EQ(status.code(), make_error_code(Errc::kUnavailable));
  EXPECT_NE(status.message().find("refused RCPT TO:<busy@later.invalid>: 451 4.3.0"),
            std::string::npos)
      << status.message();
  EXPECT_TRUE(sink.messages().empty());
}

TEST(SmtpClient, NoServerIsUnavailable) {
  std::uint16_t port;
  {
    RawListener closed;  // a port that was free a moment ago and is closed now
    port = closed.port();
  }
  SmtpClient client(options_for(port));
  Status status = client.send(sample_message());
  ASSERT_FALSE(status.is_ok());
  EXPECT_EQ(status.code(), make_error_code(Errc::kUnavailable));
  EXPECT_NE(status.message().find("connecting to SMTP server 127.0.0.1:" + std::to_string(port)),
            std::string::npos)
      << status.message();
}

TEST(SmtpClient, SilentServerTimesOut) {
  RawListener silent;  // accepts in the kernel's backlog, never greets
  auto options = options_for(silent.port());
  options.timeout = std::chrono::milliseconds(300);
  SmtpClient client(options);
  Status status = client.send(sample_message());
  ASSERT_FALSE(status.is_ok());
  EXPECT_EQ(status.code(), make_error_code(Errc::kTimeout));
  EXPECT_EQ(status.message(), "SMTP server 127.0.0.1:" + std::to_string(silent.port()) +
                                  " did not answer the connection within 300 ms");
}

TEST(SmtpClient, NonSmtpAnswerIsCorrupt) {
  RawListener http;
  http.answer_once("HTTP/1.1 400 Bad Request\r\n\r\n");
  SmtpClient client(options_for(http.port()));
  Status status = client.send(sample_message());
  ASSERT_FALSE(status.is_ok());
  EXPECT_EQ(status.code(), make_error_code(Errc::kCorrupt));
  EXPECT_NE(status.message().find("with a line that is not SMTP: 'HTTP/1.1 400 Bad Request'"),
            std::string::npos)
      << status.message();
}

TEST(SmtpClient, ServerRefusingAtGreetingIsRejected) {
  RawListener closed_shop;
  closed_shop.answer_once("554 5.3.2 no service here\r\n");
  SmtpClient client(options_for(closed_shop.port()));
  Status status = client.send(sample_message());
  ASSERT_FALSE(status.is_ok());
  EXPECT_EQ(status.code(), make_error_code(Errc::kRejected));
  EXPECT_NE(status.message().find("refused the connection: 554 5.3.2 no service here"),
            std::string::npos)
      << status.message();
}

}  // namespace
}  // namespace persoflow::protocol
