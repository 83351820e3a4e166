// PostgreSQL-specific tests of the PostgreSQL DatasetStore: the schema
// version table, damaged records, unreachable servers, reconnection after
// the server drops the connections, change notifications (Watch) and DSN
// redaction. The DatasetStore contract itself is checked by
// dataset_store_conformance_test.cc (store.postgres.*). Each test gets a
// fresh database on the server of the ctest fixture `postgres`.

#include "server/store/postgres_dataset_store.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cbloss/v1/cbloss.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/dataset_store.h"
#include "tests/store/store_backend.h"

namespace cbloss {
namespace {

using ::testing::HasSubstr;

v1::Dataset MakeDataset(const std::string& name, std::vector<int64_t> counts) {
  v1::Dataset dataset;
  dataset.set_name(name);
  for (int64_t c : counts) dataset.add_class_counts(c);
  return dataset;
}

void ExpectError(const absl::Status& status, absl::StatusCode code,
                 const std::string& substring) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
}

// Records what a Watch delivers.
class RecordingListener : public DatasetStore::ChangeListener {
 public:
  absl::Status OnDatasetChanged(absl::string_view name) override {
    std::lock_guard<std::mutex> lock(mu_);
    changed_.emplace_back(name);
    cv_.notify_all();
    return absl::OkStatus();
  }
  absl::Status OnRunChanged(absl::string_view name) override {
    std::lock_guard<std::mutex> lock(mu_);
    runs_changed_.emplace_back(name);
    cv_.notify_all();
    return absl::OkStatus();
  }
  absl::Status OnResync() override {
    std::lock_guard<std::mutex> lock(mu_);
    ++resyncs_;
    cv_.notify_all();
    return absl::OkStatus();
  }
  void OnWatchLost(const absl::Status& /*why*/) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++lost_;
    cv_.notify_all();
  }
  // Waits (up to 10 s) until `pred` holds under the lock.
  template <typename Pred>
  bool WaitFor(Pred pred) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return pred(); });
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> changed_;       // guarded by mu_
  std::vector<std::string> runs_changed_;  // guarded by mu_
  int resyncs_ = 0;                        // guarded by mu_
  int lost_ = 0;                           // guarded by mu_
};

class PostgresDatasetStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = MakeStoreBackend();
    absl::Status s = backend_->SetUp();
    ASSERT_TRUE(s.ok()) << s;
  }
  void TearDown() override {
    if (backend_ != nullptr) backend_->TearDown();
  }
  std::unique_ptr<DatasetStore> MustOpen() {
    absl::StatusOr<std::unique_ptr<DatasetStore>> store = backend_->Open();
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  // Terminates every connection to the test's database but the caller's.
  void TerminateConnections() {
    absl::Status s =
        PgExec(backend_->location(),
               "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
               "datname = current_database() AND pid <> pg_backend_pid()");
    ASSERT_TRUE(s.ok()) << s;
    // pg_terminate_backend only signals: wait until they are gone.
    s = PgExec(backend_->location(),
               "DO $$ BEGIN FOR i IN 1..1000 LOOP "
               "EXIT WHEN (SELECT count(*) FROM pg_stat_activity WHERE "
               "datname = current_database() AND pid <> pg_backend_pid()) = "
               "0; PERFORM pg_sleep(0.01); END LOOP; END $$");
    ASSERT_TRUE(s.ok()) << s;
  }
  std::unique_ptr<StoreBackend> backend_;
};

TEST_F(PostgresDatasetStoreTest, OpenWritesSchemaVersionTable) {
  std::unique_ptr<DatasetStore> store = MustOpen();
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->IsShared());
  absl::Status s = PgExec(
      backend_->location(),
      "DO $$ BEGIN IF (SELECT version FROM cbloss_schema_version) <> 2 OR "
      "(SELECT count(*) FROM cbloss_schema_version) <> 1 THEN RAISE "
      "EXCEPTION 'wrong schema version'; END IF; END $$");
  EXPECT_TRUE(s.ok()) << s;
  // Reopening (a second replica starting) migrates nothing and works.
  std::unique_ptr<DatasetStore> again = MustOpen();
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(again->Put(MakeDataset("d", {1}), 0).ok());
}

TEST_F(PostgresDatasetStoreTest, ConcurrentFirstOpensMigrateOnce) {
  constexpr int kThreads = 6;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      absl::StatusOr<std::unique_ptr<DatasetStore>> s = backend_->Open();
      if (s.ok()) {
        ++ok;
      } else {
        ADD_FAILURE() << s.status();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads);
}

