// PIN generation, double entry and PIN letters (pin_delivery.hpp).
#include "persoflow/devices/pin_delivery.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <set>
#include <sstream>
#include <vector>

namespace persoflow::devices {

Result<std::string> pin_alphabet(std::string_view name_or_characters) {
  if (name_or_characters == "digits") return std::string(kPinAlphabetDigits);
  if (name_or_characters == "alnum") return std::string(kPinAlphabetAlnum);
  std::set<char> distinct(name_or_characters.begin(), name_or_characters.end());
  if (distinct.size() < 2 || distinct.size() != name_or_characters.size()) {
    return make_status(Errc::kInvalidArgument,
                       "a PIN alphabet is 'digits', 'alnum' or at least 2 distinct characters, "
                       "not '" + std::string(name_or_characters) + "'");
  }
  return std::string(name_or_characters);
}

Result<Secret> generate_pin(const PinRules& rules) {
  if (rules.length < 4 || rules.length > 64) {
    return make_status(Errc::kInvalidArgument, "a generated PIN has 4 to 64 characters, not " +
                                                   std::to_string(rules.length));
  }
  PF_ASSIGN_OR_RETURN(std::string alphabet, pin_alphabet(rules.alphabet));
  const unsigned n = static_cast<unsigned>(alphabet.size());
  // The largest multiple of n below 256: bytes at or above it are drawn again (no bias).
  const unsigned limit = 256 - 256 % n;
  std::string pin;
  unsigned char buf[64];
  while (static_cast<int>(pin.size()) < rules.length) {
    if (RAND_bytes(buf, sizeof buf) != 1) {
      OPENSSL_cleanse(pin.data(), pin.size());
      return make_status(Errc::kInternal, "OpenSSL's RNG gave no random bytes for a PIN");
    }
    for (unsigned char b : buf) {
      if (b < limit && static_cast<int>(pin.size()) < rules.length) pin += alphabet[b % n];
    }
  }
  OPENSSL_cleanse(buf, sizeof buf);
  return Secret(std::move(pin));
}

Result<std::optional<Secret>> read_pin_twice(int fd, const std::string& prompt) {
  auto first = read_secret(fd, prompt + " (empty to cancel and generate one): ");
  if (!first) {
    // An empty entry or no way to ask: the officer cancelled.
    if (first.status().code() == make_error_code(Errc::kInvalidArgument) ||
        first.status().code() == make_error_code(Errc::kUnavailable)) {
      return std::optional<Secret>();
    }
    return first.status();
  }
  PF_ASSIGN_OR_RETURN(Secret second, read_secret(fd, "the same PIN again: "));
  if (first->view() != second.view()) {
    return make_status(Errc::kInvalidArgument, "the two PIN entries differ");
  }
  return std::optional<Secret>(std::move(*first));
}

namespace {

// `pin` is the PIN, or "PIN\nPUK" for a card with two PINs: each on a line of its own.
std::vector<std::string> letter_lines(const PinLetter& l, std::string_view pin) {
  const auto newline = pin.find('\n');
  std::vector<std::string> lines = {"PERSONAL AND CONFIDENTIAL - PIN LETTER",
                                    "",
                                    "Letter ID: " + l.letter_id,
                                    "For: " + l.holder,
                                    "E-mail: " + l.address,
                                    "Token: " + l.token,
                                    "Created: " + l.created,
                                    "",
                                    "Your PIN: " + std::string(pin.substr(0, newline))};
  if (newline != std::string_view::npos) {
    lines.push_back("Your PUK: " + std::string(pin.substr(newline + 1)));
  }
  lines.push_back("");
  lines.push_back("Keep this PIN secret. Destroy this letter once you have memorised it.");
  return lines;
}

// A PDF literal string: ASCII only, with ( ) \ escaped.
std::string pdf_text(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '(' || c == ')' || c == '\\') out += '\\';
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  return out;
}

}  // namespace

std::string render_pin_letter_text(const PinLetter& letter, std::string_view pin) {
  std::string out;
  for (const auto& line : letter_lines(letter, pin)) out += line + "\n";
  return out;
}

std::string render_pin_letter_pdf(const PinLetter& letter, std::string_view pin) {
  std::ostringstream content;
  content << "BT /F1 12 Tf 72 760 Td 16 TL\n";
  for (const auto& line : letter_lines(letter, pin)) content << "(" << pdf_text(line) << ") '\n";
  content << "ET\n";
  const std::string stream = content.str();
  const std::vector<std::string> objects = {
      "<< /Type /Catalog /Pages 2 0 R >>",
      "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
      "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
      "/Resources << /Font << /F1 5 0 R >> >> >>",
      "<< /Length " + std::to_string(stream.size()) + " >>\nstream\n" + stream + "endstream",
      "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"};
  std::string pdf = "%PDF-1.4\n";
  std::vector<std::size_t> offsets;
  for (std::size_t i = 0; i < objects.size(); ++i) {
    offsets.push_back(pdf.size());
    pdf += std::to_string(i + 1) + " 0 obj\n" + objects[i] + "\nendobj\n";
  }
  const std::size_t xref = pdf.size();
  pdf += "xref\n0 " + std::to_string(objects.size() + 1) + "\n0000000000 65535 f \n";
  for (std::size_t off : offsets) {
    char entry[21];
    std::snprintf(entry, sizeof entry, "%010zu 00000 n \n", off);
    pdf += entry;
  }
  pdf += "trailer\n<< /Size " + std::to_string(objects.size() + 1) +
         " /Root 1 0 R >>\nstartxref\n" + std::to_string(xref) + "\n%%EOF\n";
  return pdf;
}

}  // namespace persoflow::devices
