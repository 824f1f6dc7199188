// persoflow-bench journal: append throughput and latency of the station journal with
// synchronous=FULL on a real file in a temporary directory. The records are the same in every
// run.
//   single          one workflow appending alone, one transaction (one fsync) per event
//   group64         64 workflows through the GroupCommitWriter (one transaction per batch), each
//                   waiting for its acknowledgement before its next event, driven by one thread
//                   per core as the station's runtime drives its workflows
//   group64_threads the same with one thread per workflow, blocked until its acknowledgement
// Prints BENCH lines: appends_per_s, p50_ms, p99_ms (submission to acknowledgement) and
// cpu_us_per_append (the whole process) for each, the speedups over single, and the disk's own
// fdatasync latency for context. The three take turns in slices (--rounds), each on its own journal
// kept open across its slices.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench_registry.hpp"
#include "persoflow/machines/engine.hpp"
#include "persoflow/storage/journal.hpp"
#include "test_support.hpp"

namespace persoflow::bench {
namespace {

using Clock = std::chrono::steady_clock;
namespace st = persoflow::storage;
namespace m = persoflow::machines;

st::AppendRequest make_request(const std::string& workflow, std::uint64_t step) {
  st::AppendRequest r;
  r.workflow_id = workflow;
  r.machine = "issue-card";
  r.step = step;
  r.event_type = "KeyGenerated";
  r.event = m::encode(m::Event{r.event_type,
                               {{"key_id", "a1b2c3d4e5f60718293a4b5c6d7e8f90"},
                                {"algorithm", "EC:secp256r1"},
                                {"reader", "Virtual PCD 00 00"},
                                {"step", std::to_string(step)}}});
  r.result_of = workflow + "/" + std::to_string(step) + "/0";
  r.state_name = "KeygenConfirmed";
  r.state = m::encode(m::State{r.state_name,
                               {{"card_serial", "0011223344556677"},
                                {"procedure", "smartcard-signature"},
                                {"subject", "CN=Ada Lovelace,O=Example"}}});
  st::CommandEntry c;
  c.index = 0;
  c.idempotency_key = st::idempotency_key_of(workflow, step, 0);
  c.type = "SubmitToCm";
  c.payload = m::encode(m::Command{c.type, {{"procedure", "smartcard-signature"}}});
  r.commands.push_back(std::move(c));
  return r;
}

double percentile_ms(std::vector<double>& us, double p) {
  if (us.empty()) return 0;
  std::sort(us.begin(), us.end());
  std::size_t i = static_cast<std::size_t>(p * static_cast<double>(us.size() - 1));
  return us[i] / 1000.0;
}

double micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

struct Figures {
  double per_s = 0, p50 = 0, p99 = 0;
  double cpu_us = 0;  // CPU time of the whole process per append, all threads
  std::size_t appends = 0;
};

// CPU time of the process (user + system, all threads): what an append costs the machine,
// readable even when other work on it makes the wall-clock figures noisy.
double process_cpu_us() {
  struct rusage u {};
  ::getrusage(RUSAGE_SELF, &u);
  auto us = [](const timeval& t) { return static_cast<double>(t.tv_sec) * 1e6 + t.tv_usec; };
  return us(u.ru_utime) + us(u.ru_stime);
}

Figures figures(std::vector<double>& latencies_us, double elapsed_s, double cpu_us) {
  Figures f;
  f.appends = latencies_us.size();
  f.per_s = static_cast<double>(f.appends) / elapsed_s;
  f.p50 = percentile_ms(latencies_us, 0.50);
  f.p99 = percentile_ms(latencies_us, 0.99);
  f.cpu_us = f.appends ? cpu_us / static_cast<double>(f.appends) : 0;
  return f;
}

// One configuration's figures, gathered over its slices of the run.
struct Tally {
  std::vector<double> latencies_us;
  double elapsed_s = 0;
  double cpu_us = 0;

  Figures figures() { return persoflow::bench::figures(latencies_us, elapsed_s, cpu_us); }
};

// Times one slice of a configuration: wall clock and process CPU into `tally`.
class Slice {
 public:
  explicit Slice(Tally& tally) : tally_(tally), cpu0_(process_cpu_us()), start_(Clock::now()) {}
  Clock::time_point deadline(double seconds) const {
    return start_ +
           std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  }
  void end() {
    tally_.elapsed_s += std::chrono::duration<double>(Clock::now() - start_).count();
    tally_.cpu_us += process_cpu_us() - cpu0_;
  }

