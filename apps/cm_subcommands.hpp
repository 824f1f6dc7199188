// The subcommands of `persoflow cm` (init, serve, procedures, officer, certs, crl, audit): each
// registers itself here from its own file with PF_REGISTER_CM_SUBCOMMAND, so the files of the CA
// side (cmd_cm.cpp) and of the server side (serve) never edit each other.
#pragma once

#include <vector>

namespace persoflow::apps {

// argv[0] is "persoflow cm <name>"; returns the exit code (0 ok, 1 failure, 2 bad usage).
using CmSubcommandMain = int (*)(int argc, char** argv);

struct CmSubcommand {
  const char* name;
  const char* summary;
  CmSubcommandMain run;
};

std::vector<CmSubcommand>& cm_subcommands();

struct CmSubcommandRegistrar {
  explicit CmSubcommandRegistrar(CmSubcommand sub) { cm_subcommands().push_back(sub); }
};

}  // namespace persoflow::apps

#define PF_REGISTER_CM_SUBCOMMAND(ident, name, summary, fn) \
  static const ::persoflow::apps::CmSubcommandRegistrar pf_register_cm_##ident({name, summary, fn})
