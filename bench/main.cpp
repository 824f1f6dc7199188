// persoflow-bench <suite> [options]: runs one benchmark suite (or `all`) and prints BENCH lines.
#include <cstdio>
#include <cstring>
#include <string>

#include "bench_registry.hpp"

namespace persoflow::bench {
std::vector<Suite>& suites() {
  static std::vector<Suite> all;
  return all;
}
}  // namespace persoflow::bench

int main(int argc, char** argv) {
  using namespace persoflow::bench;
  auto usage = [](std::FILE* out) {
    std::fprintf(out, "Usage: persoflow-bench <suite>|all [suite options]\n\n"
                      "Prints one 'BENCH <name> <value> <unit>' line per figure.\n\nSuites:\n");
    for (const auto& s : suites()) std::fprintf(out, "  %-10s %s\n", s.name, s.summary);
  };
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string name = argv[1];
  if (name == "--help" || name == "-h") {
    usage(stdout);
    return 0;
  }
  int rc = 0;
  bool found = false;
  for (const auto& s : suites()) {
    if (name == "all" || name == s.name) {
      found = true;
      if (int r = s.run(argc - 1, argv + 1); r != 0) rc = r;
    }
  }
  if (!found) {
    std::fprintf(stderr, "persoflow-bench: unknown suite '%s'\n", name.c_str());
    usage(stderr);
    return 2;
  }
  return rc;
}
