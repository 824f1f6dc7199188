// CM schema migration 3: requests waiting for e-mail verification in the SQLite CmStore — insert
// once per transaction, read back, listed while open (not confirmed, not expired), updated, kept
// across a reopen.
#include <gtest/gtest.h>

#include "persoflow/storage/cm_store.hpp"
#include "test_support.hpp"

namespace persoflow::storage {
namespace {

using persoflow::testing::TempDir;

EmailVerificationRecord waiting(const std::string& tid, std::int64_t expires_at) {
  EmailVerificationRecord r;
  r.transaction_id = tid;
  r.email = "carol@example.org";
  r.code_digest = "digest-" + tid;
  r.procedure = "reissue-verified";
  r.requester = "alice";
  r.idempotency_key = tid + "/0";
  r.subject_der = std::string("\x30\x00", 2);
  r.public_key_der = std::string("\x30\x01\x00", 3);
  r.created_at = 100;
  r.expires_at = expires_at;
  return r;
}

TEST(EmailVerificationStore, InsertListConfirmAndReopen) {
  TempDir dir;
  const std::string path = dir.file("cm.db");
  {
    auto store = open_sqlite_cm_store(path);
    ASSERT_TRUE(store.is_ok()) << store.status().message();
    ASSERT_TRUE((*store)->insert_email_verification(waiting("AA01", 1000)).is_ok());
    ASSERT_TRUE((*store)->insert_email_verification(waiting("AA02", 500)).is_ok());
    Status again = (*store)->insert_email_verification(waiting("AA01", 1000));
    EXPECT_EQ(again.code(), make_error_code(Errc::kAlreadyExists)) << again.message();

    auto open = (*store)->open_email_verifications(600);
    ASSERT_TRUE(open.is_ok());
    ASSERT_EQ(open->size(), 1u);  // AA02 expired at 500
    EXPECT_EQ((*open)[0].transaction_id, "AA01");
    EXPECT_EQ((*open)[0].public_key_der, std::string("\x30\x01\x00", 3));

    auto record = (*open)[0];
    record.confirmed_at = 700;
    record.issued_serial = "0D0E";
    record.code_digest = "new-digest";
    ASSERT_TRUE((*store)->update_email_verification(record).is_ok());
    EXPECT_TRUE((*store)->open_email_verifications(600)->empty());
    auto missing = waiting("FFFF", 1);
    EXPECT_EQ((*store)->update_email_verification(missing).code(), make_error_code(Errc::kNotFound));
  }
  auto reopened = open_sqlite_cm_store(path);
  ASSERT_TRUE(reopened.is_ok());
  auto back = (*reopened)->email_verification("AA01");
  ASSERT_TRUE(back.is_ok());
  ASSERT_TRUE(back->has_value());
  EXPECT_EQ((*back)->confirmed_at, 700);
  EXPECT_EQ((*back)->issued_serial, "0D0E");
  EXPECT_EQ((*back)->code_digest, "new-digest");
  EXPECT_FALSE((*reopened)->email_verification("BB00")->has_value());
}

}  // namespace
}  // namespace persoflow::storage
