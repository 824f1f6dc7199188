#include "persoflow/common/crash_point.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "persoflow/common/fault_points.hpp"

namespace persoflow {
namespace {

struct Config {
  bool armed = false;
  bool counting = false;
  std::string name;
  long target = 0;
};

const Config& config() {
  static const Config cfg = [] {
    Config c;
    if (const char* count = std::getenv("PERSOFLOW_CRASH_COUNT"); count && *count) c.counting = true;
    const char* spec = std::getenv("PERSOFLOW_CRASH_AT");
    if (!spec || !*spec) return c;
    std::string s(spec);
    auto colon = s.rfind(':');
    if (colon == std::string::npos) return c;
    c.name = s.substr(0, colon);
    c.target = std::strtol(s.c_str() + colon + 1, nullptr, 10);
    c.armed = c.target > 0;
    return c;
  }();
  return cfg;
}

std::mutex counts_mutex;
std::map<std::string, long>& counts() {
  static std::map<std::string, long> m;
  return m;
}

}  // namespace

void crash_point(const char* name) {
  // Fault point 13 (process.killed) counts journal commits in the fault-point numbering.
  if (name[0] == 'j' && std::string_view(name) == "journal.after_commit" &&
      fault_fires(FaultPoint::kProcessKilled)) {
    ::kill(::getpid(), SIGKILL);
    ::pause();
  }
  const Config& cfg = config();
  if (!cfg.armed && !cfg.counting) return;
  long hits;
  {
    std::lock_guard lock(counts_mutex);
    hits = ++counts()[name];
  }
  if (cfg.armed && hits == cfg.target && cfg.name == name) {
    ::kill(::getpid(), SIGKILL);
    ::pause();
  }
  if (cfg.counting) {
    if (const char* path = std::getenv("PERSOFLOW_CRASH_COUNT")) write_crash_point_counts(path);
  }
}

void write_crash_point_counts(const char* path) {
  std::lock_guard lock(counts_mutex);
  std::string tmp = std::string(path) + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) return;
  for (const auto& [name, n] : counts()) std::fprintf(f, "%s %ld\n", name.c_str(), n);
  std::fclose(f);
  std::rename(tmp.c_str(), path);
}

}  // namespace persoflow
