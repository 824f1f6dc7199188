// The CM link (cm_link.hpp): lanes with their own CmpClient, enrolments keyed by their
// transactionID, saved requests resent as saved, transport failures retried with backoff on a
// fresh connection.
#include "persoflow/actors/cm_link.hpp"

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "persoflow/actors/state_files.hpp"
#include "persoflow/protocol/cmp_der.hpp"

namespace persoflow::actors {

namespace pr = persoflow::protocol;

namespace {

// One exchange on a lane's client; fills the answer's payload when it succeeds.
using Exchange = std::function<Status(pr::CmpClient&, CmAnswer&)>;

struct Job {
  Exchange exchange;
  std::string saved_path;      // empty: not crash-safe
  std::string transaction_id;  // raw; empty: not joined with others
  bool finished = false;
  Result<CmAnswer> outcome = make_status(Errc::kInternal, "not sent");
};

// Every UTF8String inside a DER value (depth first), e.g. the statusString and errorDetails of a
// CMP error message; not inside tagged fields (an rr answer's revCerts, caPubs, a certificate),
// whose names hold UTF8Strings too.
void utf8_strings(std::string_view der, std::vector<std::string>& out, int depth = 0) {
  auto items = pr::der_items(der);
  if (!items || depth > 8) return;
  for (const auto& item : *items) {
    if (item.constructed) {
      if (item.cls != V_ASN1_UNIVERSAL) continue;
      utf8_strings(item.content, out, depth + 1);
    } else if (item.cls == V_ASN1_UNIVERSAL && item.tag == V_ASN1_UTF8STRING) {
      out.emplace_back(item.content);
    }
  }
}

// Why the CM host refused, into the answer: every text of its statusString and errorDetails
// (OpenSSL 3.0 has no getter for the errorDetails of a CMP error message: read from the DER),
// else what the client knows, as the detail for the log; the last of them as the message for a
// person. OpenSSL puts its own texts ("request rejected by server; CMP routines; ...") before the
// CM host's sentence, which is the last.
void set_refusal_text(const pr::CmpClient& client, const Status& status, CmAnswer& answer) {
  std::vector<std::string> texts;
  if (auto body = pr::cmp_body_content(client.last_response_der())) utf8_strings(*body, texts);
  std::string all;
  for (const auto& t : texts) all += (all.empty() ? "" : "; ") + t;
  if (all.empty()) all = client.last_failure().text;
  if (all.empty()) all = status.message();
  answer.refusal_detail = all;
  answer.refusal_message = texts.empty() || texts.back().empty() ? all : texts.back();
}

}  // namespace

Result<std::pair<std::string, std::uint16_t>> parse_cm_url(const std::string& cm_url) {
  const std::string scheme = "https://";
  auto bad = [&](const std::string& what) {
    return make_status(Errc::kInvalidArgument,
                       "cm_url must be https://HOST:PORT (" + what + "), not '" + cm_url + "'");
  };
  if (cm_url.rfind(scheme, 0) != 0) return bad("the scheme is https");
  std::string hostport = cm_url.substr(scheme.size());
  if (!hostport.empty() && hostport.back() == '/') hostport.pop_back();
  const auto colon = hostport.rfind(':');
  if (colon == std::string::npos) return bad("no port");
  std::string host = hostport.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string port = hostport.substr(colon + 1);
  if (host.empty()) return bad("no host");
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
      std::stoi(port) > 65535) {
    return bad("the port is 1..65535");
  }
  return std::make_pair(host, static_cast<std::uint16_t>(std::stoi(port)));
}

struct CmLink::Impl {
  pr::CmpClientOptions client_options;  // everything but the officer's credential
  OfficerSource officer;
  CmLinkOptions options;

  mutable std::mutex mu;
  std::condition_variable queued;    // lanes wait for work
  std::condition_variable answered;  // callers wait for their job
  std::deque<std::shared_ptr<Job>> queue;
  // transactionID (raw) -> the enrolment in flight, or the one the CM host answered.
  std::map<std::string, std::shared_ptr<Job>> by_transaction;
  bool stopping = false;
  Counters counters;
  std::vector<std::thread> lanes;

  Result<std::unique_ptr<pr::CmpClient>> make_client() {
    PF_ASSIGN_OR_RETURN(devices::OfficerToken * token, officer());
    pr::CmpClientOptions o = client_options;
    o.officer_key = token->key();
    o.officer_cert = token->certificate();
    o.officer_chain = token->chain();
    return std::make_unique<pr::CmpClient>(o);
  }

