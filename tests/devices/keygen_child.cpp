// The process the key-generation kill test (card_test.cpp) kills with SIGKILL: logs in to the
// SoftHSM2 token labelled LABEL and generates EC P-256 pairs under the idempotency keys
// PREFIX/0, PREFIX/1, ..., printing each number before its generation, until it is killed.
#include <cstdio>
#include <string>

#include "persoflow/devices/card.hpp"

int main(int argc, char** argv) {
  namespace dv = persoflow::devices;
  if (argc != 5) {
    std::fprintf(stderr, "usage: keygen_child MODULE LABEL PIN PREFIX\n");
    return 2;
  }
  dv::TokenSelector selector;
  selector.label = argv[2];
  auto card = dv::open_card(argv[1], selector);
  if (!card.is_ok()) {
    std::fprintf(stderr, "keygen_child: %s\n", card.status().message().c_str());
    return 1;
  }
  if (auto s = (*card)->login(dv::UserType::kUser, argv[3]); !s.is_ok()) {
    std::fprintf(stderr, "keygen_child: %s\n", s.message().c_str());
    return 1;
  }
  const auto algorithm = dv::parse_key_algorithm("EC:secp256r1").value();
  for (long i = 0;; ++i) {
    std::printf("%ld\n", i);
    std::fflush(stdout);
    auto key = (*card)->generate_key(algorithm, std::string(argv[4]) + "/" + std::to_string(i),
                                     "kill test");
    if (!key.is_ok()) {
      std::fprintf(stderr, "keygen_child: %s\n", key.status().message().c_str());
      return 1;
    }
  }
}
