// The CM host (include/persoflow/cmhost/cm_host.hpp): a CA that issues by procedure, archives and
// recovers keys, revokes and signs CRLs, and knows its officers.
//
// Exactly-once: every write that makes something (a certificate, an archived key) goes through
// the store with its idempotency key in one database transaction together with its audit record,
// so a crash leaves either both or neither, and a retry finds what the first attempt made.
// Slow work (key generation, signing) happens before that transaction, outside the store's lock.
#include "persoflow/cmhost/cm_host.hpp"

#include <fcntl.h>
#include <openssl/cms.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "ca_crypto.hpp"
#include "persoflow/devices/token_key.hpp"
#include "persoflow/protocol/crmf_archive.hpp"
#include "names.hpp"

namespace persoflow::cmhost {

namespace fs = std::filesystem;
using storage::CertRecord;
using storage::CertStatus;

namespace {

std::int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string resolve(const std::string& dir, const std::string& p) {
  if (!p.empty() && p.front() == '/') return p;
  return (fs::path(dir) / p).string();
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_status(Errc::kNotFound, "cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes a new file with the given mode (the mode is set before any byte is written), fsyncs it.
Status write_file(const std::string& path, const std::string& data, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return make_status(Errc::kPermissionDenied, "cannot create " + path + ": " + std::strerror(errno));
  ::fchmod(fd, mode);
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return make_status(Errc::kInternal, "writing " + path + ": " + std::strerror(errno));
    }
    done += static_cast<std::size_t>(n);
  }
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return make_status(Errc::kInternal, "syncing " + path);
  return Status::ok();
}

Status make_dir(const std::string& path, mode_t mode) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return make_status(Errc::kPermissionDenied, "cannot create directory " + path + ": " + ec.message());
  ::chmod(path.c_str(), mode);
  return Status::ok();
}

std::string trim_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

bool valid_officer_name(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') return false;
  }
  return name.front() != '.' && name.front() != '-';
}

std::string key_description(const EVP_PKEY* key) {
  int id = EVP_PKEY_get_base_id(key);
  switch (id) {
    case EVP_PKEY_RSA: return "RSA";
    case EVP_PKEY_EC: return "EC";
    case EVP_PKEY_DSA: return "DSA";
    case EVP_PKEY_ED25519: return "Ed25519";
    case EVP_PKEY_ED448: return "Ed448";
    default: {
      const char* sn = OBJ_nid2sn(id);
      return sn ? sn : "unknown";
    }
  }
}

std::string ec_curve_of(const EVP_PKEY* key) {
  char name[80] = {0};
  size_t len = 0;
  if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof name, &len)) {
    return "";
  }
  return std::string(name, len);
}

std::string join(const std::vector<std::string>& items, const std::string& sep = ", ") {
  std::string out;
  for (const auto& i : items) {
    if (!out.empty()) out += sep;
    out += i;
  }
  return out;
}

Result<X509NamePtr> dup_name(const X509_NAME* name) {
  X509_NAME* n = X509_NAME_dup(name);
  if (!n) return openssl_failure("copying a name");
  return X509NamePtr(n);
}

// The key-generation spelling of a CA key algorithm: "ec-p256" -> "EC:secp256r1".
Result<std::string> token_algorithm(const std::string& ca_algorithm) {
  static const std::map<std::string, std::string> kCurves = {
      {"ec-p256", "EC:secp256r1"}, {"ec-p384", "EC:secp384r1"}, {"ec-p521", "EC:secp521r1"}};
  if (auto it = kCurves.find(ca_algorithm); it != kCurves.end()) return it->second;
  if (ca_algorithm.rfind("rsa-", 0) == 0) return "RSA:" + ca_algorithm.substr(4);
  return make_status(Errc::kInvalidArgument, "CA key algorithm '" + ca_algorithm +
                                                 "' cannot be generated in a token (use ec-p256, "
                                                 "ec-p384, ec-p521 or rsa-BITS)");
}

// The CA key in its token; generated there first when generate_algorithm is given.
Result<std::unique_ptr<devices::TokenKey>> open_ca_token(const std::string& uri,
                                                         const std::string& module,
                                                         const std::string& pin_file,
                                                         const std::string& generate_algorithm) {
  if (module.empty() || pin_file.empty()) {
    return make_status(Errc::kInvalidArgument,
                       "cm.json: a pkcs11: CA key needs ca.pkcs11_module and ca.pin_file");
  }
  PF_ASSIGN_OR_RETURN(std::string pin, read_file(pin_file));
  pin = trim_line(pin);
  devices::TokenKeyOptions options{uri, module, pin};
  auto token = devices::open_token_key(options, generate_algorithm);
  OPENSSL_cleanse(pin.data(), pin.size());
  OPENSSL_cleanse(options.pin.data(), options.pin.size());
  if (!token.is_ok()) return token.status().with_context("CA key " + uri);
  return token;
}

std::string describe(const KeySearch& s) {
  if (s.serial_hex) return "serial " + *s.serial_hex;
  if (s.cert_id) return "certificate ID " + std::to_string(*s.cert_id);
  if (s.subject) return "subject '" + *s.subject + "'";
  return "nothing";
}

}  // namespace

struct CmHost::Impl {
  // Declared first, destroyed last: ca_key may be a reference to the token's key.
  std::unique_ptr<devices::TokenKey> ca_token;
  std::vector<X509Ptr> chain;
  X509StackPtr chain_stack;
  EvpPkeyPtr ca_key;
  X509Ptr archive_cert;
  EvpPkeyPtr archive_key;
};

bool Officer::has_role(const std::string& role) const {
  return std::find(roles.begin(), roles.end(), role) != roles.end();
}

CmHost::CmHost(std::string dir) : dir_(std::move(dir)), impl_(std::make_unique<Impl>()) {}
CmHost::~CmHost() = default;

X509* CmHost::ca_certificate() const { return impl_->chain.front().get(); }
STACK_OF(X509)* CmHost::ca_chain() const { return impl_->chain_stack.get(); }
EVP_PKEY* CmHost::ca_key() const { return impl_->ca_key.get(); }
std::string CmHost::tls_certificate_path() const { return resolve(dir_, config_.tls_certificate); }
std::string CmHost::tls_key_path() const { return resolve(dir_, config_.tls_key); }

std::string CmHost::ca_chain_pem() const {
  std::string out;
  for (const auto& c : impl_->chain) out += to_pem(c.get());
  return out;
}

// ------------------------------------------------------------------ open / init

Result<std::unique_ptr<CmHost>> CmHost::open(const std::string& dir) {
  std::unique_ptr<CmHost> host(new CmHost(dir));
  PF_ASSIGN_OR_RETURN(host->config_, load_config(resolve(dir, "cm.json")));
  const CmConfig& c = host->config_;
  PF_ASSIGN_OR_RETURN(std::string chain_pem, read_file(resolve(dir, c.ca_chain)));
  auto chain = crypto::load_pem_chain(chain_pem);
  if (!chain.is_ok()) return chain.status().with_context(resolve(dir, c.ca_chain));
  host->impl_->chain = std::move(chain).value();
  host->impl_->chain_stack.reset(sk_X509_new_null());
  for (const auto& cert : host->impl_->chain) {
    X509_up_ref(cert.get());
    sk_X509_push(host->impl_->chain_stack.get(), cert.get());
  }
  auto load_key = [&](const std::string& key_path, const std::string& pass_path,
                      const X509* cert) -> Result<EvpPkeyPtr> {
    PF_ASSIGN_OR_RETURN(std::string pem, read_file(resolve(dir, key_path)));
    std::string pass;
    if (!pass_path.empty()) {
      PF_ASSIGN_OR_RETURN(pass, read_file(resolve(dir, pass_path)));
      pass = trim_line(pass);
    }
    auto key = crypto::load_key_pem(pem, pass);
    if (!key.is_ok()) return key.status().with_context(resolve(dir, key_path));
    if (X509_check_private_key(cert, key->get()) != 1) {
      openssl_errors();
      return make_status(Errc::kCorrupt, resolve(dir, key_path) + " does not belong to its certificate");
    }
    return key;
  };
  if (c.ca_key_in_token()) {
    PF_ASSIGN_OR_RETURN(host->impl_->ca_token, open_ca_token(c.ca_key, c.ca_pkcs11_module,
                                                             resolve(dir, c.ca_pin_file), ""));
    if (X509_check_private_key(host->ca_certificate(), host->impl_->ca_token->key()) != 1) {
      openssl_errors();
      return make_status(Errc::kCorrupt, "the token key " + c.ca_key + " does not belong to " +
                                             resolve(dir, c.ca_chain));
    }
    host->impl_->ca_key = share(host->impl_->ca_token->key());
  } else {
    PF_ASSIGN_OR_RETURN(host->impl_->ca_key,
                        load_key(c.ca_key, c.ca_key_passphrase_file, host->ca_certificate()));
  }
  PF_ASSIGN_OR_RETURN(std::string archive_pem, read_file(resolve(dir, c.archive_certificate)));
  PF_ASSIGN_OR_RETURN(auto archive_chain, crypto::load_pem_chain(archive_pem));
  host->impl_->archive_cert = std::move(archive_chain.front());
  PF_ASSIGN_OR_RETURN(host->impl_->archive_key,
                      load_key(c.archive_key, c.archive_key_passphrase_file,
                               host->impl_->archive_cert.get()));
  PF_ASSIGN_OR_RETURN(host->store_, storage::open_sqlite_cm_store(resolve(dir, c.database)));
  return host;
}

