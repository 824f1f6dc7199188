// What the station's integration tests share: the address of the demo's CM host in its
// station.conf (for tests/support/cm_server.hpp) and counting a subject's certificates in the CM
// database.
#pragma once

#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cm_server.hpp"
#include "test_support.hpp"

namespace persoflow::testing {

// The CM host's address in a station.conf: "cm_url": "https://127.0.0.1:PORT" -> 127.0.0.1:PORT.
inline std::string cm_address(const std::filesystem::path& station_conf) {
  std::ifstream in(station_conf);
  std::stringstream text;
  text << in.rdbuf();
  const std::string s = text.str();
  const auto at = s.find("127.0.0.1:");
  if (at == std::string::npos) return {};
  auto end = at + 10;
  while (end < s.size() && std::isdigit(static_cast<unsigned char>(s[end]))) ++end;
  return s.substr(at, end - at);
}

// The serials (hex, as `persoflow cm certs list` shows them) of the certificates in the CM
// database of DIR/cm whose subject holds "CN=<cn>".
inline std::vector<std::string> serials_for(const std::filesystem::path& dir,
                                            const std::string& cn) {
  auto listed =
      run({persoflow_binary(), "cm", "certs", "list", "--dir", (dir / "cm").string(), "--json"});
  std::vector<std::string> serials;
  for (const auto& c : nlohmann::json::parse(listed.out)) {
    if (c.value("subject", "").find("CN=" + cn) != std::string::npos) {
      serials.push_back(c.value("serial", ""));
    }
  }
  return serials;
}

inline int certificates_for(const std::filesystem::path& dir, const std::string& cn) {
  return static_cast<int>(serials_for(dir, cn).size());
}

// The card's "persoflow certificate", read back with pkcs11-tool, checked with openssl verify
// against the CM host's CA of DIR/cm; `serial` gets its serial as openssl prints it. Returns what
// failed, or "".
inline std::string card_certificate_problems(const std::string& softhsm_env,
                                             const std::string& label,
                                             const std::filesystem::path& dir, const TempDir& tmp,
                                             std::string* serial = nullptr) {
  const std::string der = tmp.file(label + "-cert.der"), pem = der + ".pem";
  auto read = run({"/usr/bin/env", softhsm_env, "pkcs11-tool", "--module",
                   "/usr/lib/softhsm/libsofthsm2.so", "--token-label", label, "--read-object",
                   "--type", "cert", "--label", "persoflow certificate", "-o", der});
  if (read.exit_code != 0) return "no persoflow certificate to read on " + label + ": " + read.err;
  if (run({"openssl", "x509", "-inform", "DER", "-in", der, "-out", pem}).exit_code != 0) {
    return "openssl x509 cannot read the certificate on " + label;
  }
  auto verified = run({"openssl", "verify", "-CAfile", (dir / "cm" / "ca" / "ca.pem").string(), pem});
  if (verified.exit_code != 0) return "openssl verify: " + verified.out + verified.err;
  if (serial != nullptr) {
    auto printed = run({"openssl", "x509", "-in", pem, "-noout", "-serial"});
    const auto eq = printed.out.find('=');
    if (printed.exit_code != 0 || eq == std::string::npos) return "no serial: " + printed.err;
    *serial = printed.out.substr(eq + 1);
    while (!serial->empty() && serial->back() == '\n') serial->pop_back();
  }
  return "";
}

// Puts the certificate of a CA other than the CM host's ("CN=Old Card CA", made by openssl) on
// the card `label` as "CA certificate", the way a card comes from pre-personalisation, with
// pkcs11-tool (user PIN 123456). `softhsm_env` is "SOFTHSM2_CONF=...". Returns what failed, or "".
inline std::string write_old_ca_certificate(const std::string& softhsm_env,
                                            const std::string& label, const TempDir& tmp) {
  const std::string key = tmp.file(label + "-old-ca.key"), pem = tmp.file(label + "-old-ca.pem"),
                    der = tmp.file(label + "-old-ca.der");
  if (run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-subj", "/CN=Old Card CA", "-days", "3", "-keyout", key, "-out", pem})
          .exit_code != 0) {
    return "openssl req failed";
  }
  if (run({"openssl", "x509", "-in", pem, "-outform", "DER", "-out", der}).exit_code != 0) {
    return "openssl x509 failed";
  }
  auto written = run({"/usr/bin/env", softhsm_env, "pkcs11-tool", "--module",
                      "/usr/lib/softhsm/libsofthsm2.so", "--token-label", label, "--login",
                      "--pin", "123456", "--write-object", der, "--type", "cert", "--label",
                      "CA certificate", "--id", "01"});
  return written.exit_code == 0 ? "" : "pkcs11-tool --write-object failed: " + written.err;
}

// The card's "CA certificate", read back with pkcs11-tool, against the CM host's CA of DIR/cm:
// "" when openssl gives both the same fingerprint, else both fingerprints.
inline std::string ca_certificate_mismatch(const std::string& softhsm_env,
                                           const std::string& label,
                                           const std::filesystem::path& dir, const TempDir& tmp) {
  const std::string der = tmp.file(label + "-ca.der");
  if (run({"/usr/bin/env", softhsm_env, "pkcs11-tool", "--module",
           "/usr/lib/softhsm/libsofthsm2.so", "--token-label", label, "--read-object", "--type",
           "cert", "--label", "CA certificate", "-o", der})
          .exit_code != 0) {
    return "no CA certificate to read on " + label;
  }
  auto on_card = run({"openssl", "x509", "-inform", "DER", "-in", der, "-noout", "-fingerprint"});
  auto cm_ca = run({"openssl", "x509", "-in", (dir / "cm" / "ca" / "ca.pem").string(), "-noout",
                    "-fingerprint"});
  return on_card.out == cm_ca.out && !on_card.out.empty() ? ""
                                                          : "card " + on_card.out + "CM " + cm_ca.out;
}

// What a card with two PINs holds after its workflow, checked from outside: the PIN opens it as
// user, the PUK as SO (pkcs11-tool --login-type so), the PUK it came with (12345678) no longer
// does, and neither secret is on disk under the demo folder DIR or, unless `shown`, in what the
// command printed. Returns the problems found, or "".
inline std::string two_pin_problems(const std::filesystem::path& dir, const std::string& card,
                                    const std::string& pin, const std::string& puk,
                                    const std::string& printed, bool shown) {
  std::string problems;
  const std::string env = "SOFTHSM2_CONF=" + (dir / "tokens" / "softhsm2.conf").string();
  auto login = [&](const std::vector<std::string>& how) {
    std::vector<std::string> argv = {"/usr/bin/env", env, "pkcs11-tool", "--module",
                                     "/usr/lib/softhsm/libsofthsm2.so", "--token-label", card,
                                     "--login"};
    argv.insert(argv.end(), how.begin(), how.end());
    argv.push_back("--list-objects");
    return run(argv);
  };
  auto user = login({"--pin", pin});
  if (user.exit_code != 0 || user.out.find("Private Key Object") == std::string::npos) {
    problems += card + ": the PIN does not open it as user: " + user.err + "\n";
  }
  // An SO login needs a read-write session (SoftHSM2: CKR_SESSION_READ_ONLY_EXISTS).
  if (login({"--session-rw", "--login-type", "so", "--so-pin", puk}).exit_code != 0) {
    problems += card + ": the PUK does not open it as SO\n";
  }
  if (login({"--session-rw", "--login-type", "so", "--so-pin", "12345678"}).exit_code == 0) {
    problems += card + ": the PUK it came with still opens it\n";
  }
  for (const std::string& secret : {pin, puk}) {
    auto grep = run({"grep", "-rl", "--", secret, dir.string()});
    if (!grep.out.empty()) problems += secret + " is on disk: " + grep.out;
    if (!shown && printed.find(secret) != std::string::npos) problems += secret + " was printed\n";
  }
  return problems;
}

}  // namespace persoflow::testing
