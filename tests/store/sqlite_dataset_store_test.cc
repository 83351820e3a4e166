// SQLite-specific tests of the SQLite DatasetStore: bad data directories,
// the schema version and WAL, damaged databases. The DatasetStore contract
// itself is checked by dataset_store_conformance_test.cc, which runs
// against this backend as store.sqlite.* (and PostgreSQL as
// store.postgres.*).

#include "server/store/sqlite_dataset_store.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/barrier.h"
#include "absl/types/optional.h"
#include "cbloss/v1/cbloss.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "server/store/dataset_store.h"

namespace cbloss {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::Dataset MakeDataset(const std::string& name, std::vector<int64_t> counts) {
  v1::Dataset dataset;
  dataset.set_name(name);
  for (int64_t c : counts) dataset.add_class_counts(c);
  return dataset;
}

std::vector<int64_t> Counts(const v1::Dataset& dataset) {
  return {dataset.class_counts().begin(), dataset.class_counts().end()};
}

// Asserts the code exactly and that the message contains `substring`.
void ExpectError(const absl::Status& status, absl::StatusCode code,
                 const std::string& substring) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
}

// Runs SQL directly against the database file, bypassing the store.
void RawExec(const std::string& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  EXPECT_EQ(rc, SQLITE_OK) << (error != nullptr ? error : "");
  sqlite3_free(error);
  sqlite3_close(db);
}

class SqliteDatasetStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        absl::StrCat((tmp != nullptr && *tmp != '\0') ? tmp : "/tmp",
                     "/cbloss-store-test-XXXXXX");
    ASSERT_NE(mkdtemp(pattern.data()), nullptr) << std::strerror(errno);
    root_ = pattern;
    data_dir_ = root_ + "/data";
  }

  void TearDown() override {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  std::string DbPath() const { return data_dir_ + "/cbloss.sqlite3"; }

  // Opens (or reopens) the store in data_dir_.
  DatasetStore& Open() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<DatasetStore>> store =
        OpenSqliteDatasetStore(data_dir_);
    EXPECT_TRUE(store.ok()) << store.status();
    if (store.ok()) store_ = *std::move(store);
    return *store_;
  }

  void Close() { store_.reset(); }

  v1::Dataset MustPut(const v1::Dataset& dataset,
                      absl::optional<uint64_t> expected = absl::nullopt) {
    absl::StatusOr<v1::Dataset> put = store_->Put(dataset, expected);
    EXPECT_TRUE(put.ok()) << put.status();
    return put.ok() ? *put : v1::Dataset();
  }

  v1::Dataset MustGet(const std::string& name) {
    absl::StatusOr<v1::Dataset> got = store_->Get(name);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : v1::Dataset();
  }

  std::vector<std::string> ListNames(const std::string& start_after,
                                     int limit) {
    absl::StatusOr<std::vector<v1::Dataset>> list =
        store_->List(start_after, limit);
    EXPECT_TRUE(list.ok()) << list.status();
    std::vector<std::string> names;
    if (list.ok()) {
      for (const v1::Dataset& d : *list) names.push_back(d.name());
    }
    return names;
  }

  std::string root_;
  std::string data_dir_;
  std::unique_ptr<DatasetStore> store_;
};

// ------------------------------------------------------ Open and bad storage

TEST_F(SqliteDatasetStoreTest, OpenCreatesNestedDataDir) {
  data_dir_ = root_ + "/a/b/c";
  Open();
  EXPECT_TRUE(std::filesystem::is_regular_file(DbPath()));
}

TEST_F(SqliteDatasetStoreTest, OpenUnderARegularFileFailsCleanly) {
  const std::string file = root_ + "/plain-file";
  std::ofstream(file) << "not a directory";
  const std::string dir = file + "/data";
  absl::StatusOr<std::unique_ptr<DatasetStore>> store =
      OpenSqliteDatasetStore(dir);
  ExpectError(store.status(), absl::StatusCode::kFailedPrecondition,
              "cannot create data_dir '" + dir + "'");
}

