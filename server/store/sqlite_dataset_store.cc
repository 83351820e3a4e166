#include "server/store/sqlite_dataset_store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "absl/types/span.h"
#include "cbloss/v1/cbloss.pb.h"
#include "core/status_macros.h"
#include "server/store/dataset_records.h"

namespace cbloss {
namespace {

// Schema version written to PRAGMA user_version. kMigrations[i] upgrades a
// database from schema i to schema i + 1; append, never edit.
constexpr const char* kMigrations[] = {
    // 0 -> 1: one row per dataset. `name` uses SQLite's BINARY collation
    // (memcmp), which gives List its byte order. `dataset` is the serialized
    // v1::Dataset; the other columns are authoritative copies of its
    // version and times, readable without parsing the record.
    R"sql(
      CREATE TABLE datasets (
        name TEXT NOT NULL PRIMARY KEY,
        version INTEGER NOT NULL CHECK (version >= 1),
        create_time_ns INTEGER NOT NULL,
        update_time_ns INTEGER NOT NULL,
        dataset BLOB NOT NULL
      ) WITHOUT ROWID
    )sql",
    // 1 -> 2: one row per run (LOSS.md section 11): the serialized v1::Run
    // (with its statistics) plus authoritative copies of its dataset ('' =
    // none), version and times. The index serves the dataset filter of
    // ListRuns and the "is this dataset used by a run" checks.
    R"sql(
      CREATE TABLE runs (
        name TEXT NOT NULL PRIMARY KEY,
        dataset TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version >= 1),
        create_time_ns INTEGER NOT NULL,
        update_time_ns INTEGER NOT NULL,
        run BLOB NOT NULL
      ) WITHOUT ROWID;
      CREATE INDEX runs_by_dataset ON runs (dataset, name);
    )sql",
};
constexpr int kSchemaVersion =
    static_cast<int>(sizeof(kMigrations) / sizeof(kMigrations[0]));

// How long a writer waits for another process's lock before UNAVAILABLE.
constexpr int kBusyTimeoutMs = 10000;

// Maps a SQLite result code to a canonical status carrying SQLite's message.
absl::Status SqliteError(int rc, sqlite3* db, absl::string_view action) {
  const char* detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  std::string message = absl::StrCat("sqlite error while ", action, ": ",
                                     detail, " (code ", rc, ")");
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
      return absl::UnavailableError(message);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(message);
    default:
      return absl::InternalError(message);
  }
}

// Owns a prepared statement. Statements are prepared once and reused: Use()
// returns a guard that resets the statement and clears its bindings.
class Statement {
 public:
  Statement() = default;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  absl::Status Prepare(sqlite3* db, absl::string_view sql) {
    int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
    if (rc != SQLITE_OK) {
      return SqliteError(rc, db, absl::StrCat("preparing '", sql, "'"));
    }
    return absl::OkStatus();
  }

