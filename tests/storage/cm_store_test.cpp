// The SQLite CmStore on real files: certificates with unique serials and idempotency keys, status
// transitions, CRL numbers, archived keys, officers, CMP transactions, the hash-chained audit log
// (verify finds an altered and a removed record), atomic blocks, reopening, refusing foreign files.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>
#include <thread>

#include "persoflow/storage/cm_store.hpp"
#include "test_support.hpp"

namespace persoflow::storage {
namespace {

using persoflow::testing::TempDir;

std::unique_ptr<CmStore> open_store(const std::string& path) {
  auto s = open_sqlite_cm_store(path);
  EXPECT_TRUE(s.is_ok()) << s.status().to_string();
  return s.is_ok() ? std::move(s).value() : nullptr;
}

CertRecord cert(const std::string& serial, const std::string& subject, const std::string& key = {}) {
  CertRecord r;
  r.serial_hex = serial;
  r.subject = subject;
  r.issuer = "CN=Test CA";
  r.not_before = 1000;
  r.not_after = 2000;
  r.procedure = "softtoken";
  r.der = std::string("\x30\x03\x02\x01\x00", 5);
  r.idempotency_key = key;
  r.requester = "alice";
  return r;
}

void exec(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

TEST(CmStore, CertificatesAreUniqueAndSearchable) {
  TempDir dir;
  auto store = open_store(dir.file("cm.db"));
  auto id1 = store->insert_certificate(cert("0A01", "CN=Alice,O=Example", "tx1/0"));
  ASSERT_TRUE(id1.is_ok()) << id1.status().to_string();
  auto id2 = store->insert_certificate(cert("0A02", "CN=Bob,O=Example"));
  ASSERT_TRUE(id2.is_ok());
  EXPECT_EQ(*id2, *id1 + 1) << "decimal certificate IDs are assigned in order";
  EXPECT_EQ(store->insert_certificate(cert("0A01", "CN=Other")).status().code(), Errc::kAlreadyExists);
  EXPECT_EQ(store->insert_certificate(cert("0A03", "CN=Other", "tx1/0")).status().code(), Errc::kAlreadyExists);
  // Two certificates without an idempotency key are fine (NULL is not a duplicate).
  ASSERT_TRUE(store->insert_certificate(cert("0A04", "CN=Carol")).is_ok());

  auto by_serial = store->certificate_by_serial("0A01");
  ASSERT_TRUE(by_serial.is_ok() && by_serial->has_value());
  EXPECT_EQ((*by_serial)->subject, "CN=Alice,O=Example");
  EXPECT_EQ((*by_serial)->der, std::string("\x30\x03\x02\x01\x00", 5));
  EXPECT_EQ((*store->certificate_by_id(*id2))->serial_hex, "0A02");
  EXPECT_EQ((*store->certificate_by_idempotency_key("tx1/0"))->serial_hex, "0A01");
  EXPECT_FALSE(store->certificate_by_serial("FFFF")->has_value());

  CertQuery q;
  q.subject = "O=Example";
  q.subject_substring = true;
  EXPECT_EQ(store->find_certificates(q)->size(), 2u);
  q.subject = "CN=Bob,O=Example";
  q.subject_substring = false;
  EXPECT_EQ(store->find_certificates(q)->size(), 1u);
  CertQuery all;
  EXPECT_EQ(store->find_certificates(all)->size(), 3u);
  all.limit = 2;
  EXPECT_EQ(store->find_certificates(all)->size(), 2u);
}

TEST(CmStore, StatusTransitionsAndRevocation) {
  TempDir dir;
  auto store = open_store(dir.file("cm.db"));
  ASSERT_TRUE(store->insert_certificate(cert("01", "CN=A")).is_ok());
  ASSERT_TRUE(store->insert_certificate(cert("02", "CN=B")).is_ok());
  EXPECT_EQ((*store->certificate_by_serial("01"))->status, CertStatus::kPending);
  ASSERT_TRUE(store->set_certificate_status("01", CertStatus::kValid).is_ok());
  EXPECT_EQ(store->set_certificate_status("01", CertStatus::kRejected).code(), Errc::kRejected);
  ASSERT_TRUE(store->set_certificate_status("02", CertStatus::kRejected).is_ok());
  EXPECT_EQ(store->revoke_certificate("02", 1, 5000).code(), Errc::kRejected);
  ASSERT_TRUE(store->revoke_certificate("01", 4, 5000).is_ok());
  EXPECT_EQ(store->revoke_certificate("01", 4, 5000).code(), Errc::kAlreadyExists);
  EXPECT_EQ(store->revoke_certificate("99", 4, 5000).code(), Errc::kNotFound);
  auto r = *store->certificate_by_serial("01");
  EXPECT_EQ(r->status, CertStatus::kRevoked);
  EXPECT_EQ(r->revocation_reason, 4);
  EXPECT_EQ(r->revoked_at, 5000);
  EXPECT_EQ(*store->next_crl_number(), 1);
  EXPECT_EQ(*store->next_crl_number(), 2);
}

TEST(CmStore, ArchivedKeysOfficersTransactions) {
  TempDir dir;
  auto store = open_store(dir.file("cm.db"));
  auto id = *store->insert_certificate(cert("01", "CN=A"));
  ArchivedKeyRecord k;
  k.cert_id = id;
  k.encrypted = "ciphertext";
  k.idempotency_key = "tx9";
  auto key_id = store->insert_archived_key(k);
  ASSERT_TRUE(key_id.is_ok());
  EXPECT_EQ(store->insert_archived_key(k).status().code(), Errc::kAlreadyExists);
  k.idempotency_key.clear();
  k.cert_id = 424242;
  EXPECT_EQ(store->insert_archived_key(k).status().code(), Errc::kNotFound) << "foreign key to certificates";
  auto keys = store->archived_keys_for(id);
  ASSERT_EQ(keys->size(), 1u);
  EXPECT_EQ(keys->front().encrypted, "ciphertext");
  EXPECT_EQ((*store->archived_key_by_idempotency_key("tx9"))->key_id, *key_id);

  OfficerRecord o{"alice", "01", {"issue", "recover"}, false, 0};
  ASSERT_TRUE(store->insert_officer(o).is_ok());
  EXPECT_EQ(store->insert_officer(o).code(), Errc::kAlreadyExists);
  EXPECT_EQ((*store->officer_by_serial("01"))->roles, (std::vector<std::string>{"issue", "recover"}));
  ASSERT_TRUE(store->revoke_officer("alice").is_ok());
  EXPECT_TRUE((*store->officer("alice"))->revoked);
  EXPECT_EQ(store->revoke_officer("nobody").code(), Errc::kNotFound);
  EXPECT_EQ(store->officers()->size(), 1u);

  TransactionRecord t{"00ff", "digest-1", "open", "", 0, 0};
  auto first = store->begin_transaction(t);
  ASSERT_TRUE(first.is_ok());
  EXPECT_FALSE(first->has_value());
  ASSERT_TRUE(store->update_transaction("00ff", "answered", "response-der").is_ok());
  t.request_digest = "digest-2";
  auto second = store->begin_transaction(t);
  ASSERT_TRUE(second.is_ok() && second->has_value());
  EXPECT_EQ((*second)->request_digest, "digest-1") << "the first request's record is kept";
  EXPECT_EQ((*second)->response_der, "response-der");
  EXPECT_EQ((*second)->state, "answered");
  EXPECT_EQ(store->update_transaction("nope", "x", "").code(), Errc::kNotFound);
}

TEST(CmStore, AuditChainDetectsAlteredAndRemovedRecords) {
  TempDir dir;
  std::string path = dir.file("cm.db");
  {
    auto store = open_store(path);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(store->append_audit("alice", "issue", "n" + std::to_string(i)).is_ok());
    auto report = store->verify_audit();
    ASSERT_TRUE(report.is_ok());
    EXPECT_TRUE(report->intact);
    EXPECT_EQ(report->records_checked, 5u);
    auto recs = *store->audit_records(2, 2);
    ASSERT_EQ(recs.size(), 2u);
    EXPECT_EQ(recs[0].seq, 2u);
    EXPECT_EQ(recs[0].prev_hash, (*store->audit_records(1, 1))[0].hash);
  }
  exec(path, "UPDATE audit_log SET detail='n2-forged' WHERE seq=3");
  {
    auto store = open_store(path);
    auto report = *store->verify_audit();
    EXPECT_FALSE(report.intact);
    EXPECT_EQ(report.first_bad_seq, 3u);
    EXPECT_NE(report.reason.find("altered"), std::string::npos) << report.reason;
  }
  exec(path, "UPDATE audit_log SET detail='n2' WHERE seq=3");
  exec(path, "DELETE FROM audit_log WHERE seq=4");
  {
    auto store = open_store(path);
    auto report = *store->verify_audit();
    EXPECT_FALSE(report.intact);
    EXPECT_EQ(report.first_bad_seq, 5u);
    EXPECT_NE(report.reason.find("sequence gap"), std::string::npos) << report.reason;
  }
}

TEST(CmStore, AtomicallyCommitsAllOrNothing) {
  TempDir dir;
  auto store = open_store(dir.file("cm.db"));
  Status failed = store->atomically([&]() -> Status {
    PF_RETURN_IF_ERROR(store->insert_certificate(cert("01", "CN=A")).status());
    PF_RETURN_IF_ERROR(store->append_audit("x", "issue", "01").status());
    return make_status(Errc::kInternal, "something later failed");
  });
  EXPECT_FALSE(failed.is_ok());
  EXPECT_FALSE(store->certificate_by_serial("01")->has_value());
  EXPECT_TRUE(store->audit_records(0, 0)->empty());
  ASSERT_TRUE(store->atomically([&]() -> Status {
                     PF_RETURN_IF_ERROR(store->insert_certificate(cert("01", "CN=A")).status());
                     return store->append_audit("x", "issue", "01").status();
                   })
                  .is_ok());
  EXPECT_TRUE(store->certificate_by_serial("01")->has_value());
  EXPECT_EQ(store->audit_records(0, 0)->size(), 1u);
}

TEST(CmStore, ManyThreadsShareOneStore) {
  TempDir dir;
  auto store = open_store(dir.file("cm.db"));
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        char serial[16];
        std::snprintf(serial, sizeof serial, "%02X%02X", t + 1, i + 1);
        EXPECT_TRUE(store->insert_certificate(cert(serial, "CN=T")).is_ok());
        EXPECT_TRUE(store->append_audit("t", "issue", serial).is_ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  CertQuery q;
  EXPECT_EQ(store->find_certificates(q)->size(), 200u);
  auto report = *store->verify_audit();
  EXPECT_TRUE(report.intact) << report.reason;
  EXPECT_EQ(report.records_checked, 200u);
}

// A version-3 database (before the index of certificates by transaction) is migrated forward on
// open, its rows kept; certificates are then found by the transaction they were issued in.
TEST(CmStore, MigratesVersionThreeAndFindsCertificatesByTransaction) {
  TempDir dir;
  const std::string path = dir.file("cm.db");
  {
    auto store = open_store(path);
    CertRecord a = cert("0B01", "CN=Ann");
    a.transaction_id = "AABB";
    ASSERT_TRUE(store->insert_certificate(a).is_ok());
    ASSERT_TRUE(store->insert_certificate(cert("0B02", "CN=Ben")).is_ok());
  }
  exec(path, "DROP INDEX certificates_transaction; ALTER TABLE pin_letters DROP COLUMN has_puk; "
             "UPDATE meta SET value='3' WHERE key='schema_version'");
  auto store = open_store(path);
  ASSERT_TRUE(store);
  CertQuery q;
  q.transaction_id = "AABB";
  auto found = store->find_certificates(q);
  ASSERT_TRUE(found.is_ok()) << found.status().to_string();
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ(found->front().serial_hex, "0B01");
  store.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db,
                               "SELECT (SELECT value FROM meta WHERE key='schema_version'), "
                               "(SELECT count(*) FROM sqlite_master WHERE "
                               "name='certificates_transaction')",
                               -1, &st, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "5");
  EXPECT_EQ(sqlite3_column_int(st, 1), 1);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

// A version-4 database (PIN letters without has_puk) is migrated forward on open: its letters
// are PIN letters; a PIN/PUK letter is stored and read back as one.
TEST(CmStore, MigratesVersionFourPinLettersAndKeepsPinPukLetters) {
  TempDir dir;
  const std::string path = dir.file("cm.db");
  PinLetterRecord old_letter;
  old_letter.letter_id = "PL-OLD";
  old_letter.kind = "preprinted";
  old_letter.state = "queued";
  old_letter.envelope = "sealed";
  {
    auto store = open_store(path);
    ASSERT_TRUE(store->insert_pin_letter(old_letter).is_ok());
  }
  exec(path, "ALTER TABLE pin_letters DROP COLUMN has_puk; "
             "UPDATE meta SET value='4' WHERE key='schema_version'");
  auto store = open_store(path);
  ASSERT_TRUE(store);
  auto read = store->pin_letter("PL-OLD");
  ASSERT_TRUE(read.is_ok()) << read.status().to_string();
  ASSERT_TRUE(read->has_value());
  EXPECT_FALSE((*read)->has_puk);
  EXPECT_EQ((*read)->envelope, "sealed");
  PinLetterRecord both = old_letter;
  both.letter_id = "PL-BOTH";
  both.has_puk = true;
  ASSERT_TRUE(store->insert_pin_letter(both).is_ok());
  auto read_both = store->pin_letter("PL-BOTH");
  ASSERT_TRUE(read_both.is_ok() && read_both->has_value());
  EXPECT_TRUE((*read_both)->has_puk);
}

TEST(CmStore, ReopensAndRefusesForeignOrNewerFiles) {
  TempDir dir;
  std::string path = dir.file("cm.db");
  {
    auto store = open_store(path);
    ASSERT_TRUE(store->insert_certificate(cert("01", "CN=A")).is_ok());
  }
  {
    auto store = open_store(path);
    EXPECT_TRUE(store->certificate_by_serial("01")->has_value()) << "durable across reopen";
  }
  std::ofstream(dir.file("junk.db")) << "this is not a database at all, just text that is long enough";
  auto junk = open_sqlite_cm_store(dir.file("junk.db"));
  EXPECT_FALSE(junk.is_ok());
  EXPECT_NE(junk.status().message().find("junk.db"), std::string::npos) << junk.status().message();

  exec(dir.file("other.db"), "CREATE TABLE t(x)");
  auto other = open_sqlite_cm_store(dir.file("other.db"));
  EXPECT_FALSE(other.is_ok());
  EXPECT_NE(other.status().message().find("not a persoflow CM database"), std::string::npos);

  exec(path, "UPDATE meta SET value='99' WHERE key='schema_version'");
  auto newer = open_sqlite_cm_store(path);
  EXPECT_FALSE(newer.is_ok());
  EXPECT_NE(newer.status().message().find("newer"), std::string::npos) << newer.status().message();

  auto missing = open_sqlite_cm_store(dir.file("no/such/dir/cm.db"));
  EXPECT_FALSE(missing.is_ok());
  CmStoreOptions no_create;
  no_create.create_if_missing = false;
  EXPECT_FALSE(open_sqlite_cm_store(dir.file("absent.db"), no_create).is_ok());
}

}  // namespace
}  // namespace persoflow::storage
