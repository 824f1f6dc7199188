// Archiving of a key the RA generated: the CRMF control PKIArchiveOptions (RFC 4211 §6.4) with
// encryptedPrivKey = EncryptedKey.envelopedData, a CMS EnvelopedData (RFC 5652, AES-256-CBC) for
// the CM host's key-archive certificate whose content (id-ct-encKeyWithID, RFC 4211 §4.4) is
// EncKeyWithID { PrivateKeyInfo }. OpenSSL 3.0 has no API for this control: the client side
// inserts it into the CertRequest's DER before the proof of possession is signed; the server side
// reads it back from the DER. Pure encode/decode: no I/O. Thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "persoflow/common/status.hpp"
#include "persoflow/protocol/ossl.hpp"

namespace persoflow::protocol {

using CrmfMsgPtr = std::unique_ptr<OSSL_CRMF_MSG, OsslDeleter<OSSL_CRMF_MSG_free>>;

// The PKIArchiveOptions value (DER) carrying private_key enveloped for archive_cert.
Result<std::string> archive_options_der(const EVP_PKEY* private_key, const X509* archive_cert);

// Adds PKIArchiveOptions to crm's controls. Call before OSSL_CRMF_MSG_create_popo: the proof of
// possession signs the CertRequest, controls included. Returns the new message.
Result<CrmfMsgPtr> with_archive_options(const OSSL_CRMF_MSG* crm, std::string_view options_der);

// The server side. The EnvelopedData of crm's PKIArchiveOptions as a CMS ContentInfo (DER), ready
// for CMS_decrypt; nullopt when the request asks for no archiving. A PKIArchiveOptions that is not
// encryptedPrivKey with envelopedData (keyGenParameters, archiveRemGenPrivKey, the deprecated
// EncryptedValue) or is malformed: kUnsupported / kInvalidArgument naming it.
Result<std::optional<std::string>> archive_envelope_of(const OSSL_CRMF_MSG* crm);

// The PrivateKeyInfo (PKCS#8 DER) inside a decrypted envelope's content: EncKeyWithID, or a bare
// PrivateKeyInfo as some clients send.
Result<std::string> private_key_info_of(std::string_view content);

}  // namespace persoflow::protocol
