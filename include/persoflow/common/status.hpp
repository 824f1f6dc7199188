// Status and Result<T>: how persoflow reports an expected failure of the environment.
//
// A broken invariant is a bug and aborts (PF_CHECK). A card pulled, a CKR_* code, a CM host gone,
// SQLITE_BUSY or a bad CSR is a value: a Status carrying a std::error_code in one of persoflow's
// categories and a message a person can act on. Library codes are translated once, at the
// adapter that calls the library. Exceptions never cross a machine or actor boundary.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace persoflow {

// The error categories. Each adapter translates its library's codes into one of these; the
// numeric value is the library's own code where it has one (CKR_*, SCARD_*, SQLITE_*).
const std::error_category& pcsc_category() noexcept;
const std::error_category& pkcs11_category() noexcept;
const std::error_category& openssl_category() noexcept;
const std::error_category& sqlite_category() noexcept;
const std::error_category& protocol_category() noexcept;
const std::error_category& workflow_category() noexcept;
const std::error_category& io_category() noexcept;

// Codes of persoflow's own making (workflow_category, protocol_category, io_category).
enum class Errc : int {
  kInvalidArgument = 1,  // bad input from a person or a file
  kNotFound,             // an unknown id, token, reader, machine, file
  kAlreadyExists,        // refusing to overwrite
  kRejected,             // an event a state does not accept; a request the CM refuses
  kNondeterminism,       // replay produced other commands than the journal holds
  kCorrupt,              // a journal or file that is damaged or not what it claims
  kUnsupported,          // an algorithm, version or feature this part cannot do
  kUnavailable,          // a peer or daemon that is not there (retry may help)
  kTimeout,
  kCancelled,
  kPoisoned,             // a writer whose last outcome is unknown refuses all writes
  kPermissionDenied,
  kInternal,
};

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(std::error_code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }

  bool is_ok() const noexcept { return !code_; }
  explicit operator bool() const noexcept { return is_ok(); }
  const std::error_code& code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  // "category: message" (the message alone when it already says everything).
  std::string to_string() const;

  // Prefix the message with context, keeping the code: "opening journal /x: <message>".
  Status with_context(const std::string& context) const {
    if (is_ok()) return *this;
    return Status(code_, context + ": " + message_);
  }

 private:
  std::error_code code_{};
  std::string message_;
};

Status make_status(Errc code, std::string message);
inline Status make_status(std::error_code code, std::string message) {
  return Status(code, std::move(message));
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : value_(std::move(status)) {
    if (std::get<Status>(value_).is_ok()) {
      std::fprintf(stderr, "persoflow: Result constructed from an OK Status\n");
      std::abort();
    }
  }

  bool is_ok() const noexcept { return std::holds_alternative<T>(value_); }
  explicit operator bool() const noexcept { return is_ok(); }

  const Status& status() const {
    static const Status kOk;
    return is_ok() ? kOk : std::get<Status>(value_);
  }
  T& value() & { return checked(); }
  const T& value() const& { return const_cast<Result*>(this)->checked(); }
  T&& value() && { return std::move(checked()); }
  T* operator->() { return &checked(); }
  const T* operator->() const { return &const_cast<Result*>(this)->checked(); }
  T& operator*() & { return checked(); }
  const T& operator*() const& { return const_cast<Result*>(this)->checked(); }

 private:
  T& checked() {
    if (!is_ok()) {
      std::fprintf(stderr, "persoflow: value() of a failed Result: %s\n",
                   std::get<Status>(value_).message().c_str());
      std::abort();
    }
    return std::get<T>(value_);
  }
  std::variant<T, Status> value_;
};

[[noreturn]] void check_failed(const char* expr, const char* file, int line, const char* msg);

}  // namespace persoflow

template <>
struct std::is_error_code_enum<persoflow::Errc> : std::true_type {};

namespace persoflow {
std::error_code make_error_code(Errc e) noexcept;
}

// A broken invariant: abort loudly with where and what.
#define PF_CHECK(cond, msg) \
  do {                      \
    if (!(cond)) ::persoflow::check_failed(#cond, __FILE__, __LINE__, (msg)); \
  } while (0)

// Early return of a failed Status / Result from a function returning Status or Result<U>.
#define PF_RETURN_IF_ERROR(expr)                          \
  do {                                                    \
    ::persoflow::Status pf_status_ = (expr);              \
    if (!pf_status_.is_ok()) return pf_status_;           \
  } while (0)

#define PF_CONCAT_INNER(a, b) a##b
#define PF_CONCAT(a, b) PF_CONCAT_INNER(a, b)
// PF_ASSIGN_OR_RETURN(auto x, f()); — x holds the value, or the enclosing function returns the
// failure.
#define PF_ASSIGN_OR_RETURN(decl, expr) \
  PF_ASSIGN_OR_RETURN_IMPL(PF_CONCAT(pf_result_, __LINE__), decl, expr)
#define PF_ASSIGN_OR_RETURN_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                              \
  if (!tmp.is_ok()) return tmp.status();          \
  decl = std::move(tmp).value()