 private:
  Tally& tally_;
  double cpu0_;
  Clock::time_point start_;
};

// One workflow appending alone: Journal::append, one transaction (and fsync) per event.
class SingleRun {
 public:
  Status open(const std::string& path) {
    PF_ASSIGN_OR_RETURN(journal_, st::Journal::open(path, {}));
    return Status::ok();
  }

  Status run_for(double seconds) {
    Slice slice(tally);
    const auto deadline = slice.deadline(seconds);
    while (Clock::now() < deadline) {
      st::AppendRequest r = make_request("single", step_);
      auto t0 = Clock::now();
      PF_RETURN_IF_ERROR(journal_->append(r));
      tally.latencies_us.push_back(micros(Clock::now() - t0));
      ++step_;
    }
    slice.end();
    return Status::ok();
  }

  Tally tally;

 private:
  std::unique_ptr<st::Journal> journal_;
  std::uint64_t step_ = 0;
};

// One thread per workflow, each blocked on its own condition variable until its append is
// acknowledged: every append also pays an OS thread wake-up and two context switches.
class GroupThreadsRun {
 public:
  Status start(const std::string& path, int workflows, std::size_t max_batch) {
    PF_ASSIGN_OR_RETURN(auto journal, st::Journal::open(path, {}));
    writer_ = st::GroupCommitWriter::start(std::move(journal), max_batch);
    steps_.assign(static_cast<std::size_t>(workflows), 0);
    return Status::ok();
  }

  Status run_for(double seconds) {
    std::vector<std::vector<double>> lat(steps_.size());
    std::atomic<bool> failed{false};
    std::string failure;
    std::mutex failure_mutex;
    Slice slice(tally);
    const auto deadline = slice.deadline(seconds);
    std::vector<std::thread> threads;
    for (std::size_t w = 0; w < steps_.size(); ++w) {
      threads.emplace_back([&, w] {
        std::string id = "wf-" + std::to_string(w);
        std::mutex mu;
        std::condition_variable cv;
        for (std::uint64_t& step = steps_[w]; Clock::now() < deadline && !failed.load(); ++step) {
          bool done = false;
          Status result;
          st::AppendRequest request = make_request(id, step);
          auto t0 = Clock::now();
          writer_->append(std::move(request), [&](Status s) {
            std::lock_guard lock(mu);
            result = std::move(s);
            done = true;
            cv.notify_one();
          });
          std::unique_lock lock(mu);
          cv.wait(lock, [&] { return done; });
          if (!result.is_ok()) {
            std::lock_guard fl(failure_mutex);
            failure = result.message();
            failed = true;
            return;
          }
          lat[w].push_back(micros(Clock::now() - t0));
        }
      });
    }
    for (auto& t : threads) t.join();
    slice.end();
    if (failed) return make_status(Errc::kInternal, "group append failed: " + failure);
    for (auto& v : lat) tally.latencies_us.insert(tally.latencies_us.end(), v.begin(), v.end());
    return Status::ok();
  }

  void stop() { writer_->stop(); }

  Tally tally;

 private:
  std::unique_ptr<st::GroupCommitWriter> writer_;
  std::vector<std::uint64_t> steps_;  // each workflow's next step
};

// The station's way (actors::Runtime): the workflows are not threads but state driven by a few
// threads, one per core (the runtime's io_threads). Each workflow still waits for its own
// acknowledgement before its next append: the acknowledgement hands the workflow back to its
// driver, which builds and submits the next append. Latency is from submission to the
// acknowledgement (the callback).
class GroupDriversRun {
 public:
  Status start(const std::string& path, int workflows, int drivers, std::size_t max_batch) {
    PF_ASSIGN_OR_RETURN(auto journal, st::Journal::open(path, {}));
    writer_ = st::GroupCommitWriter::start(std::move(journal), max_batch);
    flows_ = std::vector<Flow>(static_cast<std::size_t>(workflows));
    for (std::size_t f = 0; f < flows_.size(); ++f) flows_[f].id = "wf-" + std::to_string(f);
    drivers_ = std::vector<Driver>(static_cast<std::size_t>(drivers));
    return Status::ok();
  }

