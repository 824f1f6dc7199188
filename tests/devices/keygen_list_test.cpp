// The key-generation list parser: the CM's default list, continuation lines, and every malformed
// variant refused with its line and column.
#include "persoflow/devices/keygen_list.hpp"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

namespace persoflow::devices {
namespace {

constexpr const char* kDefaultLine =
    "client.ra-key-generation = RSA:2048*, RSA:3072, RSA:4096, RSA:8192, EC:brainpoolP256r1, "
    "EC:brainpoolP320r1, EC:brainpoolP384r1, EC:brainpoolP512r1, EC:secp256r1, EC:secp384r1, "
    "EC:secp521r1, DSA:1024";

TEST(KeygenList, DefaultListParsesToExactEntries) {
  auto list = parse_keygen_config(kDefaultLine);
  ASSERT_TRUE(list.is_ok()) << list.status().message();
  std::vector<std::string> got;
  for (const auto& e : list->entries) got.push_back(e.algorithm.to_string());
  const std::vector<std::string> want = {
      "RSA:2048",           "RSA:3072",           "RSA:4096",           "RSA:8192",
      "EC:brainpoolP256r1", "EC:brainpoolP320r1", "EC:brainpoolP384r1", "EC:brainpoolP512r1",
      "EC:secp256r1",       "EC:secp384r1",       "EC:secp521r1",       "DSA:1024"};
  EXPECT_EQ(got, want);
  EXPECT_TRUE(list->explicit_default);
  EXPECT_EQ(list->default_index, 0u);
  EXPECT_EQ(list->default_algorithm(), (KeyAlgorithm{KeyFamily::kRsa, 2048, ""}));
  EXPECT_EQ(list->entries[4].algorithm.family, KeyFamily::kEc);
  EXPECT_EQ(list->entries[4].algorithm.curve, "brainpoolP256r1");
  EXPECT_EQ(list->entries[5].algorithm.bits, 320);
  EXPECT_EQ(list->entries[11].algorithm.family, KeyFamily::kDsa);
  EXPECT_EQ(list->entries[11].algorithm.bits, 1024);
  EXPECT_EQ(list->entries[1].line, 1);
  EXPECT_EQ(list->entries[1].column, 39);
  EXPECT_EQ(list->to_string(), std::string(kDefaultLine).substr(27));
  EXPECT_TRUE(list->contains({KeyFamily::kEc, 384, "secp384r1"}));
  EXPECT_FALSE(list->contains({KeyFamily::kRsa, 1024, ""}));
}

TEST(KeygenList, ContinuationLinesCommentsAndOtherKeys) {
  const char* text =
      "# the RA's configuration\n"
      "client.ra-name = Station 1\n"
      "! another comment style \\\n"
      "client.ra-key-generation = RSA:2048, \\\n"
      "    EC:secp256r1*,\\\n"
      "\tEC:brainpoolP512r1\n"
      "client.other = x\n";
  auto list = parse_keygen_config(text);
  ASSERT_TRUE(list.is_ok()) << list.status().message();
  ASSERT_EQ(list->entries.size(), 3u);
  EXPECT_EQ(list->default_index, 1u);
  EXPECT_EQ(list->entries[1].line, 5);
  EXPECT_EQ(list->entries[1].column, 5);
  EXPECT_EQ(list->entries[2].line, 6);
  EXPECT_EQ(list->entries[2].column, 2);
}

TEST(KeygenList, NoMarkMeansFirstIsDefault) {
  auto list = parse_keygen_value("EC:secp384r1, RSA:3072");
  ASSERT_TRUE(list.is_ok()) << list.status().message();
  EXPECT_FALSE(list->explicit_default);
  EXPECT_EQ(list->default_algorithm().curve, "secp384r1");
  EXPECT_EQ(list->to_string(), "EC:secp384r1, RSA:3072");
}

TEST(KeygenList, ValueAloneAcrossLines) {
  auto list = parse_keygen_value("RSA:2048, \\\r\n  RSA:4096*\r\n");
  ASSERT_TRUE(list.is_ok()) << list.status().message();
  ASSERT_EQ(list->entries.size(), 2u);
  EXPECT_EQ(list->default_index, 1u);
}

TEST(KeygenList, SingleAlgorithm) {
  auto a = parse_key_algorithm("EC:brainpoolP384r1");
  ASSERT_TRUE(a.is_ok()) << a.status().message();
  EXPECT_EQ(a->bits, 384);
  EXPECT_FALSE(parse_key_algorithm("RSA:2048, RSA:4096").is_ok());
  EXPECT_FALSE(parse_key_algorithm("").is_ok());
}

struct Bad {
  const char* text;
  const char* message;  // the exact message, position included
};

// Readable names in test output and stable ctest names (not the struct's bytes).
void PrintTo(const Bad& b, std::ostream* os) { *os << '"' << b.text << '"'; }

class KeygenListBad : public ::testing::TestWithParam<Bad> {};

TEST_P(KeygenListBad, RefusedWithPosition) {
  auto list = parse_keygen_config(GetParam().text);
  ASSERT_FALSE(list.is_ok()) << GetParam().text;
  EXPECT_EQ(list.status().code(), Errc::kInvalidArgument);
  EXPECT_EQ(list.status().message(), GetParam().message) << GetParam().text;
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, KeygenListBad,
    ::testing::Values(
        Bad{"client.ra-key-generation = RSA:2048,\n    EC:secp384r1",
            "line 1, column 36: trailing comma: an entry is missing after it (to go on in the "
            "next line, end this one with '\\')"},
        Bad{"client.ra-key-generation = RSA:2048, \\\n EC:secp999r1",
            "line 2, column 5: unknown EC curve 'secp999r1' (known: secp256r1, secp384r1, "
            "secp521r1, brainpoolP256r1, brainpoolP320r1, brainpoolP384r1, brainpoolP512r1)"},
        Bad{"client.ra-key-generation = RSA:2048, , RSA:3072",
            "line 1, column 38: empty entry: two commas with nothing between"},
        Bad{"client.ra-key-generation = , RSA:3072",
            "line 1, column 28: empty entry: two commas with nothing between"},
        Bad{"client.ra-key-generation = RSA2048",
            "line 1, column 35: missing ':' after 'RSA2048' (expected e.g. RSA:2048)"},
        Bad{"client.ra-key-generation = RSA:abc",
            "line 1, column 32: bad RSA size 'abc': expected a number of bits"},
        Bad{"client.ra-key-generation = RSA:2000",
            "line 1, column 32: bad RSA size '2000': expected 1024 to 16384 bits in steps of 1024"},
        Bad{"client.ra-key-generation = RSA:0",
            "line 1, column 32: bad RSA size '0': expected 1024 to 16384 bits in steps of 1024"},
        Bad{"client.ra-key-generation = RSA:02048",
            "line 1, column 32: bad RSA size '02048': expected 1024 to 16384 bits in steps of "
            "1024"},
        Bad{"client.ra-key-generation = RSA:99999999",
            "line 1, column 32: bad RSA size '99999999': expected a number of bits"},
        Bad{"client.ra-key-generation = DSA:512",
            "line 1, column 32: bad DSA size '512': expected 1024 to 3072 bits in steps of 1024"},
        Bad{"client.ra-key-generation = RSA:",
            "line 1, column 32: missing size or curve after 'RSA:'"},
        Bad{"client.ra-key-generation = ED:25519",
            "line 1, column 28: unknown algorithm 'ED' (expected RSA, EC or DSA)"},
        Bad{"client.ra-key-generation = rsa:2048",
            "line 1, column 28: unknown algorithm 'rsa' (expected RSA, EC or DSA)"},
        Bad{"client.ra-key-generation = RSA:2048*, EC:secp256r1*",
            "line 1, column 51: a second default '*': RSA:2048 is already the default"},
        Bad{"client.ra-key-generation = RSA:2048, RSA:3072,",
            "line 1, column 46: trailing comma: an entry is missing after it (to go on in the next "
            "line, end this one with '\\')"},
        Bad{"client.ra-key-generation = RSA:2048, RSA:3072, \n",
            "line 1, column 46: trailing comma: an entry is missing after it (to go on in the next "
            "line, end this one with '\\')"},
        Bad{"client.ra-key-generation = RSA:2048, \\",
            "line 1, column 38: a backslash continues the line, but the text ends here"},
        Bad{"client.ra-key-generation = RSA:2048, \\\n",
            "line 1, column 38: a backslash continues the line, but the text ends here"},
        Bad{"client.ra-key-generation = RSA:2048 RSA:3072",
            "line 1, column 37: unexpected 'R' after 'RSA:2048': entries are separated by ','"},
        Bad{"client.ra-key-generation = RSA:2048; RSA:3072",
            "line 1, column 36: unexpected ';' after 'RSA:2048': entries are separated by ','"},
        Bad{"client.ra-key-generation = RSA:2048**",
            "line 1, column 37: unexpected '*' after 'RSA:2048': entries are separated by ','"},
        Bad{"client.ra-key-generation = @#!",
            "line 1, column 28: unexpected '@': expected an entry such as RSA:2048 or "
            "EC:secp256r1"},
        Bad{"client.ra-key-generation = RSA:2048, RSA:2048",
            "line 1, column 38: RSA:2048 is listed twice (first at line 1, column 28)"},
        Bad{"client.ra-key-generation =", "line 1, column 27: the key-generation list is empty"},
        Bad{"client.ra-key-generation =    \n",
            "line 1, column 31: the key-generation list is empty"},
        Bad{"client.ra-key-generation = RSA:2048\nclient.ra-key-generation = RSA:4096",
            "line 2, column 1: client.ra-key-generation is defined twice (first at line 1)"},
        Bad{"# only a comment\nclient.other = 1\n",
            "no 'client.ra-key-generation = ...' line in the text"},
        Bad{"client.other = 1\njust some garbage\n",
            "line 2, column 1: expected 'key = value' (or a '#' comment)"},
        Bad{"client.ra-key-generation = EC:secp256r1 \\\n  \\\n",
            "line 2, column 3: a backslash continues the line, but the text ends here"},
        Bad{"client.ra-key-generation = EC:",
            "line 1, column 31: missing size or curve after 'EC:'"},
        Bad{"client.ra-key-generation = EC:brainpoolP256r1:x",
            "line 1, column 46: unexpected ':' after 'EC:brainpoolP256r1': entries are separated "
            "by ','"}),
    [](const ::testing::TestParamInfo<Bad>& info) { return "Case" + std::to_string(info.index); });

TEST(KeygenList, ValueOnALineOfItsOwnNeedsBackslash) {
  auto list = parse_keygen_value("RSA:2048,\n  RSA:4096");
  ASSERT_FALSE(list.is_ok());
  EXPECT_EQ(list.status().message(),
            "line 2, column 3: the list goes on in a new line: end the previous line with '\\' to "
            "continue it");
  auto empty = parse_keygen_value("  \n");
  ASSERT_FALSE(empty.is_ok());
  EXPECT_EQ(empty.status().message(), "line 1, column 1: the key-generation list is empty");
}

}  // namespace
}  // namespace persoflow::devices
