// persoflow's own CMP general-message info types (genm/genp InfoTypeAndValue, RFC 4210 §5.3.19),
// under the private arc 1.3.6.1.4.1.55555.1 (docs/protocol.md describes each one). The value of
// every one of them, in a genm and in the genp, is an OCTET STRING holding a UTF-8 JSON object.
#pragma once

#include <string>

namespace persoflow::protocol {

inline constexpr const char* kOidProcedureList = "1.3.6.1.4.1.55555.1.1";
inline constexpr const char* kOidKeySearch = "1.3.6.1.4.1.55555.1.2";
inline constexpr const char* kOidKeyRecovery = "1.3.6.1.4.1.55555.1.3";
inline constexpr const char* kOidServerKeygen = "1.3.6.1.4.1.55555.1.4";
inline constexpr const char* kOidTcValidation = "1.3.6.1.4.1.55555.1.5";
// 1.6-1.9: reissue (docs/reissue.md).
inline constexpr const char* kOidCertificateSearch = "1.3.6.1.4.1.55555.1.6";
inline constexpr const char* kOidEmailVerification = "1.3.6.1.4.1.55555.1.7";
// PIN letters (cmhost/pin_letters.hpp): queue a mailer letter; bind a pre-printed letter.
inline constexpr const char* kOidPinLetterQueue = "1.3.6.1.4.1.55555.1.15";
inline constexpr const char* kOidPinLetterBind = "1.3.6.1.4.1.55555.1.16";
// Confirms (or rejects) the certificates a keygen or recovery genm made in another transaction.
inline constexpr const char* kOidCertConfirm = "1.3.6.1.4.1.55555.1.10";
inline constexpr const char* kOidError = "1.3.6.1.4.1.55555.1.99";

// Registers the OIDs with OpenSSL's object table (OBJ_create) once per process; thread-safe.
// Returns the NID of one of them (0 for an unknown OID).
int info_type_nid(const char* oid);
void register_info_types();
// "persoflowKeySearch" for a known OID, the dotted OID otherwise.
std::string info_type_name(const std::string& oid);

}  // namespace persoflow::protocol
