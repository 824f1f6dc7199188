// `persoflow card list|show|keygen`: the readers pcscd sees and the PKCS#11 tokens a module sees,
// and the contents of one token (keys, certificates, the transport certificate marked). Wiring
// only: the work is in devices/ (card.hpp, readers.hpp, pin_input.hpp).
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "command_registry.hpp"
#include "persoflow/devices/card.hpp"
#include "persoflow/devices/pin_input.hpp"
#include "persoflow/devices/readers.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;
namespace dev = persoflow::devices;
using nlohmann::json;

constexpr const char* kUsage =
    "Usage: persoflow card <command> [options]\n\n"
    "Commands:\n"
    "  list   the PC/SC readers (card present, ATR) and the PKCS#11 tokens of the module\n"
    "  show   the keys and certificates on one token, the transport certificate marked\n"
    "  keygen generate a key pair on a token, idempotently (the key id derives from a key)\n\n"
    "'persoflow card <command> --help' for the options of a command.\n";

int fail(const std::string& message, int code = 1) {
  std::fprintf(stderr, "persoflow card: %s\n", message.c_str());
  return code;
}

json pin_json(const dev::PinState& p) {
  return {{"initialized", p.user_pin_initialized}, {"count_low", p.user_count_low},
          {"final_try", p.user_final_try},         {"locked", p.user_locked},
          {"to_be_changed", p.user_to_be_changed}, {"state", p.describe_user()}};
}

json token_json(const dev::TokenInfo& t) {
  return {{"label", t.label},
          {"serial", t.serial},
          {"manufacturer", t.manufacturer},
          {"model", t.model},
          {"slot_description", t.slot_description},
          {"initialized", t.initialized},
          {"login_required", t.login_required},
          {"user_pin", pin_json(t.pin)}};
}

// The options naming a token and logging in, shared by show and keygen.
struct TokenOptions {
  std::string module, reader, label, serial, uri_text;
  int pin_fd = -1;

  void add_to(po::options_description& opts) {
    opts.add_options()("module", po::value(&module)->default_value(dev::kDefaultPkcs11Module),
                       "the PKCS#11 module (a URI's module-path= wins)")(
        "reader", po::value(&reader), "the token in this reader (the slot description)")(
        "token", po::value(&label), "the token with this label")(
        "serial", po::value(&serial), "the token with this serial number")(
        "uri", po::value(&uri_text), "a PKCS#11 URI (RFC 7512), e.g. 'pkcs11:token=Card%20A'")(
        "pin-fd", po::value(&pin_fd), "log in with the user PIN read from this file descriptor")(
        "ask-pin", "log in with the user PIN asked at the terminal");
  }

  // Opens the token and logs in when a PIN source is given (required with `need_login`). On
  // failure prints the message, sets `exit_code` (2 bad usage, 1 otherwise), returns null.
  std::unique_ptr<dev::Card> open(const po::variables_map& vm, bool need_login, int& exit_code) {
    auto failed = [&](const std::string& message, int code) {
      exit_code = fail(message, code);
      return std::unique_ptr<dev::Card>();
    };
    dev::TokenSelector selector;
    selector.reader = reader;
    selector.label = label;
    selector.serial = serial;
    if (!uri_text.empty()) {
      auto uri = dev::parse_pkcs11_uri(uri_text);
      if (!uri.is_ok()) return failed(uri.status().message(), 2);
      selector.uri = std::move(uri).value();
    }
    if (reader.empty() && label.empty() && serial.empty() && !selector.uri) {
      return failed("name the token: --reader R, --token LABEL, --serial S or --uri URI", 2);
    }
    const bool ask = vm.count("ask-pin") > 0;
    if (pin_fd >= 0 && ask) return failed("give either --pin-fd or --ask-pin", 2);
    if (need_login && pin_fd < 0 && !ask) {
      return failed("this needs the user PIN: --pin-fd N or --ask-pin", 2);
    }
    auto opened = dev::open_card(dev::module_path_for(selector, module), selector);
    if (!opened.is_ok()) return failed(opened.status().message(), 1);
    std::unique_ptr<dev::Card> card = std::move(opened).value();
    if (pin_fd >= 0 || ask) {
      auto pin = dev::read_secret(pin_fd, "User PIN for token '" + card->token().label + "': ");
      if (!pin.is_ok()) return failed(pin.status().message(), 1);
      Status s = card->login(dev::UserType::kUser, pin->view());
      if (!s.is_ok()) return failed(s.message(), 1);
    }
    return card;
  }
};

json key_json(const dev::KeyInfo& k) {
  json j{{"id", k.id_hex},  {"label", k.label},         {"type", dev::key_type_name(k.type)},
         {"bits", k.bits},  {"private", k.has_private}, {"public", k.has_public},
         {"usage", k.usage}};
  if (k.type == dev::KeyType::kEc) j["curve"] = k.curve;
  return j;
}

// ---------------------------------------------------------------------------------------------

