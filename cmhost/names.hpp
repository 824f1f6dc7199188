// Private to cmhost/: the names persoflow's configuration uses for key usages, extended key
// usages, curves and QC types, mapped to OpenSSL's identifiers.
#pragma once

#include <optional>
#include <string>

namespace persoflow::cmhost::names {

// KU_* bit of a keyUsage name (digitalSignature, nonRepudiation/contentCommitment, ...); 0: unknown.
int key_usage_bit(const std::string& name);
// NID of an extended key usage name (serverAuth, clientAuth, codeSigning, emailProtection,
// timeStamping, OCSPSigning, msSmartcardLogin) or dotted OID; NID_undef when unknown (dotted OIDs
// without a NID are created at run time).
int eku_nid(const std::string& name);
// NID of a curve name: secp256r1 / P-256 / prime256v1, secp384r1, secp521r1, brainpoolP*r1.
int curve_nid(const std::string& name);
// The name the configuration uses for a curve NID (secp256r1 for prime256v1).
std::string curve_name(int nid);

}  // namespace persoflow::cmhost::names
