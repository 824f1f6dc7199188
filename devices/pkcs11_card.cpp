// Card over PKCS#11: libp11 loads the module and gives OpenSSL EVP_PKEYs whose operations run on
// the card; everything else calls the module's own functions (C_GetFunctionList of the same
// loaded library), because libp11 0.4.12 generates RSA keys only, hides usage flags, EC curves and
// mechanism info, and caches object lists.
//
// Why one module object per path, and one libp11 slot list per module, never released until the
// module is unloaded: C_Finalize (PKCS11_CTX_unload) ends every session of the process on that
// module, and libp11's PKCS11_release_all_slots calls C_CloseAllSessions on every slot, which
// would log out every other Card. So listing tokens and opening cards use C_GetSlotList directly,
// and libp11's own slot list lives as long as the module.
#include <dlfcn.h>
#include <libp11.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>

#include "persoflow/devices/card.hpp"
#include "persoflow/devices/faulty_card.hpp"
#include "persoflow/devices/readers.hpp"

namespace persoflow::devices {
namespace {

// ---------------------------------------------------------------------------------------------
// Errors

Status ck_status(CK_RV rv, const std::string& what) {
  std::string text = what + ": " + ckr_name(rv);
  if (const char* s = p11_kit_strerror(rv); s && *s) text += std::string(" (") + s + ")";
  return Status(std::error_code(static_cast<int>(rv), pkcs11_category()), text);
}

#define CK_TRY(call, what)                                \
  do {                                                    \
    CK_RV ck_rv_ = (call);                                \
    if (ck_rv_ != CKR_OK) return ck_status(ck_rv_, what); \
  } while (0)

// Drains OpenSSL's error queue (where libp11 reports) into one line.
std::string openssl_errors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

std::string padded(const unsigned char* s, std::size_t n) {
  std::string v(reinterpret_cast<const char*>(s), n);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\0')) v.pop_back();
  return v;
}

// ---------------------------------------------------------------------------------------------
// The module, shared by every Card of one path.

struct Module {
  std::string path;
  void* dl = nullptr;
  PKCS11_CTX* ctx = nullptr;
  CK_FUNCTION_LIST_PTR fl = nullptr;
  std::mutex mu;  // guards libp11's slot list below (libp11 objects are not thread-safe)
  PKCS11_SLOT* slots = nullptr;
  unsigned int nslots = 0;
  // Token serial -> the slot the last listing saw it in. A hint only: opening a card by serial
  // reads that one slot's token afresh and falls back to a full listing when it differs, because
  // with a file-backed module (SoftHSM2) a listing reads every token's files, and a station that
  // opens each of N cards by listing all N does N^2 reads.
  std::mutex hints_mu;
  std::map<std::string, CK_SLOT_ID> slot_of_serial;
};

std::mutex g_modules_mu;
std::condition_variable g_modules_cv;
std::map<std::string, std::weak_ptr<Module>> g_modules;
std::map<std::string, int> g_modules_alive;  // finalisation still pending counts as alive

void destroy_module(Module* m) {
  std::lock_guard lock(g_modules_mu);
  if (m->slots) PKCS11_release_all_slots(m->ctx, m->slots, m->nslots);
  if (m->ctx) {
    PKCS11_CTX_unload(m->ctx);
    PKCS11_CTX_free(m->ctx);
  }
  if (m->dl) ::dlclose(m->dl);
  if (--g_modules_alive[m->path] == 0) g_modules_alive.erase(m->path);
  delete m;
  g_modules_cv.notify_all();
}

Result<std::shared_ptr<Module>> load_module(const std::string& path) {
  std::error_code ec;
  if (path.empty()) {
    return make_status(Errc::kInvalidArgument, "no PKCS#11 module given (use --module PATH)");
  }
  if (!std::filesystem::exists(path, ec)) {
    return make_status(Errc::kNotFound, "PKCS#11 module '" + path +
                                            "' not found: no such file (give the module's path "
                                            "with --module PATH)");
  }
  std::unique_lock lock(g_modules_mu);
  if (auto it = g_modules.find(path); it != g_modules.end()) {
    if (auto m = it->second.lock()) return m;
  }
  // A module of this path still finalising (its last Card is going away on another thread) must
  // finish before C_Initialize, or its C_Finalize would end our sessions.
  g_modules_cv.wait(lock, [&] { return g_modules_alive.count(path) == 0; });

  auto* raw = new Module;
  raw->path = path;
  ++g_modules_alive[path];
  // Deleting runs destroy_module, which takes g_modules_mu: release `lock` first on failure paths.
  auto fail = [&](Status s) -> Result<std::shared_ptr<Module>> {
    lock.unlock();
    destroy_module(raw);
    return s;
  };
  raw->dl = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!raw->dl) {
    const char* err = ::dlerror();
    return fail(make_status(Errc::kUnavailable, "PKCS#11 module '" + path + "' cannot be loaded: " +
                                                    (err ? err : "dlopen failed")));
  }
  auto get_list = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(raw->dl, "C_GetFunctionList"));
  if (!get_list) {
    return fail(make_status(Errc::kUnsupported,
                            "'" + path + "' is not a PKCS#11 module (no C_GetFunctionList)"));
  }
  if (CK_RV rv = get_list(&raw->fl); rv != CKR_OK || !raw->fl) {
    return fail(ck_status(rv, "C_GetFunctionList of '" + path + "'"));
  }
  ERR_clear_error();
  raw->ctx = PKCS11_CTX_new();
  if (!raw->ctx) return fail(make_status(Errc::kInternal, "PKCS11_CTX_new failed"));
  if (PKCS11_CTX_load(raw->ctx, path.c_str()) != 0) {
    std::string why = openssl_errors();
    PKCS11_CTX_free(raw->ctx);
    raw->ctx = nullptr;
    return fail(make_status(
        Errc::kUnavailable,
        "PKCS#11 module '" + path + "' failed to initialise" + (why.empty() ? "" : ": " + why)));
  }
  std::shared_ptr<Module> m(raw, destroy_module);
  g_modules[path] = m;
  return m;
}

// ---------------------------------------------------------------------------------------------
// Raw PKCS#11 helpers

using Bytes = std::vector<unsigned char>;

struct Attr {
  CK_ATTRIBUTE_TYPE type;
  Bytes value;
};

class Template {
 public:
  Template() = default;
  Template(Template&&) = default;
  Template& operator=(Template&&) = default;
  Template& add(CK_ATTRIBUTE_TYPE t, const void* p, std::size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    attrs_.push_back({t, Bytes(b, b + n)});
    return *this;
  }
  Template& ulong(CK_ATTRIBUTE_TYPE t, CK_ULONG v) { return add(t, &v, sizeof v); }
  Template& boolean(CK_ATTRIBUTE_TYPE t, bool v) {
    CK_BBOOL b = v ? CK_TRUE : CK_FALSE;
    return add(t, &b, sizeof b);
  }
  Template& bytes(CK_ATTRIBUTE_TYPE t, const Bytes& v) { return add(t, v.data(), v.size()); }
  Template& str(CK_ATTRIBUTE_TYPE t, std::string_view v) { return add(t, v.data(), v.size()); }
  // The values may be private key material (import_key): wiped when the template goes.
  ~Template() {
    for (auto& a : attrs_) OPENSSL_cleanse(a.value.data(), a.value.size());
  }
  std::vector<CK_ATTRIBUTE> view() {
    std::vector<CK_ATTRIBUTE> out;
    for (auto& a : attrs_) {
      out.push_back({a.type, a.value.empty() ? nullptr : a.value.data(),
                     static_cast<CK_ULONG>(a.value.size())});
    }
    return out;
  }

 private:
  std::vector<Attr> attrs_;
};