  Status run_for(double seconds) {
    failed_ = false;
    Slice slice(tally);
    const auto deadline = slice.deadline(seconds);
    std::vector<std::thread> threads;
    for (std::size_t d = 0; d < drivers_.size(); ++d) {
      threads.emplace_back([this, d, deadline] { drive(d, deadline); });
    }
    for (auto& t : threads) t.join();
    slice.end();
    if (failed_) return make_status(Errc::kInternal, "group append failed: " + failure_);
    for (Flow& flow : flows_) {
      tally.latencies_us.insert(tally.latencies_us.end(), flow.latencies_us.begin(),
                                flow.latencies_us.end());
      flow.latencies_us.clear();
    }
    return Status::ok();
  }

  void stop() { writer_->stop(); }

  Tally tally;

 private:
  struct Flow {
    std::string id;
    std::uint64_t step = 0;
    Clock::time_point submitted;
    Status result;
    std::vector<double> latencies_us;
  };
  // A driver is woken once per sleep, not once per acknowledgement, as Asio's scheduler wakes
  // an idle thread once for the handlers posted while it sleeps.
  struct Driver {
    std::mutex mutex;
    std::condition_variable wake;
    std::vector<std::size_t> acknowledged;  // flows whose last append is acknowledged
    bool sleeping = false;                  // waiting, and not yet woken
  };

  void submit(std::size_t f) {
    Flow& flow = flows_[f];
    st::AppendRequest request = make_request(flow.id, flow.step);
    Driver& driver = drivers_[f % drivers_.size()];
    flow.submitted = Clock::now();
    writer_->append(std::move(request), [&flow, &driver, f](Status s) {
      flow.latencies_us.push_back(micros(Clock::now() - flow.submitted));
      flow.result = std::move(s);
      std::lock_guard lock(driver.mutex);
      driver.acknowledged.push_back(f);
      if (driver.sleeping) {
        driver.sleeping = false;
        driver.wake.notify_one();
      }
    });
  }

  // Driver d's workflows until the deadline; returns when none of them has an append in flight.
  void drive(std::size_t d, Clock::time_point deadline) {
    Driver& driver = drivers_[d];
    std::size_t in_flight = 0;
    for (std::size_t f = d; f < flows_.size(); f += drivers_.size()) {
      submit(f);
      ++in_flight;
    }
    std::vector<std::size_t> ready;
    while (in_flight > 0) {
      {
        std::unique_lock lock(driver.mutex);
        while (driver.acknowledged.empty()) {
          driver.sleeping = true;
          driver.wake.wait(lock);
        }
        driver.sleeping = false;
        ready.swap(driver.acknowledged);
      }
      for (std::size_t f : ready) {
        --in_flight;
        if (!flows_[f].result.is_ok()) {
          std::lock_guard fl(failure_mutex_);
          failure_ = flows_[f].result.message();
          failed_ = true;
          continue;
        }
        ++flows_[f].step;
        if (Clock::now() < deadline && !failed_.load()) {
          submit(f);
          ++in_flight;
        }
      }
      ready.clear();
    }
  }

