// Base64 (RFC 4648, with padding, no line breaks) for the binary values inside persoflow's genm
// JSON and for RFC 2047 mail headers.
#pragma once

#include <string>
#include <string_view>

#include "persoflow/common/status.hpp"

namespace persoflow::protocol {

std::string base64_encode(std::string_view data);
// Refuses text whose length is not a multiple of 4 or that holds other characters:
// kInvalidArgument "bad base64".
Result<std::string> base64_decode(std::string_view text);

}  // namespace persoflow::protocol