  class InUse {
   public:
    explicit InUse(sqlite3_stmt* stmt) : stmt_(stmt) {}
    InUse(const InUse&) = delete;
    InUse& operator=(const InUse&) = delete;
    ~InUse() {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
    sqlite3_stmt* get() const { return stmt_; }

   private:
    sqlite3_stmt* stmt_;
  };
  InUse Use() { return InUse(stmt_); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

void BindText(sqlite3_stmt* stmt, int index, absl::string_view text) {
  sqlite3_bind_text64(stmt, index, text.data(), text.size(), SQLITE_TRANSIENT,
                      SQLITE_UTF8);
}

class SqliteDatasetStore final : public DatasetStore {
 public:
  // Takes ownership of `db`, an open connection.
  explicit SqliteDatasetStore(sqlite3* db) : db_(db) {}
  SqliteDatasetStore(const SqliteDatasetStore&) = delete;
  SqliteDatasetStore& operator=(const SqliteDatasetStore&) = delete;
  ~SqliteDatasetStore() override {
    // Statements must be finalized before the connection closes.
    begin_.reset();
    commit_.reset();
    rollback_.reset();
    select_meta_.reset();
    select_one_.reset();
    select_page_.reset();
    upsert_.reset();
    delete_.reset();
    first_run_of_dataset_.reset();
    select_run_.reset();
    select_run_page_.reset();
    select_run_page_of_dataset_.reset();
    insert_run_.reset();
    update_run_.reset();
    delete_run_.reset();
    sqlite3_close_v2(db_);
  }

  // Configures the connection, migrates the schema, prepares statements.
  absl::Status Init(const std::string& path);

  absl::StatusOr<v1::Dataset> Put(
      const v1::Dataset& dataset,
      absl::optional<uint64_t> expected_version) override;
  absl::StatusOr<v1::Dataset> Get(absl::string_view name) override;
  absl::StatusOr<std::vector<v1::Dataset>> List(absl::string_view start_after,
                                                int limit) override;
  absl::Status Delete(absl::string_view name,
                      absl::optional<uint64_t> expected_version) override;
  absl::StatusOr<v1::Dataset> AddClassCounts(
      absl::string_view name, absl::Span<const int64_t> deltas,
      absl::Span<const int32_t> labels) override;

  absl::StatusOr<v1::Run> CreateRun(const v1::Run& run) override;
  absl::StatusOr<v1::Run> GetRun(absl::string_view name) override;
  absl::StatusOr<std::vector<v1::Run>> ListRuns(
      absl::string_view start_after, int limit,
      absl::string_view dataset) override;
  absl::Status DeleteRun(absl::string_view name,
                         absl::optional<uint64_t> expected_version) override;
  absl::StatusOr<std::vector<absl::StatusOr<v1::Run>>> ApplyRunUpdates(
      absl::Span<const RunUpdate> updates) override;

 private:
  using Meta = RecordMeta;

  // A write transaction (BEGIN IMMEDIATE: the write lock is taken up front,
  // so read-check-write sequences cannot interleave with other writers).
  // Rolled back on destruction unless committed.
  class Transaction {
   public:
    explicit Transaction(SqliteDatasetStore* store) : store_(store) {}
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction() {
      if (active_ && !sqlite3_get_autocommit(store_->db_)) {
        Statement::InUse rollback = store_->rollback_->Use();
        sqlite3_step(rollback.get());
      }
    }
    absl::Status Begin() {
      CBLOSS_RETURN_IF_ERROR(
          store_->StepDone(*store_->begin_, "beginning a transaction"));
      active_ = true;
      return absl::OkStatus();
    }
    absl::Status Commit() {
      CBLOSS_RETURN_IF_ERROR(store_->StepDone(*store_->commit_, "committing"));
      active_ = false;
      return absl::OkStatus();
    }

   private:
    SqliteDatasetStore* store_;
    bool active_ = false;
  };

  absl::Status Exec(absl::string_view sql,
                    absl::string_view action);  // requires mu_
  absl::Status Prepare(std::unique_ptr<Statement>& stmt,
                       absl::string_view sql);  // requires mu_
  // Runs a statement that returns no rows.
  absl::Status StepDone(Statement& stmt,
                        absl::string_view action);  // requires mu_
  // Binds `stmt`'s parameters first, then runs it.
  absl::Status StepDone(const Statement::InUse& stmt,
                        absl::string_view action);  // requires mu_
  absl::StatusOr<int> ReadUserVersion();
  absl::Status Migrate(const std::string& path);  // requires mu_

  // Version and times of `name`, or nullopt if absent.
  absl::StatusOr<absl::optional<Meta>> ReadMetaLocked(
      absl::string_view name);  // requires mu_
  // The full dataset `name` (and its Meta into `meta` unless null);
  // NOT_FOUND if absent.
  absl::StatusOr<v1::Dataset> ReadLocked(absl::string_view name,
                                         Meta* meta);  // requires mu_
  // Decodes the current row of a (version, create_time_ns, update_time_ns,
  // dataset, name) result for dataset `name`; DATA_LOSS if the record is
  // corrupt.
  absl::StatusOr<v1::Dataset> DecodeRow(sqlite3_stmt* stmt,
                                        absl::string_view name,
                                        Meta* meta);  // requires mu_
  // Inserts or replaces `dataset`, whose name, version and times are set.
  absl::Status WriteLocked(const v1::Dataset& dataset,
                           const Meta& meta);  // requires mu_

  // The first run (by name) that refers to dataset `name`; "" if none.
  absl::StatusOr<std::string> FirstRunOfDatasetLocked(
      absl::string_view name);  // requires mu_
  // The run `name` (and its Meta into `meta` unless null); NOT_FOUND if
  // absent, DATA_LOSS if its record is corrupt.
  absl::StatusOr<v1::Run> ReadRunLocked(absl::string_view name,
                                        Meta* meta);  // requires mu_
  // Decodes the current row of a (version, create_time_ns, update_time_ns,
  // run, name, dataset) result for run `name`.
  absl::StatusOr<v1::Run> DecodeRunRow(sqlite3_stmt* stmt,
                                       absl::string_view name,
                                       Meta* meta);  // requires mu_
  // Inserts a new run (`insert`) or rewrites an existing one's record,
  // version and update time.
  absl::Status WriteRunLocked(const v1::Run& run, const Meta& meta,
                              bool insert);  // requires mu_

  // std::mutex: ThreadSanitizer sees it (core/thread_pool.h says why).
  std::mutex mu_;
  sqlite3* const db_;                       // Owned; used only with mu_ held.
  std::unique_ptr<Statement> begin_;        // guarded by mu_
  std::unique_ptr<Statement> commit_;       // guarded by mu_
  std::unique_ptr<Statement> rollback_;     // guarded by mu_
  std::unique_ptr<Statement> select_meta_;  // guarded by mu_
  std::unique_ptr<Statement> select_one_;   // guarded by mu_
  std::unique_ptr<Statement> select_page_;  // guarded by mu_
  std::unique_ptr<Statement> upsert_;       // guarded by mu_
  std::unique_ptr<Statement> delete_;       // guarded by mu_
  std::unique_ptr<Statement> first_run_of_dataset_;        // guarded by mu_
  std::unique_ptr<Statement> select_run_;                  // guarded by mu_
  std::unique_ptr<Statement> select_run_page_;             // guarded by mu_
  std::unique_ptr<Statement> select_run_page_of_dataset_;  // guarded by mu_
  std::unique_ptr<Statement> insert_run_;                  // guarded by mu_
  std::unique_ptr<Statement> update_run_;                  // guarded by mu_
  std::unique_ptr<Statement> delete_run_;                  // guarded by mu_
};

absl::Status SqliteDatasetStore::Exec(absl::string_view sql,
                                      absl::string_view action) {
  std::string owned(sql);
  int rc = sqlite3_exec(db_, owned.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqliteError(rc, db_, action);
  return absl::OkStatus();
}

absl::Status SqliteDatasetStore::Prepare(std::unique_ptr<Statement>& stmt,
                                         absl::string_view sql) {
  stmt = std::make_unique<Statement>();
  return stmt->Prepare(db_, sql);
}

absl::Status SqliteDatasetStore::StepDone(Statement& stmt,
                                          absl::string_view action) {
  return StepDone(stmt.Use(), action);
}

absl::Status SqliteDatasetStore::StepDone(const Statement::InUse& stmt,
                                          absl::string_view action) {
  int rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_DONE) return SqliteError(rc, db_, action);
  return absl::OkStatus();
}

absl::StatusOr<int> SqliteDatasetStore::ReadUserVersion() {
  Statement stmt;
  CBLOSS_RETURN_IF_ERROR(stmt.Prepare(db_, "PRAGMA user_version"));
  Statement::InUse use = stmt.Use();
  int rc = sqlite3_step(use.get());
  if (rc != SQLITE_ROW) {
    return SqliteError(rc, db_, "reading the schema version");
  }
  return sqlite3_column_int(use.get(), 0);
}

absl::Status SqliteDatasetStore::Migrate(const std::string& path) {
  CBLOSS_RETURN_IF_ERROR(
      Exec("BEGIN IMMEDIATE", "beginning the schema migration"));
  // Rolls back unless the COMMIT below succeeds.
  struct RollbackGuard {
    sqlite3* db;
    ~RollbackGuard() {
      if (!sqlite3_get_autocommit(db)) {
        sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      }
    }
  } guard{db_};

  absl::StatusOr<int> version = ReadUserVersion();
  if (!version.ok()) return version.status();
  if (*version > kSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("database '", path, "' has schema version ", *version,
                     ", newer than the newest this cbloss understands (",
                     kSchemaVersion, "); use a newer cbloss"));
  }
  if (*version < 0) {
    return absl::DataLossError(absl::StrCat(
        "database '", path, "' has invalid schema version ", *version));
  }
  if (*version == kSchemaVersion) return absl::OkStatus();
  for (int v = *version; v < kSchemaVersion; ++v) {
    CBLOSS_RETURN_IF_ERROR(Exec(
        kMigrations[v],
        absl::StrCat("migrating the schema from version ", v, " to ", v + 1)));
  }
  CBLOSS_RETURN_IF_ERROR(
      Exec(absl::StrCat("PRAGMA user_version = ", kSchemaVersion),
           "writing the schema version"));
  return Exec("COMMIT", "committing the schema migration");
}

absl::Status SqliteDatasetStore::Init(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  int rc = sqlite3_extended_result_codes(db_, 1);
  if (rc != SQLITE_OK) return SqliteError(rc, db_, "configuring " + path);
  rc = sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  if (rc != SQLITE_OK) return SqliteError(rc, db_, "configuring " + path);

  // The first statement reads the file: a non-database fails here.
  {
    Statement journal;
    CBLOSS_RETURN_IF_ERROR(journal.Prepare(db_, "PRAGMA journal_mode = WAL"));
    Statement::InUse use = journal.Use();
    rc = sqlite3_step(use.get());
    if (rc != SQLITE_ROW) {
      return SqliteError(rc, db_, "enabling WAL on " + path);
    }
    const unsigned char* mode = sqlite3_column_text(use.get(), 0);
    if (mode == nullptr ||
        std::strcmp(reinterpret_cast<const char*>(mode), "wal") != 0) {
      return absl::UnavailableError(absl::StrCat(
          "cannot enable WAL journal mode on '", path, "' (got '",
          mode != nullptr ? reinterpret_cast<const char*>(mode) : "", "')"));
    }
  }
  CBLOSS_RETURN_IF_ERROR(
      Exec("PRAGMA synchronous = FULL", "setting synchronous=FULL"));
  CBLOSS_RETURN_IF_ERROR(Migrate(path));

  CBLOSS_RETURN_IF_ERROR(Prepare(begin_, "BEGIN IMMEDIATE"));
  CBLOSS_RETURN_IF_ERROR(Prepare(commit_, "COMMIT"));
  CBLOSS_RETURN_IF_ERROR(Prepare(rollback_, "ROLLBACK"));
  CBLOSS_RETURN_IF_ERROR(
      Prepare(select_meta_,
              "SELECT version, create_time_ns, update_time_ns FROM datasets "
              "WHERE name = ?1"));
  CBLOSS_RETURN_IF_ERROR(
      Prepare(select_one_,
              "SELECT version, create_time_ns, update_time_ns, dataset, name "
              "FROM datasets WHERE name = ?1"));
  CBLOSS_RETURN_IF_ERROR(
      Prepare(select_page_,
              "SELECT version, create_time_ns, update_time_ns, dataset, name "
              "FROM datasets WHERE name > ?1 ORDER BY name LIMIT ?2"));
  CBLOSS_RETURN_IF_ERROR(Prepare(
      upsert_,
      "INSERT INTO datasets (name, version, create_time_ns, update_time_ns, "
      "dataset) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET "
      "version = excluded.version, create_time_ns = excluded.create_time_ns, "
      "update_time_ns = excluded.update_time_ns, dataset = excluded.dataset"));
  CBLOSS_RETURN_IF_ERROR(
      Prepare(delete_, "DELETE FROM datasets WHERE name = ?1"));
  CBLOSS_RETURN_IF_ERROR(Prepare(
      first_run_of_dataset_,
      "SELECT name FROM runs WHERE dataset = ?1 ORDER BY name LIMIT 1"));
  constexpr char kRunColumns[] =
      "SELECT version, create_time_ns, update_time_ns, run, name, dataset "
      "FROM runs ";
  CBLOSS_RETURN_IF_ERROR(
      Prepare(select_run_, absl::StrCat(kRunColumns, "WHERE name = ?1")));
  CBLOSS_RETURN_IF_ERROR(Prepare(
      select_run_page_,
      absl::StrCat(kRunColumns, "WHERE name > ?1 ORDER BY name LIMIT ?2")));
  CBLOSS_RETURN_IF_ERROR(Prepare(
      select_run_page_of_dataset_,
      absl::StrCat(kRunColumns,
                   "WHERE dataset = ?3 AND name > ?1 ORDER BY name LIMIT ?2")));
  CBLOSS_RETURN_IF_ERROR(
      Prepare(insert_run_,
              "INSERT INTO runs (name, dataset, version, create_time_ns, "
              "update_time_ns, run) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
  CBLOSS_RETURN_IF_ERROR(
      Prepare(update_run_,
              "UPDATE runs SET version = ?3, update_time_ns = ?5, run = ?6 "
              "WHERE name = ?1"));
  CBLOSS_RETURN_IF_ERROR(
      Prepare(delete_run_, "DELETE FROM runs WHERE name = ?1"));
  return absl::OkStatus();
}

absl::StatusOr<absl::optional<SqliteDatasetStore::Meta>>
SqliteDatasetStore::ReadMetaLocked(absl::string_view name) {
  Statement::InUse stmt = select_meta_->Use();
  BindText(stmt.get(), 1, name);
  int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) return absl::optional<Meta>();
  if (rc != SQLITE_ROW) {
    return SqliteError(rc, db_, absl::StrCat("reading dataset ", Quoted(name)));
  }
  Meta meta;
  meta.version = static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 0));
  meta.create_time_ns = sqlite3_column_int64(stmt.get(), 1);
  meta.update_time_ns = sqlite3_column_int64(stmt.get(), 2);
  return absl::optional<Meta>(meta);
}

absl::StatusOr<v1::Dataset> SqliteDatasetStore::DecodeRow(
    sqlite3_stmt* stmt, absl::string_view name, Meta* meta) {
  if (sqlite3_column_type(stmt, 3) != SQLITE_BLOB) {
    return absl::DataLossError(absl::StrCat("stored record of dataset ",
                                            Quoted(name), " is not a blob"));
  }
  const void* blob = sqlite3_column_blob(stmt, 3);
  int size = sqlite3_column_bytes(stmt, 3);
  v1::Dataset dataset;
  if (size > 0 && blob == nullptr) {
    return SqliteError(sqlite3_errcode(db_), db_,
                       absl::StrCat("reading dataset ", Quoted(name)));
  }
  if (!dataset.ParseFromArray(blob, size)) {
    return absl::DataLossError(
        absl::StrCat("stored record of dataset ", Quoted(name), " (", size,
                     " bytes) is corrupt and cannot be parsed"));
  }
  // The columns are authoritative.
  Meta columns;
  columns.version = static_cast<uint64_t>(sqlite3_column_int64(stmt, 0));
  columns.create_time_ns = sqlite3_column_int64(stmt, 1);
  columns.update_time_ns = sqlite3_column_int64(stmt, 2);
  dataset.set_name(std::string(name));
  StampDataset(columns, &dataset);
  if (meta != nullptr) *meta = columns;
  return dataset;
}

absl::StatusOr<v1::Dataset> SqliteDatasetStore::ReadLocked(
    absl::string_view name, Meta* meta) {
  Statement::InUse stmt = select_one_->Use();
  BindText(stmt.get(), 1, name);
  int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) return NotFound(name);
  if (rc != SQLITE_ROW) {
    return SqliteError(rc, db_, absl::StrCat("reading dataset ", Quoted(name)));
  }
  return DecodeRow(stmt.get(), name, meta);
}

