// Error categories and Status formatting.
#include "persoflow/common/status.hpp"

#include <string>

namespace persoflow {
namespace {

const char* errc_text(int code) {
  switch (static_cast<Errc>(code)) {
    case Errc::kInvalidArgument: return "invalid argument";
    case Errc::kNotFound: return "not found";
    case Errc::kAlreadyExists: return "already exists";
    case Errc::kRejected: return "rejected";
    case Errc::kNondeterminism: return "nondeterminism";
    case Errc::kCorrupt: return "corrupt";
    case Errc::kUnsupported: return "unsupported";
    case Errc::kUnavailable: return "unavailable";
    case Errc::kTimeout: return "timed out";
    case Errc::kCancelled: return "cancelled";
    case Errc::kPoisoned: return "writer poisoned";
    case Errc::kPermissionDenied: return "permission denied";
    case Errc::kInternal: return "internal error";
  }
  return "unknown error";
}

class NamedCategory : public std::error_category {
 public:
  NamedCategory(const char* name, bool own_codes) : name_(name), own_codes_(own_codes) {}
  const char* name() const noexcept override { return name_; }
  std::string message(int code) const override {
    if (own_codes_) return errc_text(code);
    return std::string(name_) + " error " + std::to_string(code);
  }

 private:
  const char* name_;
  bool own_codes_;
};

}  // namespace

const std::error_category& pcsc_category() noexcept {
  static const NamedCategory c("pcsc", false);
  return c;
}
const std::error_category& pkcs11_category() noexcept {
  static const NamedCategory c("pkcs11", false);
  return c;
}
const std::error_category& openssl_category() noexcept {
  static const NamedCategory c("openssl", false);
  return c;
}
const std::error_category& sqlite_category() noexcept {
  static const NamedCategory c("sqlite", false);
  return c;
}
const std::error_category& protocol_category() noexcept {
  static const NamedCategory c("protocol", true);
  return c;
}
const std::error_category& workflow_category() noexcept {
  static const NamedCategory c("workflow", true);
  return c;
}
const std::error_category& io_category() noexcept {
  static const NamedCategory c("io", true);
  return c;
}

std::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), workflow_category()};
}

Status make_status(Errc code, std::string message) {
  return Status(make_error_code(code), std::move(message));
}

std::string Status::to_string() const {
  if (is_ok()) return "OK";
  if (message_.empty()) return std::string(code_.category().name()) + ": " + code_.message();
  return message_;
}

void check_failed(const char* expr, const char* file, int line, const char* msg) {
  std::fprintf(stderr, "persoflow: invariant broken at %s:%d: %s (%s)\n", file, line, msg, expr);
  std::fflush(stderr);
  std::abort();
}

}  // namespace persoflow