  void lane() {
    std::unique_ptr<pr::CmpClient> client;
    while (true) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock lock(mu);
        queued.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;
        job = queue.front();
        queue.pop_front();
      }
      Result<CmAnswer> outcome = send(*job, client);
      std::lock_guard lock(mu);
      job->outcome = std::move(outcome);
      job->finished = true;
      // Only answers are kept for repeats; after a transport failure the next attempt sends
      // again.
      if (!job->outcome.is_ok() && !job->transaction_id.empty()) {
        by_transaction.erase(job->transaction_id);
      }
      answered.notify_all();
    }
  }

  // One request, with its transport retries. `client` is the lane's connection, remade after a
  // transport failure.
  Result<CmAnswer> send(const Job& job, std::unique_ptr<pr::CmpClient>& client) {
    Status last = make_status(Errc::kUnavailable, "no attempt made");
    const std::uint32_t attempts = std::max<std::uint32_t>(1, options.transport_retry.attempts);
    for (std::uint32_t attempt = 1; attempt <= attempts; ++attempt) {
      if (attempt > 1) std::this_thread::sleep_for(options.transport_retry.backoff(attempt));
      if (!client) {
        auto made = make_client();
        if (!made) return made.status();  // the officer or the configuration: not transient
        client = std::move(*made);
      }
      Status save_status = Status::ok();
      if (!job.saved_path.empty()) {
        if (std::filesystem::exists(job.saved_path)) {
          PF_ASSIGN_OR_RETURN(std::string der, read_file(job.saved_path));
          client->resend_next(
              std::move(der));  // the same bytes: the CM host answers from its store
        }
        client->on_request_sent([&](const std::string& der) {
          if (!std::filesystem::exists(job.saved_path)) {
            save_status = write_durably(job.saved_path, der, 0600);
          }
        });
      }
      {
        std::lock_guard lock(mu);
        ++counters.sent;
      }
      CmAnswer answer;
      Status exchanged = job.exchange(*client, answer);
      client->on_request_sent(nullptr);
      PF_RETURN_IF_ERROR(save_status);
      if (exchanged) return answer;
      const pr::CmpFailure& failure = client->last_failure();
      if (failure.pki_status >= 0 || !client->last_response_der().empty()) {
        // The CM host answered: a refusal is not retried.
        answer.refused = true;
        answer.refusal = failure;
        set_refusal_text(*client, exchanged, answer);
        return answer;
      }
      last = exchanged;
      client.reset();  // a broken connection: the next attempt opens a new one
    }
    return last;
  }

  Result<CmAnswer> submit(Exchange exchange, const std::string& saved_path,
                          const std::string& transaction_id) {
    std::unique_lock lock(mu);
    std::shared_ptr<Job> job;
    if (!transaction_id.empty()) job = by_transaction[transaction_id];
    if (job) {
      ++counters.joined;
    } else {
      job = std::make_shared<Job>();
      job->exchange = std::move(exchange);
      job->saved_path = saved_path;
      job->transaction_id = transaction_id;
      if (!transaction_id.empty()) by_transaction[transaction_id] = job;
      queue.push_back(job);
      queued.notify_one();
    }
    answered.wait(lock, [&] { return job->finished; });
    return job->outcome;
  }
};

CmLink::CmLink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<CmLink>> CmLink::open(const std::string& cm_url, const std::string& cm_ca,
                                             OfficerSource officer, CmLinkOptions options) {
  PF_ASSIGN_OR_RETURN(auto address, parse_cm_url(cm_url));
  if (cm_ca.empty()) return make_status(Errc::kInvalidArgument, "cm_ca names no CA certificate");
  // Said here once, not met as a TLS setup failure on every request and retried as if the CM
  // host were unreachable.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(cm_ca, ec)) {
    return make_status(Errc::kInvalidArgument,
                       "cm_ca '" + cm_ca + "' is not a file (the CM host's CA certificate, PEM)");
  }
  auto impl = std::make_unique<Impl>();
  impl->client_options.https.host = address.first;
  impl->client_options.https.port = address.second;
  impl->client_options.https.trusted_ca_pem = cm_ca;
  impl->client_options.https.timeout = options.timeout;
  impl->client_options.cmp_trusted_pem = cm_ca;
  impl->client_options.implicit_confirm = true;
  impl->officer = std::move(officer);
  impl->options = options;
  std::unique_ptr<CmLink> link(new CmLink(std::move(impl)));
  Impl* lanes_of = link->impl_.get();
  for (unsigned i = 0; i < std::max(1u, options.lanes); ++i) {
    lanes_of->lanes.emplace_back([lanes_of] { lanes_of->lane(); });
  }
  return link;
}

CmLink::~CmLink() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->queued.notify_all();
  for (auto& t : impl_->lanes) t.join();
}

Result<CmAnswer> CmLink::enroll(const pr::CertRequest& request,
                                const std::string& saved_request_path) {
  return impl_->submit(
      [&request](pr::CmpClient& client, CmAnswer& answer) -> Status {
        auto enrolled = client.enroll(request);
        if (!enrolled) return enrolled.status();
        answer.enrolled = std::make_shared<pr::Enrolled>(std::move(*enrolled));
        return Status::ok();
      },
      saved_request_path, request.transaction_id);
}

Result<CmAnswer> CmLink::general_message(const std::vector<pr::InfoItem>& items,
                                         const std::string& procedure,
                                         const std::string& saved_request_path) {
  return impl_->submit(
      [&items, &procedure](pr::CmpClient& client, CmAnswer& answer) -> Status {
        auto genp = client.general_message(items, procedure);
        if (!genp) return genp.status();
        answer.items = std::move(*genp);
        return Status::ok();
      },
      saved_request_path, {});
}

Result<CmAnswer> CmLink::revoke(X509* cert, int reason) {
  return impl_->submit(
      [cert, reason](pr::CmpClient& client, CmAnswer&) { return client.revoke(cert, reason); }, {},
      {});
}

Result<CmLink*> CmLinkOnFirstUse::get(const std::string& cm_url, const std::string& cm_ca,
                                      const CmLink::OfficerSource& officer) {
  std::lock_guard lock(mu_);
  if (!link_) {
    PF_ASSIGN_OR_RETURN(link_, CmLink::open(cm_url, cm_ca, officer));
  }
  return link_.get();
}

CmLink::Counters CmLink::counters() const {
  std::lock_guard lock(impl_->mu);
  return impl_->counters;
}

}  // namespace persoflow::actors