absl::Status SqliteDatasetStore::WriteLocked(const v1::Dataset& dataset,
                                             const Meta& meta) {
  std::string blob;
  if (!dataset.SerializeToString(&blob)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset ", Quoted(dataset.name()), " cannot be serialized (",
        dataset.ByteSizeLong(), " bytes)"));
  }
  Statement::InUse stmt = upsert_->Use();
  BindText(stmt.get(), 1, dataset.name());
  sqlite3_bind_int64(stmt.get(), 2, static_cast<sqlite3_int64>(meta.version));
  sqlite3_bind_int64(stmt.get(), 3, meta.create_time_ns);
  sqlite3_bind_int64(stmt.get(), 4, meta.update_time_ns);
  sqlite3_bind_blob64(stmt.get(), 5, blob.data(), blob.size(), SQLITE_STATIC);
  return StepDone(stmt,
                  absl::StrCat("writing dataset ", Quoted(dataset.name())));
}

absl::StatusOr<v1::Dataset> SqliteDatasetStore::Put(
    const v1::Dataset& dataset, absl::optional<uint64_t> expected_version) {
  if (dataset.name().empty()) {
    return absl::InvalidArgumentError("dataset.name must not be empty");
  }
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  CBLOSS_RETURN_IF_ERROR(txn.Begin());
  absl::StatusOr<absl::optional<Meta>> current = ReadMetaLocked(dataset.name());
  if (!current.ok()) return current.status();
  Meta meta;
  absl::StatusOr<v1::Dataset> stored =
      RecordForPut(dataset, *current, expected_version, NowUnixNanos(), &meta);
  if (!stored.ok()) return stored.status();
  if (current->has_value()) {
    absl::StatusOr<std::string> run = FirstRunOfDatasetLocked(dataset.name());
    if (!run.ok()) return run.status();
    if (!run->empty()) {
      absl::StatusOr<v1::Dataset> old = ReadLocked(dataset.name(), nullptr);
      if (!old.ok()) return old.status();
      CBLOSS_RETURN_IF_ERROR(CheckReplacementKeepsClasses(
          dataset, old->class_counts_size(), *run));
    }
  }
  CBLOSS_RETURN_IF_ERROR(WriteLocked(*stored, meta));
  CBLOSS_RETURN_IF_ERROR(txn.Commit());
  return stored;
}

