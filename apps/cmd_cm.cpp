// `persoflow cm ...`: the CM host's commands. This file dispatches to the subcommands registered
// in cm_subcommands.hpp and holds the CA-side ones: init, procedures, officer, certs, revoke, crl,
// audit. Every bad input is one line on stderr and a non-zero exit (2 for usage, 1 for failure).
#include <boost/program_options.hpp>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sstream>

#include "cm_subcommands.hpp"
#include "command_registry.hpp"
#include "persoflow/cmhost/cm_host.hpp"

namespace persoflow::apps {

std::vector<CmSubcommand>& cm_subcommands() {
  static std::vector<CmSubcommand> subs;
  return subs;
}

namespace {

namespace po = boost::program_options;
using cmhost::CmHost;
using nlohmann::json;

// Thrown inside a subcommand to end it with a one-line message; caught in run_sub.
struct CmdError {
  int code;
  std::string message;
};

[[noreturn]] void fail(const std::string& message, int code = 1) { throw CmdError{code, message}; }

void check(const Status& st) {
  if (!st.is_ok()) fail(st.to_string());
}

template <typename T>
T take(Result<T> r) {
  if (!r.is_ok()) fail(r.status().to_string());
  return std::move(r).value();
}

// Parses argv with the options; prints help and returns false on --help.
bool parse(int argc, char** argv, po::options_description& opts, po::variables_map& vm,
           const std::string& usage, po::positional_options_description* pos = nullptr) {
  opts.add_options()("help,h", "show this help");
  try {
    po::command_line_parser parser(argc, argv);
    parser.options(opts);
    if (pos) parser.positional(*pos);
    po::store(parser.run(), vm);
    if (vm.count("help")) {
      std::cout << "Usage: " << usage << "\n\n" << opts << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    fail(std::string(e.what()) + " (see --help)", 2);
  }
  return true;
}

void add_dir_option(po::options_description& opts) {
  opts.add_options()("dir", po::value<std::string>(),
                     "CM directory (default: $PERSOFLOW_CM_DIR)");
}

std::string dir_of(const po::variables_map& vm) {
  if (vm.count("dir")) return vm["dir"].as<std::string>();
  if (const char* env = std::getenv("PERSOFLOW_CM_DIR"); env && *env) return env;
  fail("--dir DIR is required (or set PERSOFLOW_CM_DIR)", 2);
}

std::unique_ptr<CmHost> open_host(const po::variables_map& vm) { return take(CmHost::open(dir_of(vm))); }

std::string read_password_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("cannot read password file " + path);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  if (line.empty()) fail("password file " + path + " is empty");
  return line;
}

std::vector<std::string> split_csv(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto a = item.find_first_not_of(' ');
    auto b = item.find_last_not_of(' ');
    if (a != std::string::npos) out.push_back(item.substr(a, b - a + 1));
  }
  return out;
}

std::string time_text(std::int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string join(const std::vector<std::string>& v, const std::string& sep = ",") {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// ---------------------------------------------------------------- init

int cmd_init(int argc, char** argv) {
  po::options_description opts("Options");
  add_dir_option(opts);
  opts.add_options()("officer", po::value<std::string>()->default_value("officer"),
                     "name of the first officer (both roles)")(
      "password-file", po::value<std::string>(),
      "file whose first line is the officer's PKCS#12 password (default: generated, shown once)")(
      "ca-key-alg", po::value<std::string>()->default_value("ec-p256"),
      "CA key: ec-p256, ec-p384, ec-p521, rsa-2048, rsa-3072, rsa-4096")(
      "ca-subject", po::value<std::string>()->default_value("CN=persoflow CA,O=persoflow"),
      "CA subject DN")("archive-key-alg", po::value<std::string>()->default_value("RSA:3072"),
                       "key-archive key: RSA:BITS or EC:CURVE")("ca-days", po::value<int>()->default_value(3650), "CA validity in days")(
      "ca-key", po::value<std::string>(),
      "CA key in a PKCS#11 token: 'pkcs11:token=LABEL;object=LABEL' (generated there with "
      "--ca-key-alg when the token has no such key)")(
      "ca-pkcs11-module", po::value<std::string>(), "PKCS#11 module of the --ca-key token")(
      "ca-pin-file", po::value<std::string>(),
      "file whose first line is the --ca-key token's user PIN (its path is kept in cm.json)");
  po::variables_map vm;
  if (!parse(argc, argv, opts, vm, "persoflow cm init --dir DIR [options]\n\nCreates a CM host: CA, "
                                   "key-archive key, TLS certificate, cm.json, first officer.")) {
    return 0;
  }
  std::string dir = dir_of(vm);
  cmhost::InitOptions o;
  o.officer = vm["officer"].as<std::string>();
  o.ca_key_algorithm = vm["ca-key-alg"].as<std::string>();
  o.ca_subject = vm["ca-subject"].as<std::string>();
  o.ca_validity_days = vm["ca-days"].as<int>();
  o.archive_key_algorithm = vm["archive-key-alg"].as<std::string>();
  if (vm.count("password-file")) o.officer_password = read_password_file(vm["password-file"].as<std::string>());
  if (vm.count("ca-key")) {
    o.ca_key_uri = vm["ca-key"].as<std::string>();
    if (!vm.count("ca-pkcs11-module")) fail("--ca-key needs --ca-pkcs11-module MODULE", 2);
    if (!vm.count("ca-pin-file")) fail("--ca-key needs --ca-pin-file FILE", 2);
    o.ca_pkcs11_module = vm["ca-pkcs11-module"].as<std::string>();
    o.ca_pin_file = vm["ca-pin-file"].as<std::string>();
    read_password_file(o.ca_pin_file);  // a missing or empty PIN file: one clear line
  } else if (vm.count("ca-pkcs11-module") || vm.count("ca-pin-file")) {
    fail("--ca-pkcs11-module and --ca-pin-file go with --ca-key", 2);
  }
  auto r = take(CmHost::init(dir, o));
  std::cout << "CM host initialised in " << dir << "\n"
            << "  CA chain:      " << r.ca_chain << " (" << o.ca_subject << ", " << o.ca_key_algorithm << ")\n"
            << (o.ca_key_uri.empty() ? "" : "  CA key:        " + o.ca_key_uri + "\n")
            << "  configuration: " << dir << "/cm.json\n"
            << "  officer '" << o.officer << "' (roles issue, recover): " << r.officer_p12 << "\n";
  if (r.password_generated) {
    std::cout << "  officer password (shown once, not stored): " << r.officer_password << "\n";
  }
  return 0;
}

// ---------------------------------------------------------------- procedures

int cmd_procedures(int argc, char** argv) {
  po::options_description opts("Options");
  add_dir_option(opts);
  opts.add_options()("json", "print JSON")("action", po::value<std::string>()->default_value("list"), "list");
  po::positional_options_description pos;
  pos.add("action", 1);
  po::variables_map vm;
  if (!parse(argc, argv, opts, vm, "persoflow cm procedures list [--dir DIR] [--json]", &pos)) return 0;
  if (vm["action"].as<std::string>() != "list") {
    fail("unknown action '" + vm["action"].as<std::string>() + "' (list)", 2);
  }
  auto host = open_host(vm);
  const auto& c = host->config();
  if (vm.count("json")) {
    json j = json::parse(cmhost::config_to_json(c));
    json out;
    for (const char* k : {"default_procedure", "client.ra-key-generation", "certificate_procedures",
                          "key_procedures", "pin_procedures", "token_procedures"}) {
      out[k] = j[k];
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << "Token procedures:\n";
  for (const auto& t : c.token_procedures) {
    std::cout << "  " << t.name << " [" << t.media << "] " << t.description << "\n"
              << "      certificates: " << (t.certificate_procedures.empty() ? "-" : join(t.certificate_procedures, ", "))
              << "; keys: " << (t.key_procedures.empty() ? "-" : join(t.key_procedures, ", "))
              << "; PIN: " << t.pin_procedure;
    if (t.tc_validation.required) std::cout << "; TC validated against " << join(t.tc_validation.trusted_issuers, ", ");
    if (t.ca_certificates_on_card) std::cout << "; CA certificates on card";
    if (t.operator_pin_required) std::cout << "; operator PIN";
    std::cout << "\n";
  }
  std::cout << "\nCertificate procedures (CMP path /.well-known/cmp/p/<name>; default '"
            << c.default_procedure << "'):\n";
  for (const auto& p : c.certificate_procedures) {
    std::vector<std::string> algs;
    for (const auto& r : p.key_algorithms) {
      std::string a = r.algorithm;
      if (r.min_bits || r.max_bits) {
        a += " " + std::to_string(r.min_bits) + "-" + (r.max_bits ? std::to_string(r.max_bits) : std::string("any"));
      }
      if (!r.curves.empty()) a += " (" + join(r.curves, " ") + ")";
      algs.push_back(a);
    }
    std::cout << "  " << p.name << ": " << p.description << "\n"
              << "      subject required " << join(p.subject.required) << ", optional "
              << join(p.subject.optional) << "\n"
              << "      key usage " << (p.key_usage.empty() ? "none" : join(p.key_usage))
              << "; EKU " << (p.extended_key_usage.empty() ? "none" : join(p.extended_key_usage))
              << "; " << p.validity_days << " days; roles " << join(p.roles_required) << "\n"
              << "      keys " << (algs.empty() ? "any" : join(algs, ", ")) << "\n";
    if (p.qc_statements) {
      const auto& q = *p.qc_statements;
      std::cout << "      QC statements:" << (q.compliance ? " QcCompliance" : "") << (q.sscd ? " QcSSCD" : "")
                << " QcType " << join(q.types) << " PDS";
      for (const auto& l : q.pds) std::cout << " " << l.url << " (" << l.language << ")";
      std::cout << "; RA may enter " << join(q.ra_may_enter) << "\n";
    }
  }
  std::cout << "\nKey procedures:\n";
  for (const auto& k : c.key_procedures) {
    std::cout << "  " << k.name << ": " << k.type;
    if (k.type == "archive") std::cout << " (" << k.key_algorithm << ")";
    else std::cout << " " << k.scope << " key(s), " << k.certificate << " certificate";
    std::cout << "; certificate procedure " << k.certificate_procedure << "; roles "
              << join(k.roles_required) << "\n";
  }
  std::cout << "\nPIN procedures:\n";
  for (const auto& p : c.pin_procedures) {
    std::cout << "  " << p.name << ": " << p.delivery << " (" << p.min_length << "-" << p.max_length
              << " digits" << (p.puk ? ", with PUK" : "") << ") " << p.description << "\n";
  }
  std::cout << "\nclient.ra-key-generation = " << c.ra_key_generation << "\n";
  return 0;
}

// ---------------------------------------------------------------- officer

json officer_json(const cmhost::Officer& o) {
  return {{"name", o.name}, {"certificate_serial", o.cert_serial_hex}, {"roles", o.roles}, {"revoked", o.revoked}};
}

int cmd_officer(int argc, char** argv) {
  po::options_description opts("Options");
  add_dir_option(opts);
  opts.add_options()("action", po::value<std::string>(), "add | list | revoke")(
      "name", po::value<std::string>(), "officer name")(
      "roles", po::value<std::string>()->default_value("issue,recover"), "add: roles (issue, recover)")(
      "password-file", po::value<std::string>(), "add: file with the PKCS#12 password (default: generated)")(
      "json", "list: print JSON");
  po::positional_options_description pos;
  pos.add("action", 1).add("name", 1);
  po::variables_map vm;
  if (!parse(argc, argv, opts, vm,
             "persoflow cm officer add NAME [--roles issue,recover] [--password-file F] | list [--json] "
             "| revoke NAME   [--dir DIR]",
             &pos)) {
    return 0;
  }
  if (!vm.count("action")) fail("officer: an action is required: add, list or revoke", 2);
  std::string action = vm["action"].as<std::string>();
  if (action != "add" && action != "list" && action != "revoke") {
    fail("officer: unknown action '" + action + "' (add, list, revoke)", 2);
  }
  if (action != "list" && !vm.count("name")) fail("officer " + action + ": NAME is required", 2);
  auto host = open_host(vm);
  if (action == "add") {
    std::optional<std::string> password;
    if (vm.count("password-file")) password = read_password_file(vm["password-file"].as<std::string>());
    auto n = take(host->add_officer(vm["name"].as<std::string>(), split_csv(vm["roles"].as<std::string>()),
                                    password, "cli"));
    std::cout << "officer '" << n.officer.name << "' (roles " << join(n.officer.roles) << ", certificate "
              << n.officer.cert_serial_hex << "): " << n.p12_path << "\n";
    if (n.password_generated) std::cout << "password (shown once, not stored): " << n.password << "\n";
    return 0;
  }
  if (action == "revoke") {
    check(host->revoke_officer(vm["name"].as<std::string>(), "cli"));
    std::cout << "officer '" << vm["name"].as<std::string>() << "' revoked (certificate revoked, on the next CRL)\n";
    return 0;
  }
  auto list = take(host->officers());
  if (vm.count("json")) {
    json a = json::array();
    for (const auto& o : list) a.push_back(officer_json(o));
    std::cout << a.dump(2) << "\n";
    return 0;
  }
  std::printf("%-20s %-16s %-8s %s\n", "NAME", "ROLES", "STATUS", "CERTIFICATE SERIAL");
  for (const auto& o : list) {
    std::printf("%-20s %-16s %-8s %s\n", o.name.c_str(), join(o.roles).c_str(),
                o.revoked ? "revoked" : "active", o.cert_serial_hex.c_str());
  }
  return 0;
}

// ---------------------------------------------------------------- certs

json cert_json(const storage::CertRecord& r, bool with_pem) {
  json j = {{"cert_id", r.cert_id},
            {"serial", r.serial_hex},
            {"subject", r.subject},
            {"issuer", r.issuer},
            {"not_before", time_text(r.not_before)},
            {"not_after", time_text(r.not_after)},
            {"status", storage::to_string(r.status)},
            {"procedure", r.procedure},
            {"requester", r.requester},
            {"transaction_id", r.transaction_id}};
  if (r.status == storage::CertStatus::kRevoked) {
    j["revocation_reason"] = r.revocation_reason;
    j["revoked_at"] = time_text(r.revoked_at);
  }
  if (with_pem) {
    auto x = cmhost::x509_from_der(r.der);
    if (x.is_ok()) j["pem"] = cmhost::to_pem(x->get());
  }
  return j;
}

int cmd_certs(int argc, char** argv) {
  po::options_description opts("Options");
  add_dir_option(opts);
  opts.add_options()("action", po::value<std::string>(), "list | show")(
      "serial", po::value<std::string>(), "hexadecimal serial number")(
      "id", po::value<std::string>(), "decimal certificate ID")(
      "subject", po::value<std::string>(), "subject (list: substring; show: exact RFC 2253 form or substring)")(
      "status", po::value<std::string>(), "list: pending, valid, rejected or revoked")(
      "json", "print JSON");
  po::positional_options_description pos;
  pos.add("action", 1);
  po::variables_map vm;
  if (!parse(argc, argv, opts, vm,
             "persoflow cm certs list [--subject S] [--status ST] | show --serial HEX | --id DEC | "
             "--subject S   [--dir DIR] [--json]",
             &pos)) {
    return 0;
  }
  if (!vm.count("action")) fail("certs: an action is required: list or show", 2);
  std::string action = vm["action"].as<std::string>();
  if (action != "list" && action != "show") fail("certs: unknown action '" + action + "' (list, show)", 2);
  storage::CertQuery q;
  if (vm.count("serial")) q.serial_hex = take(cmhost::normalize_serial_hex(vm["serial"].as<std::string>()));
  if (vm.count("id")) {
    const std::string& t = vm["id"].as<std::string>();
    if (t.empty() || t.find_first_not_of("0123456789") != std::string::npos || t.size() > 18) {
      fail("certificate ID '" + t + "' is not a decimal number", 2);
    }
    q.cert_id = std::stoll(t);
  }
  if (vm.count("subject")) {
    q.subject = vm["subject"].as<std::string>();
    q.subject_substring = true;
  }
  if (vm.count("status")) {
    auto st = storage::cert_status_from_string(vm["status"].as<std::string>());
    if (!st) fail("unknown status '" + vm["status"].as<std::string>() + "' (pending, valid, rejected, revoked)", 2);
    q.status = st;
  }
  if (action == "show" && !q.serial_hex && !q.cert_id && !q.subject) {
    fail("certs show: give --serial HEX, --id DEC or --subject S", 2);
  }
  auto host = open_host(vm);
  auto rows = take(host->store().find_certificates(q));
  if (action == "show" && rows.empty()) fail("no certificate matches");
  if (vm.count("json")) {
    json a = json::array();
    for (const auto& r : rows) a.push_back(cert_json(r, action == "show"));
    std::cout << (action == "show" && rows.size() == 1 ? a[0] : a).dump(2) << "\n";
    return 0;
  }
  if (action == "list") {
    std::printf("%-6s %-34s %-9s %-18s %-20s %s\n", "ID", "SERIAL", "STATUS", "PROCEDURE", "NOT AFTER", "SUBJECT");
    for (const auto& r : rows) {
      std::printf("%-6lld %-34s %-9s %-18s %-20s %s\n", static_cast<long long>(r.cert_id), r.serial_hex.c_str(),
                  storage::to_string(r.status), r.procedure.c_str(), time_text(r.not_after).c_str(),
                  r.subject.c_str());
    }
    return 0;
  }
  for (const auto& r : rows) {
    std::cout << "certificate ID: " << r.cert_id << "\nserial:         " << r.serial_hex
              << "\nsubject:        " << r.subject << "\nissuer:         " << r.issuer
              << "\nvalidity:       " << time_text(r.not_before) << " .. " << time_text(r.not_after)
              << "\nstatus:         " << storage::to_string(r.status);
    if (r.status == storage::CertStatus::kRevoked) {
      std::cout << " (reason " << r.revocation_reason << ", " << time_text(r.revoked_at) << ")";
    }
    std::cout << "\nprocedure:      " << r.procedure << "\nrequested by:   " << r.requester;
    if (!r.transaction_id.empty()) std::cout << "\ntransaction:    " << r.transaction_id;
    auto x = cmhost::x509_from_der(r.der);
    if (x.is_ok()) std::cout << "\n" << cmhost::to_pem(x->get());
    std::cout << "\n";
  }
  return 0;
}

// ---------------------------------------------------------------- revoke

int cmd_revoke(int argc, char** argv) {
  po::options_description opts("Options");
  add_dir_option(opts);
  opts.add_options()("serial", po::value<std::string>(), "hexadecimal serial number")(
      "reason", po::value<int>()->default_value(0),
      "CRLReason: 0 unspecified, 1 keyCompromise, 3 affiliationChanged, 4 superseded, "
      "5 cessationOfOperation, 6 certificateHold, 9 privilegeWithdrawn");
  po::variables_map vm;
  if (!parse(argc, argv, opts, vm, "persoflow cm revoke --serial HEX [--reason N] [--dir DIR]")) return 0;
  if (!vm.count("serial")) fail("revoke: --serial HEX is required", 2);
  auto host = open_host(vm);
  std::string serial = take(cmhost::normalize_serial_hex(vm["serial"].as<std::string>()));
  check(host->revoke(serial, vm["reason"].as<int>(), "cli"));
  std::cout << "certificate " << serial << " revoked\n";
  return 0;
}

// ---------------------------------------------------------------- crl

int cmd_crl(int argc, char** argv) {
  po::options_description opts("Options");
  add_dir_option(opts);
  opts.add_options()("out", po::value<std::string>(),
                     "write the CRL to this file (PEM when it ends in .pem, DER otherwise); "
                     "default: PEM on standard output");
  po::variables_map vm;
  if (!parse(argc, argv, opts, vm, "persoflow cm crl [--dir DIR] [--out FILE]\n\nSigns a fresh CRL.")) return 0;
  auto host = open_host(vm);
  std::string der = take(host->crl_der());
  auto pem = [&] {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
    X509_CRL* crl = d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size()));
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509_CRL(bio, crl);
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    std::string out(data, static_cast<std::size_t>(len));
    BIO_free(bio);
    X509_CRL_free(crl);
    return out;
  };
  if (!vm.count("out")) {
    std::cout << pem();
    return 0;
  }
  std::string path = vm["out"].as<std::string>();
  bool as_pem = path.size() >= 4 && path.substr(path.size() - 4) == ".pem";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("cannot write " + path);
  out << (as_pem ? pem() : der);
  out.close();
  if (!out) fail("writing " + path + " failed");
  std::cout << "CRL written to " << path << (as_pem ? " (PEM)" : " (DER)") << "\n";
  return 0;
}

// ---------------------------------------------------------------- keys

cmhost::KeySearch key_search_of(const po::variables_map& vm) {
  cmhost::KeySearch s;
  int given = static_cast<int>(vm.count("serial") + vm.count("id") + vm.count("subject"));
  if (given != 1) fail("keys: give exactly one of --serial HEX, --id DEC, --subject S", 2);
  if (vm.count("serial")) s.serial_hex = take(cmhost::normalize_serial_hex(vm["serial"].as<std::string>()));
  if (vm.count("id")) {
    const std::string& t = vm["id"].as<std::string>();
    if (t.empty() || t.find_first_not_of("0123456789") != std::string::npos || t.size() > 18) {
      fail("certificate ID '" + t + "' is not a decimal number", 2);
    }
    s.cert_id = std::stoll(t);
  }
  if (vm.count("subject")) {
    s.subject = vm["subject"].as<std::string>();
    s.subject_substring = true;
  }
  return s;
}

int cmd_keys(int argc, char** argv) {
  po::options_description opts("Options");
  add_dir_option(opts);
  opts.add_options()("action", po::value<std::string>(), "search | recover")(
      "serial", po::value<std::string>(), "hexadecimal serial number of the key's certificate")(
      "id", po::value<std::string>(), "decimal certificate ID")(
      "subject", po::value<std::string>(), "subject (substring)")(
      "scope", po::value<std::string>()->default_value("last"), "recover: last | all")(
      "certificate", po::value<std::string>()->default_value("reuse"), "recover: new | reuse")(
      "recipient", po::value<std::string>(), "recover: PEM certificate the keys are enveloped for")(
      "out", po::value<std::string>(), "recover: file prefix; writes PREFIX-N.p7m (CMS, DER) and PREFIX-N.pem")(
      "json", "search: print JSON");
  po::positional_options_description pos;
  pos.add("action", 1);
  po::variables_map vm;
  if (!parse(argc, argv, opts, vm,
             "persoflow cm keys search (--serial HEX | --id DEC | --subject S) [--json] | recover (--serial HEX "
             "| --id DEC | --subject S) --recipient CERT.pem --out PREFIX [--scope last|all] [--certificate "
             "new|reuse]   [--dir DIR]",
             &pos)) {
    return 0;
  }
  if (!vm.count("action")) fail("keys: an action is required: search or recover", 2);
  std::string action = vm["action"].as<std::string>();
  if (action != "search" && action != "recover") fail("keys: unknown action '" + action + "' (search, recover)", 2);
  cmhost::KeySearch search = key_search_of(vm);
  if (action == "recover" && (!vm.count("recipient") || !vm.count("out"))) {
    fail("keys recover: --recipient CERT.pem and --out PREFIX are required", 2);
  }
  auto host = open_host(vm);
  if (action == "search") {
    auto keys = take(host->search_keys(search));
    if (vm.count("json")) {
      json a = json::array();
      for (const auto& k : keys) {
        a.push_back({{"key_id", k.key_id}, {"cert_id", k.cert_id}, {"serial", k.serial_hex}, {"subject", k.subject},
                     {"certificate_status", storage::to_string(k.cert_status)},
                     {"archived_at", time_text(k.archived_at)}});
      }
      std::cout << a.dump(2) << "\n";
      return 0;
    }
    std::printf("%-6s %-8s %-34s %-9s %s\n", "KEY", "CERT ID", "SERIAL", "STATUS", "SUBJECT");
    for (const auto& k : keys) {
      std::printf("%-6lld %-8lld %-34s %-9s %s\n", static_cast<long long>(k.key_id), static_cast<long long>(k.cert_id),
                  k.serial_hex.c_str(), storage::to_string(k.cert_status), k.subject.c_str());
    }
    return 0;
  }
  std::ifstream in(vm["recipient"].as<std::string>(), std::ios::binary);
  if (!in) fail("cannot read " + vm["recipient"].as<std::string>());
  std::stringstream ss;
  ss << in.rdbuf();
  cmhost::RecoverRequest r;
  r.search = search;
  r.scope = vm["scope"].as<std::string>();
  r.certificate = vm["certificate"].as<std::string>();
  r.requester = "cli";
  r.confirmed = true;
  r.recipient = take(cmhost::x509_from_bytes(ss.str()));
  auto recovered = take(host->recover(std::move(r)));
  std::string prefix = vm["out"].as<std::string>();
  int n = 0;
  for (const auto& k : recovered) {
    ++n;
    std::string env = prefix + "-" + std::to_string(n) + ".p7m";
    std::string cert = prefix + "-" + std::to_string(n) + ".pem";
    std::ofstream e(env, std::ios::binary | std::ios::trunc);
    e << k.envelope_der;
    std::ofstream c(cert, std::ios::binary | std::ios::trunc);
    c << cmhost::to_pem(k.certificate.certificate.get());
    if (!e || !c) fail("cannot write " + env + " or " + cert);
    std::cout << "key " << k.key.key_id << " (certificate " << k.key.serial_hex << "): " << env << " with certificate "
              << k.certificate.serial_hex << " in " << cert << "\n";
  }
  return 0;
}

// ---------------------------------------------------------------- audit

int cmd_audit(int argc, char** argv) {
  po::options_description opts("Options");
  add_dir_option(opts);
  opts.add_options()("action", po::value<std::string>(), "verify | list")("json", "list: print JSON");
  po::positional_options_description pos;
  pos.add("action", 1);
  po::variables_map vm;
  if (!parse(argc, argv, opts, vm, "persoflow cm audit verify | list [--json]   [--dir DIR]", &pos)) return 0;
  if (!vm.count("action")) fail("audit: an action is required: verify or list", 2);
  std::string action = vm["action"].as<std::string>();
  if (action != "verify" && action != "list") fail("audit: unknown action '" + action + "' (verify, list)", 2);
  auto host = open_host(vm);
  if (action == "verify") {
    auto report = take(host->store().verify_audit());
    if (report.intact) {
      std::cout << "audit log intact: " << report.records_checked << " records, hash chain verified\n";
      return 0;
    }
    std::cerr << "persoflow cm audit: audit log ALTERED at record " << report.first_bad_seq.value_or(0) << ": "
              << report.reason << "\n";
    return 1;
  }
  auto records = take(host->store().audit_records(0, 0));
  if (vm.count("json")) {
    json a = json::array();
    for (const auto& r : records) {
      a.push_back({{"seq", r.seq}, {"time_ms", r.time_ms}, {"actor", r.actor}, {"action", r.action},
                   {"detail", r.detail}, {"hash", r.hash}});
    }
    std::cout << a.dump(2) << "\n";
    return 0;
  }
  for (const auto& r : records) {
    std::cout << r.seq << " " << time_text(r.time_ms / 1000) << " " << r.actor << " " << r.action << ": "
              << r.detail << "\n";
  }
  return 0;
}

PF_REGISTER_CM_SUBCOMMAND(init, "init", "create a CM host directory: CA, keys, TLS, procedures, first officer", cmd_init);
PF_REGISTER_CM_SUBCOMMAND(procedures, "procedures", "list the token, certificate, key and PIN procedures", cmd_procedures);
PF_REGISTER_CM_SUBCOMMAND(officer, "officer", "add, list or revoke RA officers", cmd_officer);
PF_REGISTER_CM_SUBCOMMAND(certs, "certs", "list or show issued certificates", cmd_certs);
PF_REGISTER_CM_SUBCOMMAND(keys, "keys", "search archived keys; recover them for a recipient certificate", cmd_keys);
PF_REGISTER_CM_SUBCOMMAND(revoke, "revoke", "revoke a certificate", cmd_revoke);
PF_REGISTER_CM_SUBCOMMAND(crl, "crl", "sign a fresh CRL", cmd_crl);
PF_REGISTER_CM_SUBCOMMAND(audit, "audit", "verify or list the CM host's hash-chained audit log", cmd_audit);

void print_cm_help(std::FILE* out) {
  auto subs = cm_subcommands();
  std::sort(subs.begin(), subs.end(), [](const CmSubcommand& a, const CmSubcommand& b) {
    return std::string(a.name) < b.name;
  });
  std::fprintf(out,
               "persoflow cm: the CM host (CA, procedures, officers, key archive, CRLs).\n\n"
               "Usage: persoflow cm <subcommand> [options]   (persoflow cm <subcommand> --help)\n\n"
               "Subcommands:\n");
  for (const auto& s : subs) std::fprintf(out, "  %-12s %s\n", s.name, s.summary);
}

int cm_main(int argc, char** argv) {
  if (argc < 2) {
    print_cm_help(stderr);
    return 2;
  }
  std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_cm_help(stdout);
    return 0;
  }
  for (const auto& s : cm_subcommands()) {
    if (name == s.name) {
      std::string program = std::string("persoflow cm ") + s.name;
      argv[1] = program.data();
      try {
        return s.run(argc - 1, argv + 1);
      } catch (const CmdError& e) {
        std::fprintf(stderr, "persoflow cm %s: %s\n", s.name, e.message.c_str());
        return e.code;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "persoflow cm %s: %s\n", s.name, e.what());
        return 1;
      }
    }
  }
  std::fprintf(stderr, "persoflow cm: unknown subcommand '%s' (see 'persoflow cm --help')\n", name.c_str());
  return 2;
}

}  // namespace

PF_REGISTER_COMMAND_GROUP(cm, "cm", "the CM host: CA, procedures, officers, certificates, CRL, audit", cm_main);

}  // namespace persoflow::apps