Result<InitResult> CmHost::init(const std::string& dir, const InitOptions& options) {
  if (dir.empty()) return make_status(Errc::kInvalidArgument, "the CM directory is empty");
  CmConfig config = default_config();
  if (fs::exists(resolve(dir, config.ca_chain)) || fs::exists(resolve(dir, "cm.json"))) {
    return make_status(Errc::kAlreadyExists, dir + " already holds a CA (" +
                                                 resolve(dir, config.ca_chain) +
                                                 "); refusing to overwrite it");
  }
  if (!valid_officer_name(options.officer)) {
    return make_status(Errc::kInvalidArgument,
                       "officer name '" + options.officer +
                           "' must be 1-64 letters, digits, '.', '_' or '-'");
  }
  if (options.ca_validity_days <= 0) {
    return make_status(Errc::kInvalidArgument, "CA validity must be a positive number of days");
  }
  PF_ASSIGN_OR_RETURN(X509NamePtr ca_subject, parse_name(options.ca_subject));
  std::unique_ptr<devices::TokenKey> ca_token;
  EvpPkeyPtr ca_key;
  if (!options.ca_key_uri.empty()) {
    if (options.ca_pkcs11_module.empty() || options.ca_pin_file.empty()) {
      return make_status(Errc::kInvalidArgument,
                         "a CA key in a token needs its PKCS#11 module and a PIN file");
    }
    PF_ASSIGN_OR_RETURN(std::string algorithm, token_algorithm(options.ca_key_algorithm));
    const std::string pin_file = fs::absolute(options.ca_pin_file).string();
    PF_ASSIGN_OR_RETURN(ca_token, open_ca_token(options.ca_key_uri, options.ca_pkcs11_module,
                                                pin_file, algorithm));
    ca_key = share(ca_token->key());
    config.ca_key = options.ca_key_uri;
    config.ca_key_passphrase_file.clear();
    config.ca_pkcs11_module = options.ca_pkcs11_module;
    config.ca_pin_file = pin_file;
  } else {
    PF_ASSIGN_OR_RETURN(ca_key, crypto::generate_key(options.ca_key_algorithm));
  }
  if (options.archive_key_algorithm.rfind("RSA:", 0) != 0 && options.archive_key_algorithm.rfind("EC:", 0) != 0) {
    return make_status(Errc::kInvalidArgument, "the key-archive key must be RSA:BITS or EC:CURVE, not '" +
                                                   options.archive_key_algorithm + "'");
  }
  if (options.officer_password && options.officer_password->empty()) {
    return make_status(Errc::kInvalidArgument, "the officer password is empty");
  }

  for (const char* sub : {"", "ca", "archive", "tls", "officers"}) {
    PF_RETURN_IF_ERROR(make_dir(resolve(dir, sub), 0700));
  }
  PF_RETURN_IF_ERROR(save_config(config, resolve(dir, "cm.json")));

  std::int64_t now = now_s();
  crypto::CertSpec ca_spec;
  ca_spec.subject = ca_subject.get();
  ca_spec.public_key = ca_key.get();
  ca_spec.signing_key = ca_key.get();
  ca_spec.not_before = now - 60;
  ca_spec.not_after = now + std::int64_t{86400} * options.ca_validity_days;
  ca_spec.ca = true;
  // digitalSignature too: the CA key also signs the CMP responses.
  ca_spec.key_usage = {"digitalSignature", "keyCertSign", "cRLSign"};
  PF_ASSIGN_OR_RETURN(X509Ptr signed_ca_cert, crypto::sign_certificate(ca_spec));
  // Re-read from DER: the signed object keeps a reference to ca_key as its public key, which must
  // not outlive the token session (ca_token) it belongs to.
  PF_ASSIGN_OR_RETURN(std::string ca_cert_der, to_der(signed_ca_cert.get()));
  signed_ca_cert.reset();
  PF_ASSIGN_OR_RETURN(X509Ptr ca_cert, x509_from_der(ca_cert_der));
  if (!ca_token) {
    std::string ca_pass = crypto::random_password(32);
    PF_ASSIGN_OR_RETURN(std::string ca_key_pem, crypto::encrypted_key_pem(ca_key.get(), ca_pass));
    PF_RETURN_IF_ERROR(
        write_file(resolve(dir, config.ca_key_passphrase_file), ca_pass + "\n", 0600));
    PF_RETURN_IF_ERROR(write_file(resolve(dir, config.ca_key), ca_key_pem, 0600));
  }

  PF_ASSIGN_OR_RETURN(EvpPkeyPtr archive_key, crypto::generate_key(options.archive_key_algorithm));
  PF_ASSIGN_OR_RETURN(X509NamePtr archive_subject, parse_name("CN=persoflow key archive"));
  crypto::CertSpec archive_spec;
  archive_spec.subject = archive_subject.get();
  archive_spec.public_key = archive_key.get();
  archive_spec.issuer = ca_cert.get();
  archive_spec.signing_key = ca_key.get();
  archive_spec.not_before = now - 60;
  archive_spec.not_after = ca_spec.not_after;
  archive_spec.key_usage = {EVP_PKEY_get_base_id(archive_key.get()) == EVP_PKEY_RSA ? "keyEncipherment"
                                                                                    : "keyAgreement"};
  PF_ASSIGN_OR_RETURN(X509Ptr archive_cert, crypto::sign_certificate(archive_spec));
  std::string archive_pass = crypto::random_password(32);
  PF_ASSIGN_OR_RETURN(std::string archive_key_pem,
                      crypto::encrypted_key_pem(archive_key.get(), archive_pass));
  PF_RETURN_IF_ERROR(write_file(resolve(dir, config.archive_key_passphrase_file),
                                archive_pass + "\n", 0600));
  PF_RETURN_IF_ERROR(write_file(resolve(dir, config.archive_key), archive_key_pem, 0600));
  PF_RETURN_IF_ERROR(write_file(resolve(dir, config.archive_certificate),
                                to_pem(archive_cert.get()), 0644));

  // TLS server certificate: `openssl cmp -tls_used` checks that it names IP 127.0.0.1.
  PF_ASSIGN_OR_RETURN(EvpPkeyPtr tls_key, crypto::generate_key("EC:secp256r1"));
  PF_ASSIGN_OR_RETURN(X509NamePtr tls_subject, parse_name("CN=localhost"));
  crypto::CertSpec tls_spec;
  tls_spec.subject = tls_subject.get();
  tls_spec.public_key = tls_key.get();
  tls_spec.issuer = ca_cert.get();
  tls_spec.signing_key = ca_key.get();
  tls_spec.not_before = now - 60;
  tls_spec.not_after = std::min<std::int64_t>(now + std::int64_t{86400} * 825, ca_spec.not_after);
  tls_spec.key_usage = {"digitalSignature"};
  tls_spec.extended_key_usage = {"serverAuth"};
  tls_spec.subject_alt_names = {"IP:127.0.0.1", "DNS:localhost"};
  PF_ASSIGN_OR_RETURN(X509Ptr tls_cert, crypto::sign_certificate(tls_spec));
  PF_RETURN_IF_ERROR(write_file(resolve(dir, config.tls_key), crypto::key_pem_unencrypted(tls_key.get()), 0600));
  PF_RETURN_IF_ERROR(write_file(resolve(dir, config.tls_certificate),
                                to_pem(tls_cert.get()) + to_pem(ca_cert.get()), 0644));
  // The CA certificate last: its presence marks the directory as initialised.
  PF_RETURN_IF_ERROR(write_file(resolve(dir, config.ca_chain), to_pem(ca_cert.get()), 0644));
  ca_key.reset();  // the host opened below logs in to the token again
  ca_token.reset();

  PF_ASSIGN_OR_RETURN(auto host, CmHost::open(dir));
  auto record = [&](X509* cert, const std::string& procedure) -> Status {
    CertRecord r;
    r.serial_hex = serial_hex(cert);
    r.subject = name_to_string(X509_get_subject_name(cert));
    r.issuer = name_to_string(X509_get_issuer_name(cert));
    r.not_before = crypto::asn1_time_to_unix(X509_get0_notBefore(cert));
    r.not_after = crypto::asn1_time_to_unix(X509_get0_notAfter(cert));
    r.status = CertStatus::kValid;
    r.procedure = procedure;
    PF_ASSIGN_OR_RETURN(r.der, to_der(cert));
    r.requester = "init";
    return host->store().insert_certificate(r).status();
  };
  PF_RETURN_IF_ERROR(record(archive_cert.get(), "key-archive"));
  PF_RETURN_IF_ERROR(record(tls_cert.get(), "tls-server"));
  PF_RETURN_IF_ERROR(host->audit("init", "init",
                                 "CA " + name_to_string(ca_subject.get()) + " serial " +
                                     serial_hex(ca_cert.get()) + " (" + options.ca_key_algorithm +
                                     ")"));
  PF_ASSIGN_OR_RETURN(NewOfficer officer,
                      host->add_officer(options.officer, {kRoleIssue, kRoleRecover},
                                        options.officer_password, "init"));
  InitResult result;
  result.officer_p12 = officer.p12_path;
  result.officer_password = officer.password;
  result.password_generated = officer.password_generated;
  result.ca_chain = resolve(dir, config.ca_chain);
  return result;
}