absl::StatusOr<v1::Dataset> SqliteDatasetStore::Get(absl::string_view name) {
  std::lock_guard<std::mutex> lock(mu_);
  return ReadLocked(name, /*meta=*/nullptr);
}

absl::StatusOr<std::vector<v1::Dataset>> SqliteDatasetStore::List(
    absl::string_view start_after, int limit) {
  if (limit <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit must be positive, got ", limit));
  }
  std::lock_guard<std::mutex> lock(mu_);
  Statement::InUse stmt = select_page_->Use();
  BindText(stmt.get(), 1, start_after);
  sqlite3_bind_int(stmt.get(), 2, limit);
  std::vector<v1::Dataset> datasets;
  for (;;) {
    int rc = sqlite3_step(stmt.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqliteError(rc, db_, "listing datasets");
    absl::string_view name(
        reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 4)),
        static_cast<size_t>(sqlite3_column_bytes(stmt.get(), 4)));
    absl::StatusOr<v1::Dataset> dataset =
        DecodeRow(stmt.get(), name, /*meta=*/nullptr);
    if (!dataset.ok()) return dataset.status();
    datasets.push_back(*std::move(dataset));
  }
  return datasets;
}

absl::Status SqliteDatasetStore::Delete(
    absl::string_view name, absl::optional<uint64_t> expected_version) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  CBLOSS_RETURN_IF_ERROR(txn.Begin());
  absl::StatusOr<absl::optional<Meta>> current = ReadMetaLocked(name);
  if (!current.ok()) return current.status();
  if (!current->has_value()) return NotFound(name);
  CBLOSS_RETURN_IF_ERROR(
      CheckExpectedVersion(name, (*current)->version, expected_version));
  absl::StatusOr<std::string> run = FirstRunOfDatasetLocked(name);
  if (!run.ok()) return run.status();
  if (!run->empty()) return DatasetUsedByRun(name, *run);
  {
    Statement::InUse stmt = delete_->Use();
    BindText(stmt.get(), 1, name);
    CBLOSS_RETURN_IF_ERROR(
        StepDone(stmt, absl::StrCat("deleting dataset ", Quoted(name))));
  }
  return txn.Commit();
}