int card_list(int argc, char** argv) {
  po::options_description opts(
      "Usage: persoflow card list [--module PATH] [--json]\n\n"
      "Lists the readers pcscd sees (card present, ATR, the token in it) and every token the\n"
      "PKCS#11 module sees (label, serial, manufacturer, and its slot: the reader name with\n"
      "OpenSC). Without pcscd, the readers are left out with a note.\n\nOptions");
  std::string module;
  opts.add_options()("help,h", "this help")(
      "module", po::value(&module)->default_value(dev::kDefaultPkcs11Module),
      "the PKCS#11 module (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)")("json", "JSON output");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return fail(std::string(e.what()) + " (see 'persoflow card list --help')", 2);
  }
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  auto tokens = dev::list_tokens(module);
  if (!tokens.is_ok()) return fail(tokens.status().message());
  auto readers = dev::list_readers();
  auto token_in = [&](const std::string& reader) -> const dev::TokenInfo* {
    for (const auto& t : *tokens) {
      if (dev::reader_matches_slot(reader, t.slot_description)) return &t;
    }
    return nullptr;
  };
  if (vm.count("json")) {
    json out{{"module", module}, {"tokens", json::array()}};
    for (const auto& t : *tokens) out["tokens"].push_back(token_json(t));
    if (readers.is_ok()) {
      out["readers"] = json::array();
      for (const auto& r : *readers) {
        json j{{"name", r.name}, {"card_present", r.card_present}, {"atr_hex", r.atr_hex}};
        if (const auto* t = token_in(r.name))
          j["token"] = {{"label", t->label}, {"serial", t->serial}};
        out["readers"].push_back(j);
      }
    } else {
      out["readers"] = nullptr;
      out["readers_error"] = readers.status().message();
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (readers.is_ok()) {
    std::printf("Readers (%zu):\n", readers->size());
    for (const auto& r : *readers) {
      std::printf("  %-32s %s", r.name.c_str(), r.card_present ? "card present" : "empty");
      if (r.card_present) std::printf("  ATR %s", r.atr_hex.c_str());
      if (const auto* t = token_in(r.name)) {
        std::printf("  token '%s' (serial %s)", t->label.c_str(), t->serial.c_str());
      }
      std::printf("\n");
    }
  } else {
    std::printf("Readers: not listed: %s\n", readers.status().message().c_str());
  }
  std::printf("Tokens of %s (%zu):\n", module.c_str(), tokens->size());
  for (const auto& t : *tokens) {
    if (!t.initialized) {
      std::printf("  (not initialized)  slot '%s'\n", t.slot_description.c_str());
      continue;
    }
    std::printf("  '%s'  serial %s  %s %s  slot '%s'\n", t.label.c_str(), t.serial.c_str(),
                t.manufacturer.c_str(), t.model.c_str(), t.slot_description.c_str());
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------

int card_show(int argc, char** argv) {
  po::options_description opts(
      "Usage: persoflow card show (--reader R | --token LABEL | --serial S | --uri URI)\n"
      "                           [--module PATH] [--pin-fd N | --ask-pin] [--tc-... ] [--json]\n\n"
      "Shows the keys and certificates on one token and marks the transport certificate (TC).\n"
      "Without a PIN only public objects are shown. The PIN is read from a file descriptor\n"
      "(--pin-fd 3 3<pin-file) or at a prompt (--ask-pin), never from the command line.\n\n"
      "A certificate is the TC when any TC rule matches. Without --tc-* options the rule is\n"
      "'label starts with Transport' (case-insensitive); with them, only the rules given.\n\n"
      "Options");
  TokenOptions token;
  std::vector<std::string> tc_issuers, tc_policies, tc_prefixes;
  opts.add_options()("help,h", "this help");
  token.add_to(opts);
  opts.add_options()("tc-issuer", po::value(&tc_issuers),
                     "TC rule: issuer DN, e.g. 'CN=Transport CA,O=Example' (repeatable)")(
      "tc-policy", po::value(&tc_policies), "TC rule: a certificate policy OID (repeatable)")(
      "tc-label-prefix", po::value(&tc_prefixes), "TC rule: a label prefix (repeatable)")(
      "json", "JSON output");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return fail(std::string(e.what()) + " (see 'persoflow card show --help')", 2);
  }
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  dev::TransportCertificateRule rule = dev::TransportCertificateRule::defaults();
  if (!tc_issuers.empty() || !tc_policies.empty() || !tc_prefixes.empty()) {
    rule = dev::TransportCertificateRule{tc_issuers, tc_policies, tc_prefixes};
  }
  int exit_code = 0;
  auto card = token.open(vm, false, exit_code);
  if (!card) return exit_code;
  auto contents = card->read_contents(rule);
  if (!contents.is_ok()) return fail(contents.status().message());
  const auto& c = *contents;
  if (vm.count("json")) {
    json out{{"token", token_json(c.token)},
             {"logged_in", c.logged_in},
             {"keys", json::array()},
             {"certificates", json::array()}};
    for (const auto& k : c.keys) out["keys"].push_back(key_json(k));
    for (const auto& cert : c.certificates) {
      out["certificates"].push_back({{"id", cert.id_hex},
                                     {"label", cert.label},
                                     {"subject", cert.subject},
                                     {"issuer", cert.issuer},
                                     {"serial_hex", cert.serial_hex},
                                     {"not_before", cert.not_before},
                                     {"not_after", cert.not_after},
                                     {"policies", cert.policy_oids},
                                     {"transport_certificate", cert.transport_certificate}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  const auto& t = c.token;
  std::printf("Token '%s'  serial %s  %s %s\n", t.label.c_str(), t.serial.c_str(),
              t.manufacturer.c_str(), t.model.c_str());
  std::printf("Slot  '%s'\n", t.slot_description.c_str());
  std::printf("User PIN: %s\n", t.pin.describe_user().c_str());
  if (!c.logged_in) {
    std::printf("Not logged in: private keys are not shown (--pin-fd N or --ask-pin).\n");
  }
  std::printf("\nKeys (%zu):\n", c.keys.size());
  for (const auto& k : c.keys) {
    std::string alg = dev::key_type_name(k.type);
    if (k.type == dev::KeyType::kEc) alg += " " + k.curve;
    if (k.bits) alg += " (" + std::to_string(k.bits) + " bits)";
    std::string parts = k.has_private && k.has_public ? "private+public"
                        : k.has_private               ? "private"
                                                      : "public";
    std::string usage;
    for (const auto& u : k.usage) usage += (usage.empty() ? "" : ",") + u;
    std::printf("  id %s  %s  label '%s'  %s  %s\n", k.id_hex.c_str(), alg.c_str(), k.label.c_str(),
                parts.c_str(), usage.c_str());
  }
  std::printf("\nCertificates (%zu):\n", c.certificates.size());
  for (const auto& cert : c.certificates) {
    std::printf("  id %s  label '%s'%s\n", cert.id_hex.c_str(), cert.label.c_str(),
                cert.transport_certificate ? "  [TRANSPORT CERTIFICATE]" : "");
    std::printf("    subject  %s\n    issuer   %s\n    serial   %s\n    valid    %s to %s\n",
                cert.subject.c_str(), cert.issuer.c_str(), cert.serial_hex.c_str(),
                cert.not_before.c_str(), cert.not_after.c_str());
  }
  return 0;
}

int card_keygen(int argc, char** argv) {
  po::options_description opts(
      "Usage: persoflow card keygen (--reader R | --token LABEL | --serial S | --uri URI)\n"
      "                             --alg ALG --idempotency-key K [--label L]\n"
      "                             (--pin-fd N | --ask-pin) [--module PATH] [--json]\n\n"
      "Generates a key pair on the token. ALG is an entry of the key-generation list (RSA:2048,\n"
      "EC:secp256r1, EC:brainpoolP384r1, ...). The key's CKA_ID derives from the idempotency\n"
      "key: run again with the same one and the existing key is returned, never a second key.\n\n"
      "Options");
  TokenOptions token;
  std::string alg_text, idempotency_key, key_label;
  opts.add_options()("help,h", "this help");
  token.add_to(opts);
  opts.add_options()("alg", po::value(&alg_text), "the algorithm, e.g. EC:secp256r1")(
      "idempotency-key", po::value(&idempotency_key), "what the key id derives from")(
      "label", po::value(&key_label), "CKA_LABEL of the key (default: the idempotency key)")(
      "json", "JSON output");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return fail(std::string(e.what()) + " (see 'persoflow card keygen --help')", 2);
  }
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  if (alg_text.empty()) return fail("--alg is required, e.g. --alg EC:secp256r1", 2);
  if (idempotency_key.empty()) return fail("--idempotency-key is required", 2);
  auto alg = dev::parse_key_algorithm(alg_text);
  if (!alg.is_ok()) return fail("--alg " + alg_text + ": " + alg.status().message(), 2);
  int exit_code = 0;
  auto card = token.open(vm, true, exit_code);
  if (!card) return exit_code;
  auto key =
      card->generate_key(*alg, idempotency_key, key_label.empty() ? idempotency_key : key_label);
  if (!key.is_ok()) return fail(key.status().message());
  if (vm.count("json")) {
    std::cout << key_json(*key).dump(2) << "\n";
  } else {
    std::printf("Key %s on token '%s': id %s, label '%s'\n", alg->to_string().c_str(),
                card->token().label.c_str(), key->id_hex.c_str(), key->label.c_str());
  }
  return 0;
}

int card_main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (cmd == "list") return card_list(argc - 1, argv + 1);
  if (cmd == "show") return card_show(argc - 1, argv + 1);
  if (cmd == "keygen") return card_keygen(argc - 1, argv + 1);
  return fail("unknown command '" + cmd + "' (see 'persoflow card --help')", 2);
}

}  // namespace
}  // namespace persoflow::apps

PF_REGISTER_COMMAND_GROUP(card, "card",
                          "smart cards and tokens: list readers and tokens, show a token",
                          persoflow::apps::card_main);