// ------------------------------------------------------------------ procedures and checks

const CertificateProcedure* CmHost::procedure(const std::string& name) const {
  return config_.certificate_procedure(name);
}

const CertificateProcedure& CmHost::default_procedure() const {
  const CertificateProcedure* p = config_.certificate_procedure(config_.default_procedure);
  PF_CHECK(p != nullptr, "default procedure checked at load");
  return *p;
}

std::vector<std::string> CmHost::procedures_for(const Officer& officer) const {
  std::vector<std::string> out;
  if (officer.revoked) return out;
  for (const auto& p : config_.certificate_procedures) {
    bool ok = std::all_of(p.roles_required.begin(), p.roles_required.end(),
                          [&](const std::string& r) { return officer.has_role(r); });
    if (ok) out.push_back(p.name);
  }
  return out;
}

Status CmHost::check_request(const CertificateProcedure& p, const X509_NAME* subject,
                             const EVP_PKEY* key, const std::vector<std::string>& key_usage) const {
  const std::string where = "procedure '" + p.name + "': ";
  auto refuse = [&](const std::string& why) { return make_status(Errc::kRejected, where + why); };
  if (!subject) return refuse("the request has no subject");
  if (!key) return refuse("the request has no public key");
  for (const auto& field : p.subject.required) {
    int nid = OBJ_txt2nid(field.c_str());
    int idx = X509_NAME_get_index_by_NID(subject, nid, -1);
    if (idx < 0) return refuse("missing required subject field '" + field + "'");
    const ASN1_STRING* v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
    if (!v || ASN1_STRING_length(v) == 0) return refuse("required subject field '" + field + "' is empty");
  }
  std::set<int> allowed;
  for (const auto& f : p.subject.required) allowed.insert(OBJ_txt2nid(f.c_str()));
  for (const auto& f : p.subject.optional) allowed.insert(OBJ_txt2nid(f.c_str()));
  for (int i = 0; i < X509_NAME_entry_count(subject); ++i) {
    const X509_NAME_ENTRY* e = X509_NAME_get_entry(subject, i);
    int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));
    if (!allowed.count(nid)) {
      char text[80];
      OBJ_obj2txt(text, sizeof text, X509_NAME_ENTRY_get_object(e), 0);
      return refuse(std::string("subject field '") + text + "' is not allowed (allowed: " +
                    join([&] {
                      std::vector<std::string> all = p.subject.required;
                      all.insert(all.end(), p.subject.optional.begin(), p.subject.optional.end());
                      return all;
                    }()) +
                    ")");
    }
  }
  if (!p.key_algorithms.empty()) {
    std::string alg = key_description(key);
    std::vector<std::string> allowed_algs;
    const KeyAlgorithmRule* rule = nullptr;
    for (const auto& r : p.key_algorithms) {
      allowed_algs.push_back(r.algorithm);
      if (r.algorithm == alg) rule = &r;
    }
    if (!rule) {
      return refuse("key algorithm " + alg + " is not allowed (allowed: " + join(allowed_algs) + ")");
    }
    if (alg == "RSA" || alg == "DSA") {
      int bits = EVP_PKEY_get_bits(key);
      if (rule->min_bits && bits < rule->min_bits) {
        return refuse("key too small: " + alg + "-" + std::to_string(bits) + " < " +
                      std::to_string(rule->min_bits) + " required");
      }
      if (rule->max_bits && bits > rule->max_bits) {
        return refuse("key too large: " + alg + "-" + std::to_string(bits) + " > " +
                      std::to_string(rule->max_bits) + " allowed");
      }
    }
    if (alg == "EC" && !rule->curves.empty()) {
      std::string curve = ec_curve_of(key);
      int nid = names::curve_nid(curve);
      bool ok = nid != 0 && std::any_of(rule->curves.begin(), rule->curves.end(), [&](const std::string& c) {
                  return names::curve_nid(c) == nid;
                });
      if (!ok) {
        return refuse("EC curve " + (nid ? names::curve_name(nid) : curve) +
                      " is not allowed (allowed: " + join(rule->curves) + ")");
      }
    }
  }
  for (const auto& ku : key_usage) {
    if (std::find(p.key_usage.begin(), p.key_usage.end(), ku) == p.key_usage.end()) {
      return refuse("key usage '" + ku + "' is not allowed (allowed: " +
                    (p.key_usage.empty() ? std::string("none") : join(p.key_usage)) + ")");
    }
  }
  return Status::ok();
}