absl::StatusOr<v1::Dataset> SqliteDatasetStore::AddClassCounts(
    absl::string_view name, absl::Span<const int64_t> deltas,
    absl::Span<const int32_t> labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  CBLOSS_RETURN_IF_ERROR(txn.Begin());
  Meta meta;
  absl::StatusOr<v1::Dataset> dataset = ReadLocked(name, &meta);
  if (!dataset.ok()) return dataset.status();

  CBLOSS_RETURN_IF_ERROR(UpdateClassCounts(name, deltas, labels, NowUnixNanos(),
                                           &meta, &*dataset));
  CBLOSS_RETURN_IF_ERROR(WriteLocked(*dataset, meta));
  CBLOSS_RETURN_IF_ERROR(txn.Commit());
  return *std::move(dataset);
}

// ---------------------------------------------------------------------- Runs

absl::StatusOr<std::string> SqliteDatasetStore::FirstRunOfDatasetLocked(
    absl::string_view name) {
  Statement::InUse stmt = first_run_of_dataset_->Use();
  BindText(stmt.get(), 1, name);
  int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) return std::string();
  if (rc != SQLITE_ROW) {
    return SqliteError(
        rc, db_, absl::StrCat("reading the runs of dataset ", Quoted(name)));
  }
  return std::string(
      reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 0)),
      static_cast<size_t>(sqlite3_column_bytes(stmt.get(), 0)));
}

