// Mail through the CM host's SMTP relay (relay_mail.hpp).
#include "relay_mail.hpp"

namespace persoflow::cmhost {

Status send_through_relay(const CmHost& host, protocol::MailMessage mail) {
  const SmtpRelay& relay = host.config().smtp;
  if (relay.host.empty()) {
    return make_status(Errc::kUnavailable,
                       "no SMTP relay is configured (cm.json smtp.host): nothing can be mailed");
  }
  protocol::SmtpClientOptions options;
  options.host = relay.host;
  options.port = static_cast<std::uint16_t>(relay.port);
  options.timeout = std::chrono::seconds(relay.timeout_seconds);
  if (mail.from.empty()) mail.from = relay.from;
  return protocol::SmtpClient(options).send(mail);
}

}  // namespace persoflow::cmhost
