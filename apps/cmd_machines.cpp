// `persoflow machines list|show`: the state machines this build knows, and their transition
// tables drawn as Graphviz DOT, Mermaid or a plain table. Reads nothing but the registry.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "command_registry.hpp"
#include "persoflow/machines/engine.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;
namespace m = persoflow::machines;

constexpr const char* kUsage =
    "Usage: persoflow machines list [--json]\n"
    "       persoflow machines show NAME [--format table|dot|mermaid]\n\n"
    "  list   the state machines of this build: name, description, states, transitions\n"
    "  show   one machine's transition table; --format dot (Graphviz), mermaid, or table\n"
    "         (default)\n";

int list(int argc, char** argv) {
  po::options_description opts("persoflow machines list options");
  opts.add_options()("help,h", "show this help")("json", "print a JSON array");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << kUsage << "\n" << opts;
    return 0;
  }
  auto machines = m::all_machines();
  if (vm.count("json")) {
    nlohmann::json out = nlohmann::json::array();
    for (const m::MachineDef* def : machines) {
      out.push_back({{"name", def->name},
                     {"description", def->description},
                     {"initial", def->initial},
                     {"states", m::states_of(*def)},
                     {"transitions", def->rows.size()},
                     {"valid", m::validate(*def).ok}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (machines.empty()) {
    std::cout << "no machines registered in this build\n";
    return 0;
  }
  std::size_t width = 4;
  for (const m::MachineDef* def : machines) width = std::max(width, def->name.size());
  for (const m::MachineDef* def : machines) {
    std::string name(def->name);
    name.resize(width, ' ');
    std::cout << name << "  " << def->description << " (" << m::states_of(*def).size()
              << " states, " << def->rows.size() << " transitions)\n";
  }
  return 0;
}

int show(int argc, char** argv) {
  po::options_description opts("persoflow machines show options");
  std::string name, format;
  opts.add_options()("help,h", "show this help")(
      "format", po::value(&format)->default_value("table"), "table, dot or mermaid");
  po::options_description hidden;
  hidden.add_options()("name", po::value(&name));
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("name", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << kUsage << "\n" << opts;
    return 0;
  }
  po::notify(vm);
  if (name.empty()) {
    std::cerr << "persoflow machines show: a machine NAME is required (see 'persoflow machines "
                 "list')\n";
    return 2;
  }
  const m::MachineDef* def = m::find_machine(name);
  if (!def) {
    std::cerr << "persoflow machines show: unknown machine '" << name
              << "' (see 'persoflow machines list')\n";
    return 1;
  }
  if (format == "dot") {
    std::cout << m::render_dot(*def);
  } else if (format == "mermaid") {
    std::cout << m::render_mermaid(*def);
  } else if (format == "table") {
    std::cout << m::render_table(*def);
  } else {
    std::cerr << "persoflow machines show: unknown format '" << format
              << "' (use table, dot or mermaid)\n";
    return 2;
  }
  return 0;
}

int machines_main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  std::string sub = argv[1];
  if (sub == "--help" || sub == "-h" || sub == "help") {
    std::cout << kUsage;
    return 0;
  }
  try {
    if (sub == "list") return list(argc - 1, argv + 1);
    if (sub == "show") return show(argc - 1, argv + 1);
  } catch (const po::error& e) {
    std::cerr << "persoflow machines " << sub << ": " << e.what() << "\n";
    return 2;
  }
  std::cerr << "persoflow machines: unknown subcommand '" << sub << "' (list or show)\n";
  return 2;
}

}  // namespace
}  // namespace persoflow::apps

PF_REGISTER_COMMAND_GROUP(machines, "machines", "list the state machines and draw their tables",
                          persoflow::apps::machines_main);