TEST_F(PostgresDatasetStoreTest, OpenRefusesNewerSchema) {
  MustOpen();
  ASSERT_TRUE(PgExec(backend_->location(),
                     "UPDATE cbloss_schema_version SET version = 99")
                  .ok());
  ExpectError(backend_->Open().status(), absl::StatusCode::kFailedPrecondition,
              "schema version 99");
}

TEST_F(PostgresDatasetStoreTest, CorruptRecordIsDataLossNotACrash) {
  std::unique_ptr<DatasetStore> store = MustOpen();
  ASSERT_TRUE(store->Put(MakeDataset("good", {1}), absl::nullopt).ok());
  ASSERT_TRUE(store->Put(MakeDataset("bad", {1, 2}), absl::nullopt).ok());
  ASSERT_TRUE(PgExec(backend_->location(),
                     "UPDATE cbloss_datasets SET dataset = "
                     "'\\xffffffffffff'::bytea WHERE name = 'bad'")
                  .ok());
  ExpectError(store->Get("bad").status(), absl::StatusCode::kDataLoss,
              "dataset 'bad'");
  ExpectError(store->List("", 10).status(), absl::StatusCode::kDataLoss,
              "dataset 'bad'");
  const int32_t labels[] = {0};
  ExpectError(store->AddClassCounts("bad", {}, labels).status(),
              absl::StatusCode::kDataLoss, "dataset 'bad'");
  EXPECT_TRUE(store->Get("good").ok());
  absl::StatusOr<v1::Dataset> repaired =
      store->Put(MakeDataset("bad", {4}), absl::nullopt);
  ASSERT_TRUE(repaired.ok()) << repaired.status();
  EXPECT_EQ(repaired->version(), 2u);
}

TEST_F(PostgresDatasetStoreTest, UnreachableServerIsUnavailable) {
  // Port 1 on loopback: nothing listens there.
  ExpectError(
      OpenPostgresDatasetStore("postgresql://postgres@127.0.0.1:1/x").status(),
      absl::StatusCode::kUnavailable, "cannot connect to PostgreSQL");
  ExpectError(OpenPostgresDatasetStore("").status(),
              absl::StatusCode::kInvalidArgument, "DSN");
}

TEST_F(PostgresDatasetStoreTest, ReconnectsAfterTheServerDropsConnections) {
  std::unique_ptr<DatasetStore> store = MustOpen();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Put(MakeDataset("d", {1}), absl::nullopt).ok());
  TerminateConnections();
  // The broken connection fails the next call with UNAVAILABLE, never a
  // wrong answer; the call after it reconnects.
  absl::StatusOr<v1::Dataset> first = store->Get("d");
  EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable)
      << first.status();
  absl::StatusOr<v1::Dataset> second = store->Get("d");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->version(), 1u);
  const int32_t labels[] = {0};
  absl::StatusOr<v1::Dataset> added = store->AddClassCounts("d", {}, labels);
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(added->version(), 2u);
}

TEST_F(PostgresDatasetStoreTest, WatchSeesOtherStoresChangesAndResyncs) {
  std::unique_ptr<DatasetStore> watched = MustOpen();
  std::unique_ptr<DatasetStore> writer = MustOpen();
  ASSERT_NE(watched, nullptr);
  ASSERT_NE(writer, nullptr);
  RecordingListener listener;
  ASSERT_TRUE(watched->Watch(&listener).ok());

  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(writer->Put(MakeDataset("a", {1}), 0).ok());
  ASSERT_TRUE(listener.WaitFor([&] { return !listener.changed_.empty(); }));
  const double latency_ms = std::chrono::duration<double, std::milli>(
                                std::chrono::steady_clock::now() - start)
                                .count();
  std::printf("notification latency (Put to OnDatasetChanged): %.2f ms\n",
              latency_ms);
  const int32_t labels[] = {0};
  ASSERT_TRUE(writer->AddClassCounts("a", {}, labels).ok());
  ASSERT_TRUE(writer->Delete("a", absl::nullopt).ok());
  ASSERT_TRUE(listener.WaitFor([&] { return listener.changed_.size() >= 3; }));
  {
    std::lock_guard<std::mutex> lock(listener.mu_);
    EXPECT_THAT(listener.changed_, ::testing::ElementsAre("a", "a", "a"));
    EXPECT_EQ(listener.lost_, 0);
    EXPECT_EQ(listener.resyncs_, 0);
  }

  // The server drops the listener's connection: lost, then a resync.
  TerminateConnections();
  ASSERT_TRUE(listener.WaitFor(
      [&] { return listener.lost_ >= 1 && listener.resyncs_ >= 1; }));
  ASSERT_TRUE(writer->Put(MakeDataset("b", {1}), absl::nullopt).ok() ||
              writer->Put(MakeDataset("b", {1}), absl::nullopt).ok());
  ASSERT_TRUE(listener.WaitFor([&] {
    return !listener.changed_.empty() && listener.changed_.back() == "b";
  }));
  watched->StopWatching();
}