Result<Csr> CmHost::validate_csr(std::string_view bytes) const {
  X509_REQ* raw = nullptr;
  if (bytes.find("-----BEGIN") != std::string_view::npos) {
    BioPtr bio(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
    raw = PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr);
  } else {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(bytes.data());
    raw = d2i_X509_REQ(nullptr, &p, static_cast<long>(bytes.size()));
    if (raw && p != reinterpret_cast<const unsigned char*>(bytes.data()) + bytes.size()) {
      X509_REQ_free(raw);
      raw = nullptr;
      ERR_put_error(ERR_LIB_ASN1, 0, ASN1_R_TOO_LONG, __FILE__, __LINE__);
    }
  }
  if (!raw) {
    std::string why = openssl_errors();
    return make_status(Errc::kInvalidArgument,
                       "CSR is malformed: not a PKCS#10 certification request" +
                           (why.empty() ? std::string() : " (" + why + ")"));
  }
  Csr csr;
  csr.request.reset(raw);
  EVP_PKEY* key = X509_REQ_get0_pubkey(raw);
  if (!key) {
    openssl_errors();
    return make_status(Errc::kInvalidArgument, "CSR is malformed: its public key cannot be decoded");
  }
  if (X509_REQ_verify(raw, key) != 1) {
    openssl_errors();
    return make_status(Errc::kRejected, "CSR signature is invalid (proof of possession failed)");
  }
  csr.public_key = share(key);
  PF_ASSIGN_OR_RETURN(csr.subject, dup_name(X509_REQ_get_subject_name(raw)));
  return csr;
}

// ------------------------------------------------------------------ issuance

namespace {

// The statements to put into the certificate: the procedure's, with what the RA entered where the
// procedure lets it.
Result<std::optional<QcStatements>> resolve_qc(const CertificateProcedure& p, const QcValues& v) {
  const std::string where = "procedure '" + p.name + "': ";
  if (!p.qc_statements) {
    if (!v.types.empty() || !v.pds.empty()) {
      return make_status(Errc::kRejected, where + "has no QC statements; QC values are not accepted");
    }
    return std::optional<QcStatements>();
  }
  QcStatements q = *p.qc_statements;
  auto may = [&](const char* what) {
    return std::find(q.ra_may_enter.begin(), q.ra_may_enter.end(), what) != q.ra_may_enter.end();
  };
  if (!v.types.empty()) {
    if (!may("types")) return make_status(Errc::kRejected, where + "the RA may not set the QC type");
    for (const auto& t : v.types) {
      if (std::find(q.allowed_types.begin(), q.allowed_types.end(), t) == q.allowed_types.end()) {
        return make_status(Errc::kRejected, where + "QC type '" + t + "' is not allowed (allowed: " +
                                                join(q.allowed_types) + ")");
      }
    }
    q.types = v.types;
  }
  if (!v.pds.empty()) {
    if (!may("pds")) return make_status(Errc::kRejected, where + "the RA may not set PDS locations");
    for (const auto& l : v.pds) {
      bool ok = std::any_of(q.allowed_pds.begin(), q.allowed_pds.end(), [&](const PdsLocation& a) {
        return a.url == l.url && a.language == l.language;
      });
      if (!ok) {
        return make_status(Errc::kRejected,
                           where + "PDS location " + l.url + " (" + l.language + ") is not allowed");
      }
    }
    q.pds = v.pds;
  }
  return std::optional<QcStatements>(q);
}

Result<IssuedCertificate> issued_from_record(const CertRecord& r, bool replayed) {
  IssuedCertificate out;
  PF_ASSIGN_OR_RETURN(out.certificate, x509_from_der(r.der));
  out.der = r.der;
  out.serial_hex = r.serial_hex;
  out.cert_id = r.cert_id;
  out.status = r.status;
  out.replayed = replayed;
  return out;
}

}  // namespace

// A certificate already made under this idempotency key: returned when the request is the same
// (subject and public key), refused when it is not. nullopt when the key is new.
static Result<std::optional<IssuedCertificate>> find_replay(storage::CmStore& store,
                                                            const std::string& key,
                                                            const X509_NAME* subject,
                                                            const EVP_PKEY* public_key) {
  if (key.empty()) return std::optional<IssuedCertificate>();
  PF_ASSIGN_OR_RETURN(auto existing, store.certificate_by_idempotency_key(key));
  if (!existing) return std::optional<IssuedCertificate>();
  PF_ASSIGN_OR_RETURN(auto issued, issued_from_record(*existing, true));
  bool same = true;
  if (subject) same = X509_NAME_cmp(subject, X509_get_subject_name(issued.certificate.get())) == 0;
  if (same && public_key) {
    PF_ASSIGN_OR_RETURN(std::string a, public_key_der(public_key));
    PF_ASSIGN_OR_RETURN(std::string b, public_key_der(X509_get0_pubkey(issued.certificate.get())));
    same = a == b;
  }
  if (!same) {
    return make_status(Errc::kRejected, "idempotency key '" + key +
                                            "' was already used for another request (certificate " +
                                            existing->serial_hex + ")");
  }
  return std::optional<IssuedCertificate>(std::move(issued));
}

namespace {
struct Prepared {
  X509Ptr cert;
  CertRecord record;
};
}  // namespace

static Result<Prepared> prepare(CmHost& host, const CertificateProcedure& proc,
                                const IssueRequest& r, X509* ca, EVP_PKEY* ca_key) {
  PF_RETURN_IF_ERROR(host.check_request(proc, r.subject.get(), r.public_key.get(), r.key_usage));
  PF_ASSIGN_OR_RETURN(auto qc, resolve_qc(proc, r.qc));
  if (r.old_certificate) {
    if (X509_verify(r.old_certificate.get(), X509_get0_pubkey(ca)) != 1) {
      openssl_errors();
      return make_status(Errc::kRejected, "the certificate to replace was not issued by this CA");
    }
    auto old = host.certificate(serial_hex(r.old_certificate.get()));
    if (!old) return make_status(Errc::kRejected, "the certificate to replace is unknown to this CM host");
    if (old->status == CertStatus::kRevoked) {
      return make_status(Errc::kRejected, "the certificate to replace (" + old->serial_hex + ") is revoked");
    }
  }
  std::int64_t now = now_s();
  crypto::CertSpec spec;
  spec.subject = r.subject.get();
  spec.public_key = r.public_key.get();
  spec.issuer = ca;
  spec.signing_key = ca_key;
  spec.not_before = now - 60;
  spec.not_after = std::min<std::int64_t>(now + std::int64_t{86400} * proc.validity_days,
                                          crypto::asn1_time_to_unix(X509_get0_notAfter(ca)));
  spec.key_usage = r.key_usage.empty() ? proc.key_usage : r.key_usage;
  spec.extended_key_usage = proc.extended_key_usage;
  spec.crl_url = host.config().crl_url();
  spec.qc = qc;
  Prepared out;
  PF_ASSIGN_OR_RETURN(out.cert, crypto::sign_certificate(spec));
  CertRecord& rec = out.record;
  rec.serial_hex = serial_hex(out.cert.get());
  rec.subject = name_to_string(r.subject.get());
  rec.issuer = name_to_string(X509_get_subject_name(ca));
  rec.not_before = spec.not_before;
  rec.not_after = spec.not_after;
  rec.status = r.confirmed ? CertStatus::kValid : CertStatus::kPending;
  rec.procedure = proc.name;
  PF_ASSIGN_OR_RETURN(rec.der, to_der(out.cert.get()));
  rec.transaction_id = r.transaction_id;
  rec.idempotency_key = r.idempotency_key;
  rec.requester = r.requester;
  rec.created_at = now;
  return out;
}