TEST_F(SqliteDatasetStoreTest, OpenOnARegularFileFailsCleanly) {
  const std::string file = root_ + "/plain-file";
  std::ofstream(file) << "not a directory";
  ExpectError(OpenSqliteDatasetStore(file).status(),
              absl::StatusCode::kFailedPrecondition,
              "data_dir '" + file + "' is not a directory");
}

// Opens `data_dir` as an unprivileged user (root ignores permissions) in a
// forked child; returns the status code and message the child saw.
std::pair<absl::StatusCode, std::string> OpenAsNobody(
    const std::string& data_dir) {
  int fds[2];
  if (pipe(fds) != 0) return {absl::StatusCode::kUnknown, "pipe failed"};
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    constexpr uid_t kNobody = 65534;
    if (setgid(kNobody) != 0 || setuid(kNobody) != 0) _exit(2);
    absl::Status status = OpenSqliteDatasetStore(data_dir).status();
    std::string out =
        absl::StrCat(static_cast<int>(status.code()), " ", status.message());
    if (write(fds[1], out.data(), out.size()) < 0) _exit(3);
    _exit(0);
  }
  close(fds[1]);
  std::string out;
  char buffer[512];
  ssize_t n;
  while ((n = read(fds[0], buffer, sizeof(buffer))) > 0) {
    out.append(buffer, static_cast<size_t>(n));
  }
  close(fds[0]);
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0 || out.empty()) {
    return {absl::StatusCode::kUnknown,
            absl::StrCat("child failed with status ", wstatus)};
  }
  size_t space = out.find(' ');
  return {
      static_cast<absl::StatusCode>(std::atoi(out.substr(0, space).c_str())),
      out.substr(space + 1)};
}

TEST_F(SqliteDatasetStoreTest, OpenOnReadOnlyDirFailsCleanly) {
  ASSERT_TRUE(std::filesystem::create_directory(data_dir_));
  ASSERT_EQ(chmod(root_.c_str(), 0755), 0);
  ASSERT_EQ(chmod(data_dir_.c_str(), 0555), 0);
  absl::StatusCode code;
  std::string message;
  if (geteuid() == 0) {
    std::tie(code, message) = OpenAsNobody(data_dir_);
  } else {
    absl::Status status = OpenSqliteDatasetStore(data_dir_).status();
    code = status.code();
    message = std::string(status.message());
  }
  EXPECT_EQ(code, absl::StatusCode::kFailedPrecondition) << message;
  EXPECT_THAT(message,
              HasSubstr("data_dir '" + data_dir_ + "' is not writable"));
  EXPECT_FALSE(std::filesystem::exists(DbPath()));
  chmod(data_dir_.c_str(), 0700);
}

TEST_F(SqliteDatasetStoreTest, OpenRejectsEmptyDataDir) {
  ExpectError(OpenSqliteDatasetStore("").status(),
              absl::StatusCode::kInvalidArgument, "data_dir");
}

TEST_F(SqliteDatasetStoreTest, OpenRefusesNewerSchema) {
  Open();
  MustPut(MakeDataset("d", {1}));
  Close();
  RawExec(DbPath(), "PRAGMA user_version = 99");
  ExpectError(OpenSqliteDatasetStore(data_dir_).status(),
              absl::StatusCode::kFailedPrecondition, "schema version 99");
}

TEST_F(SqliteDatasetStoreTest, OpenWritesSchemaVersionAndUsesWal) {
  Open();
  Close();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(DbPath().c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), 2);
  sqlite3_finalize(stmt);
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)),
               "wal");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST_F(SqliteDatasetStoreTest, OpenOfANonDatabaseFileIsDataLoss) {
  ASSERT_TRUE(std::filesystem::create_directory(data_dir_));
  std::ofstream(DbPath()) << std::string(8192, 'x');
  ExpectError(OpenSqliteDatasetStore(data_dir_).status(),
              absl::StatusCode::kDataLoss, "not a database");
}

