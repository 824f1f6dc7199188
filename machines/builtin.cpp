// Keeps the workflow machines in every program that links the machines layer. Each machine
// registers itself from its own file (PF_REGISTER_MACHINE), but a linker drops an archive member
// nothing refers to, and with it the registration. machines/CMakeLists.txt asks the linker to
// keep this anchor, which refers to every built-in machine, so `persoflow machines list` and
// resuming a journaled workflow by machine name find them all.
#include <cstddef>

#include "persoflow/machines/issue_card.hpp"
#include "persoflow/machines/issue_soft_token.hpp"
#include "persoflow/machines/reissue.hpp"
#include "persoflow/machines/update_card.hpp"

extern "C" std::size_t persoflow_builtin_machines_anchor() {
  using namespace persoflow::machines;
  return issue_card_machine().rows.size() + update_card_machine().rows.size() +
         issue_soft_token_machine().rows.size() + reissue_machine().rows.size();
}
