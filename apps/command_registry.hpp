// The command groups of `persoflow`: each group (machines, journal, card, cm, ...) is one file of
// apps/ that registers itself with PF_REGISTER_COMMAND_GROUP, so main() only dispatches.
#pragma once

#include <string>
#include <vector>

namespace persoflow::apps {

// Runs a command group. argv[0] is "persoflow <group>"; the rest are the group's own arguments.
// Returns the process exit code: 0 success, 1 failure, 2 bad usage.
using GroupMain = int (*)(int argc, char** argv);

struct CommandGroup {
  const char* name;     // "journal"
  const char* summary;  // one line for `persoflow --help`
  GroupMain run;
};

std::vector<CommandGroup>& command_groups();

struct CommandGroupRegistrar {
  explicit CommandGroupRegistrar(CommandGroup group) { command_groups().push_back(group); }
};

}  // namespace persoflow::apps

#define PF_REGISTER_COMMAND_GROUP(ident, name, summary, fn) \
  static const ::persoflow::apps::CommandGroupRegistrar pf_register_##ident({name, summary, fn})
