// Mail from the CM host through the SMTP relay of cm.json (`smtp`): e-mail verification codes
// and PIN-mailer notices. One message per call, sent synchronously with the relay's deadline.
#pragma once

#include "persoflow/cmhost/cm_host.hpp"
#include "persoflow/common/status.hpp"
#include "persoflow/protocol/smtp_client.hpp"

namespace persoflow::cmhost {

// Sends `mail` (its `from` left empty: the relay's sender) to the configured relay. No relay
// configured: kUnavailable; otherwise the SmtpClient's errors, which name the step and quote the
// server.
Status send_through_relay(const CmHost& host, protocol::MailMessage mail);

}  // namespace persoflow::cmhost