// A write waiting for a dataset lock that another replica holds gives up
// with UNAVAILABLE instead of hanging, writes nothing, and the store works
// once the lock is free. The holder keeps the lock until the contender has
// returned (it polls the table lock_test_release, which the test fills
// then), not for a fixed time: on a loaded machine a fixed hold could end
// before the contender even asks for the lock. `max_hold_seconds` only
// bounds a failing test.
void ExpectLockWaitBounded(const std::string& location, const std::string& dsn,
                           int max_hold_seconds) {
  absl::StatusOr<std::unique_ptr<DatasetStore>> store =
      OpenPostgresDatasetStore(dsn);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Put(MakeDataset("d", {1, 2}), absl::nullopt).ok());
  absl::Status s = PgExec(location, "CREATE TABLE lock_test_release (x int)");
  ASSERT_TRUE(s.ok()) << s;
  absl::Status held;
  std::thread holder([&] {
    // READ COMMITTED: each poll sees the release committed meanwhile.
    held = PgExec(
        location,
        absl::StrCat("BEGIN; SELECT pg_advisory_xact_lock(6513516, "
                     "hashtext('d')); DO $$ BEGIN FOR i IN 1..",
                     max_hold_seconds * 100,
                     " LOOP EXIT WHEN EXISTS (SELECT 1 FROM lock_test_release);"
                     " PERFORM pg_sleep(0.01); END LOOP; END $$; COMMIT"));
  });
  // Wait until the holder has the lock: this database's advisory lock on
  // the dataset key (pg_locks is cluster-wide, and tests of other databases
  // run alongside and take advisory locks of their own).
  s = PgExec(location,
             "DO $$ BEGIN FOR i IN 1..3000 LOOP IF EXISTS (SELECT 1 FROM "
             "pg_locks WHERE locktype = 'advisory' AND granted AND database = "
             "(SELECT oid FROM pg_database WHERE datname = current_database()) "
             "AND classid = 6513516 AND objid = hashtext('d')::oid AND "
             "objsubid = 2) THEN RETURN; END IF; PERFORM pg_sleep(0.01); END "
             "LOOP; RAISE EXCEPTION 'the holder never got the lock'; END $$");
  const int32_t labels[] = {1};
  absl::Status contended = absl::OkStatus();
  if (s.ok()) {
    // Without a lock timeout this would wait for the holder and succeed.
    contended = (*store)->AddClassCounts("d", {}, labels).status();
  }
  // Release the holder whatever happened, so the thread always ends.
  absl::Status released =
      PgExec(location, "INSERT INTO lock_test_release VALUES (1)");
  holder.join();
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(released.ok()) << released;
  ExpectError(contended, absl::StatusCode::kUnavailable, "lock timeout");
  ASSERT_TRUE(held.ok()) << held;
  absl::StatusOr<v1::Dataset> added = (*store)->AddClassCounts("d", {}, labels);
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(added->version(), 2u);
  EXPECT_EQ(added->class_counts(1), 3);
}

// cbloss's default lock_timeout is 10 s.
TEST_F(PostgresDatasetStoreTest, LockWaitIsBoundedByDefault) {
  ExpectLockWaitBounded(backend_->location(), backend_->location(), 60);
}

// A DSN's own `options` replace the default (300 ms here).
TEST_F(PostgresDatasetStoreTest, LockTimeoutFromTheDsnOptions) {
  ExpectLockWaitBounded(
      backend_->location(),
      backend_->location() + "?options=-c%20lock_timeout%3D300", 60);
}

