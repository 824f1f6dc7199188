// GroupCommitWriter (journal.hpp): one thread owns the Journal and commits the appends of many
// workflows together. It takes whatever is queued (up to max_batch) as one transaction, so
// while one fsync is in flight the next batch fills up by itself; no timer, no added latency
// when the station is idle. Each request stands alone inside the batch (Journal::append_each),
// so one invalid request fails by itself. Callbacks run on the writer thread, after the
// commit, in the order the requests were queued.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "persoflow/storage/journal.hpp"

namespace persoflow::storage {
namespace {

class Writer final : public GroupCommitWriter {
 public:
  Writer(std::unique_ptr<Journal> journal, std::size_t max_batch)
      : journal_(std::move(journal)), max_batch_(max_batch == 0 ? 1 : max_batch) {
    thread_ = std::thread([this] { run(); });
    writer_id_ = thread_.get_id();
  }

  ~Writer() override { stop(); }

  void append(AppendRequest request, Done done) override {
    {
      std::lock_guard lock(mutex_);
      if (!stopping_) {
        queue_.push_back({std::move(request), std::move(done)});
        wake_.notify_one();
        return;
      }
    }
    done(make_status(Errc::kCancelled, "the journal writer has stopped"));
  }

  void stop() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      wake_.notify_one();
    }
    // A callback that stops the writer cannot join its own thread; the thread ends by itself.
    if (std::this_thread::get_id() == writer_id_) return;
    std::lock_guard lock(join_mutex_);
    if (thread_.joinable()) thread_.join();
  }

  bool poisoned() const override { return poisoned_.load(); }

 private:
  struct Item {
    AppendRequest request;
    Done done;
  };

  void run() {
    std::vector<Item> batch;
    std::vector<AppendRequest> requests;
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and everything queued is committed
        while (!queue_.empty() && batch.size() < max_batch_) {
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      requests.clear();
      for (Item& item : batch) requests.push_back(std::move(item.request));
      GroupOutcome outcome = journal_->append_each(requests);
      if (journal_->poisoned()) poisoned_.store(true);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        if (batch[i].done) batch[i].done(outcome.each[i]);
      }
      batch.clear();
    }
  }

  std::unique_ptr<Journal> journal_;
  const std::size_t max_batch_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::atomic<bool> poisoned_{false};
  std::mutex join_mutex_;
  std::thread thread_;
  std::thread::id writer_id_;
};

}  // namespace

std::unique_ptr<GroupCommitWriter> GroupCommitWriter::start(std::unique_ptr<Journal> journal,
                                                            std::size_t max_batch) {
  PF_CHECK(journal != nullptr, "GroupCommitWriter needs a journal");
  return std::make_unique<Writer>(std::move(journal), max_batch);
}

}  // namespace persoflow::storage
