// Helpers for the journal tests: building append requests from real machine values, and taking
// a snapshot of a file (bytes and mtime) to prove that a refused open left it untouched.
#pragma once

#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <string>

#include "persoflow/machines/engine.hpp"
#include "persoflow/storage/journal.hpp"

namespace persoflow::storage::test {

inline AppendRequest request(const std::string& workflow, std::uint64_t step,
                             std::size_t commands = 1, std::string machine = "ticket",
                             std::string payload = "x") {
  AppendRequest r;
  r.workflow_id = workflow;
  r.machine = std::move(machine);
  r.step = step;
  r.event_type = step == 0 ? "Opened" : "Progressed";
  r.event = machines::encode(
      machines::Event{r.event_type, {{"n", std::to_string(step)}, {"payload", payload}}});
  r.result_of = step == 0 ? "" : workflow + "/" + std::to_string(step - 1) + "/0";
  r.state_name = "Step" + std::to_string(step);
  r.state = machines::encode(machines::State{r.state_name, {{"title", workflow}}});
  for (std::size_t i = 0; i < commands; ++i) {
    CommandEntry c;
    c.index = static_cast<std::uint32_t>(i);
    c.idempotency_key = workflow + "/" + std::to_string(step) + "/" + std::to_string(i);
    c.type = "DoThing";
    c.payload = machines::encode(machines::Command{c.type, {{"i", std::to_string(i)}}});
    r.commands.push_back(std::move(c));
  }
  return r;
}

struct FileSnapshot {
  bool exists = false;
  std::string bytes;
  long long mtime_ns = 0;
  friend bool operator==(const FileSnapshot&, const FileSnapshot&) = default;
};

inline FileSnapshot snapshot(const std::string& path) {
  FileSnapshot s;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return s;
  s.exists = true;
  s.mtime_ns = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  s.bytes = out.str();
  return s;
}

}  // namespace persoflow::storage::test