// The attributes every key pair the card gets shares, generated on it or written to it: token
// objects under CKA_ID `id`, the private half sensitive, never extractable, for signing (and
// decryption for RSA, derivation for EC). The caller adds the algorithm's own attributes.
struct KeyPairTemplates {
  Template pub, priv;
};
KeyPairTemplates key_pair_templates(const Bytes& id, std::string_view label, bool rsa) {
  KeyPairTemplates t;
  t.pub.boolean(CKA_TOKEN, true)
      .boolean(CKA_PRIVATE, false)
      .boolean(CKA_VERIFY, true)
      .bytes(CKA_ID, id)
      .str(CKA_LABEL, label);
  t.priv.boolean(CKA_TOKEN, true)
      .boolean(CKA_PRIVATE, true)
      .boolean(CKA_SENSITIVE, true)
      .boolean(CKA_EXTRACTABLE, false)
      .boolean(CKA_SIGN, true)
      .bytes(CKA_ID, id)
      .str(CKA_LABEL, label);
  if (rsa) {
    t.pub.boolean(CKA_ENCRYPT, true);
    t.priv.boolean(CKA_DECRYPT, true);
  } else {
    t.priv.boolean(CKA_DERIVE, true);
  }
  return t;
}

std::optional<Bytes> get_attr(CK_FUNCTION_LIST_PTR fl, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
                              CK_ATTRIBUTE_TYPE type) {
  CK_ATTRIBUTE a{type, nullptr, 0};
  if (fl->C_GetAttributeValue(s, o, &a, 1) != CKR_OK ||
      a.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
    return std::nullopt;
  }
  Bytes v(a.ulValueLen);
  a.pValue = v.data();
  if (fl->C_GetAttributeValue(s, o, &a, 1) != CKR_OK) return std::nullopt;
  v.resize(a.ulValueLen);
  return v;
}

std::optional<CK_ULONG> get_ulong(CK_FUNCTION_LIST_PTR fl, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
                                  CK_ATTRIBUTE_TYPE type) {
  auto v = get_attr(fl, s, o, type);
  if (!v || v->size() != sizeof(CK_ULONG)) return std::nullopt;
  CK_ULONG out;
  std::memcpy(&out, v->data(), sizeof out);
  return out;
}

// Several attributes of one object in two calls (sizes, then values): a card answers each call
// with APDUs and SoftHSM2 re-reads the object file, so one attribute per call is slow. Per
// PKCS#11 every attribute is processed even when one is invalid or sensitive (its length is then
// CK_UNAVAILABLE_INFORMATION); a module that fails otherwise gets one call per attribute.
class AttrSet {
 public:
  AttrSet(CK_FUNCTION_LIST_PTR fl, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
          std::initializer_list<CK_ATTRIBUTE_TYPE> types) {
    std::vector<CK_ATTRIBUTE> attrs;
    for (CK_ATTRIBUTE_TYPE t : types) attrs.push_back({t, nullptr, 0});
    auto tolerated = [](CK_RV rv) {
      return rv == CKR_OK || rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID;
    };
    CK_RV rv = fl->C_GetAttributeValue(s, o, attrs.data(), static_cast<CK_ULONG>(attrs.size()));
    if (tolerated(rv)) {
      for (auto& a : attrs) {
        if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION) continue;
        values_[a.type] = Bytes(a.ulValueLen);
        a.pValue = values_[a.type].data();
      }
      std::vector<CK_ATTRIBUTE> wanted;
      for (const auto& a : attrs) {
        if (a.ulValueLen != CK_UNAVAILABLE_INFORMATION) wanted.push_back(a);
      }
      rv = wanted.empty()
               ? CKR_OK
               : fl->C_GetAttributeValue(s, o, wanted.data(), static_cast<CK_ULONG>(wanted.size()));
      if (tolerated(rv)) {
        for (const auto& a : wanted) {
          if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
            values_.erase(a.type);
          } else {
            values_[a.type].resize(a.ulValueLen);
          }
        }
        return;
      }
    }
    values_.clear();
    for (CK_ATTRIBUTE_TYPE t : types) {
      if (auto v = get_attr(fl, s, o, t)) values_[t] = std::move(*v);
    }
  }

  const Bytes* find(CK_ATTRIBUTE_TYPE t) const {
    auto it = values_.find(t);
    return it == values_.end() ? nullptr : &it->second;
  }
  Bytes bytes(CK_ATTRIBUTE_TYPE t) const { return find(t) ? *find(t) : Bytes{}; }
  std::string str(CK_ATTRIBUTE_TYPE t) const {
    const Bytes* v = find(t);
    return v ? std::string(v->begin(), v->end()) : std::string();
  }
  bool flag(CK_ATTRIBUTE_TYPE t) const {
    const Bytes* v = find(t);
    return v && v->size() == sizeof(CK_BBOOL) && (*v)[0] == CK_TRUE;
  }
  std::optional<CK_ULONG> ulong(CK_ATTRIBUTE_TYPE t) const {
    const Bytes* v = find(t);
    if (!v || v->size() != sizeof(CK_ULONG)) return std::nullopt;
    CK_ULONG out;
    std::memcpy(&out, v->data(), sizeof out);
    return out;
  }

 private:
  std::map<CK_ATTRIBUTE_TYPE, Bytes> values_;
};

Result<std::vector<CK_OBJECT_HANDLE>> find_objects(CK_FUNCTION_LIST_PTR fl, CK_SESSION_HANDLE s,
                                                   Template& t) {
  auto attrs = t.view();
  CK_TRY(fl->C_FindObjectsInit(s, attrs.data(), static_cast<CK_ULONG>(attrs.size())),
         "C_FindObjectsInit");
  std::vector<CK_OBJECT_HANDLE> out;
  while (true) {
    CK_OBJECT_HANDLE batch[64];
    CK_ULONG n = 0;
    CK_RV rv = fl->C_FindObjects(s, batch, 64, &n);
    if (rv != CKR_OK) {
      fl->C_FindObjectsFinal(s);
      return ck_status(rv, "C_FindObjects");
    }
    out.insert(out.end(), batch, batch + n);
    if (n < 64) break;
  }
  CK_TRY(fl->C_FindObjectsFinal(s), "C_FindObjectsFinal");
  return out;
}

// The EC curves of the key-generation list: list spelling, OpenSSL NID, field size.
struct Curve {
  const char* name;
  int nid;
  int bits;
};
// CKF_EC_PARAMETERS (PKCS#11 2.40), missing from p11-kit 0.24's header.
constexpr CK_FLAGS kCkfEcParameters = 1UL << 22;

const Curve kCurves[] = {
    {"secp256r1", NID_X9_62_prime256v1, 256},
    {"secp384r1", NID_secp384r1, 384},
    {"secp521r1", NID_secp521r1, 521},
    {"brainpoolP256r1", NID_brainpoolP256r1, 256},
    {"brainpoolP320r1", NID_brainpoolP320r1, 320},
    {"brainpoolP384r1", NID_brainpoolP384r1, 384},
    {"brainpoolP512r1", NID_brainpoolP512r1, 512},
};

Bytes ec_params_der(int nid) {
  ASN1_OBJECT* obj = OBJ_nid2obj(nid);
  int n = i2d_ASN1_OBJECT(obj, nullptr);
  Bytes out(static_cast<std::size_t>(n));
  unsigned char* p = out.data();
  i2d_ASN1_OBJECT(obj, &p);
  return out;
}

void describe_ec_params(const Bytes& der, KeyInfo& key) {
  const unsigned char* p = der.data();
  ASN1_OBJECT* obj = d2i_ASN1_OBJECT(nullptr, &p, static_cast<long>(der.size()));
  if (!obj) {
    key.curve = "explicit parameters";
    return;
  }
  int nid = OBJ_obj2nid(obj);
  for (const auto& c : kCurves) {
    if (c.nid == nid) {
      key.curve = c.name;
      key.bits = c.bits;
    }
  }
  if (key.curve.empty()) {
    char oid[128];
    OBJ_obj2txt(oid, sizeof oid, obj, 1);
    key.curve = oid;
  }
  ASN1_OBJECT_free(obj);
}

