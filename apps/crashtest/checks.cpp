// Trial setup and outside checks shared by the crash-test scenarios (checks.hpp).
#include "checks.hpp"

#include <fstream>
#include <iomanip>
#include <sstream>

#include "process.hpp"

namespace persoflow::crashtest {

using nlohmann::json;

std::string two_digits(int i) {
  std::ostringstream s;
  s << std::setw(2) << std::setfill('0') << i;
  return s.str();
}

Status write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return make_status(Errc::kUnavailable, "cannot write " + path.string());
  return Status::ok();
}

fs::path softhsm_conf(const Trial& t) { return t.dir / "tokens" / "softhsm2.conf"; }
fs::path station_conf(const Trial& t) { return t.dir / "station" / "station.conf"; }
fs::path station_journal(const Trial& t) { return t.dir / "station" / "journal.db"; }

Status make_cards(const Trial& t, const std::vector<std::string>& labels) {
  const fs::path store = t.dir / "tokens" / "store";
  std::error_code ec;
  fs::create_directories(store, ec);
  if (ec) return make_status(Errc::kUnavailable, "cannot create " + store.string());
  PF_RETURN_IF_ERROR(write_text(softhsm_conf(t), "directories.tokendir = " + store.string() +
                                                     "\nobjectstore.backend = file\n"
                                                     "log.level = ERROR\n"));
  for (const auto& label : labels) {
    auto r = run_program({"/usr/bin/softhsm2-util", "--init-token", "--free", "--label", label,
                          "--pin", kCardPin, "--so-pin", "12345678"},
                         {"SOFTHSM2_CONF=" + softhsm_conf(t).string()}, "",
                         (t.dir / "setup.err").string(), std::chrono::seconds(60));
    if (r.exit_code != 0) {
      return make_status(Errc::kUnavailable, "softhsm2-util --init-token failed for " + label);
    }
  }
  return Status::ok();
}

Status write_station_conf(const Trial& t, const json& extra) {
  const fs::path station = t.dir / "station";
  std::error_code ec;
  fs::create_directories(station, ec);
  if (ec) return make_status(Errc::kUnavailable, "cannot create " + station.string());
  PF_RETURN_IF_ERROR(write_text(station / "card.pin", std::string(kCardPin) + "\n"));
  const fs::path cm = t.run->cm_dir;
  json conf = {{"cm_url", t.run->cm_url},
               {"cm_ca", (cm / "ca" / "ca.pem").string()},
               {"pkcs11_module", kSoftHsmModule},
               {"softhsm2_conf", softhsm_conf(t).string()},
               {"officer_p12", (cm / "officers" / "officer.p12").string()},
               {"officer_password_file", t.run->officer_password.string()},
               {"card_pin_file", (station / "card.pin").string()},
               {"journal", station_journal(t).string()},
               {"state_dir", station.string()},
               {"procedure", "smartcard-auth"},
               {"key_algorithm", "EC:secp256r1"},
               {"key_entries", 1}};
  conf.update(extra);
  return write_text(station_conf(t), conf.dump(2) + "\n");
}

CardObjects list_card(const Trial& t, const std::string& label, const std::string& pin) {
  CardObjects o;
  std::string text;
  auto r = run_capture({"/usr/bin/pkcs11-tool", "--module", kSoftHsmModule, "--token-label", label,
                        "--login", "--pin", pin, "--list-objects"},
                       {"SOFTHSM2_CONF=" + softhsm_conf(t).string()}, &text);
  o.login_ok = r.exit_code == 0;
  std::istringstream in(text);
  std::string line;
  enum { kNone, kCert, kPrivate, kPublic } kind = kNone;
  CardObjects::Certificate cert;
  auto field = [&](const char* name) -> std::optional<std::string> {
    const auto at = line.find(name);
    if (at == std::string::npos) return std::nullopt;
    auto v = line.substr(at + std::string(name).size());
    v.erase(0, v.find_first_not_of(' '));
    return v;
  };
  while (std::getline(in, line)) {
    if (line.rfind("Certificate Object", 0) == 0) {
      kind = kCert;
      cert = {};
    } else if (line.rfind("Private Key Object", 0) == 0) {
      kind = kPrivate;
      ++o.private_keys;
    } else if (line.rfind("Public Key Object", 0) == 0) {
      kind = kPublic;
      ++o.public_keys;
    } else if (auto label = field("label:"); label && kind == kCert) {
      cert.label = *label;
    } else if (auto s = field("serial:"); s && kind == kCert) {
      cert.serial = *s;
    } else if (auto id = field("ID:")) {
      if (kind == kCert) {
        cert.id = *id;
        o.certificates.push_back(cert);
      }
      if (kind == kPrivate) o.private_key_ids.push_back(*id);
      if (kind == kPublic) o.public_key_ids.push_back(*id);
    }
  }
  return o;
}

