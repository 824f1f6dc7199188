// RFC 7512 PKCS#11 URI parsing: attributes, percent-decoding, refusals.
#include "persoflow/devices/pkcs11_uri.hpp"

#include <gtest/gtest.h>

namespace persoflow::devices {
namespace {

TEST(Pkcs11Uri, ParsesTokenAndObjectAttributes) {
  auto uri = parse_pkcs11_uri(
      "pkcs11:token=Officer%20Card;serial=0123abcd;manufacturer=SoftHSM%20project;model=SoftHSM%"
      "20v2;"
      "object=sig%2Fkey;id=%01%ab%FF;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so");
  ASSERT_TRUE(uri.is_ok()) << uri.status().message();
  EXPECT_EQ(*uri->token, "Officer Card");
  EXPECT_EQ(*uri->serial, "0123abcd");
  EXPECT_EQ(*uri->manufacturer, "SoftHSM project");
  EXPECT_EQ(*uri->model, "SoftHSM v2");
  EXPECT_EQ(*uri->object, "sig/key");
  EXPECT_EQ(*uri->id, (std::vector<unsigned char>{0x01, 0xab, 0xff}));
  EXPECT_EQ(*uri->type, "private");
  EXPECT_EQ(*uri->module_path, "/usr/lib/softhsm/libsofthsm2.so");
  EXPECT_TRUE(uri->names_token());
  EXPECT_TRUE(uri->matches_token("Officer Card", "0123abcd", "SoftHSM project", "SoftHSM v2", "x"));
  EXPECT_FALSE(
      uri->matches_token("Officer Card", "0123abce", "SoftHSM project", "SoftHSM v2", "x"));
  EXPECT_EQ(percent_encode_bytes(*uri->id), "%01%AB%FF");
}

TEST(Pkcs11Uri, EmptyUriMatchesEveryToken) {
  auto uri = parse_pkcs11_uri("pkcs11:");
  ASSERT_TRUE(uri.is_ok());
  EXPECT_FALSE(uri->names_token());
  EXPECT_TRUE(uri->matches_token("a", "b", "c", "d", "e"));
  auto reader = parse_pkcs11_uri("pkcs11:slot-description=Virtual%20PCD%2000%2000");
  ASSERT_TRUE(reader.is_ok());
  EXPECT_EQ(*reader->slot_description, "Virtual PCD 00 00");
}

TEST(Pkcs11Uri, RefusesWithAReason) {
  struct Bad {
    const char* uri;
    const char* message;
  };
  for (const Bad& b : {
           Bad{"token=x", "not a PKCS#11 URI (it must start with 'pkcs11:'): 'token=x'"},
           Bad{"pkcs11:token=a%2",
               "PKCS#11 URI, character 15: '%' must be followed by two hexadecimal digits"},
           Bad{"pkcs11:token=a%zz",
               "PKCS#11 URI, character 15: '%' must be followed by two hexadecimal digits"},
           Bad{"pkcs11:slot-id=3",
               "PKCS#11 URI, character 8: slot-id is not accepted: slot numbers change between "
               "runs; name the token by token=, serial= or slot-description="},
           Bad{"pkcs11:token=a?pin-value=1234",
               "PKCS#11 URI, character 16: pin-value is not accepted: give the PIN with --pin-fd "
               "or at the prompt"},
           Bad{"pkcs11:tokn=a", "PKCS#11 URI, character 8: unknown path attribute 'tokn'"},
           Bad{"pkcs11:token=a;token=b",
               "PKCS#11 URI, character 16: attribute 'token' given twice"},
           Bad{"pkcs11:type=secret",
               "PKCS#11 URI, character 8: type 'secret' is not one of cert, private, public, "
               "secret-key, data"},
           Bad{"pkcs11:token", "PKCS#11 URI, character 8: attribute 'token' has no '=value'"},
       }) {
    auto uri = parse_pkcs11_uri(b.uri);
    ASSERT_FALSE(uri.is_ok()) << b.uri;
    EXPECT_EQ(uri.status().code(), Errc::kInvalidArgument);
    EXPECT_EQ(uri.status().message(), b.message) << b.uri;
  }
}

}  // namespace
}  // namespace persoflow::devices
