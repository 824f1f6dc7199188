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
// fdatasync latency for context.
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

Result<Figures> run_single(const std::string& path, double seconds) {
  PF_ASSIGN_OR_RETURN(auto journal, st::Journal::open(path, {}));
  std::vector<double> lat;
  const double cpu0 = process_cpu_us();
  auto start = Clock::now();
  auto deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::uint64_t step = 0;
  while (Clock::now() < deadline) {
    st::AppendRequest r = make_request("single", step);
    auto t0 = Clock::now();
    PF_RETURN_IF_ERROR(journal->append(r));
    lat.push_back(micros(Clock::now() - t0));
    ++step;
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  return figures(lat, elapsed, process_cpu_us() - cpu0);
}

// One thread per workflow, each blocked on its own condition variable until its append is
// acknowledged: every append also pays an OS thread wake-up and two context switches.
Result<Figures> run_group_threads(const std::string& path, int workflows, std::size_t max_batch,
                                  double seconds) {
  PF_ASSIGN_OR_RETURN(auto journal, st::Journal::open(path, {}));
  auto writer = st::GroupCommitWriter::start(std::move(journal), max_batch);
  std::vector<std::vector<double>> lat(static_cast<std::size_t>(workflows));
  std::atomic<bool> failed{false};
  std::string failure;
  std::mutex failure_mutex;
  const double cpu0 = process_cpu_us();
  auto start = Clock::now();
  auto deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int w = 0; w < workflows; ++w) {
    threads.emplace_back([&, w] {
      std::string id = "wf-" + std::to_string(w);
      std::mutex mu;
      std::condition_variable cv;
      for (std::uint64_t step = 0; Clock::now() < deadline && !failed.load(); ++step) {
        bool done = false;
        Status result;
        st::AppendRequest request = make_request(id, step);
        auto t0 = Clock::now();
        writer->append(std::move(request), [&](Status s) {
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
        lat[static_cast<std::size_t>(w)].push_back(micros(Clock::now() - t0));
      }
    });
  }
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = process_cpu_us() - cpu0;
  writer->stop();
  if (failed) return make_status(Errc::kInternal, "group append failed: " + failure);
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  return figures(all, elapsed, cpu);
}

// The station's way (actors::Runtime): the workflows are not threads but state driven by a few
// threads, one per core (the runtime's io_threads). Each workflow still waits for its own
// acknowledgement before its next append: the acknowledgement hands the workflow back to its
// driver, which builds and submits the next append. Latency is from submission to the
// acknowledgement (the callback).
Result<Figures> run_group_drivers(const std::string& path, int workflows, int drivers,
                                  std::size_t max_batch, double seconds) {
  PF_ASSIGN_OR_RETURN(auto journal, st::Journal::open(path, {}));
  auto writer = st::GroupCommitWriter::start(std::move(journal), max_batch);
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
  std::vector<Flow> flows(static_cast<std::size_t>(workflows));
  std::vector<Driver> driver_state(static_cast<std::size_t>(drivers));
  std::atomic<bool> failed{false};
  std::string failure;
  std::mutex failure_mutex;

  auto submit = [&](std::size_t f) {
    Flow& flow = flows[f];
    st::AppendRequest request = make_request(flow.id, flow.step);
    Driver& driver = driver_state[f % driver_state.size()];
    flow.submitted = Clock::now();
    writer->append(std::move(request), [&flow, &driver, f](Status s) {
      flow.latencies_us.push_back(micros(Clock::now() - flow.submitted));
      flow.result = std::move(s);
      std::lock_guard lock(driver.mutex);
      driver.acknowledged.push_back(f);
      if (driver.sleeping) {
        driver.sleeping = false;
        driver.wake.notify_one();
      }
    });
  };

  const double cpu0 = process_cpu_us();
  auto start = Clock::now();
  auto deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int d = 0; d < drivers; ++d) {
    threads.emplace_back([&, d] {
      Driver& driver = driver_state[static_cast<std::size_t>(d)];
      std::size_t in_flight = 0;
      for (std::size_t f = static_cast<std::size_t>(d); f < flows.size();
           f += static_cast<std::size_t>(drivers)) {
        flows[f].id = "wf-" + std::to_string(f);
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
          if (!flows[f].result.is_ok()) {
            std::lock_guard fl(failure_mutex);
            failure = flows[f].result.message();
            failed = true;
            continue;
          }
          ++flows[f].step;
          if (Clock::now() < deadline && !failed.load()) {
            submit(f);
            ++in_flight;
          }
        }
        ready.clear();
      }
    });
  }
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = process_cpu_us() - cpu0;
  writer->stop();
  if (failed) return make_status(Errc::kInternal, "group append failed: " + failure);
  std::vector<double> all;
  for (auto& flow : flows) all.insert(all.end(), flow.latencies_us.begin(), flow.latencies_us.end());
  return figures(all, elapsed, cpu);
}

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
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::printf(
          "Usage: persoflow-bench journal [--seconds S] [--workflows N] [--drivers D]\n"
          "                               [--max-batch B]\n"
          "  Appends with synchronous=FULL in a temporary directory ($TMPDIR, else /tmp):\n"
          "  one workflow alone (one transaction per event), then N workflows (default 64)\n"
          "  through the group commit writer, each waiting for its acknowledgement before\n"
          "  its next event: driven by D threads (default: one per core, as the station's\n"
          "  runtime), then with one thread per workflow. S seconds each (default 4).\n"
          "  B: most appends the writer commits in one transaction (default 32).\n");
      return 0;
    }
    if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
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
  if (seconds <= 0 || workflows <= 0 || drivers <= 0 || max_batch <= 0) {
    std::fprintf(stderr,
                 "persoflow-bench journal: --seconds, --workflows, --drivers and --max-batch "
                 "must be positive\n");
    return 2;
  }
  testing::TempDir dir("persoflow-bench-journal");
  auto single = run_single(dir.file("single.db"), seconds);
  if (!single.is_ok()) {
    std::fprintf(stderr, "journal bench: %s\n", single.status().message().c_str());
    return 1;
  }
  auto group = run_group_drivers(dir.file("group.db"), workflows, drivers,
                                 static_cast<std::size_t>(max_batch), seconds);
  if (!group.is_ok()) {
    std::fprintf(stderr, "journal bench: %s\n", group.status().message().c_str());
    return 1;
  }
  auto threaded = run_group_threads(dir.file("group_threads.db"), workflows,
                                    static_cast<std::size_t>(max_batch), seconds);
  if (!threaded.is_ok()) {
    std::fprintf(stderr, "journal bench: %s\n", threaded.status().message().c_str());
    return 1;
  }
  auto disk = run_fsync(dir.file("fsync.bin"), 200);
  if (!disk.is_ok()) {
    std::fprintf(stderr, "journal bench: %s\n", disk.status().message().c_str());
    return 1;
  }
  std::string g = "journal.group" + std::to_string(workflows);
  report("journal.disk.fdatasync_p50_ms", disk->p50, "ms");
  report("journal.disk.fdatasync_p99_ms", disk->p99, "ms");
  report("journal.single.appends_per_s", single->per_s, "appends/s");
  report("journal.single.p50_ms", single->p50, "ms");
  report("journal.single.p99_ms", single->p99, "ms");
  report("journal.single.cpu_us_per_append", single->cpu_us, "us");
  report(g + ".appends_per_s", group->per_s, "appends/s");
  report(g + ".p50_ms", group->p50, "ms");
  report(g + ".p99_ms", group->p99, "ms");
  report(g + ".cpu_us_per_append", group->cpu_us, "us");
  report(g + ".speedup", group->per_s / single->per_s, "x");
  report(g + "_threads.appends_per_s", threaded->per_s, "appends/s");
  report(g + "_threads.p50_ms", threaded->p50, "ms");
  report(g + "_threads.p99_ms", threaded->p99, "ms");
  report(g + "_threads.cpu_us_per_append", threaded->cpu_us, "us");
  report(g + "_threads.speedup", threaded->per_s / single->per_s, "x");
  return 0;
}

}  // namespace
}  // namespace persoflow::bench

PF_REGISTER_BENCH_SUITE(journal, "journal",
                        "journal appends/s and latency: one workflow alone vs 64 via group commit",
                        persoflow::bench::journal_bench);