TokenInfo token_info_from(const CK_SLOT_INFO& si, const CK_TOKEN_INFO& ti) {
  TokenInfo t;
  t.label = padded(ti.label, sizeof ti.label);
  t.serial = padded(ti.serialNumber, sizeof ti.serialNumber);
  t.manufacturer = padded(ti.manufacturerID, sizeof ti.manufacturerID);
  t.model = padded(ti.model, sizeof ti.model);
  t.slot_description = padded(si.slotDescription, sizeof si.slotDescription);
  t.slot_manufacturer = padded(si.manufacturerID, sizeof si.manufacturerID);
  t.initialized = ti.flags & CKF_TOKEN_INITIALIZED;
  t.login_required = ti.flags & CKF_LOGIN_REQUIRED;
  t.protected_authentication_path = ti.flags & CKF_PROTECTED_AUTHENTICATION_PATH;
  t.has_rng = ti.flags & CKF_RNG;
  PinState& p = t.pin;
  p.user_pin_initialized = ti.flags & CKF_USER_PIN_INITIALIZED;
  p.user_count_low = ti.flags & CKF_USER_PIN_COUNT_LOW;
  p.user_final_try = ti.flags & CKF_USER_PIN_FINAL_TRY;
  p.user_locked = ti.flags & CKF_USER_PIN_LOCKED;
  p.user_to_be_changed = ti.flags & CKF_USER_PIN_TO_BE_CHANGED;
  p.so_count_low = ti.flags & CKF_SO_PIN_COUNT_LOW;
  p.so_final_try = ti.flags & CKF_SO_PIN_FINAL_TRY;
  p.so_locked = ti.flags & CKF_SO_PIN_LOCKED;
  p.so_to_be_changed = ti.flags & CKF_SO_PIN_TO_BE_CHANGED;
  return t;
}

struct SlotToken {
  CK_SLOT_ID slot;
  TokenInfo info;
};

Result<std::vector<SlotToken>> scan_tokens(Module& m) {
  CK_ULONG n = 0;
  CK_TRY(m.fl->C_GetSlotList(CK_TRUE, nullptr, &n), "C_GetSlotList");
  std::vector<CK_SLOT_ID> ids(n);
  CK_TRY(m.fl->C_GetSlotList(CK_TRUE, ids.data(), &n), "C_GetSlotList");
  ids.resize(n);
  std::vector<SlotToken> out;
  for (CK_SLOT_ID id : ids) {
    CK_SLOT_INFO si{};
    CK_TOKEN_INFO ti{};
    // A card pulled between the two calls: skip it rather than fail the whole listing.
    if (m.fl->C_GetSlotInfo(id, &si) != CKR_OK) continue;
    if (m.fl->C_GetTokenInfo(id, &ti) != CKR_OK) continue;
    out.push_back({id, token_info_from(si, ti)});
  }
  // A serial seen in two slots gets no hint: opening it lists again and reports the ambiguity.
  std::map<std::string, int> seen;
  for (const auto& t : out) ++seen[t.info.serial];
  std::lock_guard lock(m.hints_mu);
  m.slot_of_serial.clear();
  for (const auto& t : out) {
    if (seen[t.info.serial] == 1) m.slot_of_serial.emplace(t.info.serial, t.slot);
  }
  return out;
}

// The token in the slot where the last listing saw `serial`, read afresh; nothing when there was
// no listing, the slot is empty now or holds another token.
std::optional<SlotToken> hinted_token(Module& m, const std::string& serial) {
  CK_SLOT_ID id;
  {
    std::lock_guard lock(m.hints_mu);
    auto it = m.slot_of_serial.find(serial);
    if (it == m.slot_of_serial.end()) return std::nullopt;
    id = it->second;
  }
  CK_SLOT_INFO si{};
  CK_TOKEN_INFO ti{};
  if (m.fl->C_GetSlotInfo(id, &si) != CKR_OK || !(si.flags & CKF_TOKEN_PRESENT)) {
    return std::nullopt;
  }
  if (m.fl->C_GetTokenInfo(id, &ti) != CKR_OK) return std::nullopt;
  SlotToken t{id, token_info_from(si, ti)};
  if (t.info.serial != serial) return std::nullopt;
  return t;
}