  std::unique_ptr<st::GroupCommitWriter> writer_;
  std::vector<Flow> flows_;
  std::vector<Driver> drivers_;
  std::atomic<bool> failed_{false};
  std::mutex failure_mutex_;
  std::string failure_;
};

// The disk's own cost of a durable write (4 KiB + fdatasync), the floor under every commit:
// printed next to the journal's figures so a run on a busy or slow disk can be read for what it
// is.
Result<Figures> run_fsync(const std::string& path, int count) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return make_status(Errc::kUnavailable, "cannot create " + path);
  std::string block(4096, 'f');
  std::vector<double> lat;
  auto start = Clock::now();
  for (int i = 0; i < count; ++i) {
    auto t0 = Clock::now();
    if (::pwrite(fd, block.data(), block.size(), 0) != static_cast<ssize_t>(block.size()) ||
        ::fdatasync(fd) != 0) {
      ::close(fd);
      return make_status(Errc::kUnavailable, "write or fdatasync failed on " + path);
    }
    lat.push_back(micros(Clock::now() - t0));
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  ::close(fd);
  return figures(lat, elapsed, 0);
}

int journal_bench(int argc, char** argv) {
  double seconds = 4;
  int workflows = 64;
  int drivers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int max_batch = static_cast<int>(st::GroupCommitWriter::kDefaultMaxBatch);
  int rounds = 4;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::printf(
          "Usage: persoflow-bench journal [--seconds S] [--rounds R] [--workflows N]\n"
          "                               [--drivers D] [--max-batch B]\n"
          "  Appends with synchronous=FULL in a temporary directory ($TMPDIR, else /tmp):\n"
          "  one workflow alone (one transaction per event); N workflows (default 64)\n"
          "  through the group commit writer, each waiting for its acknowledgement before\n"
          "  its next event, driven by D threads (default: one per core, as the station's\n"
          "  runtime); the same with one thread per workflow. S seconds each (default 4),\n"
          "  in R turns of S/R seconds (default 4), so that the three share the machine's\n"
          "  slow and quick spells. B: most appends the writer commits in one transaction\n"
          "  (default 32).\n");
      return 0;
    }
    if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (a == "--rounds" && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else if (a == "--workflows" && i + 1 < argc) {
      workflows = std::atoi(argv[++i]);
    } else if (a == "--drivers" && i + 1 < argc) {
      drivers = std::atoi(argv[++i]);
    } else if (a == "--max-batch" && i + 1 < argc) {
      max_batch = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "persoflow-bench journal: unknown option '%s'\n", a.c_str());
      return 2;
    }
  }
  if (seconds <= 0 || rounds <= 0 || workflows <= 0 || drivers <= 0 || max_batch <= 0) {
    std::fprintf(stderr,
                 "persoflow-bench journal: --seconds, --rounds, --workflows, --drivers and "
                 "--max-batch must be positive\n");
    return 2;
  }
  testing::TempDir dir("persoflow-bench-journal");
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "journal bench: %s\n", s.message().c_str());
    return 1;
  };
  SingleRun single_run;
  GroupDriversRun group_run;
  GroupThreadsRun threads_run;
  if (Status s = single_run.open(dir.file("single.db")); !s.is_ok()) return fail(s);
  if (Status s = group_run.start(dir.file("group.db"), workflows, drivers,
                                 static_cast<std::size_t>(max_batch));
      !s.is_ok()) {
    return fail(s);
  }
  if (Status s = threads_run.start(dir.file("group_threads.db"), workflows,
                                   static_cast<std::size_t>(max_batch));
      !s.is_ok()) {
    return fail(s);
  }
  // The configurations take turns, `rounds` slices each, so a slow spell of a shared machine
  // falls on all of them rather than on one: the ratios compare like with like.
  const double slice = seconds / rounds;
  for (int round = 0; round < rounds; ++round) {
    if (Status s = single_run.run_for(slice); !s.is_ok()) return fail(s);
    if (Status s = group_run.run_for(slice); !s.is_ok()) return fail(s);
    if (Status s = threads_run.run_for(slice); !s.is_ok()) return fail(s);
  }
  group_run.stop();
  threads_run.stop();
  auto disk = run_fsync(dir.file("fsync.bin"), 200);
  if (!disk.is_ok()) return fail(disk.status());
  auto single = single_run.tally.figures();
  auto group = group_run.tally.figures();
  auto threaded = threads_run.tally.figures();
  std::string g = "journal.group" + std::to_string(workflows);
  report("journal.disk.fdatasync_p50_ms", disk->p50, "ms");
  report("journal.disk.fdatasync_p99_ms", disk->p99, "ms");
  report("journal.single.appends_per_s", single.per_s, "appends/s");
  report("journal.single.p50_ms", single.p50, "ms");
  report("journal.single.p99_ms", single.p99, "ms");
  report("journal.single.cpu_us_per_append", single.cpu_us, "us");
  report(g + ".appends_per_s", group.per_s, "appends/s");
  report(g + ".p50_ms", group.p50, "ms");
  report(g + ".p99_ms", group.p99, "ms");
  report(g + ".cpu_us_per_append", group.cpu_us, "us");
  report(g + ".speedup", group.per_s / single.per_s, "x");
  report(g + "_threads.appends_per_s", threaded.per_s, "appends/s");
  report(g + "_threads.p50_ms", threaded.p50, "ms");
  report(g + "_threads.p99_ms", threaded.p99, "ms");
  report(g + "_threads.cpu_us_per_append", threaded.cpu_us, "us");
  report(g + "_threads.speedup", threaded.per_s / single.per_s, "x");
  return 0;
}

}  // namespace
}  // namespace persoflow::bench

PF_REGISTER_BENCH_SUITE(journal, "journal",
                        "journal appends/s and latency: one workflow alone vs 64 via group commit",
                        persoflow::bench::journal_bench);
