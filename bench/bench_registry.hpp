// The suites of persoflow-bench: each suite (journal, devices, cm, ...) is one file that registers
// itself. A suite prints one `BENCH <name> <value> <unit>` line per figure on stdout.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace persoflow::bench {

using SuiteMain = int (*)(int argc, char** argv);

struct Suite {
  const char* name;
  const char* summary;
  SuiteMain run;
};

std::vector<Suite>& suites();

struct SuiteRegistrar {
  explicit SuiteRegistrar(Suite suite) { suites().push_back(suite); }
};

inline void report(const std::string& name, double value, const std::string& unit) {
  std::printf("BENCH %s %.6g %s\n", name.c_str(), value, unit.c_str());
  std::fflush(stdout);
}

}  // namespace persoflow::bench

#define PF_REGISTER_BENCH_SUITE(ident, name, summary, fn) \
  static const ::persoflow::bench::SuiteRegistrar pf_bench_##ident({name, summary, fn})
