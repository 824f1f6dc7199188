// RFC 7512 PKCS#11 URI parsing: path attributes separated by ';', query attributes after '?'
// separated by '&', values percent-decoded. Strict: an unknown or repeated attribute is an error,
// so a typo never silently widens a match to another card.
#include "persoflow/devices/pkcs11_uri.hpp"

#include <cstdio>

namespace persoflow::devices {
namespace {

Status uri_error(std::size_t at, const std::string& message) {
  return make_status(Errc::kInvalidArgument,
                     "PKCS#11 URI, character " + std::to_string(at + 1) + ": " + message);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<std::string> percent_decode(std::string_view v, std::size_t offset) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] != '%') {
      out += v[i];
      continue;
    }
    int hi = i + 1 < v.size() ? hex_value(v[i + 1]) : -1;
    int lo = i + 2 < v.size() ? hex_value(v[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      return uri_error(offset + i, "'%' must be followed by two hexadecimal digits");
    }
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

}  // namespace

bool Pkcs11Uri::names_token() const {
  return token || serial || manufacturer || model || slot_description || slot_manufacturer;
}

bool Pkcs11Uri::matches_token(std::string_view label_v, std::string_view serial_v,
                              std::string_view manufacturer_v, std::string_view model_v,
                              std::string_view slot_description_v) const {
  auto eq = [](const std::optional<std::string>& want, std::string_view have) {
    return !want || *want == have;
  };
  return eq(token, label_v) && eq(serial, serial_v) && eq(manufacturer, manufacturer_v) &&
         eq(model, model_v) && eq(slot_description, slot_description_v);
}

Result<Pkcs11Uri> parse_pkcs11_uri(std::string_view text) {
  constexpr std::string_view kScheme = "pkcs11:";
  if (text.substr(0, kScheme.size()) != kScheme) {
    return make_status(
        Errc::kInvalidArgument,
        "not a PKCS#11 URI (it must start with 'pkcs11:'): '" + std::string(text) + "'");
  }
  Pkcs11Uri uri;
  std::size_t query_at = text.find('?');
  std::string_view path =
      text.substr(kScheme.size(), query_at == std::string_view::npos ? std::string_view::npos
                                                                     : query_at - kScheme.size());
  auto for_each_attr = [&](std::string_view part, std::size_t base, char sep,
                           bool query) -> Status {
    std::size_t start = 0;
    while (start <= part.size()) {
      std::size_t end = part.find(sep, start);
      if (end == std::string_view::npos) end = part.size();
      std::string_view attr = part.substr(start, end - start);
      const std::size_t at = base + start;
      if (!attr.empty()) {
        auto eq = attr.find('=');
        if (eq == std::string_view::npos) {
          return uri_error(at, "attribute '" + std::string(attr) + "' has no '=value'");
        }
        std::string name(attr.substr(0, eq));
        PF_ASSIGN_OR_RETURN(std::string value, percent_decode(attr.substr(eq + 1), at + eq + 1));
        auto set = [&](std::optional<std::string>& field) -> Status {
          if (field) return uri_error(at, "attribute '" + name + "' given twice");
          field = value;
          return Status::ok();
        };
        if (!query && name == "token")
          PF_RETURN_IF_ERROR(set(uri.token));
        else if (!query && name == "serial")
          PF_RETURN_IF_ERROR(set(uri.serial));
        else if (!query && name == "manufacturer")
          PF_RETURN_IF_ERROR(set(uri.manufacturer));
        else if (!query && name == "model")
          PF_RETURN_IF_ERROR(set(uri.model));
        else if (!query && name == "slot-description")
          PF_RETURN_IF_ERROR(set(uri.slot_description));
        else if (!query && name == "slot-manufacturer")
          PF_RETURN_IF_ERROR(set(uri.slot_manufacturer));
        else if (!query && name == "library-manufacturer")
          PF_RETURN_IF_ERROR(set(uri.library_manufacturer));
        else if (!query && name == "library-description")
          PF_RETURN_IF_ERROR(set(uri.library_description));
        else if (!query && name == "library-version") {
          // Accepted and ignored: the module is chosen by path, not by version.
        } else if (!query && name == "object")
          PF_RETURN_IF_ERROR(set(uri.object));
        else if (!query && name == "type") {
          if (value != "cert" && value != "private" && value != "public" && value != "secret-key" &&
              value != "data") {
            return uri_error(
                at, "type '" + value + "' is not one of cert, private, public, secret-key, data");
          }
          PF_RETURN_IF_ERROR(set(uri.type));
        } else if (!query && name == "id") {
          if (uri.id) return uri_error(at, "attribute 'id' given twice");
          uri.id = std::vector<unsigned char>(value.begin(), value.end());
        } else if (!query && name == "slot-id") {
          return uri_error(at,
                           "slot-id is not accepted: slot numbers change between runs; name the "
                           "token by token=, serial= or slot-description=");
        } else if (name == "pin-value" || name == "pin-source") {
          return uri_error(at,
                           name + " is not accepted: give the PIN with --pin-fd or at the prompt");
        } else if (query && name == "module-path")
          PF_RETURN_IF_ERROR(set(uri.module_path));
        else if (query && name == "module-name") {
          return uri_error(at, "module-name is not supported: use module-path= or --module");
        } else {
          return uri_error(at, std::string("unknown ") + (query ? "query" : "path") +
                                   " attribute '" + name + "'");
        }
      }
      if (end == part.size()) break;
      start = end + 1;
    }
    return Status::ok();
  };
  PF_RETURN_IF_ERROR(for_each_attr(path, kScheme.size(), ';', false));
  if (query_at != std::string_view::npos) {
    PF_RETURN_IF_ERROR(for_each_attr(text.substr(query_at + 1), query_at + 1, '&', true));
  }
  return uri;
}

std::string percent_encode_bytes(const std::vector<unsigned char>& bytes) {
  std::string out;
  char buf[4];
  for (unsigned char b : bytes) {
    std::snprintf(buf, sizeof buf, "%%%02X", b);
    out += buf;
  }
  return out;
}

}  // namespace persoflow::devices
