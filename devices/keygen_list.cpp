// The key-generation list parser. Works on "logical lines": physical lines joined at backslash
// continuations, every character keeping its physical line and column so errors point at the
// text the person wrote.
#include "persoflow/devices/keygen_list.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <optional>
#include <string>

namespace persoflow::devices {
namespace {

struct PChar {
  char c;
  int line;
  int column;
};

using Logical = std::vector<PChar>;

struct Position {
  int line = 1;
  int column = 1;
};

Status error_at(Position p, const std::string& message) {
  return make_status(Errc::kInvalidArgument, "line " + std::to_string(p.line) + ", column " +
                                                 std::to_string(p.column) + ": " + message);
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\f' || c == '\r'; }

struct LogicalLines {
  std::vector<Logical> lines;
  std::vector<Position> ends;  // the position just after each logical line's last character
};

// Splits into physical lines and joins continuations. A line ending in a backslash (trailing
// blanks after it are tolerated) continues on the next line, whose leading blanks are skipped.
// Comment lines (first non-blank '#' or '!') never continue.
Result<LogicalLines> logical_lines(std::string_view text) {
  std::vector<std::string_view> physical;
  std::size_t start = 0;
  while (start <= text.size()) {
    auto nl = text.find('\n', start);
    if (nl == std::string_view::npos) {
      if (start < text.size()) physical.push_back(text.substr(start));
      break;
    }
    physical.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  LogicalLines out;
  Logical current;
  bool continuing = false;
  Position end;
  for (std::size_t i = 0; i < physical.size(); ++i) {
    std::string_view line = physical[i];
    const int line_no = static_cast<int>(i) + 1;
    std::size_t first = 0;
    if (continuing) {
      while (first < line.size() && is_blank(line[first])) ++first;
    } else {
      std::size_t k = 0;
      while (k < line.size() && is_blank(line[k])) ++k;
      if (k < line.size() && (line[k] == '#' || line[k] == '!')) {
        continue;  // a comment: skipped whole, never continued
      }
    }
    std::size_t last = line.size();
    while (last > first && is_blank(line[last - 1])) --last;
    // An odd number of trailing backslashes continues the line (an even number is literal).
    std::size_t backslashes = 0;
    while (backslashes < last - first && line[last - 1 - backslashes] == '\\') ++backslashes;
    const bool continues = (backslashes % 2) == 1;
    const std::size_t content_end = continues ? last - 1 : line.size();
    for (std::size_t k = first; k < content_end; ++k) {
      current.push_back({line[k], line_no, static_cast<int>(k) + 1});
    }
    if (continues) {
      if (i + 1 == physical.size()) {
        return error_at({line_no, static_cast<int>(last)},
                        "a backslash continues the line, but the text ends here");
      }
      continuing = true;
      continue;
    }
    continuing = false;
    end = {line_no, static_cast<int>(line.size()) + 1};
    out.lines.push_back(std::move(current));
    out.ends.push_back(end);
    current.clear();
  }
  return out;
}

bool all_blank(const Logical& line, std::size_t from = 0) {
  for (std::size_t i = from; i < line.size(); ++i) {
    if (!is_blank(line[i].c)) return false;
  }
  return true;
}

std::string curve_list() {
  std::string s;
  for (const auto& c : known_ec_curves()) s += (s.empty() ? "" : ", ") + c;
  return s;
}

// Validates ALG and PARAM of one entry; `name_at` / `param_at` are where they were written.
Result<KeyAlgorithm> make_algorithm(const std::string& name, Position name_at,
                                    const std::string& param, Position param_at) {
  KeyAlgorithm a;
  auto parse_bits = [&](const char* what, int min, int max, int step) -> Result<int> {
    bool digits =
        !param.empty() && param.size() <= 6 &&
        std::all_of(param.begin(), param.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits) {
      return error_at(param_at, std::string("bad ") + what + " size '" + param +
                                    "': expected a number of bits");
    }
    int bits = std::stoi(param);
    if (bits < min || bits > max || bits % step != 0 || param[0] == '0') {
      return error_at(param_at, std::string("bad ") + what + " size '" + param + "': expected " +
                                    std::to_string(min) + " to " + std::to_string(max) +
                                    " bits in steps of " + std::to_string(step));
    }
    return bits;
  };
  if (name == "RSA") {
    a.family = KeyFamily::kRsa;
    PF_ASSIGN_OR_RETURN(a.bits, parse_bits("RSA", 1024, 16384, 1024));
  } else if (name == "DSA") {
    a.family = KeyFamily::kDsa;
    PF_ASSIGN_OR_RETURN(a.bits, parse_bits("DSA", 1024, 3072, 1024));
  } else if (name == "EC") {
    a.family = KeyFamily::kEc;
    const auto& curves = known_ec_curves();
    if (std::find(curves.begin(), curves.end(), param) == curves.end()) {
      return error_at(param_at, "unknown EC curve '" + param + "' (known: " + curve_list() + ")");
    }
    a.curve = param;
    // The field size: the digits between the prefix and the "r1" suffix.
    const auto digits_at = param.find_first_of("0123456789");
    a.bits = std::stoi(param.substr(digits_at, param.size() - 2 - digits_at));
  } else {
    return error_at(name_at, "unknown algorithm '" + name + "' (expected RSA, EC or DSA)");
  }
  return a;
}

bool is_word(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; }

std::string describe(char c) {
  if (std::isprint(static_cast<unsigned char>(c))) return std::string("'") + c + "'";
  char buf[16];
  std::snprintf(buf, sizeof buf, "byte 0x%02X", static_cast<unsigned char>(c));
  return buf;
}

// Parses a value: chars [from, line.size()) of one logical line; `end` is the position after it.
Result<KeygenList> parse_value(const Logical& line, std::size_t from, Position end) {
  KeygenList list;
  std::size_t i = from;
  auto pos = [&](std::size_t k) -> Position {
    return k < line.size() ? Position{line[k].line, line[k].column} : end;
  };
  auto skip_blanks = [&] {
    while (i < line.size() && is_blank(line[i].c)) ++i;
  };
  auto read_word = [&] {
    std::string w;
    while (i < line.size() && is_word(line[i].c)) w += line[i++].c;
    return w;
  };
  std::optional<std::size_t> default_at;
  std::optional<Position> comma_at;
  skip_blanks();
  if (i == line.size()) return error_at(pos(i), "the key-generation list is empty");
  while (true) {
    skip_blanks();
    if (i == line.size()) {
      return error_at(*comma_at,
                      "trailing comma: an entry is missing after it (to go on in the next line, "
                      "end this one with '\\')");
    }
    if (line[i].c == ',') return error_at(pos(i), "empty entry: two commas with nothing between");
    const Position name_at = pos(i);
    std::string name = read_word();
    if (name.empty()) {
      return error_at(name_at, "unexpected " + describe(line[i].c) +
                                   ": expected an entry such as RSA:2048 or EC:secp256r1");
    }
    if (i == line.size() || line[i].c != ':') {
      return error_at(pos(i), "missing ':' after '" + name + "' (expected e.g. RSA:2048)");
    }
    ++i;
    const Position param_at = pos(i);
    std::string param = read_word();
    if (param.empty()) {
      return error_at(param_at, "missing size or curve after '" + name + ":'");
    }
    PF_ASSIGN_OR_RETURN(KeyAlgorithm algorithm, make_algorithm(name, name_at, param, param_at));
    for (const auto& e : list.entries) {
      if (e.algorithm == algorithm) {
        return error_at(name_at, algorithm.to_string() + " is listed twice (first at line " +
                                     std::to_string(e.line) + ", column " +
                                     std::to_string(e.column) + ")");
      }
    }
    if (i < line.size() && line[i].c == '*') {
      if (default_at) {
        const auto& first = list.entries[*default_at];
        return error_at(pos(i), "a second default '*': " + first.algorithm.to_string() +
                                    " is already the default");
      }
      default_at = list.entries.size();
      ++i;
    }
    list.entries.push_back({algorithm, name_at.line, name_at.column});
    skip_blanks();
    if (i == line.size()) break;
    if (line[i].c != ',') {
      return error_at(pos(i), "unexpected " + describe(line[i].c) + " after '" +
                                  algorithm.to_string() + "': entries are separated by ','");
    }
    comma_at = pos(i);
    ++i;
  }
  list.explicit_default = default_at.has_value();
  list.default_index = default_at.value_or(0);
  return list;
}

}  // namespace

std::string KeyAlgorithm::to_string() const {
  switch (family) {
    case KeyFamily::kRsa:
      return "RSA:" + std::to_string(bits);
    case KeyFamily::kDsa:
      return "DSA:" + std::to_string(bits);
    case KeyFamily::kEc:
      return "EC:" + curve;
  }
  return "?";
}

const std::vector<std::string>& known_ec_curves() {
  static const std::vector<std::string> curves = {
      "secp256r1",       "secp384r1",       "secp521r1",      "brainpoolP256r1",
      "brainpoolP320r1", "brainpoolP384r1", "brainpoolP512r1"};
  return curves;
}

Result<KeyAlgorithm> parse_key_algorithm(std::string_view text) {
  Logical line;
  for (std::size_t k = 0; k < text.size(); ++k) {
    line.push_back({text[k], 1, static_cast<int>(k) + 1});
  }
  PF_ASSIGN_OR_RETURN(KeygenList list,
                      parse_value(line, 0, {1, static_cast<int>(text.size()) + 1}));
  if (list.entries.size() != 1) {
    return make_status(
        Errc::kInvalidArgument,
        "expected one algorithm such as RSA:2048 or EC:secp256r1, got '" + std::string(text) + "'");
  }
  return list.entries.front().algorithm;
}

bool KeygenList::contains(const KeyAlgorithm& algorithm) const {
  return std::any_of(entries.begin(), entries.end(),
                     [&](const KeygenEntry& e) { return e.algorithm == algorithm; });
}

std::string KeygenList::to_string() const {
  std::string s;
  for (std::size_t k = 0; k < entries.size(); ++k) {
    if (k) s += ", ";
    s += entries[k].algorithm.to_string();
    if (explicit_default && k == default_index) s += '*';
  }
  return s;
}

Result<KeygenList> parse_keygen_value(std::string_view text) {
  PF_ASSIGN_OR_RETURN(LogicalLines lines, logical_lines(text));
  std::optional<std::size_t> value_line;
  for (std::size_t k = 0; k < lines.lines.size(); ++k) {
    if (all_blank(lines.lines[k])) continue;
    if (value_line) {
      const auto& l = lines.lines[k];
      std::size_t j = 0;
      while (is_blank(l[j].c)) ++j;
      return error_at(
          {l[j].line, l[j].column},
          "the list goes on in a new line: end the previous line with '\\' to continue it");
    }
    value_line = k;
  }
  if (!value_line) return error_at({1, 1}, "the key-generation list is empty");
  return parse_value(lines.lines[*value_line], 0, lines.ends[*value_line]);
}

Result<KeygenList> parse_keygen_config(std::string_view text) {
  PF_ASSIGN_OR_RETURN(LogicalLines lines, logical_lines(text));
  std::optional<KeygenList> found;
  Position found_at;
  for (std::size_t k = 0; k < lines.lines.size(); ++k) {
    const Logical& line = lines.lines[k];
    if (all_blank(line)) continue;
    std::size_t eq = 0;
    while (eq < line.size() && line[eq].c != '=') ++eq;
    std::size_t first = 0;
    while (is_blank(line[first].c)) ++first;
    if (eq == line.size()) {
      return error_at({line[first].line, line[first].column},
                      "expected 'key = value' (or a '#' comment)");
    }
    std::string key;
    for (std::size_t j = first; j < eq; ++j) key += line[j].c;
    while (!key.empty() && is_blank(key.back())) key.pop_back();
    if (key != kKeygenListKey) continue;
    const Position at{line[first].line, line[first].column};
    if (found) {
      return error_at(at, std::string(kKeygenListKey) + " is defined twice (first at line " +
                              std::to_string(found_at.line) + ")");
    }
    PF_ASSIGN_OR_RETURN(KeygenList list, parse_value(line, eq + 1, lines.ends[k]));
    found = std::move(list);
    found_at = at;
  }
  if (!found) {
    return make_status(Errc::kInvalidArgument,
                       "no '" + std::string(kKeygenListKey) + " = ...' line in the text");
  }
  return std::move(*found);
}

}  // namespace persoflow::devices