Result<IssuedCertificate> CmHost::issue(IssueRequest r) {
  const CertificateProcedure* proc = r.procedure.empty() ? &default_procedure() : procedure(r.procedure);
  if (!proc) {
    return make_status(Errc::kNotFound, "unknown certificate procedure '" + r.procedure +
                                            "' (see 'persoflow cm procedures list')");
  }
  if (!r.subject || !r.public_key) {
    return make_status(Errc::kInvalidArgument, "an issue request needs a subject and a public key");
  }
  PF_ASSIGN_OR_RETURN(auto replay, find_replay(*store_, r.idempotency_key, r.subject.get(), r.public_key.get()));
  if (replay) return std::move(*replay);
  auto refuse = [&](const Status& why) {
    (void)audit(r.requester, "refuse", "issue under '" + proc->name + "' for " +
                                           name_to_string(r.subject.get()) + ": " + why.message());
    return why;
  };
  std::optional<storage::ArchivedKeyRecord> archived;
  if (!r.archive_envelope.empty()) {
    auto envelope = rewrap_key_to_archive(r.archive_envelope, r.public_key.get());
    if (!envelope.is_ok()) return refuse(envelope.status());
    archived.emplace();
    archived->encrypted = std::move(envelope).value();
    archived->idempotency_key = r.idempotency_key.empty() ? "" : r.idempotency_key + "/archive";
  }
  auto prepared = prepare(*this, *proc, r, ca_certificate(), ca_key());
  if (!prepared.is_ok()) return refuse(prepared.status());
  // The writes own what they store: they may run later, in the caller's database transaction.
  auto rec_ptr = std::make_shared<CertRecord>(std::move(prepared->record));
  auto write = [store = store_.get(), rec_ptr, archived, requester = r.requester,
                tx = r.transaction_id, procedure_name = proc->name]() mutable -> Status {
    CertRecord& rec = *rec_ptr;
    PF_ASSIGN_OR_RETURN(rec.cert_id, store->insert_certificate(rec));
    if (archived) {
      archived->cert_id = rec.cert_id;
      PF_ASSIGN_OR_RETURN(archived->key_id, store->insert_archived_key(*archived));
      PF_RETURN_IF_ERROR(store->append_audit(requester, "archive",
                                             "key " + std::to_string(archived->key_id) +
                                                 " of certificate " + rec.serial_hex + " id " +
                                                 std::to_string(rec.cert_id) +
                                                 " archived (CRMF PKIArchiveOptions)")
                             .status());
    }
    return store->append_audit(requester, "issue",
                               "certificate " + rec.serial_hex + " id " +
                                   std::to_string(rec.cert_id) + " '" + rec.subject +
                                   "' procedure " + procedure_name + " (" +
                                   storage::to_string(rec.status) + ")" +
                                   (tx.empty() ? "" : " tx " + tx))
        .status();
  };
  const CertRecord& rec = *rec_ptr;
  if (r.defer) {
    r.defer->writes.push_back(std::move(write));
    IssuedCertificate out;
    PF_ASSIGN_OR_RETURN(out.certificate, x509_from_der(rec.der));
    out.der = rec.der;
    out.serial_hex = rec.serial_hex;
    out.status = rec.status;
    return out;
  }
  Status st = store_->atomically(write);
  if (!st.is_ok() && st.code() == Errc::kAlreadyExists && !r.idempotency_key.empty()) {
    // Another thread won the race for this idempotency key: answer with its certificate.
    PF_ASSIGN_OR_RETURN(auto again, find_replay(*store_, r.idempotency_key, r.subject.get(), r.public_key.get()));
    if (again) return std::move(*again);
  }
  PF_RETURN_IF_ERROR(st);
  IssuedCertificate out;
  // Re-read from DER: the object signed in-process shares the request's EVP_PKEY (which may be
  // a private key); the caller gets a certificate that holds nothing but what it says.
  PF_ASSIGN_OR_RETURN(out.certificate, x509_from_der(rec.der));
  out.der = rec.der;
  out.serial_hex = rec.serial_hex;
  out.cert_id = rec.cert_id;
  out.status = rec.status;
  return out;
}

Status CmHost::confirm(const std::string& serial, const std::string& actor) {
  PF_ASSIGN_OR_RETURN(std::string s, normalize_serial_hex(serial));
  return store_->atomically([&]() -> Status {
    PF_ASSIGN_OR_RETURN(auto rec, store_->certificate_by_serial(s));
    if (!rec) return make_status(Errc::kNotFound, "no certificate with serial " + s);
    if (rec->status == CertStatus::kValid) return Status::ok();
    PF_RETURN_IF_ERROR(store_->set_certificate_status(s, CertStatus::kValid));
    return store_->append_audit(actor, "confirm", "certificate " + s + " published").status();
  });
}

Status CmHost::reject(const std::string& serial, const std::string& actor) {
  PF_ASSIGN_OR_RETURN(std::string s, normalize_serial_hex(serial));
  return store_->atomically([&]() -> Status {
    PF_RETURN_IF_ERROR(store_->set_certificate_status(s, CertStatus::kRejected));
    return store_->append_audit(actor, "reject", "certificate " + s + " rejected by the requester").status();
  });
}

Result<std::vector<std::string>> CmHost::confirm_transaction(const std::string& transaction_id,
                                                             const std::vector<std::string>& serials,
                                                             bool accept,
                                                             const std::string& officer) {
  std::string tid;
  for (char c : transaction_id) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      return make_status(Errc::kInvalidArgument,
                         "transaction_id '" + transaction_id + "' is not hexadecimal");
    }
    tid.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  std::set<std::string> wanted;
  for (const auto& serial : serials) {
    PF_ASSIGN_OR_RETURN(std::string s, normalize_serial_hex(serial));
    wanted.insert(s);
  }
  std::vector<std::string> done;
  Status st = store_->atomically([&]() -> Status {
    storage::CertQuery q;
    q.transaction_id = tid;
    PF_ASSIGN_OR_RETURN(auto certs, store_->find_certificates(q));
    if (tid.empty() || certs.empty()) {
      return make_status(Errc::kNotFound, "no certificate was issued in transaction " + tid);
    }
    for (const auto& serial : wanted) {
      bool found = std::any_of(certs.begin(), certs.end(),
                               [&](const CertRecord& c) { return c.serial_hex == serial; });
      if (!found) {
        return make_status(Errc::kNotFound,
                           "certificate " + serial + " was not issued in transaction " + tid);
      }
    }
    for (const auto& c : certs) {
      if (!wanted.empty() && !wanted.count(c.serial_hex)) continue;
      if (c.requester != officer) {
        return make_status(Errc::kPermissionDenied, "certificate " + c.serial_hex +
                                                        " was requested by '" + c.requester +
                                                        "', not by '" + officer + "'");
      }
      PF_RETURN_IF_ERROR(accept ? confirm(c.serial_hex, officer) : reject(c.serial_hex, officer));
      done.push_back(c.serial_hex);
    }
    return Status::ok();
  });
  PF_RETURN_IF_ERROR(st);
  return done;
}

Status CmHost::revoke(const std::string& serial, int reason, const std::string& actor) {
  PF_ASSIGN_OR_RETURN(std::string s, normalize_serial_hex(serial));
  if (reason < 0 || reason > 10 || reason == 7) {
    return make_status(Errc::kInvalidArgument,
                       "revocation reason " + std::to_string(reason) +
                           " is not a CRLReason (0-6, 8-10; RFC 5280 5.3.1)");
  }
  return store_->atomically([&]() -> Status {
    PF_RETURN_IF_ERROR(store_->revoke_certificate(s, reason, now_s()));
    return store_->append_audit(actor, "revoke", "certificate " + s + " reason " + std::to_string(reason))
        .status();
  });
}

Result<std::string> CmHost::crl_der() {
  storage::CertQuery q;
  q.status = CertStatus::kRevoked;
  PF_ASSIGN_OR_RETURN(auto revoked, store_->find_certificates(q));
  std::vector<crypto::RevokedEntry> entries;
  for (const auto& r : revoked) entries.push_back({r.serial_hex, r.revoked_at, r.revocation_reason});
  PF_ASSIGN_OR_RETURN(std::int64_t number, store_->next_crl_number());
  std::int64_t now = now_s();
  return crypto::sign_crl(ca_certificate(), ca_key(), entries, number, now - 60,
                          now + std::int64_t{3600} * config_.crl_validity_hours);
}

std::optional<CertRecord> CmHost::certificate(const std::string& serial) {
  auto s = normalize_serial_hex(serial);
  if (!s.is_ok()) return std::nullopt;
  auto r = store_->certificate_by_serial(*s);
  if (!r.is_ok()) return std::nullopt;
  return *r;
}

// ------------------------------------------------------------------ transport certificates

