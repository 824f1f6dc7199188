// The CM client actor (cm_client_actor.hpp): lanes with their own CmpClient,
// requests keyed by their transactionID, transport failures retried with
// backoff on a fresh connection.
#include "persoflow/actors/cm_client_actor.hpp"

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "persoflow/actors/state_files.hpp"

namespace persoflow::actors {

namespace pr = persoflow::protocol;

namespace {

struct Job {
  pr::CertRequest request;
  std::string saved_path;
  bool finished = false;
  Result<CmEnrolment> outcome = make_status(Errc::kInternal, "not sent");
};

} // namespace

struct CmClientActor::Impl {
  ClientFactory factory;
  Options options;

  mutable std::mutex mu;
  std::condition_variable queued;   // lanes wait for work
  std::condition_variable answered; // callers wait for their job
  std::deque<std::shared_ptr<Job>> queue;
  // transactionID (raw) -> the job in flight, or the one that got a certificate
  // or a refusal.
  std::map<std::string, std::shared_ptr<Job>> by_transaction;
  bool stopping = false;
  Counters counters;
  std::vector<std::thread> lanes;

  void lane() {
    std::unique_ptr<pr::CmpClient> client;
    while (true) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock lock(mu);
        queued.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty())
          return;
        job = queue.front();
        queue.pop_front();
      }
      Result<CmEnrolment> outcome = send(*job, client);
      std::lock_guard lock(mu);
      job->outcome = std::move(outcome);
      job->finished = true;
      // Only answers are kept for repeats; after a transport failure the next
      // attempt sends again.
      if (!job->outcome.is_ok())
        by_transaction.erase(job->request.transaction_id);
      answered.notify_all();
    }
  }

  // One request, with its transport retries. `client` is the lane's connection,
  // remade after a transport failure.
  Result<CmEnrolment> send(const Job &job,
                           std::unique_ptr<pr::CmpClient> &client) {
    Status last = make_status(Errc::kUnavailable, "no attempt made");
    const std::uint32_t attempts =
        std::max<std::uint32_t>(1, options.transport_retry.attempts);
    for (std::uint32_t attempt = 1; attempt <= attempts; ++attempt) {
      if (attempt > 1)
        std::this_thread::sleep_for(options.transport_retry.backoff(attempt));
      if (!client) {
        auto made = factory();
        if (!made)
          return made.status(); // a setup error (officer, configuration): not
                                // transient
        client = std::move(*made);
      }
      if (std::filesystem::exists(job.saved_path)) {
        auto der = read_file(job.saved_path);
        if (!der)
          return der.status();
        client->resend_next(
            *der); // the same bytes: the CM host answers from its store
      }
      Status save_status;
      client->on_request_sent([&](const std::string &der) {
        if (!std::filesystem::exists(job.saved_path)) {
          save_status = write_durably(job.saved_path, der);
        }
      });
      {
        std::lock_guard lock(mu);
        ++counters.sent;
      }
      auto enrolled = client->enroll(job.request);
      client->on_request_sent(nullptr);
      PF_RETURN_IF_ERROR(save_status);
      if (enrolled) {
        CmEnrolment e;
        e.enrolled = std::make_shared<pr::Enrolled>(std::move(*enrolled));
        return e;
      }
      const pr::CmpFailure &failure = client->last_failure();
      if (failure.pki_status >=
          0) { // the CM host answered: a refusal is not retried
        CmEnrolment e;
        e.refusal = failure;
        e.refusal_message =
            failure.text.empty() ? enrolled.status().message() : failure.text;
        return e;
      }
      last = enrolled.status();
      client.reset(); // a broken connection: the next attempt opens a new one
    }
    return last;
  }
};

CmClientActor::CmClientActor(ClientFactory factory, Options options)
    : impl_(std::make_unique<Impl>()) {
  impl_->factory = std::move(factory);
  impl_->options = options;
  for (unsigned i = 0; i < std::max(1u, options.lanes); ++i) {
    impl_->lanes.emplace_back([this] { impl_->lane(); });
  }
}

CmClientActor::~CmClientActor() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->queued.notify_all();
  for (auto &t : impl_->lanes)
    t.join();
}

Result<CmEnrolment>
CmClientActor::enroll(const pr::CertRequest &request,
                      const std::string &saved_request_path) {
  if (request.transaction_id.empty()) {
    return make_status(Errc::kInvalidArgument,
                       "a CM request needs its transactionID");
  }
  std::unique_lock lock(impl_->mu);
  std::shared_ptr<Job> &known = impl_->by_transaction[request.transaction_id];
  std::shared_ptr<Job> job = known;
  if (job) {
    ++impl_->counters.joined;
  } else {
    job = std::make_shared<Job>();
    job->request = request;
    job->saved_path = saved_request_path;
    known = job;
    impl_->queue.push_back(job);
    impl_->queued.notify_one();
  }
  impl_->answered.wait(lock, [&] { return job->finished; });
  return job->outcome;
}

CmClientActor::Counters CmClientActor::counters() const {
  std::lock_guard lock(impl_->mu);
  return impl_->counters;
}

} // namespace persoflow::actors