TEST(RedactDsnTest, HidesPasswords) {
  EXPECT_EQ(RedactDsn("postgresql://u:secret@h:5432/db"),
            "postgresql://u:***@h:5432/db");
  EXPECT_EQ(RedactDsn("postgres://u@h/db?password=secret&sslmode=require"),
            "postgres://u@h/db?password=***&sslmode=require");
  EXPECT_EQ(RedactDsn("host=h password=secret dbname=x"),
            "host=h password=*** dbname=x");
  EXPECT_EQ(RedactDsn("postgresql://u@h/db"), "postgresql://u@h/db");
  EXPECT_TRUE(IsPostgresDsn("postgresql://h/db"));
  EXPECT_TRUE(IsPostgresDsn("postgres://h/db"));
  EXPECT_FALSE(IsPostgresDsn("/var/lib/cbloss"));
}

// ------------------------------------------------------------------- Runs

TEST_F(PostgresDatasetStoreTest, WatchDeliversOtherStoresRunChanges) {
  std::unique_ptr<DatasetStore> watched = MustOpen();
  std::unique_ptr<DatasetStore> writer = MustOpen();
  ASSERT_NE(watched, nullptr);
  ASSERT_NE(writer, nullptr);
  RecordingListener listener;
  ASSERT_TRUE(watched->Watch(&listener).ok());

  ASSERT_TRUE(writer->Put(MakeDataset("d", {1, 2}), absl::nullopt).ok());
  v1::Run run;
  run.set_name("r");
  run.set_dataset("d");
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(writer->CreateRun(run).ok());
  ASSERT_TRUE(
      listener.WaitFor([&] { return !listener.runs_changed_.empty(); }));
  std::printf("notification latency (CreateRun to OnRunChanged): %.2f ms\n",
              std::chrono::duration<double, std::milli>(
                  std::chrono::steady_clock::now() - start)
                  .count());
  run.set_name("s");
  run.set_dataset("");
  run.set_num_classes(3);
  ASSERT_TRUE(writer->CreateRun(run).ok());
  RunUpdate update;
  update.name = "r";
  update.requests = 1;
  RunUpdate other = update;
  other.name = "s";
  absl::StatusOr<std::vector<absl::StatusOr<v1::Run>>> applied =
      writer->ApplyRunUpdates({update, other, update});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_TRUE(writer->DeleteRun("r", absl::nullopt).ok());
  // A failed change notifies nothing.
  EXPECT_FALSE(writer->DeleteRun("ghost", absl::nullopt).ok());
  ASSERT_TRUE(listener.WaitFor([&] {
    return listener.runs_changed_.size() >= 5;  // r, s, (r, s), r
  }));
  // One more dataset change after everything: once it arrives, every run
  // notification before it has too (one connection, commit order).
  ASSERT_TRUE(writer->Delete("d", absl::nullopt).ok());
  ASSERT_TRUE(listener.WaitFor([&] { return listener.changed_.size() >= 2; }));
  {
    std::lock_guard<std::mutex> lock(listener.mu_);
    // One notification per run and transaction (PostgreSQL folds
    // duplicates within a transaction); the update's order is the rows'.
    ASSERT_EQ(listener.runs_changed_.size(), 5u);
    EXPECT_EQ(listener.runs_changed_[0], "r");
    EXPECT_EQ(listener.runs_changed_[1], "s");
    EXPECT_THAT(std::vector<std::string>(listener.runs_changed_.begin() + 2,
                                         listener.runs_changed_.begin() + 4),
                ::testing::UnorderedElementsAre("r", "s"));
    EXPECT_EQ(listener.runs_changed_[4], "r");
    // Dataset notifications are unchanged: only the two dataset writes.
    EXPECT_THAT(listener.changed_, ::testing::ElementsAre("d", "d"));
    EXPECT_EQ(listener.lost_, 0);
    EXPECT_EQ(listener.resyncs_, 0);
  }
  watched->StopWatching();
}

// Schema 1 exactly as cbloss wrote it before runs (the first migration of
// postgres_dataset_store.cc and its version table, copied: the test must
// not follow later edits).
constexpr char kSchema1Sql[] = R"sql(
  CREATE TABLE cbloss_schema_version (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version INTEGER NOT NULL);
  INSERT INTO cbloss_schema_version (version) VALUES (1);
  CREATE TABLE cbloss_datasets (
    name TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL CHECK (version >= 1),
    create_time_ns BIGINT NOT NULL,
    update_time_ns BIGINT NOT NULL,
    dataset BYTEA NOT NULL
  );
  CREATE FUNCTION cbloss_datasets_notify() RETURNS trigger
  LANGUAGE plpgsql AS $$
  DECLARE
    changed TEXT := COALESCE(NEW.name, OLD.name);
  BEGIN
    IF octet_length(changed) > 7000 THEN
      changed := '';
    END IF;
    PERFORM pg_notify('cbloss_datasets', changed);
    RETURN NULL;
  END
  $$;
  CREATE TRIGGER cbloss_datasets_changed
    AFTER INSERT OR UPDATE OR DELETE ON cbloss_datasets
    FOR EACH ROW EXECUTE FUNCTION cbloss_datasets_notify();
)sql";