TEST_F(SqliteDatasetStoreTest, CorruptRecordIsDataLossNotACrash) {
  Open();
  MustPut(MakeDataset("good", {1}));
  MustPut(MakeDataset("bad", {1, 2}));
  Close();
  // 0xff... is an invalid protobuf tag.
  RawExec(DbPath(),
          "UPDATE datasets SET dataset = x'ffffffffffff' WHERE name = 'bad'");
  Open();
  ExpectError(store_->Get("bad").status(), absl::StatusCode::kDataLoss,
              "dataset 'bad'");
  ExpectError(store_->List("", 10).status(), absl::StatusCode::kDataLoss,
              "dataset 'bad'");
  const int32_t labels[] = {0};
  ExpectError(store_->AddClassCounts("bad", {}, labels).status(),
              absl::StatusCode::kDataLoss, "dataset 'bad'");
  EXPECT_THAT(Counts(MustGet("good")), ElementsAre(1));
  // A record of the wrong type is corrupt too.
  Close();
  RawExec(DbPath(), "UPDATE datasets SET dataset = 'text' WHERE name = 'good'");
  Open();
  ExpectError(store_->Get("good").status(), absl::StatusCode::kDataLoss,
              "dataset 'good'");

  // An unconditional Put or a Delete repairs a damaged dataset.
  v1::Dataset repaired = MustPut(MakeDataset("bad", {4}));
  EXPECT_EQ(repaired.version(), 2u);
  EXPECT_THAT(Counts(MustGet("bad")), ElementsAre(4));
  EXPECT_TRUE(store_->Delete("good", absl::nullopt).ok());
}

// ------------------------------------------------------------ Schema 1 -> 2

// Schema 1 exactly as cbloss wrote it before runs (the first migration of
// sqlite_dataset_store.cc, copied: the test must not follow later edits).
constexpr char kSchema1Sql[] = R"sql(
  CREATE TABLE datasets (
    name TEXT NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL CHECK (version >= 1),
    create_time_ns INTEGER NOT NULL,
    update_time_ns INTEGER NOT NULL,
    dataset BLOB NOT NULL
  ) WITHOUT ROWID;
  PRAGMA user_version = 1;
)sql";

// Inserts a dataset row as schema 1 stores it.
void InsertSchema1Dataset(const std::string& db_path,
                          const v1::Dataset& dataset, int64_t version,
                          int64_t create_ns, int64_t update_ns) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db,
                               "INSERT INTO datasets VALUES (?1, ?2, ?3, ?4, "
                               "?5)",
                               -1, &stmt, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  const std::string blob = dataset.SerializeAsString();
  sqlite3_bind_text(stmt, 1, dataset.name().c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(stmt, 2, version);
  sqlite3_bind_int64(stmt, 3, create_ns);
  sqlite3_bind_int64(stmt, 4, update_ns);
  sqlite3_bind_blob(stmt, 5, blob.data(), static_cast<int>(blob.size()),
                    SQLITE_TRANSIENT);
  EXPECT_EQ(sqlite3_step(stmt), SQLITE_DONE) << sqlite3_errmsg(db);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

int UserVersion(const std::string& db_path) {
  sqlite3* db = nullptr;
  if (sqlite3_open(db_path.c_str(), &db) != SQLITE_OK) return -1;
  sqlite3_stmt* stmt = nullptr;
  int version = -1;
  if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, nullptr) ==
          SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW) {
    version = sqlite3_column_int(stmt, 0);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return version;
}