int count_torn_tokens(const Trial& t) {
  int torn = 0;
  std::error_code ec;
  for (const auto& dir : fs::directory_iterator(t.dir / "tokens" / "store", ec)) {
    const fs::path object = dir.path() / "token.object";
    if (fs::exists(object) && fs::file_size(object, ec) == 0) ++torn;
  }
  return torn;
}

std::string normal_serial(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  s.erase(0, std::min(s.find_first_not_of('0'), s.size() - 1));
  return s;
}

std::optional<json> cm_certificates(const Trial& t, const std::string& subject) {
  std::string listed;
  run_capture({t.run->persoflow.string(), "cm", "certs", "list", "--dir", t.run->cm_dir.string(),
               "--subject", subject, "--json"},
              {}, &listed);
  try {
    json certs = json::parse(listed);
    if (certs.is_array()) return certs;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

std::vector<json> with_common_name(const json& certs, const std::string& cn) {
  const std::string want = "CN=" + cn;
  std::vector<json> out;
  for (const auto& c : certs) {
    const std::string subject = c.value("subject", "");
    const auto at = subject.find(want);
    const auto end = at + want.size();
    if (at != std::string::npos && (at == 0 || subject[at - 1] == ',') &&
        (end == subject.size() || subject[end] == ',')) {
      out.push_back(c);
    }
  }
  return out;
}

std::string public_key_of_certificate(const fs::path& cert, bool der) {
  std::string pem;
  auto r = run_capture({"/usr/bin/openssl", "x509", "-inform", der ? "DER" : "PEM", "-in",
                        cert.string(), "-noout", "-pubkey"},
                       {}, &pem);
  return r.exit_code == 0 ? pem : std::string();
}

std::string public_key_of_private_key(const fs::path& key, const std::string& password) {
  for (const char* form : {"PEM", "DER"}) {
    std::string pem;
    std::vector<std::string> argv = {"/usr/bin/openssl", "pkey", "-inform", form, "-in",
                                     key.string(), "-pubout"};
    if (!password.empty()) {
      argv.push_back("-passin");
      argv.push_back("pass:" + password);
    }
    if (run_capture(argv, {}, &pem).exit_code == 0) return pem;
  }
  return "";
}

Result<std::string> recover_archived_public_key(const Trial& t, const std::string& serial) {
  const fs::path prefix = t.dir / ("recovered-" + serial);
  std::string out;
  auto r = run_capture({t.run->persoflow.string(), "cm", "keys", "recover", "--dir",
                        t.run->cm_dir.string(), "--serial", serial, "--recipient",
                        t.run->recovery_cert.string(), "--out", prefix.string()},
                       {}, &out);
  const fs::path envelope = prefix.string() + "-1.p7m";
  if (r.exit_code != 0 || !fs::exists(envelope)) {
    return make_status(Errc::kNotFound, "persoflow cm keys recover --serial " + serial +
                                            " recovered nothing (exit " +
                                            std::to_string(r.exit_code) + ")");
  }
  const fs::path key = prefix.string() + "-1.key";
  std::string ignored;
  if (run_capture({"/usr/bin/openssl", "cms", "-decrypt", "-inform", "DER", "-in",
                   envelope.string(), "-recip", t.run->recovery_cert.string(), "-inkey",
                   t.run->recovery_key.string(), "-out", key.string()},
                  {}, &ignored)
          .exit_code != 0) {
    return make_status(Errc::kCorrupt, "openssl cms -decrypt does not open " + envelope.string());
  }
  std::string pem = public_key_of_private_key(key);
  std::error_code ec;
  fs::remove(key, ec);  // a private key in clear: not kept in the trial folder
  if (pem.empty()) {
    return make_status(Errc::kCorrupt, "the key recovered for " + serial + " does not parse");
  }
  return pem;
}

}  // namespace persoflow::crashtest
