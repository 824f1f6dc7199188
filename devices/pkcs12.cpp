// PKCS#12 and certificate files with OpenSSL 3, written atomically (see pkcs12.hpp).
#include "persoflow/devices/pkcs12.hpp"

#include <fcntl.h>
#include <openssl/dsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

namespace persoflow::devices {
namespace {

Status errno_status(const std::string& what) {
  int e = errno;
  return Status(std::error_code(e, std::system_category()), what + ": " + std::strerror(e));
}

std::string openssl_errors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

Status openssl_status(const std::string& what) {
  return Status(std::error_code(1, openssl_category()), what + ": " + openssl_errors());
}

Status exists_error(const std::string& path) {
  return make_status(Errc::kAlreadyExists,
                     "'" + path + "' exists: not overwritten (use --force to replace it)");
}

bool ends_with_pem(const std::string& path) {
  if (path.size() < 4) return false;
  std::string tail = path.substr(path.size() - 4);
  for (char& c : tail) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return tail == ".pem";
}

}  // namespace

Status write_file_atomic(const std::string& path, std::string_view data, bool force) {
  namespace fs = std::filesystem;
  if (path.empty()) return make_status(Errc::kInvalidArgument, "no file name given");
  const fs::path target(path);
  if (!target.has_filename()) {
    return make_status(Errc::kInvalidArgument, "'" + path + "' names a folder, not a file");
  }
  std::error_code ec;
  if (!force && fs::exists(fs::symlink_status(target, ec))) return exists_error(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  if (!fs::is_directory(dir, ec)) {
    return make_status(Errc::kNotFound,
                       "cannot write '" + path + "': folder '" + dir.string() + "' does not exist");
  }
  std::string tmp = (dir / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
  int fd = ::mkstemp(tmp.data());  // created with mode 0600
  if (fd < 0) return errno_status("cannot create a temporary file in '" + dir.string() + "'");
  auto fail = [&](Status s) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  };
  if (::fchmod(fd, 0600) != 0) return fail(errno_status("chmod 0600 '" + tmp + "'"));
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(errno_status("writing '" + tmp + "'"));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) return fail(errno_status("fsync '" + tmp + "'"));
  if (::close(fd) != 0) {
    fd = -1;
    ::unlink(tmp.c_str());
    return errno_status("closing '" + tmp + "'");
  }
  int rc;
  if (force) {
    rc = ::rename(tmp.c_str(), path.c_str());
  } else {
    // Refuse atomically even when another writer created the file since the check above.
    rc = ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE);
    if (rc != 0 && errno == EINVAL) {  // a file system without RENAME_NOREPLACE
      rc = ::link(tmp.c_str(), path.c_str());
      if (rc == 0) ::unlink(tmp.c_str());
    }
  }
  if (rc != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    if (e == EEXIST) return exists_error(path);
    errno = e;
    return errno_status("renaming into '" + path + "'");
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return errno_status("opening folder '" + dir.string() + "' to fsync it");
  int sync_rc = ::fsync(dfd);
  ::close(dfd);
  if (sync_rc != 0) return errno_status("fsync folder '" + dir.string() + "'");
  return Status::ok();
}

Result<std::string> make_pkcs12(EVP_PKEY* key, X509* cert, const std::vector<X509*>& chain,
                                std::string_view password, const Pkcs12Options& options) {
  if (password.empty()) {
    return make_status(Errc::kInvalidArgument, "a PKCS#12 file needs a non-empty password");
  }
  if (options.iterations < 1) {
    return make_status(Errc::kInvalidArgument, "the PKCS#12 iteration count must be at least 1");
  }
  if (!key || !cert) return make_status(Errc::kInvalidArgument, "no key or no certificate given");
  ERR_clear_error();
  if (X509_check_private_key(cert, key) != 1) {
    ERR_clear_error();
    return make_status(Errc::kInvalidArgument, "the certificate does not belong to the key");
  }
  std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> ca(
      sk_X509_new_null(), [](STACK_OF(X509) * s) { sk_X509_free(s); });
  for (X509* c : chain) sk_X509_push(ca.get(), c);
  std::string pass(password);
  const std::string name = options.friendly_name;
  // -1 as MAC iteration count: no MAC from PKCS12_create (it would use SHA-1); set below.
  PKCS12* p12 = PKCS12_create_ex(pass.c_str(), name.empty() ? nullptr : name.c_str(), key, cert,
                                 ca.get(), NID_aes_256_cbc, NID_aes_256_cbc, options.iterations, -1,
                                 0, nullptr, nullptr);
  if (!p12) {
    OPENSSL_cleanse(pass.data(), pass.size());
    return openssl_status("creating the PKCS#12");
  }
  std::unique_ptr<PKCS12, decltype(&PKCS12_free)> guard(p12, PKCS12_free);
  int mac_ok = PKCS12_set_mac(p12, pass.c_str(), -1, nullptr, 0, options.iterations, EVP_sha256());
  OPENSSL_cleanse(pass.data(), pass.size());
  if (mac_ok != 1) return openssl_status("adding the PKCS#12 MAC");
  unsigned char* der = nullptr;
  int n = i2d_PKCS12(p12, &der);
  if (n <= 0) return openssl_status("encoding the PKCS#12");
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
  OPENSSL_free(der);
  return out;
}

Status write_pkcs12(const std::string& path, EVP_PKEY* key, X509* cert,
                    const std::vector<X509*>& chain, std::string_view password,
                    const Pkcs12Options& options) {
  // Refuse before the (slow, 600,000-iteration) encryption when the file is there.
  std::error_code ec;
  if (!options.force && std::filesystem::exists(std::filesystem::symlink_status(path, ec))) {
    return exists_error(path);
  }
  PF_ASSIGN_OR_RETURN(std::string der, make_pkcs12(key, cert, chain, password, options));
  Status s = write_file_atomic(path, der, options.force);
  OPENSSL_cleanse(der.data(), der.size());
  return s;
}

Status write_certificate_file(const std::string& path, X509* cert, bool force) {
  if (!cert) return make_status(Errc::kInvalidArgument, "no certificate given");
  std::string data;
  if (ends_with_pem(path)) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    if (PEM_write_bio_X509(bio.get(), cert) != 1)
      return openssl_status("PEM-encoding the certificate");
    char* p = nullptr;
    long n = BIO_get_mem_data(bio.get(), &p);
    data.assign(p, static_cast<std::size_t>(n));
  } else {
    unsigned char* der = nullptr;
    int n = i2d_X509(cert, &der);
    if (n <= 0) return openssl_status("DER-encoding the certificate");
    data.assign(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
    OPENSSL_free(der);
  }
  return write_file_atomic(path, data, force);
}

Result<EVP_PKEY*> generate_software_key(const KeyAlgorithm& a) {
  ERR_clear_error();
  EVP_PKEY* key = nullptr;
  switch (a.family) {
    case KeyFamily::kRsa:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(a.bits));
      break;
    case KeyFamily::kEc: {
      // OpenSSL's name for secp256r1 is prime256v1; the others are spelled alike.
      std::string group = a.curve == "secp256r1" ? "prime256v1" : a.curve;
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", group.c_str());
      break;
    }
    case KeyFamily::kDsa: {
      std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> pctx(
          EVP_PKEY_CTX_new_from_name(nullptr, "DSA", nullptr), EVP_PKEY_CTX_free);
      EVP_PKEY* params = nullptr;
      if (!pctx || EVP_PKEY_paramgen_init(pctx.get()) != 1 ||
          EVP_PKEY_CTX_set_dsa_paramgen_bits(pctx.get(), a.bits) != 1 ||
          EVP_PKEY_paramgen(pctx.get(), &params) != 1) {
        return openssl_status("generating DSA parameters");
      }
      std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> p(params, EVP_PKEY_free);
      std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> kctx(
          EVP_PKEY_CTX_new_from_pkey(nullptr, params, nullptr), EVP_PKEY_CTX_free);
      if (!kctx || EVP_PKEY_keygen_init(kctx.get()) != 1 ||
          EVP_PKEY_keygen(kctx.get(), &key) != 1) {
        return openssl_status("generating a DSA key");
      }
      break;
    }
  }
  if (!key) return openssl_status("generating a " + a.to_string() + " key");
  return key;
}

}  // namespace persoflow::devices
