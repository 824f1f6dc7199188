// The genm handlers of reissue, dispatched by reissue_genm_item() (certificate_search.cpp).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "persoflow/cmhost/cm_host.hpp"

namespace persoflow::cmhost {

// persoflowCertificateSearch: {"serial"} | {"cert_id"} | {"subject"[, "substring"]} ->
// {"certificates": [...]}.
Result<std::string> certificate_search(CmHost& host, const Officer& officer,
                                       const nlohmann::json& request);
// persoflowEmailVerification: {"transaction_id"} -> {"status": waiting | issued | expired, ...}.
Result<std::string> email_verification_status(CmHost& host, const Officer& officer,
                                              const nlohmann::json& request);

}  // namespace persoflow::cmhost