// Serials in hex compare without case and leading zeros ("0A1b" == "a1B").
bool same_serial(std::string_view a, std::string_view b) {
  auto norm = [](std::string_view s) {
    std::string out;
    for (char c : s) {
      if (out.empty() && c == '0') continue;
      out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    return out;
  };
  return norm(a) == norm(b);
}

bool selector_matches(const TokenSelector& sel, const TokenInfo& t) {
  if (!sel.reader.empty() && !reader_matches_slot(sel.reader, t.slot_description)) return false;
  if (!sel.serial.empty() && sel.serial != t.serial) return false;
  if (!sel.label.empty() && sel.label != t.label) return false;
  if (sel.uri) {
    if (!sel.uri->matches_token(t.label, t.serial, t.manufacturer, t.model, t.slot_description)) {
      return false;
    }
    if (sel.uri->slot_manufacturer && *sel.uri->slot_manufacturer != t.slot_manufacturer) {
      return false;
    }
  }
  return true;
}

std::string describe_tokens(const std::vector<SlotToken>& tokens) {
  if (tokens.empty()) return "the module sees no token";
  std::string s = "tokens present:";
  for (const auto& t : tokens) {
    s += " [label '" + t.info.label + "', serial '" + t.info.serial + "', reader '" +
         t.info.slot_description + "']";
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// The card

class Pkcs11Card final : public Card {
 public:
  Pkcs11Card(std::shared_ptr<Module> module, CK_SLOT_ID slot, TokenInfo info,
             CK_SESSION_HANDLE session)
      : module_(std::move(module)),
        fl_(module_->fl),
        slot_(slot),
        token_(std::move(info)),
        session_(session) {}

  ~Pkcs11Card() override {
    std::lock_guard lock(mu_);
    fl_->C_CloseSession(session_);
  }

  const TokenInfo& token() const override { return token_; }

  Status login(UserType who, std::string_view pin) override {
    std::lock_guard lock(mu_);
    return login_locked(who, pin);
  }

  Status logout() override {
    std::lock_guard lock(mu_);
    CK_RV rv = fl_->C_Logout(session_);
    if (rv != CKR_OK && rv != CKR_USER_NOT_LOGGED_IN) return ck_status(rv, "C_Logout");
    return Status::ok();
  }

  Result<PinState> pin_state() override {
    std::lock_guard lock(mu_);
    return pin_state_locked();
  }

  Result<CardContents> read_contents(const TransportCertificateRule& rule) override {
    std::lock_guard lock(mu_);
    CardContents c;
    PF_ASSIGN_OR_RETURN(c.token.pin, pin_state_locked());
    c.token = token_with(c.token.pin);
    c.logged_in = logged_in_locked();
    PF_ASSIGN_OR_RETURN(c.keys, keys_locked(std::nullopt));
    PF_ASSIGN_OR_RETURN(c.certificates, certificates_locked(std::nullopt));
    for (auto& cert : c.certificates) cert.transport_certificate = rule.matches(cert);
    return c;
  }

  Status check_keygen_supported(const KeyAlgorithm& a) override {
    std::lock_guard lock(mu_);
    return check_supported_locked(a);
  }

  Result<KeyInfo> generate_key(const KeyAlgorithm& a, std::string_view idempotency_key,
                               std::string_view label) override {
    std::lock_guard lock(mu_);
    const Bytes id = derive_key_id(idempotency_key);
    PF_ASSIGN_OR_RETURN(auto existing, keys_locked(id));
    // A pair an interrupted attempt left unfinished (half made, or its public half only while the
    // user is logged in and would see the private half) is removed and generated whole.
    if (!existing.empty() &&
        (existing.front().half_made || (!existing.front().has_private && logged_in_locked()))) {
      PF_RETURN_IF_ERROR(delete_key_locked(id));
      existing.clear();
    }
    if (!existing.empty()) {
      const KeyInfo& k = existing.front();
      if (k.algorithm() == a) return k;  // generated by an earlier, interrupted attempt
      return make_status(Errc::kAlreadyExists,
                         "token '" + token_.label + "' already holds a key with id " + k.id_hex +
                             " for this idempotency key, but of type " +
                             (k.algorithm() ? k.algorithm()->to_string() : key_type_name(k.type)) +
                             ", not " + a.to_string());
    }
    PF_RETURN_IF_ERROR(check_supported_locked(a));
    auto [pub, priv] = key_pair_templates(id, label, a.family == KeyFamily::kRsa);
    CK_MECHANISM mech{};
    if (a.family == KeyFamily::kRsa) {
      mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
      const unsigned char e[] = {0x01, 0x00, 0x01};
      pub.ulong(CKA_MODULUS_BITS, static_cast<CK_ULONG>(a.bits))
          .add(CKA_PUBLIC_EXPONENT, e, sizeof e);
    } else {
      mech.mechanism = CKM_EC_KEY_PAIR_GEN;
      const Curve* curve = nullptr;
      for (const auto& c : kCurves) {
        if (a.curve == c.name) curve = &c;
      }
      PF_CHECK(curve != nullptr, "check_supported_locked let an unknown curve through");
      pub.bytes(CKA_EC_PARAMS, ec_params_der(curve->nid));
    }
    auto pub_attrs = pub.view();
    auto priv_attrs = priv.view();
    CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE, hpriv = CK_INVALID_HANDLE;
    CK_RV rv = fl_->C_GenerateKeyPair(session_, &mech, pub_attrs.data(),
                                      static_cast<CK_ULONG>(pub_attrs.size()), priv_attrs.data(),
                                      static_cast<CK_ULONG>(priv_attrs.size()), &hpub, &hpriv);
    if (rv == CKR_USER_NOT_LOGGED_IN) {
      return ck_status(rv, "generating " + a.to_string() + " on token '" + token_.label +
                               "' needs a user login first");
    }
    if (rv == CKR_CURVE_NOT_SUPPORTED || rv == CKR_DOMAIN_PARAMS_INVALID ||
        rv == CKR_KEY_SIZE_RANGE || rv == CKR_MECHANISM_INVALID) {
      return ck_status(rv, "token '" + token_.label + "' cannot generate " + a.to_string());
    }
    if (rv != CKR_OK)
      return ck_status(rv, "generating " + a.to_string() + " on token '" + token_.label + "'");
    PF_ASSIGN_OR_RETURN(auto made, keys_locked(id));
    if (made.empty()) {
      return make_status(Errc::kInternal, "the generated key with id " + to_hex(id) +
                                              " is not visible on token '" + token_.label + "'");
    }
    return made.front();
  }

  Result<std::optional<KeyInfo>> find_key_by_idempotency_key(std::string_view key) override {
    return find_key(derive_key_id(key));
  }

  Result<std::optional<KeyInfo>> find_key(const Bytes& id) override {
    std::lock_guard lock(mu_);
    PF_ASSIGN_OR_RETURN(auto keys, keys_locked(id));
    if (keys.empty()) return std::optional<KeyInfo>();
    return std::optional<KeyInfo>(keys.front());
  }

  Status import_key(EVP_PKEY* key, const Bytes& id, std::string_view label) override {
    std::lock_guard lock(mu_);
    PF_ASSIGN_OR_RETURN(auto existing, keys_locked(id));
    // An earlier attempt may have stopped inside an object (removed, written again) or between
    // the two objects: write what is missing.
    if (!existing.empty() && existing.front().half_made) {
      PF_RETURN_IF_ERROR(delete_key_locked(id));
      existing.clear();
    }
    const bool have_private = !existing.empty() && existing.front().has_private;
    const bool have_public = !existing.empty() && existing.front().has_public;
    if (have_private && have_public) return Status::ok();
    auto bn = [&](const char* name, Bytes& out) -> bool {
      BIGNUM* v = nullptr;
      if (EVP_PKEY_get_bn_param(key, name, &v) != 1) return false;
      out.resize(static_cast<std::size_t>(BN_num_bytes(v)));
      BN_bn2bin(v, out.data());
      BN_clear_free(v);
      return true;
    };
    const bool rsa = EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA;
    auto [pub, priv] = key_pair_templates(id, label, rsa);
    pub.ulong(CKA_CLASS, CKO_PUBLIC_KEY);
    priv.ulong(CKA_CLASS, CKO_PRIVATE_KEY);
    std::vector<Bytes> secrets;  // cleansed on the way out
    if (rsa) {
      static const std::pair<const char*, CK_ATTRIBUTE_TYPE> kPrivate[] = {
          {"n", CKA_MODULUS},          {"e", CKA_PUBLIC_EXPONENT},
          {"d", CKA_PRIVATE_EXPONENT}, {"rsa-factor1", CKA_PRIME_1},
          {"rsa-factor2", CKA_PRIME_2}, {"rsa-exponent1", CKA_EXPONENT_1},
          {"rsa-exponent2", CKA_EXPONENT_2}, {"rsa-coefficient1", CKA_COEFFICIENT}};
      for (const auto& [name, attr] : kPrivate) {
        secrets.emplace_back();
        if (!bn(name, secrets.back())) {
          return make_status(Errc::kInvalidArgument,
                             std::string("the RSA key to write has no ") + name);
        }
        priv.bytes(attr, secrets.back());
        if (attr == CKA_MODULUS || attr == CKA_PUBLIC_EXPONENT) pub.bytes(attr, secrets.back());
      }
      pub.ulong(CKA_KEY_TYPE, CKK_RSA);
      priv.ulong(CKA_KEY_TYPE, CKK_RSA);
    } else if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC) {
      char group[64] = {};
      if (EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof group, nullptr) != 1) {
        return make_status(Errc::kInvalidArgument, "the EC key to write names no curve");
      }
      const int nid = OBJ_sn2nid(group);
      if (nid == NID_undef) {
        return make_status(Errc::kUnsupported, std::string("unknown curve ") + group);
      }
      unsigned char point[256];
      std::size_t point_len = 0;
      if (EVP_PKEY_get_octet_string_param(key, "pub", point, sizeof point, &point_len) != 1) {
        return make_status(Errc::kInvalidArgument, "the EC key to write has no public point");
      }
      // CKA_EC_POINT is the DER OCTET STRING of the encoded point.
      ASN1_OCTET_STRING* os = ASN1_OCTET_STRING_new();
      ASN1_OCTET_STRING_set(os, point, static_cast<int>(point_len));
      unsigned char* der = nullptr;
      const int der_len = i2d_ASN1_OCTET_STRING(os, &der);
      ASN1_OCTET_STRING_free(os);
      Bytes wrapped(der, der + std::max(der_len, 0));
      OPENSSL_free(der);
      secrets.emplace_back();
      if (!bn("priv", secrets.back())) {
        return make_status(Errc::kInvalidArgument, "the EC key to write has no private value");
      }
      const Bytes params = ec_params_der(nid);
      pub.ulong(CKA_KEY_TYPE, CKK_EC).bytes(CKA_EC_PARAMS, params).bytes(CKA_EC_POINT, wrapped);
      priv.ulong(CKA_KEY_TYPE, CKK_EC)
          .bytes(CKA_EC_PARAMS, params)
          .bytes(CKA_VALUE, secrets.back());
    } else {
      return make_status(Errc::kUnsupported, "only RSA and EC keys can be written to a card");
    }
    auto pub_attrs = pub.view();
    auto priv_attrs = priv.view();
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    CK_RV rv = CKR_OK;
    if (!have_private) {
      rv = fl_->C_CreateObject(session_, priv_attrs.data(),
                               static_cast<CK_ULONG>(priv_attrs.size()), &h);
    }
    for (Bytes& b : secrets) OPENSSL_cleanse(b.data(), b.size());
    if (rv != CKR_OK) return ck_status(rv, "writing a private key to token '" + token_.label + "'");
    if (!have_public) {
      CK_TRY(fl_->C_CreateObject(session_, pub_attrs.data(),
                                 static_cast<CK_ULONG>(pub_attrs.size()), &h),
             "writing a public key to token '" + token_.label + "'");
    }
    return Status::ok();
  }

  Status store_certificate(std::string_view der, const Bytes& id, std::string_view label) override {
    std::lock_guard lock(mu_);
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    std::unique_ptr<X509, decltype(&X509_free)> x509(
        d2i_X509(nullptr, &p, static_cast<long>(der.size())), X509_free);
    if (!x509) return make_status(Errc::kInvalidArgument, "not a DER X.509 certificate");
    PF_ASSIGN_OR_RETURN(auto existing, certificates_locked(id));
    for (const auto& c : existing) {
      if (c.der == der) return Status::ok();  // written by an earlier attempt
    }
    auto i2d = [](auto* obj, auto fn) {
      unsigned char* buf = nullptr;
      int n = fn(obj, &buf);
      Bytes out(buf, buf + std::max(n, 0));
      OPENSSL_free(buf);
      return out;
    };
    Bytes subject = i2d(X509_get_subject_name(x509.get()), i2d_X509_NAME);
    Bytes issuer = i2d(X509_get_issuer_name(x509.get()), i2d_X509_NAME);
    Bytes serial = i2d(X509_get0_serialNumber(x509.get()), i2d_ASN1_INTEGER);
    Template t;
    t.ulong(CKA_CLASS, CKO_CERTIFICATE)
        .ulong(CKA_CERTIFICATE_TYPE, CKC_X_509)
        .boolean(CKA_TOKEN, true)
        .boolean(CKA_PRIVATE, false)
        .str(CKA_LABEL, label)
        .bytes(CKA_ID, id)
        .bytes(CKA_SUBJECT, subject)
        .bytes(CKA_ISSUER, issuer)
        .bytes(CKA_SERIAL_NUMBER, serial)
        .str(CKA_VALUE, der);
    auto attrs = t.view();
    CK_OBJECT_HANDLE h;
    CK_TRY(fl_->C_CreateObject(session_, attrs.data(), static_cast<CK_ULONG>(attrs.size()), &h),
           "storing the certificate on token '" + token_.label + "'");
    return Status::ok();
  }

  Status delete_certificates(const Bytes& id) override {
    std::lock_guard lock(mu_);
    Template t;
    t.ulong(CKA_CLASS, CKO_CERTIFICATE).bytes(CKA_ID, id);
    return destroy_all(t, "certificate", id);
  }

  Status delete_certificate(const Bytes& id, std::string_view serial_hex) override {
    std::lock_guard lock(mu_);
    Template t;
    t.ulong(CKA_CLASS, CKO_CERTIFICATE).bytes(CKA_ID, id);
    PF_ASSIGN_OR_RETURN(auto handles, find_objects(fl_, session_, t));
    for (CK_OBJECT_HANDLE h : handles) {
      const Bytes value = get_attr(fl_, session_, h, CKA_VALUE).value_or(Bytes{});
      auto cert = describe_certificate(
          std::string_view(reinterpret_cast<const char*>(value.data()), value.size()));
      if (!cert.is_ok() || !same_serial(cert->serial_hex, serial_hex)) continue;
      CK_TRY(fl_->C_DestroyObject(session_, h),
             "deleting certificate " + std::string(serial_hex) + " with id " + to_hex(id));
      return Status::ok();
    }
    return make_status(Errc::kNotFound, "no certificate " + std::string(serial_hex) +
                                            " with id " + to_hex(id) + " on token '" +
                                            token_.label + "'");
  }

  Status delete_key(const Bytes& id) override {
    std::lock_guard lock(mu_);
    return delete_key_locked(id);
  }

  Status delete_key_locked(const Bytes& id) {
    Template priv, pub;
    priv.ulong(CKA_CLASS, CKO_PRIVATE_KEY).bytes(CKA_ID, id);
    pub.ulong(CKA_CLASS, CKO_PUBLIC_KEY).bytes(CKA_ID, id);
    Status a = destroy_all(priv, "private key", id);
    if (!a.is_ok() && a.code() != Errc::kNotFound) return a;
    Status b = destroy_all(pub, "public key", id);
    if (!b.is_ok() && b.code() != Errc::kNotFound) return b;
    if (!a.is_ok() && !b.is_ok()) {
      return make_status(Errc::kNotFound,
                         "no key with id " + to_hex(id) + " on token '" + token_.label + "'");
    }
    return Status::ok();
  }

  Status change_user_pin(std::string_view old_pin, std::string_view new_pin) override {
    std::lock_guard lock(mu_);
    const CK_RV rv = set_pin_locked(old_pin, new_pin);
    if (rv == CKR_PIN_INCORRECT) return wrong_pin(rv, UserType::kUser);
    CK_TRY(rv, "changing the user PIN of token '" + token_.label + "'");
    return Status::ok();
  }

  Status unblock_user_pin(std::string_view so_pin, std::string_view new_user_pin) override {
    std::lock_guard lock(mu_);
    PF_RETURN_IF_ERROR(so_login_locked(so_pin));
    std::string n(new_user_pin);
    CK_RV rv = fl_->C_InitPIN(session_, reinterpret_cast<CK_UTF8CHAR_PTR>(n.data()),
                              static_cast<CK_ULONG>(n.size()));
    OPENSSL_cleanse(n.data(), n.size());
    fl_->C_Logout(session_);
    CK_TRY(rv, "setting the user PIN of token '" + token_.label + "' (C_InitPIN)");
    return Status::ok();
  }

  Status change_so_pin(std::string_view old_so_pin, std::string_view new_so_pin) override {
    std::lock_guard lock(mu_);
    PF_RETURN_IF_ERROR(so_login_locked(old_so_pin));
    const CK_RV rv = set_pin_locked(old_so_pin, new_so_pin);
    fl_->C_Logout(session_);
    CK_TRY(rv, "changing the SO PIN of token '" + token_.label + "'");
    return Status::ok();
  }

  Result<Bytes> random_bytes(std::size_t n) override {
    std::lock_guard lock(mu_);
    Bytes out(n);
    CK_TRY(fl_->C_GenerateRandom(session_, out.data(), static_cast<CK_ULONG>(n)),
           "random bytes from token '" + token_.label + "'");
    return out;
  }

  Result<std::string> make_csr(const Bytes& id, std::string_view subject) override {
    PF_ASSIGN_OR_RETURN(EVP_PKEY * pkey, private_key(id));
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(pkey, EVP_PKEY_free);
    std::lock_guard lock(mu_);
    PF_ASSIGN_OR_RETURN(EVP_PKEY * pubkey, public_key_locked(id));
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> pub(pubkey, EVP_PKEY_free);
    PF_ASSIGN_OR_RETURN(X509_NAME * name_raw, parse_dn(subject));
    std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)> name(name_raw, X509_NAME_free);
    std::unique_ptr<X509_REQ, decltype(&X509_REQ_free)> req(X509_REQ_new(), X509_REQ_free);
    ERR_clear_error();
    if (!req || X509_REQ_set_version(req.get(), 0) != 1 ||
        X509_REQ_set_subject_name(req.get(), name.get()) != 1 ||
        X509_REQ_set_pubkey(req.get(), pub.get()) != 1) {
      return make_status(Errc::kInternal, "building the CSR failed: " + openssl_errors());
    }
    if (X509_REQ_sign(req.get(), key.get(), EVP_sha256()) <= 0) {
      return make_status(std::error_code(1, openssl_category()),
                         "token '" + token_.label + "' did not sign the CSR: " + openssl_errors());
    }
    unsigned char* der = nullptr;
    int n = i2d_X509_REQ(req.get(), &der);
    if (n <= 0) return make_status(Errc::kInternal, "encoding the CSR failed");
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
    OPENSSL_free(der);
    return out;
  }

  Result<EVP_PKEY*> private_key(const Bytes& id) override {
    std::lock_guard lock(mu_);
    PF_ASSIGN_OR_RETURN(auto keys, keys_locked(id));
    if (keys.empty() || !keys.front().has_private) {
      return make_status(Errc::kNotFound, "no private key with id " + to_hex(id) + " on token '" +
                                              token_.label + "' (is the user logged in?)");
    }
    std::lock_guard mlock(module_->mu);
    ERR_clear_error();
    PKCS11_SLOT* slot = libp11_slot_locked();
    if (!slot) {
      // A token that arrived after the module was loaded: refresh libp11's list (existing slot
      // objects are kept, so keys handed out stay valid).
      if (PKCS11_update_slots(module_->ctx, &module_->slots, &module_->nslots) != 0) {
        return make_status(Errc::kUnavailable, "libp11 cannot list the slots: " + openssl_errors());
      }
      slot = libp11_slot_locked();
    }
    if (!slot || !slot->token) {
      return make_status(Errc::kNotFound, "libp11 does not see token '" + token_.label + "'");
    }
    PKCS11_KEY* list = nullptr;
    unsigned int n = 0;
    if (PKCS11_enumerate_keys(slot->token, &list, &n) != 0) {
      return make_status(Errc::kUnavailable, "libp11 cannot list the keys of token '" +
                                                 token_.label + "': " + openssl_errors());
    }
    // The last match: libp11 appends objects it has not seen, and keeps ones deleted since.
    PKCS11_KEY* match = nullptr;
    for (unsigned int i = 0; i < n; ++i) {
      if (list[i].id_len == id.size() && std::memcmp(list[i].id, id.data(), id.size()) == 0) {
        match = &list[i];
      }
    }
    if (!match) {
      return make_status(Errc::kNotFound, "libp11 does not see the private key with id " +
                                              to_hex(id) + " on token '" + token_.label + "'");
    }
    EVP_PKEY* pkey = PKCS11_get_private_key(match);
    if (!pkey) {
      return make_status(Errc::kUnavailable, "libp11 cannot use the private key with id " +
                                                 to_hex(id) + ": " + openssl_errors());
    }
    return pkey;
  }

 private:
  bool logged_in_locked() {
    CK_SESSION_INFO si{};
    return fl_->C_GetSessionInfo(session_, &si) == CKR_OK &&
           (si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS);
  }

  PKCS11_SLOT* libp11_slot_locked() {
    if (!module_->slots) {
      if (PKCS11_enumerate_slots(module_->ctx, &module_->slots, &module_->nslots) != 0) {
        return nullptr;
      }
    }
    for (unsigned int i = 0; i < module_->nslots; ++i) {
      if (PKCS11_get_slotid_from_slot(&module_->slots[i]) == slot_) return &module_->slots[i];
    }
    return nullptr;
  }

  TokenInfo token_with(const PinState& pin) const {
    TokenInfo t = token_;
    t.pin = pin;
    return t;
  }

  Result<PinState> pin_state_locked() {
    CK_SLOT_INFO si{};
    CK_TOKEN_INFO ti{};
    CK_TRY(fl_->C_GetSlotInfo(slot_, &si), "reading the slot of token '" + token_.label + "'");
    CK_TRY(fl_->C_GetTokenInfo(slot_, &ti), "reading token '" + token_.label + "'");
    return token_info_from(si, ti).pin;
  }

  Status wrong_pin(CK_RV rv, UserType who) {
    auto state = pin_state_locked();
    std::string retries = "the token's PIN state is unreadable";
    if (state.is_ok()) {
      retries = who == UserType::kUser ? state->describe_user() : state->describe_so();
    }
    return Status(std::error_code(static_cast<int>(rv), pkcs11_category()),
                  std::string("wrong ") + (who == UserType::kUser ? "user" : "SO") +
                      " PIN for token '" + token_.label + "' (" + ckr_name(rv) + "); " + retries);
  }

  // C_SetPIN in this Card's session: the PIN of whoever is logged in (the user's without a login).
  CK_RV set_pin_locked(std::string_view old_pin, std::string_view new_pin) {
    std::string o(old_pin), n(new_pin);
    const CK_RV rv = fl_->C_SetPIN(
        session_, reinterpret_cast<CK_UTF8CHAR_PTR>(o.data()), static_cast<CK_ULONG>(o.size()),
        reinterpret_cast<CK_UTF8CHAR_PTR>(n.data()), static_cast<CK_ULONG>(n.size()));
    OPENSSL_cleanse(o.data(), o.size());
    OPENSSL_cleanse(n.data(), n.size());
    return rv;
  }

  // An SO login in this Card's session. SoftHSM2 refuses it while any read-only session of the
  // process is open on the token (CKR_SESSION_READ_ONLY_EXISTS), and libp11 keeps read-only
  // sessions in its pool once it has used a key there: its pool on this slot is emptied and
  // switched to read-write sessions (PKCS11_open_session ends every session of the process on the
  // slot, this Card's too), then this Card opens its session again.
  Status so_login_locked(std::string_view so_pin) {
    {
      std::lock_guard mlock(module_->mu);
      if (PKCS11_SLOT* slot = libp11_slot_locked(); slot && slot->token) {
        if (PKCS11_open_session(slot, 1) != 0) {
          return make_status(Errc::kUnavailable, "libp11 cannot reset its sessions on token '" +
                                                     token_.label + "': " + openssl_errors());
        }
      }
    }
    CK_SESSION_INFO si{};
    if (fl_->C_GetSessionInfo(session_, &si) != CKR_OK) {
      CK_TRY(fl_->C_OpenSession(slot_, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr,
                                &session_),
             "opening a session on token '" + token_.label + "' again");
    }
    fl_->C_Logout(session_);  // an SO login needs no user logged in
    return login_locked(UserType::kSecurityOfficer, so_pin);
  }

  Status login_locked(UserType who, std::string_view pin) {
    std::string p(pin);
    CK_RV rv =
        fl_->C_Login(session_, who == UserType::kUser ? CKU_USER : CKU_SO,
                     reinterpret_cast<CK_UTF8CHAR_PTR>(p.data()), static_cast<CK_ULONG>(p.size()));
    OPENSSL_cleanse(p.data(), p.size());
    if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) return Status::ok();
    if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED) return wrong_pin(rv, who);
    if (rv == CKR_PIN_LEN_RANGE) {
      return ck_status(rv,
                       "the PIN for token '" + token_.label + "' has a length the token refuses");
    }
    return ck_status(rv, std::string("logging in to token '") + token_.label + "' as " +
                             (who == UserType::kUser ? "user" : "SO"));
  }

  Status check_supported_locked(const KeyAlgorithm& a) {
    const std::string on = " on token '" + token_.label + "'";
    CK_MECHANISM_TYPE mech;
    int bits = a.bits;
    if (a.family == KeyFamily::kDsa) {
      return make_status(Errc::kUnsupported,
                         a.to_string() +
                             " is not generated on cards: persoflow generates RSA and "
                             "EC keys on a card (DSA only for software tokens)");
    }
    if (a.family == KeyFamily::kRsa) {
      if (a.bits < 2048 || a.bits > 8192) {
        return make_status(Errc::kUnsupported, a.to_string() + " cannot be generated" + on +
                                                   ": persoflow generates RSA keys of 2048 to 8192 "
                                                   "bits on cards");
      }
      mech = CKM_RSA_PKCS_KEY_PAIR_GEN;
    } else {
      bool known = std::any_of(std::begin(kCurves), std::end(kCurves),
                               [&](const Curve& c) { return a.curve == c.name; });
      if (!known) {
        return make_status(Errc::kUnsupported, "unknown EC curve '" + a.curve + "'");
      }
      mech = CKM_EC_KEY_PAIR_GEN;
    }
    CK_MECHANISM_INFO info{};
    CK_RV rv = fl_->C_GetMechanismInfo(slot_, mech, &info);
    const char* mech_name =
        mech == CKM_RSA_PKCS_KEY_PAIR_GEN ? "CKM_RSA_PKCS_KEY_PAIR_GEN" : "CKM_EC_KEY_PAIR_GEN";
    if (rv == CKR_MECHANISM_INVALID) {
      return make_status(Errc::kUnsupported, a.to_string() + " cannot be generated" + on +
                                                 ": the token has no " + mech_name);
    }
    CK_TRY(rv, std::string("C_GetMechanismInfo(") + mech_name + ")" + on);
    if (!(info.flags & CKF_GENERATE_KEY_PAIR)) {
      return make_status(Errc::kUnsupported, a.to_string() + " cannot be generated" + on + ": " +
                                                 mech_name + " lacks CKF_GENERATE_KEY_PAIR");
    }
    // Key sizes are in bits for both mechanisms (PKCS#11 2.40); 0 means "not said".
    if ((info.ulMinKeySize && static_cast<CK_ULONG>(bits) < info.ulMinKeySize) ||
        (info.ulMaxKeySize && static_cast<CK_ULONG>(bits) > info.ulMaxKeySize)) {
      return make_status(Errc::kUnsupported, a.to_string() + " cannot be generated" + on +
                                                 ": it generates " +
                                                 std::to_string(info.ulMinKeySize) + " to " +
                                                 std::to_string(info.ulMaxKeySize) + " bit keys");
    }
    if (a.family == KeyFamily::kEc && !(info.flags & CKF_EC_NAMEDCURVE) &&
        (info.flags & (CKF_EC_F_P | kCkfEcParameters | CKF_EC_NAMEDCURVE))) {
      return make_status(Errc::kUnsupported, a.to_string() + " cannot be generated" + on +
                                                 ": it takes no named curves");
    }
    return Status::ok();
  }

  // Keys, merged by CKA_ID from private and public key objects; only those under `id` if given.
  Result<std::vector<KeyInfo>> keys_locked(const std::optional<Bytes>& id) {
    std::vector<KeyInfo> out;
    for (CK_OBJECT_CLASS cls : {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY}) {
      Template t;
      t.ulong(CKA_CLASS, cls);
      if (id) t.bytes(CKA_ID, *id);
      PF_ASSIGN_OR_RETURN(auto handles, find_objects(fl_, session_, t));
      for (CK_OBJECT_HANDLE h : handles) {
        const AttrSet attrs(
            fl_, session_, h,
            {CKA_ID, CKA_LABEL, CKA_KEY_TYPE, CKA_MODULUS, CKA_MODULUS_BITS, CKA_EC_PARAMS,
             CKA_EC_POINT, CKA_SIGN, CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE, CKA_VERIFY, CKA_ENCRYPT,
             CKA_WRAP});
        Bytes kid = attrs.bytes(CKA_ID);
        auto it = std::find_if(out.begin(), out.end(),
                               [&](const KeyInfo& k) { return !kid.empty() && k.id == kid; });
        if (it == out.end()) {
          out.emplace_back();
          it = out.end() - 1;
          it->id = kid;
          it->id_hex = to_hex(kid);
        }
        KeyInfo& k = *it;
        if (std::string label = attrs.str(CKA_LABEL); !label.empty()) k.label = label;
        auto type = attrs.ulong(CKA_KEY_TYPE);
        auto holds = [&](CK_ATTRIBUTE_TYPE a) {
          const Bytes* value = attrs.find(a);
          return value && !value->empty();
        };
        if (!type || (*type == CKK_RSA && !holds(CKA_MODULUS)) ||
            (*type == CKK_EC && (!holds(CKA_EC_PARAMS) ||
                                 (cls == CKO_PUBLIC_KEY && !holds(CKA_EC_POINT))))) {
          k.half_made = true;
        }
        if (type && *type == CKK_RSA) {
          k.type = KeyType::kRsa;
          if (const Bytes* mod = attrs.find(CKA_MODULUS); mod && !mod->empty()) {
            std::size_t skip = 0;
            while (skip < mod->size() && (*mod)[skip] == 0) ++skip;
            k.bits = static_cast<int>((mod->size() - skip) * 8);
          } else if (auto mb = attrs.ulong(CKA_MODULUS_BITS)) {
            k.bits = static_cast<int>(*mb);
          }
        } else if (type && *type == CKK_EC) {
          k.type = KeyType::kEc;
          if (const Bytes* params = attrs.find(CKA_EC_PARAMS)) describe_ec_params(*params, k);
        }
        auto flag = [&](CK_ATTRIBUTE_TYPE a, const char* name) {
          if (attrs.flag(a) && std::find(k.usage.begin(), k.usage.end(), name) == k.usage.end()) {
            k.usage.push_back(name);
          }
        };
        if (cls == CKO_PRIVATE_KEY) {
          k.has_private = true;
          flag(CKA_SIGN, "sign");
          flag(CKA_DECRYPT, "decrypt");
          flag(CKA_UNWRAP, "unwrap");
          flag(CKA_DERIVE, "derive");
        } else {
          k.has_public = true;
          flag(CKA_VERIFY, "verify");
          flag(CKA_ENCRYPT, "encrypt");
          flag(CKA_WRAP, "wrap");
        }
      }
    }
    return out;
  }

  Result<std::vector<CertificateInfo>> certificates_locked(const std::optional<Bytes>& id) {
    Template t;
    t.ulong(CKA_CLASS, CKO_CERTIFICATE).ulong(CKA_CERTIFICATE_TYPE, CKC_X_509);
    if (id) t.bytes(CKA_ID, *id);
    PF_ASSIGN_OR_RETURN(auto handles, find_objects(fl_, session_, t));
    std::vector<CertificateInfo> out;
    for (CK_OBJECT_HANDLE h : handles) {
      const AttrSet attrs(fl_, session_, h, {CKA_VALUE, CKA_ID, CKA_LABEL});
      CertificateInfo c;
      if (const Bytes* value = attrs.find(CKA_VALUE)) {
        auto described = describe_certificate(
            std::string_view(reinterpret_cast<const char*>(value->data()), value->size()));
        if (described.is_ok()) c = std::move(described).value();
      }
      c.id = attrs.bytes(CKA_ID);
      c.id_hex = to_hex(c.id);
      c.label = attrs.str(CKA_LABEL);
      out.push_back(std::move(c));
    }
    return out;
  }

  Status destroy_all(Template& t, const char* what, const Bytes& id) {
    PF_ASSIGN_OR_RETURN(auto handles, find_objects(fl_, session_, t));
    if (handles.empty()) {
      return make_status(Errc::kNotFound, std::string("no ") + what + " with id " + to_hex(id) +
                                              " on token '" + token_.label + "'");
    }
    for (CK_OBJECT_HANDLE h : handles) {
      CK_TRY(fl_->C_DestroyObject(session_, h),
             std::string("deleting the ") + what + " with id " + to_hex(id));
    }
    return Status::ok();
  }

  // The public key under id as an OpenSSL key, built from the public key object's attributes.
  Result<EVP_PKEY*> public_key_locked(const Bytes& id) {
    Template t;
    t.ulong(CKA_CLASS, CKO_PUBLIC_KEY).bytes(CKA_ID, id);
    PF_ASSIGN_OR_RETURN(auto handles, find_objects(fl_, session_, t));
    if (handles.empty()) {
      return make_status(Errc::kNotFound, "no public key with id " + to_hex(id) + " on token '" +
                                              token_.label + "'");
    }
    CK_OBJECT_HANDLE h = handles.front();
    auto type = get_ulong(fl_, session_, h, CKA_KEY_TYPE);
    std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(nullptr, EVP_PKEY_CTX_free);
    OSSL_PARAM params[4];
    Bytes n, e, point, group_der;
    std::string group;
    std::vector<unsigned char> n_le, e_le;
    if (type && *type == CKK_RSA) {
      n = get_attr(fl_, session_, h, CKA_MODULUS).value_or(Bytes{});
      e = get_attr(fl_, session_, h, CKA_PUBLIC_EXPONENT).value_or(Bytes{});
      // OSSL_PARAM integers are native-endian (little-endian here); PKCS#11 gives big-endian.
      n_le.assign(n.rbegin(), n.rend());
      e_le.assign(e.rbegin(), e.rend());
      params[0] = OSSL_PARAM_construct_BN("n", n_le.data(), n_le.size());
      params[1] = OSSL_PARAM_construct_BN("e", e_le.data(), e_le.size());
      params[2] = OSSL_PARAM_construct_end();
      ctx.reset(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
    } else if (type && *type == CKK_EC) {
      KeyInfo k;
      group_der = get_attr(fl_, session_, h, CKA_EC_PARAMS).value_or(Bytes{});
      describe_ec_params(group_der, k);
      for (const auto& c : kCurves) {
        if (k.curve == c.name) group = OBJ_nid2sn(c.nid);
      }
      if (group.empty()) {
        return make_status(Errc::kUnsupported, "the key with id " + to_hex(id) +
                                                   " is on an unsupported curve " + k.curve);
      }
      // CKA_EC_POINT is a DER OCTET STRING around the point.
      Bytes wrapped = get_attr(fl_, session_, h, CKA_EC_POINT).value_or(Bytes{});
      const unsigned char* p = wrapped.data();
      ASN1_OCTET_STRING* os = d2i_ASN1_OCTET_STRING(nullptr, &p, static_cast<long>(wrapped.size()));
      if (os) {
        point.assign(os->data, os->data + os->length);
        ASN1_OCTET_STRING_free(os);
      } else {
        point = wrapped;  // some modules give the raw point
      }
      params[0] = OSSL_PARAM_construct_utf8_string("group", group.data(), 0);
      params[1] = OSSL_PARAM_construct_octet_string("pub", point.data(), point.size());
      params[2] = OSSL_PARAM_construct_end();
      ctx.reset(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
    } else {
      return make_status(Errc::kUnsupported,
                         "the key with id " + to_hex(id) + " is neither RSA nor EC");
    }
    EVP_PKEY* pkey = nullptr;
    if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
        EVP_PKEY_fromdata(ctx.get(), &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
      return make_status(Errc::kCorrupt, "the public key with id " + to_hex(id) +
                                             " is not usable: " + openssl_errors());
    }
    return pkey;
  }

  static Result<X509_NAME*> parse_dn(std::string_view dn) {
    X509_NAME* name = X509_NAME_new();
    std::vector<std::pair<std::string, std::string>> rdns;
    std::string s(dn);
    std::vector<std::string> parts;
    if (!s.empty() && s[0] == '/') {
      std::string cur;
      for (std::size_t i = 1; i <= s.size(); ++i) {
        if (i == s.size() || s[i] == '/') {
          parts.push_back(cur);
          cur.clear();
        } else {
          cur += s[i];
        }
      }
    } else {
      std::string cur;
      for (std::size_t i = 0; i <= s.size(); ++i) {
        if (i == s.size() || s[i] == ',') {
          parts.push_back(cur);
          cur.clear();
        } else {
          cur += s[i];
        }
      }
      std::reverse(parts.begin(), parts.end());  // RFC 2253 lists the most specific first
    }
    for (auto& part : parts) {
      auto trim = [](std::string v) {
        while (!v.empty() && v.front() == ' ') v.erase(v.begin());
        while (!v.empty() && v.back() == ' ') v.pop_back();
        return v;
      };
      auto eq = part.find('=');
      if (eq == std::string::npos) {
        X509_NAME_free(name);
        return make_status(Errc::kInvalidArgument,
                           "subject '" + std::string(dn) + "': '" + part + "' is not TYPE=value");
      }
      std::string type = trim(part.substr(0, eq)), value = trim(part.substr(eq + 1));
      if (X509_NAME_add_entry_by_txt(name, type.c_str(), MBSTRING_UTF8,
                                     reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                     0) != 1) {
        X509_NAME_free(name);
        ERR_clear_error();
        return make_status(Errc::kInvalidArgument, "subject '" + std::string(dn) +
                                                       "': unknown attribute type '" + type + "'");
      }
    }
    return name;
  }

  std::shared_ptr<Module> module_;
  CK_FUNCTION_LIST_PTR fl_;
  CK_SLOT_ID slot_;
  TokenInfo token_;
  CK_SESSION_HANDLE session_;
  std::mutex mu_;
};

}  // namespace

