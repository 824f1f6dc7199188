// Base64 on OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock; see base64.hpp.
#include "persoflow/protocol/base64.hpp"

#include <openssl/evp.h>

namespace persoflow::protocol {

std::string base64_encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

Result<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return make_status(Errc::kInvalidArgument, "bad base64");
  std::string out(text.size() / 4 * 3, '\0');
  // EVP_DecodeBlock keeps the padding's zero bytes: take them off again.
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return make_status(Errc::kInvalidArgument, "bad base64");
  std::size_t pad = 0;
  if (!text.empty() && text.back() == '=') ++pad;
  if (text.size() > 1 && text[text.size() - 2] == '=') ++pad;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

}  // namespace persoflow::protocol
