// persoflowCertificateSearch (reissue_cm.hpp): the certificates this CA issued, found by
// hexadecimal serial, decimal certificate ID or subject, each with its status and whether a key
// is archived for it; and the dispatcher of the reissue genm info types.
#include <nlohmann/json.hpp>

#include "persoflow/cmhost/reissue_cm.hpp"
#include "persoflow/protocol/base64.hpp"
#include "persoflow/protocol/cm_info_types.hpp"
#include "reissue_genm.hpp"

namespace persoflow::cmhost {

using nlohmann::json;

Result<std::string> certificate_search(CmHost& host, const Officer& officer,
                                       const json& request) {
  if (!officer.has_role(kRoleIssue) && !officer.has_role(kRoleRecover)) {
    return make_status(Errc::kPermissionDenied,
                       "officer '" + officer.name + "' has neither role 'issue' nor 'recover'");
  }
  const int criteria = static_cast<int>(request.contains("serial")) +
                       static_cast<int>(request.contains("cert_id")) +
                       static_cast<int>(request.contains("subject"));
  if (criteria != 1) {
    return make_status(Errc::kInvalidArgument,
                       "give exactly one of serial (hexadecimal), cert_id (decimal) or subject");
  }
  storage::CertQuery query;
  if (request.contains("serial")) {
    PF_ASSIGN_OR_RETURN(std::string serial,
                        normalize_serial_hex(request.at("serial").get<std::string>()));
    query.serial_hex = serial;
  } else if (request.contains("cert_id")) {
    const json& id = request.at("cert_id");
    if (!id.is_number_integer() || id.get<std::int64_t>() <= 0) {
      return make_status(Errc::kInvalidArgument, "cert_id must be a positive decimal number");
    }
    query.cert_id = id.get<std::int64_t>();
  } else {
    query.subject = request.at("subject").get<std::string>();
    query.subject_substring = request.value("substring", false);
    if (query.subject->empty()) return make_status(Errc::kInvalidArgument, "empty subject");
  }
  query.limit = 1000;
  PF_ASSIGN_OR_RETURN(auto certificates, host.store().find_certificates(query));
  json list = json::array();
  for (const auto& c : certificates) {
    PF_ASSIGN_OR_RETURN(auto keys, host.store().archived_keys_for(c.cert_id));
    list.push_back({{"cert_id", c.cert_id},
                    {"serial", c.serial_hex},
                    {"subject", c.subject},
                    {"issuer", c.issuer},
                    {"status", storage::to_string(c.status)},
                    {"revocation_reason", c.revocation_reason},
                    {"procedure", c.procedure},
                    {"not_before", c.not_before},
                    {"not_after", c.not_after},
                    {"archived_keys", keys.size()},
                    {"certificate", protocol::base64_encode(c.der)}});
  }
  return json{{"certificates", list}}.dump();
}

std::optional<Result<std::string>> reissue_genm_item(CmHost& host, const Officer& officer,
                                                     const std::string& oid,
                                                     const std::string& request_json) {
  if (oid != protocol::kOidCertificateSearch && oid != protocol::kOidEmailVerification) {
    return std::nullopt;
  }
  json request;
  try {
    request = request_json.empty() ? json::object() : json::parse(request_json);
    if (!request.is_object()) {
      return Result<std::string>(
          make_status(Errc::kInvalidArgument, "the value is not a JSON object"));
    }
    if (oid == protocol::kOidCertificateSearch) return certificate_search(host, officer, request);
    return email_verification_status(host, officer, request);
  } catch (const json::exception& e) {
    return Result<std::string>(
        make_status(Errc::kInvalidArgument, std::string("bad request field: ") + e.what()));
  }
}

}  // namespace persoflow::cmhost