Result<std::vector<TokenInfo>> list_tokens(const std::string& module_path) {
  PF_RETURN_IF_ERROR(reader_service_fault("listing tokens"));
  PF_ASSIGN_OR_RETURN(auto module, load_module(module_path));
  PF_ASSIGN_OR_RETURN(auto tokens, scan_tokens(*module));
  std::vector<TokenInfo> out;
  for (auto& t : tokens) out.push_back(std::move(t.info));
  return out;
}

Result<std::unique_ptr<Card>> open_card(const std::string& module_path,
                                        const TokenSelector& selector) {
  PF_RETURN_IF_ERROR(reader_service_fault("opening a card"));
  PF_ASSIGN_OR_RETURN(auto module, load_module(module_path));
  std::vector<SlotToken> tokens;
  // By serial alone (how the station names its cards): the slot where the last listing saw it,
  // alone there, when that slot still holds it.
  const bool by_serial_only = !selector.serial.empty() && selector.reader.empty() &&
                              selector.label.empty() && !selector.uri;
  if (auto hinted = by_serial_only ? hinted_token(*module, selector.serial) : std::nullopt) {
    tokens.push_back(std::move(*hinted));
  } else {
    PF_ASSIGN_OR_RETURN(tokens, scan_tokens(*module));
  }
  std::vector<const SlotToken*> matches;
  for (const auto& t : tokens) {
    if (selector_matches(selector, t.info)) matches.push_back(&t);
  }
  if (matches.empty()) {
    return make_status(Errc::kNotFound, "no token with " + selector.to_string() + " in module '" +
                                            module_path + "'; " + describe_tokens(tokens));
  }
  if (matches.size() > 1) {
    return make_status(Errc::kNotFound,
                       std::to_string(matches.size()) + " tokens match " + selector.to_string() +
                           ": name one by serial or reader; " + describe_tokens(tokens));
  }
  const SlotToken& st = *matches.front();
  CK_SESSION_HANDLE session;
  CK_TRY(module->fl->C_OpenSession(st.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr,
                                   &session),
         "opening a session on token '" + st.info.label + "'");
  return wrap_card_with_faults(
      std::unique_ptr<Card>(new Pkcs11Card(module, st.slot, st.info, session)));
}

}  // namespace persoflow::devices
