// GroupCommitWriter (journal.hpp): one thread owns the Journal and commits the appends of many
// workflows together. It takes whatever is queued (up to max_batch) as one transaction, so
// while one fsync is in flight the next batch fills up by itself; no timer, no added latency
// when the station is idle. Appends that arrive while the group is being written join it before
// its commit (Journal::append_each_taking_more): otherwise workflows acknowledged together
// split into two groups per round, each waiting for the other's fsync as well as its own. Each request stands alone inside the batch (Journal::append_each),
// so one invalid request fails by itself.
//
// A second thread, the acknowledger, makes the committed batches durable and then runs their
// callbacks (in the order the requests were queued) and frees their requests, while the writer
// already writes the next batch. The writer's commits do not wait for the disk
// (Journal::defer_syncs): one fdatasync by the acknowledger covers every batch committed before
// it, so the disk's sync latency leaves the writer's serial path, and waking 64 waiting workflows
// (64 futex wake-ups) stays off it too.
#include <pthread.h>

#include <algorithm>
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
      : journal_(std::move(journal)),
        max_batch_(max_batch == 0 ? 1 : max_batch),
        reserved_(std::min<std::size_t>(max_batch_, 256)),
        sync_behind_(journal_->defer_syncs()) {
    // Named, so that top, perf and gdb show which thread is which.
    acknowledger_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "journal-ack");
      acknowledge();
    });
    acknowledger_id_ = acknowledger_.get_id();
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "journal-writer");
      run();
    });
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
    // A callback that stops the writer cannot join the thread it runs on, nor wait for the
    // callbacks queued behind it; the threads end by themselves.
    const auto self = std::this_thread::get_id();
    if (self == writer_id_ || self == acknowledger_id_) return;
    std::lock_guard lock(join_mutex_);
    if (thread_.joinable()) thread_.join();
    if (acknowledger_.joinable()) acknowledger_.join();
  }

  bool poisoned() const override { return poisoned_.load(); }

 private:
  // A committed (or failed) batch on its way to its callbacks.
  struct Committed {
    std::vector<Done> done;
    std::vector<Status> outcome;
    std::vector<AppendRequest> requests;  // freed off the writer's path too
  };

  void run() {
    std::vector<Done> done;
    std::vector<AppendRequest> requests;
    done.reserve(reserved_);
    requests.reserve(reserved_);
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) break;  // stopping, and everything queued is committed
        take_queued(requests, done);
      }
      // Appends that arrive while the group is written join it before its commit.
      GroupOutcome outcome =
          journal_->append_each_taking_more(requests, [&](std::vector<AppendRequest>& more) {
            std::lock_guard lock(mutex_);
            take_queued(more, done);
          });
      if (journal_->poisoned()) poisoned_.store(true);
      {
        std::lock_guard lock(ack_mutex_);
        committed_.push_back({std::move(done), std::move(outcome.each), std::move(requests)});
        ack_wake_.notify_one();
      }
      // Moved out above: make room for a whole group again, so that taking requests (under the
      // queue's lock) never grows the vectors, relocating every request taken so far.
      done.clear();
      requests.clear();
      done.reserve(reserved_);
      requests.reserve(reserved_);
    }
    std::lock_guard lock(ack_mutex_);
    writer_done_ = true;
    ack_wake_.notify_one();
  }

  // Moves queued appends into the group, up to max_batch. Called with mutex_ held.
  void take_queued(std::vector<AppendRequest>& requests, std::vector<Done>& done) {
    while (!queue_.empty() && requests.size() < max_batch_) {
      requests.push_back(std::move(queue_.front().request));
      done.push_back(std::move(queue_.front().done));
      queue_.pop_front();
    }
  }

  void acknowledge() {
    std::unique_lock lock(ack_mutex_);
    std::deque<Committed> batches;
    for (;;) {
      ack_wake_.wait(lock, [this] { return writer_done_ || !committed_.empty(); });
      if (committed_.empty()) return;  // the writer has ended and every callback has run
      batches.swap(committed_);
      lock.unlock();
      if (sync_behind_) make_durable(batches);
      for (Committed& batch : batches) {
        for (std::size_t i = 0; i < batch.done.size(); ++i) {
          if (batch.done[i]) batch.done[i](std::move(batch.outcome[i]));
        }
      }
      batches.clear();
      lock.lock();
    }
  }

  // One fdatasync for every batch committed so far, while the writer already writes the next:
  // an append is acknowledged only once it is durable. A failed sync fails every append it
  // covered, and the journal refuses all later ones.
  void make_durable(std::deque<Committed>& batches) {
    bool committed_any = false;
    for (const Committed& batch : batches) {
      for (const Status& s : batch.outcome) committed_any = committed_any || s.is_ok();
    }
    if (!committed_any) return;
    Status synced = journal_->sync_committed();
    if (synced.is_ok()) return;
    poisoned_.store(true);
    for (Committed& batch : batches) {
      for (Status& s : batch.outcome) {
        if (s.is_ok()) s = synced;
      }
    }
  }

  struct Item {
    AppendRequest request;
    Done done;
  };

  std::unique_ptr<Journal> journal_;
  const std::size_t max_batch_;
  const std::size_t reserved_;  // room made for each group: max_batch_, within reason
  // Commits return before their fdatasync; the acknowledger syncs (Journal::defer_syncs).
  const bool sync_behind_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::atomic<bool> poisoned_{false};

  std::mutex ack_mutex_;
  std::condition_variable ack_wake_;
  std::deque<Committed> committed_;
  bool writer_done_ = false;

  std::mutex join_mutex_;
  std::thread acknowledger_;
  std::thread::id acknowledger_id_;
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
