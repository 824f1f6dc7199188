// persoflow: dispatches `persoflow <group> ...` to the command group that registered itself.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "command_registry.hpp"
#include "persoflow/storage/fault_vfs.hpp"

namespace persoflow::apps {

std::vector<CommandGroup>& command_groups() {
  static std::vector<CommandGroup> groups;
  return groups;
}

namespace {

void print_help(std::FILE* out) {
  auto groups = command_groups();
  std::sort(groups.begin(), groups.end(),
            [](const CommandGroup& a, const CommandGroup& b) { return std::strcmp(a.name, b.name) < 0; });
  std::fprintf(out,
               "persoflow: personalizes smart cards and issues software tokens for a PKI\n"
               "Registration Authority, every step an explicit, journaled state machine.\n\n"
               "Usage: persoflow <command> [options]   (persoflow <command> --help for more)\n\n"
               "Commands:\n");
  for (const auto& g : groups) std::fprintf(out, "  %-15s %s\n", g.name, g.summary);
}

}  // namespace
}  // namespace persoflow::apps

int main(int argc, char** argv) {
  using namespace persoflow::apps;
  persoflow::storage::install_fault_vfs_from_environment();  // only with PERSOFLOW_FAULT(_COUNT)
  if (argc < 2) {
    print_help(stderr);
    return 2;
  }
  std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_help(stdout);
    return 0;
  }
  if (name == "--version") {
    std::printf("persoflow 0.1.0\n");
    return 0;
  }
  for (const auto& g : command_groups()) {
    if (name == g.name) {
      std::string program = std::string("persoflow ") + g.name;
      argv[1] = program.data();
      return g.run(argc - 1, argv + 1);
    }
  }
  std::fprintf(stderr, "persoflow: unknown command '%s' (see 'persoflow --help')\n", name.c_str());
  return 2;
}