absl::StatusOr<v1::Run> SqliteDatasetStore::DecodeRunRow(sqlite3_stmt* stmt,
                                                         absl::string_view name,
                                                         Meta* meta) {
  // The columns are authoritative, and readable (DeleteRun checks the
  // version) even if the record is not.
  Meta columns;
  columns.version = static_cast<uint64_t>(sqlite3_column_int64(stmt, 0));
  columns.create_time_ns = sqlite3_column_int64(stmt, 1);
  columns.update_time_ns = sqlite3_column_int64(stmt, 2);
  if (meta != nullptr) *meta = columns;
  if (sqlite3_column_type(stmt, 3) != SQLITE_BLOB) {
    return absl::DataLossError(
        absl::StrCat("stored record of run ", Quoted(name), " is not a blob"));
  }
  const void* blob = sqlite3_column_blob(stmt, 3);
  int size = sqlite3_column_bytes(stmt, 3);
  if (size > 0 && blob == nullptr) {
    return SqliteError(sqlite3_errcode(db_), db_,
                       absl::StrCat("reading run ", Quoted(name)));
  }
  v1::Run run;
  if (!run.ParseFromArray(blob, size)) {
    return absl::DataLossError(
        absl::StrCat("stored record of run ", Quoted(name), " (", size,
                     " bytes) is corrupt and cannot be parsed"));
  }
  run.set_name(std::string(name));
  run.set_dataset(
      std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 5)),
                  static_cast<size_t>(sqlite3_column_bytes(stmt, 5))));
  StampRun(columns, &run);
  return run;
}