Status CmHost::validate_transport_certificate(const std::string& token_procedure, const X509* tc) {
  const TokenProcedure* t = config_.token_procedure(token_procedure);
  if (!t) return make_status(Errc::kNotFound, "unknown token procedure '" + token_procedure + "'");
  auto refuse = [&](const std::string& why) {
    return make_status(Errc::kRejected, "token procedure '" + token_procedure + "': " + why);
  };
  if (!t->tc_validation.required) return refuse("does not validate transport certificates");
  if (!tc) return refuse("no transport certificate given");
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> trusted(X509_STORE_new(), X509_STORE_free);
  for (const auto& file : t->tc_validation.trusted_issuers) {
    auto pem = read_file(resolve(dir_, file));
    if (!pem.is_ok()) return pem.status().with_context("trusted TC issuers");
    PF_ASSIGN_OR_RETURN(auto certs, crypto::load_pem_chain(*pem));
    for (const auto& c : certs) X509_STORE_add_cert(trusted.get(), c.get());
  }
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(), X509_STORE_CTX_free);
  if (!X509_STORE_CTX_init(ctx.get(), trusted.get(), const_cast<X509*>(tc), nullptr)) {
    return openssl_failure("preparing TC validation");
  }
  std::string subject = name_to_string(X509_get_subject_name(tc));
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    openssl_errors();
    return refuse("transport certificate '" + subject + "' is not valid: " + X509_verify_cert_error_string(err));
  }
  if (X509_NAME_cmp(X509_get_issuer_name(tc), X509_get_subject_name(ca_certificate())) == 0) {
    PF_ASSIGN_OR_RETURN(auto rec, store_->certificate_by_serial(serial_hex(tc)));
    if (!rec) return refuse("transport certificate " + serial_hex(tc) + " is unknown to this CM host");
    const CertificateProcedure* p = procedure(rec->procedure);
    if (!p || !p->transport) {
      return refuse("certificate " + rec->serial_hex + " was issued under '" + rec->procedure +
                    "', not a transport procedure");
    }
    if (rec->status == CertStatus::kRevoked) return refuse("transport certificate " + rec->serial_hex + " is revoked");
  }
  return Status::ok();
}

// ------------------------------------------------------------------ officers

Result<Officer> CmHost::officer_for(const X509* cert) {
  auto deny = [](const std::string& why) { return make_status(Errc::kPermissionDenied, why); };
  if (!cert) return deny("the request carries no sender certificate");
  X509* ca = ca_certificate();
  std::string subject = name_to_string(X509_get_subject_name(cert));
  if (X509_NAME_cmp(X509_get_issuer_name(cert), X509_get_subject_name(ca)) != 0 ||
      X509_verify(const_cast<X509*>(cert), X509_get0_pubkey(ca)) != 1) {
    openssl_errors();
    return deny("certificate '" + subject + "' was not issued by this CA");
  }
  if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) return deny("officer certificate is not yet valid");
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) return deny("officer certificate has expired");
  std::string serial = serial_hex(cert);
  PF_ASSIGN_OR_RETURN(auto rec, store_->officer_by_serial(serial));
  if (!rec) return deny("certificate " + serial + " ('" + subject + "') is not an officer certificate");
  if (rec->revoked) return deny("officer '" + rec->name + "' is revoked");
  PF_ASSIGN_OR_RETURN(auto cert_rec, store_->certificate_by_serial(serial));
  if (cert_rec && cert_rec->status == CertStatus::kRevoked) {
    return deny("officer certificate " + serial + " is revoked");
  }
  return Officer{rec->name, rec->cert_serial_hex, rec->roles, rec->revoked};
}

Result<NewOfficer> CmHost::add_officer(const std::string& name, const std::vector<std::string>& roles,
                                       std::optional<std::string> password, const std::string& actor) {
  if (!valid_officer_name(name)) {
    return make_status(Errc::kInvalidArgument,
                       "officer name '" + name + "' must be 1-64 letters, digits, '.', '_' or '-'");
  }
  if (roles.empty()) return make_status(Errc::kInvalidArgument, "an officer needs at least one role (issue, recover)");
  for (const auto& r : roles) {
    if (r != kRoleIssue && r != kRoleRecover) {
      return make_status(Errc::kInvalidArgument, "unknown role '" + r + "' (issue, recover)");
    }
  }
  if (password && password->empty()) return make_status(Errc::kInvalidArgument, "the officer password is empty");
  PF_ASSIGN_OR_RETURN(auto existing, store_->officer(name));
  if (existing) return make_status(Errc::kAlreadyExists, "officer '" + name + "' already exists");
  std::string p12_path = resolve(dir_, "officers/" + name + ".p12");
  if (fs::exists(p12_path)) return make_status(Errc::kAlreadyExists, p12_path + " already exists");

  PF_ASSIGN_OR_RETURN(EvpPkeyPtr key, crypto::generate_key("EC:secp256r1"));
  IssueRequest req;
  req.procedure = "officer";
  if (!procedure(req.procedure)) {
    return make_status(Errc::kNotFound, "the configuration has no 'officer' certificate procedure");
  }
  PF_ASSIGN_OR_RETURN(req.subject, parse_name("CN=" + name));
  req.public_key = share(key.get());
  req.requester = actor;
  req.confirmed = true;
  PF_ASSIGN_OR_RETURN(IssuedCertificate issued, issue(std::move(req)));

  NewOfficer out;
  out.password_generated = !password.has_value();
  out.password = password ? *password : crypto::random_password(16);
  std::vector<const X509*> chain;
  for (const auto& c : impl_->chain) chain.push_back(c.get());
  PF_ASSIGN_OR_RETURN(std::string p12, crypto::pkcs12(name, key.get(), issued.certificate.get(), chain, out.password));
  PF_RETURN_IF_ERROR(make_dir(resolve(dir_, "officers"), 0700));
  PF_RETURN_IF_ERROR(write_file(p12_path, p12, 0600));
  storage::OfficerRecord rec;
  rec.name = name;
  rec.cert_serial_hex = issued.serial_hex;
  rec.roles = roles;
  PF_RETURN_IF_ERROR(store_->atomically([&]() -> Status {
    PF_RETURN_IF_ERROR(store_->insert_officer(rec));
    return store_->append_audit(actor, "officer-add",
                                "officer '" + name + "' roles " + join(roles, ",") + " certificate " +
                                    issued.serial_hex)
        .status();
  }));
  out.officer = Officer{name, issued.serial_hex, roles, false};
  out.p12_path = p12_path;
  return out;
}

Status CmHost::revoke_officer(const std::string& name, const std::string& actor) {
  PF_ASSIGN_OR_RETURN(auto rec, store_->officer(name));
  if (!rec) return make_status(Errc::kNotFound, "no officer named '" + name + "'");
  if (rec->revoked) return make_status(Errc::kAlreadyExists, "officer '" + name + "' is already revoked");
  return store_->atomically([&]() -> Status {
    PF_RETURN_IF_ERROR(store_->revoke_officer(name));
    PF_ASSIGN_OR_RETURN(auto cert, store_->certificate_by_serial(rec->cert_serial_hex));
    if (cert && cert->status != CertStatus::kRevoked) {
      PF_RETURN_IF_ERROR(store_->revoke_certificate(rec->cert_serial_hex, 3 /* affiliationChanged */, now_s()));
    }
    return store_->append_audit(actor, "officer-revoke",
                                "officer '" + name + "' certificate " + rec->cert_serial_hex)
        .status();
  });
}

Result<std::vector<Officer>> CmHost::officers() {
  PF_ASSIGN_OR_RETURN(auto recs, store_->officers());
  std::vector<Officer> out;
  for (const auto& r : recs) out.push_back(Officer{r.name, r.cert_serial_hex, r.roles, r.revoked});
  return out;
}

// ------------------------------------------------------------------ key archive and recovery