std::string HexBytea(const std::string& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out = "'\\x";
  for (unsigned char b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out + "'::bytea";
}

TEST_F(PostgresDatasetStoreTest, Schema1DatabaseOpensUnchangedAndGainsRuns) {
  const std::string db = backend_->location();
  ASSERT_TRUE(PgExec(db, kSchema1Sql).ok());
  v1::Dataset cifar = MakeDataset("cifar", {500, 50, 5});
  cifar.add_class_names("cat");
  cifar.add_class_names("dog");
  cifar.add_class_names("eel");
  absl::Status s =
      PgExec(db, absl::StrCat("INSERT INTO cbloss_datasets VALUES ('cifar', 3, "
                              "1700000000123456789, 1700000100987654321, ",
                              HexBytea(cifar.SerializeAsString()), ")"));
  ASSERT_TRUE(s.ok()) << s;

  std::unique_ptr<DatasetStore> store = MustOpen();
  ASSERT_NE(store, nullptr);
  s = PgExec(db,
             "DO $$ BEGIN IF (SELECT version FROM cbloss_schema_version) <> 2 "
             "THEN RAISE EXCEPTION 'not migrated'; END IF; END $$");
  EXPECT_TRUE(s.ok()) << s;
  absl::StatusOr<v1::Dataset> got = store->Get("cifar");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->version(), 3u);
  EXPECT_THAT(got->class_counts(), ::testing::ElementsAre(500, 50, 5));
  EXPECT_THAT(got->class_names(), ::testing::ElementsAre("cat", "dog", "eel"));
  EXPECT_EQ(got->create_time().seconds(), 1700000000);
  EXPECT_EQ(got->create_time().nanos(), 123456789);
  EXPECT_EQ(got->update_time().seconds(), 1700000100);
  EXPECT_EQ(got->update_time().nanos(), 987654321);

  v1::Run run;
  run.set_name("r");
  run.set_dataset("cifar");
  absl::StatusOr<v1::Run> created = store->CreateRun(run);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->num_classes(), 3);
  ExpectError(store->Delete("cifar", absl::nullopt),
              absl::StatusCode::kFailedPrecondition,
              "dataset 'cifar' is used by run 'r'; delete its runs first");
  // A second replica opening the migrated database migrates nothing.
  std::unique_ptr<DatasetStore> again = MustOpen();
  ASSERT_NE(again, nullptr);
  absl::StatusOr<v1::Run> seen = again->GetRun("r");
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->version(), 1u);
}

TEST_F(PostgresDatasetStoreTest, CorruptRunRecordIsDataLossNotACrash) {
  std::unique_ptr<DatasetStore> store = MustOpen();
  ASSERT_NE(store, nullptr);
  v1::Run run;
  run.set_num_classes(2);
  run.set_name("good");
  ASSERT_TRUE(store->CreateRun(run).ok());
  run.set_name("bad");
  ASSERT_TRUE(store->CreateRun(run).ok());
  ASSERT_TRUE(PgExec(backend_->location(),
                     "UPDATE cbloss_runs SET run = '\\xffffffffffff'::bytea "
                     "WHERE name = 'bad'")
                  .ok());
  ExpectError(store->GetRun("bad").status(), absl::StatusCode::kDataLoss,
              "run 'bad'");
  ExpectError(store->ListRuns("", 10, "").status(), absl::StatusCode::kDataLoss,
              "run 'bad'");
  RunUpdate bad;
  bad.name = "bad";
  bad.requests = 1;
  RunUpdate good = bad;
  good.name = "good";
  absl::StatusOr<std::vector<absl::StatusOr<v1::Run>>> applied =
      store->ApplyRunUpdates({bad, good});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ExpectError((*applied)[0].status(), absl::StatusCode::kDataLoss, "run 'bad'");
  ASSERT_TRUE((*applied)[1].ok()) << (*applied)[1].status();
  EXPECT_EQ((*applied)[1]->version(), 2u);
  EXPECT_TRUE(store->DeleteRun("bad", 1).ok());
}

}  // namespace
}  // namespace cbloss