absl::StatusOr<v1::Run> SqliteDatasetStore::ReadRunLocked(
    absl::string_view name, Meta* meta) {
  Statement::InUse stmt = select_run_->Use();
  BindText(stmt.get(), 1, name);
  int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) return RunNotFound(name);
  if (rc != SQLITE_ROW) {
    return SqliteError(rc, db_, absl::StrCat("reading run ", Quoted(name)));
  }
  return DecodeRunRow(stmt.get(), name, meta);
}

absl::Status SqliteDatasetStore::WriteRunLocked(const v1::Run& run,
                                                const Meta& meta, bool insert) {
  std::string blob;
  if (!run.SerializeToString(&blob)) {
    return absl::InvalidArgumentError(
        absl::StrCat("run ", Quoted(run.name()), " cannot be serialized (",
                     run.ByteSizeLong(), " bytes)"));
  }
  Statement::InUse stmt = (insert ? insert_run_ : update_run_)->Use();
  BindText(stmt.get(), 1, run.name());
  if (insert) {
    BindText(stmt.get(), 2, run.dataset());
    sqlite3_bind_int64(stmt.get(), 4, meta.create_time_ns);
  }
  sqlite3_bind_int64(stmt.get(), 3, static_cast<sqlite3_int64>(meta.version));
  sqlite3_bind_int64(stmt.get(), 5, meta.update_time_ns);
  sqlite3_bind_blob64(stmt.get(), 6, blob.data(), blob.size(), SQLITE_STATIC);
  return StepDone(stmt, absl::StrCat("writing run ", Quoted(run.name())));
}

absl::StatusOr<v1::Run> SqliteDatasetStore::CreateRun(const v1::Run& run) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  CBLOSS_RETURN_IF_ERROR(txn.Begin());
  absl::optional<v1::Dataset> dataset;
  if (!run.dataset().empty()) {
    absl::StatusOr<v1::Dataset> read = ReadLocked(run.dataset(), nullptr);
    if (!read.ok()) return read.status();
    dataset = *std::move(read);
  }
  Meta meta;
  absl::StatusOr<v1::Run> stored = RecordForCreateRun(
      run, dataset.has_value() ? &*dataset : nullptr, NowUnixNanos(), &meta);
  if (!stored.ok()) return stored.status();
  absl::StatusOr<v1::Run> existing = ReadRunLocked(run.name(), nullptr);
  if (existing.ok() || !absl::IsNotFound(existing.status())) {
    if (!existing.ok() && !absl::IsDataLoss(existing.status())) {
      return existing.status();
    }
    return absl::AlreadyExistsError(
        absl::StrCat("run ", Quoted(run.name()), " already exists"));
  }
  CBLOSS_RETURN_IF_ERROR(WriteRunLocked(*stored, meta, /*insert=*/true));
  CBLOSS_RETURN_IF_ERROR(txn.Commit());
  return stored;
}

absl::StatusOr<v1::Run> SqliteDatasetStore::GetRun(absl::string_view name) {
  std::lock_guard<std::mutex> lock(mu_);
  return ReadRunLocked(name, /*meta=*/nullptr);
}

absl::StatusOr<std::vector<v1::Run>> SqliteDatasetStore::ListRuns(
    absl::string_view start_after, int limit, absl::string_view dataset) {
  if (limit <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit must be positive, got ", limit));
  }
  std::lock_guard<std::mutex> lock(mu_);
  Statement::InUse stmt =
      (dataset.empty() ? select_run_page_ : select_run_page_of_dataset_)->Use();
  BindText(stmt.get(), 1, start_after);
  sqlite3_bind_int(stmt.get(), 2, limit);
  if (!dataset.empty()) BindText(stmt.get(), 3, dataset);
  std::vector<v1::Run> runs;
  for (;;) {
    int rc = sqlite3_step(stmt.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqliteError(rc, db_, "listing runs");
    absl::string_view name(
        reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 4)),
        static_cast<size_t>(sqlite3_column_bytes(stmt.get(), 4)));
    absl::StatusOr<v1::Run> run = DecodeRunRow(stmt.get(), name, nullptr);
    if (!run.ok()) return run.status();
    runs.push_back(*std::move(run));
  }
  return runs;
}