Result<std::string> envelope_for(const X509* recipient, std::string_view data) {
  if (!recipient) return make_status(Errc::kInvalidArgument, "no recipient certificate for the key envelope");
  X509StackPtr certs(sk_X509_new_null());
  X509_up_ref(const_cast<X509*>(recipient));
  sk_X509_push(certs.get(), const_cast<X509*>(recipient));
  BioPtr in(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  CmsPtr cms(CMS_encrypt(certs.get(), in.get(), EVP_aes_256_cbc(), CMS_BINARY));
  if (!cms) return openssl_failure("enveloping for " + name_to_string(X509_get_subject_name(recipient)));
  unsigned char* buf = nullptr;
  int len = i2d_CMS_ContentInfo(cms.get(), &buf);
  if (len <= 0) return openssl_failure("encoding the envelope");
  std::string out(reinterpret_cast<char*>(buf), static_cast<std::size_t>(len));
  OPENSSL_free(buf);
  return out;
}

Result<std::string> open_envelope(std::string_view der, const X509* recipient, const EVP_PKEY* key) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  CmsPtr cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(der.size())));
  if (!cms) return openssl_failure("not a CMS envelope");
  BioPtr out(BIO_new(BIO_s_mem()));
  if (CMS_decrypt(cms.get(), const_cast<EVP_PKEY*>(key), const_cast<X509*>(recipient), nullptr,
                  out.get(), CMS_BINARY) != 1) {
    std::string why = openssl_errors();
    return make_status(Errc::kPermissionDenied, "the envelope cannot be opened with this key (" + why + ")");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

Result<EvpPkeyPtr> generate_key(const std::string& spec) { return crypto::generate_key(spec); }

Result<GeneratedKey> CmHost::generate_and_archive(GenerateArchiveRequest r) {
  if (!r.recipient) {
    return make_status(Errc::kInvalidArgument, "generate-and-archive needs the requester's encryption certificate");
  }
  if (!r.subject) return make_status(Errc::kInvalidArgument, "generate-and-archive needs a subject");
  const CertificateProcedure* proc = r.procedure.empty() ? &default_procedure() : procedure(r.procedure);
  if (!proc) {
    return make_status(Errc::kNotFound, "unknown certificate procedure '" + r.procedure +
                                            "' (see 'persoflow cm procedures list')");
  }
  auto rebuild = [&](const storage::ArchivedKeyRecord& k) -> Result<GeneratedKey> {
    PF_ASSIGN_OR_RETURN(auto cert, store_->certificate_by_id(k.cert_id));
    if (!cert) return make_status(Errc::kCorrupt, "archived key " + std::to_string(k.key_id) + " has no certificate");
    GeneratedKey out;
    PF_ASSIGN_OR_RETURN(out.certificate, issued_from_record(*cert, true));
    if (X509_NAME_cmp(r.subject.get(), X509_get_subject_name(out.certificate.certificate.get())) != 0) {
      return make_status(Errc::kRejected, "idempotency key '" + r.idempotency_key +
                                              "' was already used for another request (certificate " +
                                              cert->serial_hex + ")");
    }
    PF_ASSIGN_OR_RETURN(std::string pkcs8, open_envelope(k.encrypted, impl_->archive_cert.get(), impl_->archive_key.get()));
    PF_ASSIGN_OR_RETURN(out.envelope_der, envelope_for(r.recipient.get(), pkcs8));
    OPENSSL_cleanse(pkcs8.data(), pkcs8.size());
    out.key_id = k.key_id;
    return out;
  };
  if (!r.idempotency_key.empty()) {
    PF_ASSIGN_OR_RETURN(auto existing, store_->archived_key_by_idempotency_key(r.idempotency_key));
    if (existing) return rebuild(*existing);
  }
  std::string algorithm = r.key_algorithm;
  if (algorithm.empty()) {
    algorithm = "RSA:2048";
    for (const auto& k : config_.key_procedures) {
      if (k.type == "archive" && k.certificate_procedure == proc->name) {
        algorithm = k.key_algorithm;
        break;
      }
    }
  }
  PF_ASSIGN_OR_RETURN(EvpPkeyPtr key, crypto::generate_key(algorithm));
  IssueRequest ir;
  ir.procedure = proc->name;
  PF_ASSIGN_OR_RETURN(ir.subject, dup_name(r.subject.get()));
  ir.public_key = share(key.get());
  ir.requester = r.requester;
  ir.transaction_id = r.transaction_id;
  ir.idempotency_key = r.idempotency_key.empty() ? "" : r.idempotency_key + "/cert";
  ir.confirmed = r.confirmed;
  auto prepared = prepare(*this, *proc, ir, ca_certificate(), ca_key());
  if (!prepared.is_ok()) {
    (void)audit(r.requester, "refuse", "generate-and-archive under '" + proc->name + "': " +
                                           prepared.status().message());
    return prepared.status();
  }
  PF_ASSIGN_OR_RETURN(std::string pkcs8, crypto::private_key_pkcs8_der(key.get()));
  auto archived = envelope_for(impl_->archive_cert.get(), pkcs8);
  auto for_requester = envelope_for(r.recipient.get(), pkcs8);
  OPENSSL_cleanse(pkcs8.data(), pkcs8.size());
  PF_RETURN_IF_ERROR(archived.status());
  PF_RETURN_IF_ERROR(for_requester.status());
  CertRecord& rec = prepared->record;
  storage::ArchivedKeyRecord k;
  k.encrypted = *archived;
  k.idempotency_key = r.idempotency_key;
  Status st = store_->atomically([&]() -> Status {
    PF_ASSIGN_OR_RETURN(rec.cert_id, store_->insert_certificate(rec));
    k.cert_id = rec.cert_id;
    PF_ASSIGN_OR_RETURN(k.key_id, store_->insert_archived_key(k));
    return store_->append_audit(r.requester, "generate-archive",
                                "key " + std::to_string(k.key_id) + " (" + algorithm +
                                    ") archived; certificate " + rec.serial_hex + " id " +
                                    std::to_string(rec.cert_id) + " '" + rec.subject + "'")
        .status();
  });
  if (!st.is_ok() && st.code() == Errc::kAlreadyExists && !r.idempotency_key.empty()) {
    PF_ASSIGN_OR_RETURN(auto existing, store_->archived_key_by_idempotency_key(r.idempotency_key));
    if (existing) return rebuild(*existing);
  }
  PF_RETURN_IF_ERROR(st);
  GeneratedKey out;
  PF_ASSIGN_OR_RETURN(out.certificate.certificate, x509_from_der(rec.der));
  out.certificate.der = rec.der;
  out.certificate.serial_hex = rec.serial_hex;
  out.certificate.cert_id = rec.cert_id;
  out.certificate.status = rec.status;
  out.key_id = k.key_id;
  out.envelope_der = std::move(for_requester).value();
  return out;
}

Result<std::string> CmHost::rewrap_key_to_archive(const std::string& envelope,
                                                  const EVP_PKEY* public_key) {
  auto content = open_envelope(envelope, impl_->archive_cert.get(), impl_->archive_key.get());
  if (!content.is_ok()) {
    return make_status(Errc::kRejected,
                       "the key to archive is not enveloped for this CM host's key-archive "
                       "certificate");
  }
  auto pkcs8 = protocol::private_key_info_of(*content);
  OPENSSL_cleanse(content->data(), content->size());
  PF_RETURN_IF_ERROR(pkcs8.status());
  auto key = crypto::private_key_from_pkcs8_der(*pkcs8);
  // Stored as the envelopes generate_and_archive() makes (PKCS#8 content), for recover().
  auto archived = key.is_ok() ? envelope_for(impl_->archive_cert.get(), *pkcs8)
                              : Result<std::string>(key.status());
  OPENSSL_cleanse(pkcs8->data(), pkcs8->size());
  if (!key.is_ok()) return make_status(Errc::kRejected, "the key to archive cannot be decoded");
  PF_ASSIGN_OR_RETURN(std::string requested, public_key_der(public_key));
  PF_ASSIGN_OR_RETURN(std::string enveloped, public_key_der(key->get()));
  if (requested != enveloped) {
    return make_status(Errc::kRejected,
                       "the key to archive does not belong to the requested public key");
  }
  return archived;
}

Result<std::int64_t> CmHost::archive_key(const std::string& serial, const EVP_PKEY* private_key,
                                         const std::string& actor, const std::string& idempotency_key) {
  PF_ASSIGN_OR_RETURN(std::string s, normalize_serial_hex(serial));
  if (!private_key) return make_status(Errc::kInvalidArgument, "no private key to archive");
  PF_ASSIGN_OR_RETURN(auto cert, store_->certificate_by_serial(s));
  if (!cert) return make_status(Errc::kNotFound, "no certificate with serial " + s);
  if (cert->status == CertStatus::kRejected) {
    return make_status(Errc::kRejected, "certificate " + s + " was rejected; its key is not archived");
  }
  if (!idempotency_key.empty()) {
    PF_ASSIGN_OR_RETURN(auto existing, store_->archived_key_by_idempotency_key(idempotency_key));
    if (existing) {
      if (existing->cert_id != cert->cert_id) {
        return make_status(Errc::kRejected, "idempotency key '" + idempotency_key +
                                                "' was already used for another certificate");
      }
      return existing->key_id;
    }
  }
  PF_ASSIGN_OR_RETURN(X509Ptr x, x509_from_der(cert->der));
  PF_ASSIGN_OR_RETURN(std::string cert_pub, public_key_der(X509_get0_pubkey(x.get())));
  PF_ASSIGN_OR_RETURN(std::string key_pub, public_key_der(private_key));
  if (cert_pub != key_pub) {
    return make_status(Errc::kRejected, "the private key does not match certificate " + s);
  }
  auto pkcs8 = crypto::private_key_pkcs8_der(private_key);
  if (!pkcs8.is_ok()) return make_status(Errc::kInvalidArgument, "the key to archive has no private part");
  auto archived = envelope_for(impl_->archive_cert.get(), *pkcs8);
  OPENSSL_cleanse(pkcs8->data(), pkcs8->size());
  PF_RETURN_IF_ERROR(archived.status());
  storage::ArchivedKeyRecord k;
  k.cert_id = cert->cert_id;
  k.encrypted = *archived;
  k.idempotency_key = idempotency_key;
  Status st = store_->atomically([&]() -> Status {
    PF_ASSIGN_OR_RETURN(k.key_id, store_->insert_archived_key(k));
    return store_->append_audit(actor, "archive",
                                "key " + std::to_string(k.key_id) + " of certificate " + s + " id " +
                                    std::to_string(cert->cert_id) + " archived")
        .status();
  });
  if (!st.is_ok() && st.code() == Errc::kAlreadyExists && !idempotency_key.empty()) {
    PF_ASSIGN_OR_RETURN(auto existing, store_->archived_key_by_idempotency_key(idempotency_key));
    if (existing) return existing->key_id;
  }
  PF_RETURN_IF_ERROR(st);
  return k.key_id;
}

Result<std::vector<ArchivedKeyInfo>> CmHost::search_keys(const KeySearch& search) {
  int set = (search.serial_hex ? 1 : 0) + (search.cert_id ? 1 : 0) + (search.subject ? 1 : 0);
  if (set != 1) {
    return make_status(Errc::kInvalidArgument,
                       "search archived keys by exactly one of: serial number (hex), subject, "
                       "certificate ID (decimal)");
  }
  storage::CertQuery q;
  if (search.serial_hex) {
    PF_ASSIGN_OR_RETURN(std::string s, normalize_serial_hex(*search.serial_hex));
    q.serial_hex = s;
  }
  q.cert_id = search.cert_id;
  q.subject = search.subject;
  q.subject_substring = search.subject_substring;
  PF_ASSIGN_OR_RETURN(auto certs, store_->find_certificates(q));
  std::vector<ArchivedKeyInfo> out;
  for (const auto& c : certs) {
    PF_ASSIGN_OR_RETURN(auto keys, store_->archived_keys_for(c.cert_id));
    for (const auto& k : keys) {
      out.push_back({k.key_id, c.cert_id, c.serial_hex, c.subject, c.not_before, c.not_after, c.status, k.created_at});
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.key_id < b.key_id; });
  return out;
}

Result<std::vector<RecoveredKey>> CmHost::recover(RecoverRequest r) {
  if (r.scope != "last" && r.scope != "all") {
    return make_status(Errc::kInvalidArgument, "recovery scope must be 'last' or 'all', not '" + r.scope + "'");
  }
  if (r.certificate != "new" && r.certificate != "reuse") {
    return make_status(Errc::kInvalidArgument,
                       "recovery certificate must be 'new' or 'reuse', not '" + r.certificate + "'");
  }
  if (!r.recipient) return make_status(Errc::kInvalidArgument, "recovery needs the requester's encryption certificate");
  PF_ASSIGN_OR_RETURN(auto found, search_keys(r.search));
  if (found.empty()) return make_status(Errc::kNotFound, "no archived key for " + describe(r.search));
  std::vector<ArchivedKeyInfo> chosen;
  if (r.scope == "last") {
    chosen.push_back(found.back());
  } else {
    // All archived keys of the users (subjects) the search found.
    std::set<std::string> subjects;
    for (const auto& k : found) subjects.insert(k.subject);
    std::map<std::int64_t, ArchivedKeyInfo> all;
    for (const auto& s : subjects) {
      KeySearch by_subject;
      by_subject.subject = s;
      PF_ASSIGN_OR_RETURN(auto keys, search_keys(by_subject));
      for (auto& k : keys) all.emplace(k.key_id, k);
    }
    for (auto& [id, k] : all) chosen.push_back(k);
  }
  std::vector<RecoveredKey> out;
  for (const auto& info : chosen) {
    PF_ASSIGN_OR_RETURN(auto keys, store_->archived_keys_for(info.cert_id));
    auto it = std::find_if(keys.begin(), keys.end(), [&](const auto& k) { return k.key_id == info.key_id; });
    if (it == keys.end()) return make_status(Errc::kCorrupt, "archived key " + std::to_string(info.key_id) + " vanished");
    PF_ASSIGN_OR_RETURN(std::string pkcs8, open_envelope(it->encrypted, impl_->archive_cert.get(), impl_->archive_key.get()));
    auto key = crypto::private_key_from_pkcs8_der(pkcs8);
    auto envelope = envelope_for(r.recipient.get(), pkcs8);
    OPENSSL_cleanse(pkcs8.data(), pkcs8.size());
    PF_RETURN_IF_ERROR(key.status());
    PF_RETURN_IF_ERROR(envelope.status());
    PF_ASSIGN_OR_RETURN(auto cert_rec, store_->certificate_by_id(info.cert_id));
    if (!cert_rec) return make_status(Errc::kCorrupt, "certificate " + std::to_string(info.cert_id) + " vanished");
    RecoveredKey rk;
    rk.key = info;
    rk.envelope_der = std::move(envelope).value();
    if (r.certificate == "reuse") {
      PF_ASSIGN_OR_RETURN(rk.certificate, issued_from_record(*cert_rec, false));
    } else {
      PF_ASSIGN_OR_RETURN(X509Ptr old, x509_from_der(cert_rec->der));
      IssueRequest ir;
      ir.procedure = r.procedure.empty() ? cert_rec->procedure : r.procedure;
      PF_ASSIGN_OR_RETURN(ir.subject, dup_name(X509_get_subject_name(old.get())));
      ir.public_key = share(key->get());
      ir.requester = r.requester;
      ir.transaction_id = r.transaction_id;
      ir.idempotency_key = r.idempotency_key.empty() ? "" : r.idempotency_key + "/" + std::to_string(info.key_id);
      ir.confirmed = r.confirmed;
      PF_ASSIGN_OR_RETURN(rk.certificate, issue(std::move(ir)));
    }
    PF_RETURN_IF_ERROR(audit(r.requester, "recover",
                             "key " + std::to_string(info.key_id) + " of certificate " + info.serial_hex +
                                 " recovered (" + r.scope + ", " + r.certificate + " certificate " +
                                 rk.certificate.serial_hex + ")"));
    out.push_back(std::move(rk));
  }
  return out;
}

Status CmHost::audit(const std::string& actor, const std::string& action, const std::string& detail) {
  return store_->append_audit(actor, action, detail).status();
}

}  // namespace persoflow::cmhost