TEST_F(SqliteDatasetStoreTest, Schema1DatabaseOpensUnchangedAndGainsRuns) {
  std::filesystem::create_directories(data_dir_);
  RawExec(DbPath(), kSchema1Sql);
  v1::Dataset cifar = MakeDataset("cifar", {500, 50, 5});
  cifar.add_class_names("cat");
  cifar.add_class_names("dog");
  cifar.add_class_names("eel");
  cifar.mutable_defaults()->set_beta(0.999);
  InsertSchema1Dataset(DbPath(), cifar, 3, 1700000000123456789,
                       1700000100987654321);
  InsertSchema1Dataset(DbPath(), MakeDataset("tiny", {1}), 1,
                       1600000000000000000, 1600000000000000000);
  ASSERT_EQ(UserVersion(DbPath()), 1);

  Open();
  EXPECT_EQ(UserVersion(DbPath()), 2);
  v1::Dataset got = MustGet("cifar");
  EXPECT_EQ(got.version(), 3u);
  EXPECT_THAT(Counts(got), ElementsAre(500, 50, 5));
  EXPECT_THAT(got.class_names(), ElementsAre("cat", "dog", "eel"));
  EXPECT_TRUE(got.defaults().has_beta());
  EXPECT_EQ(got.defaults().beta(), 0.999);
  EXPECT_EQ(got.create_time().seconds(), 1700000000);
  EXPECT_EQ(got.create_time().nanos(), 123456789);
  EXPECT_EQ(got.update_time().seconds(), 1700000100);
  EXPECT_EQ(got.update_time().nanos(), 987654321);
  EXPECT_THAT(ListNames("", 10), ElementsAre("cifar", "tiny"));

  // Runs work on the migrated database, with the integrity rules.
  v1::Run run;
  run.set_name("r");
  run.set_dataset("cifar");
  absl::StatusOr<v1::Run> created = store_->CreateRun(run);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->num_classes(), 3);
  RunUpdate update;
  update.name = "r";
  update.requests = 1;
  update.seen_counts = {1, 0, 2};
  absl::StatusOr<std::vector<absl::StatusOr<v1::Run>>> applied =
      store_->ApplyRunUpdates({update});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_TRUE((*applied)[0].ok()) << (*applied)[0].status();
  EXPECT_EQ((*applied)[0]->version(), 2u);
  ExpectError(store_->Delete("cifar", absl::nullopt),
              absl::StatusCode::kFailedPrecondition,
              "dataset 'cifar' is used by run 'r'; delete its runs first");
  // The datasets still work as before.
  const int32_t labels[] = {0};
  absl::StatusOr<v1::Dataset> added =
      store_->AddClassCounts("tiny", {}, labels);
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(added->version(), 2u);
  EXPECT_THAT(Counts(*added), ElementsAre(2));

  // Reopening migrates nothing more.
  Open();
  EXPECT_EQ(UserVersion(DbPath()), 2);
  absl::StatusOr<v1::Run> again = store_->GetRun("r");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->version(), 2u);
  EXPECT_EQ(MustGet("cifar").version(), 3u);
}

TEST_F(SqliteDatasetStoreTest, CorruptRunRecordIsDataLossNotACrash) {
  Open();
  v1::Run run;
  run.set_num_classes(2);
  run.set_name("good");
  ASSERT_TRUE(store_->CreateRun(run).ok());
  run.set_name("bad");
  ASSERT_TRUE(store_->CreateRun(run).ok());
  Close();
  RawExec(DbPath(), "UPDATE runs SET run = x'ffffffffffff' WHERE name = 'bad'");
  Open();
  ExpectError(store_->GetRun("bad").status(), absl::StatusCode::kDataLoss,
              "run 'bad'");
  ExpectError(store_->ListRuns("", 10, "").status(),
              absl::StatusCode::kDataLoss, "run 'bad'");
  ExpectError(store_->CreateRun(run).status(), absl::StatusCode::kAlreadyExists,
              "run 'bad' already exists");
  // A corrupt run skips its own update only.
  RunUpdate bad;
  bad.name = "bad";
  bad.requests = 1;
  RunUpdate good = bad;
  good.name = "good";
  absl::StatusOr<std::vector<absl::StatusOr<v1::Run>>> applied =
      store_->ApplyRunUpdates({bad, good});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ExpectError((*applied)[0].status(), absl::StatusCode::kDataLoss, "run 'bad'");
  ASSERT_TRUE((*applied)[1].ok()) << (*applied)[1].status();
  EXPECT_EQ((*applied)[1]->version(), 2u);
  // DeleteRun still checks the version column, then removes it.
  ExpectError(store_->DeleteRun("bad", 5), absl::StatusCode::kAborted,
              "run 'bad' is at version 1, not expected_version 5");
  EXPECT_TRUE(store_->DeleteRun("bad", 1).ok());
  EXPECT_TRUE(store_->CreateRun(run).ok());
}

}  // namespace
}  // namespace cbloss