absl::Status SqliteDatasetStore::DeleteRun(
    absl::string_view name, absl::optional<uint64_t> expected_version) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  CBLOSS_RETURN_IF_ERROR(txn.Begin());
  Meta meta;
  absl::StatusOr<v1::Run> run = ReadRunLocked(name, &meta);
  // A corrupt record can still be deleted (its version column is intact).
  if (!run.ok() && !absl::IsDataLoss(run.status())) return run.status();
  CBLOSS_RETURN_IF_ERROR(
      CheckRunExpectedVersion(name, meta.version, expected_version));
  {
    Statement::InUse stmt = delete_run_->Use();
    BindText(stmt.get(), 1, name);
    CBLOSS_RETURN_IF_ERROR(
        StepDone(stmt, absl::StrCat("deleting run ", Quoted(name))));
  }
  return txn.Commit();
}

absl::StatusOr<std::vector<absl::StatusOr<v1::Run>>>
SqliteDatasetStore::ApplyRunUpdates(absl::Span<const RunUpdate> updates) {
  std::vector<absl::StatusOr<v1::Run>> results;
  results.reserve(updates.size());
  if (updates.empty()) return results;
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  CBLOSS_RETURN_IF_ERROR(txn.Begin());
  // Each run is read once and written once, however often it appears.
  struct Working {
    absl::StatusOr<v1::Run> run;
    Meta meta;
    bool changed = false;
  };
  std::map<std::string, Working, std::less<>> working;
  const int64_t now = NowUnixNanos();
  for (const RunUpdate& update : updates) {
    auto it = working.find(update.name);
    if (it == working.end()) {
      Working w{RunNotFound(update.name), Meta{}, false};
      w.run = ReadRunLocked(update.name, &w.meta);
      if (!w.run.ok() && !absl::IsNotFound(w.run.status()) &&
          !absl::IsDataLoss(w.run.status())) {
        return w.run.status();  // Storage failed: nothing is applied.
      }
      it = working.emplace(update.name, std::move(w)).first;
    }
    Working& w = it->second;
    if (!w.run.ok()) {
      results.push_back(w.run.status());
      continue;
    }
    absl::Status applied = ApplyRunUpdate(update, now, &w.meta, &*w.run);
    if (!applied.ok()) {
      results.push_back(applied);
      continue;
    }
    w.changed = true;
    results.push_back(*w.run);
  }
  for (const auto& [name, w] : working) {
    if (w.changed) {
      CBLOSS_RETURN_IF_ERROR(WriteRunLocked(*w.run, w.meta, /*insert=*/false));
    }
  }
  CBLOSS_RETURN_IF_ERROR(txn.Commit());
  return results;
}

// Makes sure `data_dir` is an existing, writable directory.
absl::Status PrepareDataDir(const std::string& data_dir) {
  namespace fs = std::filesystem;
  if (data_dir.empty()) {
    return absl::InvalidArgumentError("data_dir must not be empty");
  }
  std::error_code ec;
  const fs::path dir(data_dir);
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot create data_dir '", data_dir, "': ", ec.message()));
    }
  }
  if (!fs::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("data_dir '", data_dir, "' is not a directory",
                     ec ? absl::StrCat(": ", ec.message()) : std::string()));
  }
  if (access(data_dir.c_str(), W_OK | X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data_dir '", data_dir, "' is not writable: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<DatasetStore>> OpenSqliteDatasetStore(
    const std::string& data_dir) {
  CBLOSS_RETURN_IF_ERROR(PrepareDataDir(data_dir));
  const std::string path =
      (std::filesystem::path(data_dir) / kSqliteDatabaseFileName).string();
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteError(rc, db, "opening " + path);
    sqlite3_close_v2(db);  // A no-op for nullptr.
    return status;
  }
  auto store = std::make_unique<SqliteDatasetStore>(db);
  CBLOSS_RETURN_IF_ERROR(store->Init(path));
  return std::unique_ptr<DatasetStore>(std::move(store));
}

}  // namespace cbloss
