// A child process for the journal crash test: appends `steps` events to each of `workflows`
// workflows through the GroupCommitWriter, resuming each workflow at the step the journal
// holds, and writes "workflow step" to the ack file after each acknowledgement. The test kills
// it with SIGKILL at a crash point (PERSOFLOW_CRASH_AT) and runs it again.
#include <fcntl.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#include "journal_support.hpp"

using namespace persoflow;
using namespace persoflow::storage;

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: journal_crash_child JOURNAL ACKFILE WORKFLOWS STEPS\n");
    return 2;
  }
  std::string path = argv[1];
  int workflows = std::atoi(argv[3]);
  std::uint64_t steps = std::strtoull(argv[4], nullptr, 10);
  int ack_fd = ::open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  // The workflows table is written every 10 records, so that kills fall before, inside and after
  // the transactions that write it (the default, 1,024, is more than the test appends).
  auto journal = Journal::open(path, {.summary_every = 10});
  if (!journal.is_ok() || ack_fd < 0) {
    std::fprintf(stderr, "%s\n", journal.status().message().c_str());
    return 1;
  }
  std::vector<std::uint64_t> next(static_cast<std::size_t>(workflows));
  for (int w = 0; w < workflows; ++w) {
    auto summary = (*journal)->workflow("w" + std::to_string(w));
    if (summary.is_ok() && summary->has_value())
      next[static_cast<std::size_t>(w)] = (*summary)->steps;
  }
  auto writer = GroupCommitWriter::start(std::move(*journal), 8);
  std::mutex mu;
  std::condition_variable cv;
  int failures = 0;
  for (;;) {
    int pending = 0;
    for (int w = 0; w < workflows; ++w) {
      std::uint64_t step = next[static_cast<std::size_t>(w)];
      if (step >= steps) continue;
      std::string id = "w" + std::to_string(w);
      {
        std::lock_guard lock(mu);
        ++pending;
      }
      writer->append(test::request(id, step), [&, id, step](Status s) {
        std::lock_guard lock(mu);
        if (s.is_ok()) {
          std::string line = id + " " + std::to_string(step) + "\n";
          (void)!::write(ack_fd, line.data(), line.size());
        } else {
          std::fprintf(stderr, "append failed: %s\n", s.message().c_str());
          ++failures;
        }
        --pending;
        cv.notify_one();
      });
      ++next[static_cast<std::size_t>(w)];
    }
    if (pending == 0) break;
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return pending == 0; });
    if (failures) return 1;
  }
  writer->stop();
  return 0;
}
