// Registration of persoflow's genm info-type OIDs with OpenSSL; see cm_info_types.hpp.
#include "persoflow/protocol/cm_info_types.hpp"

#include <openssl/objects.h>

#include <mutex>

namespace persoflow::protocol {
namespace {
struct InfoType {
  const char* oid;
  const char* short_name;
  const char* long_name;
};
constexpr InfoType kInfoTypes[] = {
    {kOidProcedureList, "persoflowProcedureList", "persoflow procedure list"},
    {kOidKeySearch, "persoflowKeySearch", "persoflow archived key search"},
    {kOidKeyRecovery, "persoflowKeyRecovery", "persoflow key recovery"},
    {kOidServerKeygen, "persoflowServerKeygen", "persoflow server-side key generation"},
    {kOidTcValidation, "persoflowTcValidation", "persoflow transport certificate validation"},
    {kOidCertificateSearch, "persoflowCertificateSearch", "persoflow certificate search"},
    {kOidEmailVerification, "persoflowEmailVerification", "persoflow e-mail verification"},
    {kOidPinLetterQueue, "persoflowPinLetterQueue", "persoflow PIN letter for the PIN mailer"},
    {kOidPinLetterBind, "persoflowPinLetterBind", "persoflow pre-printed PIN letter binding"},
    {kOidCertConfirm, "persoflowCertConfirm", "persoflow certificate confirmation"},
    {kOidError, "persoflowError", "persoflow general message error"},
};
std::once_flag g_once;
}  // namespace

void register_info_types() {
  std::call_once(g_once, [] {
    for (const auto& t : kInfoTypes) {
      if (OBJ_txt2nid(t.oid) == NID_undef) OBJ_create(t.oid, t.short_name, t.long_name);
    }
  });
}

int info_type_nid(const char* oid) {
  register_info_types();
  return OBJ_txt2nid(oid);
}

std::string info_type_name(const std::string& oid) {
  for (const auto& t : kInfoTypes) {
    if (oid == t.oid) return t.short_name;
  }
  return oid;
}

}  // namespace persoflow::protocol
