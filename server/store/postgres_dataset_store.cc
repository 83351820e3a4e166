#include "server/store/postgres_dataset_store.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/types/optional.h"
#include "absl/types/span.h"
#include "cbloss/v1/cbloss.pb.h"
#include "core/status_macros.h"
#include "google/protobuf/timestamp.pb.h"
#include "server/store/dataset_records.h"

namespace cbloss {
namespace {

using Clock = std::chrono::steady_clock;

// kMigrations[i] upgrades the schema from version i to i + 1; append, never
// edit. Names use the "C" collation: byte order, as List promises.
constexpr const char* kMigrations[] = {
    // 0 -> 1: one row per dataset (the serialized v1::Dataset plus
    // authoritative copies of its version and times) and the trigger that
    // tells every replica about every committed change. Payloads are
    // limited to 8000 bytes: longer names notify '' ("reload everything").
    R"sql(
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
    )sql",
    // 1 -> 2: one row per run (LOSS.md section 11): the serialized v1::Run
    // (with its statistics) plus authoritative copies of its dataset ('' =
    // none), version and times; the index serves ListRuns' dataset filter
    // and the "is this dataset used by a run" checks. Committed changes
    // notify channel cbloss_runs with the run's name, as for datasets.
    R"sql(
      CREATE TABLE cbloss_runs (
        name TEXT COLLATE "C" NOT NULL PRIMARY KEY,
        dataset TEXT COLLATE "C" NOT NULL,
        version BIGINT NOT NULL CHECK (version >= 1),
        create_time_ns BIGINT NOT NULL,
        update_time_ns BIGINT NOT NULL,
        run BYTEA NOT NULL
      );
      CREATE INDEX cbloss_runs_by_dataset ON cbloss_runs (dataset, name);
      CREATE FUNCTION cbloss_runs_notify() RETURNS trigger
      LANGUAGE plpgsql AS $$
      DECLARE
        changed TEXT := COALESCE(NEW.name, OLD.name);
      BEGIN
        IF octet_length(changed) > 7000 THEN
          changed := '';
        END IF;
        PERFORM pg_notify('cbloss_runs', changed);
        RETURN NULL;
      END
      $$;
      CREATE TRIGGER cbloss_runs_changed
        AFTER INSERT OR UPDATE OR DELETE ON cbloss_runs
        FOR EACH ROW EXECUTE FUNCTION cbloss_runs_notify();
    )sql",
};
constexpr int kSchemaVersion =
    static_cast<int>(sizeof(kMigrations) / sizeof(kMigrations[0]));

// First key of cbloss's advisory locks ("cbl"); the second is the name's
// hash, or 0 for the schema migration.
constexpr char kLockNameSql[] =
    "SELECT pg_advisory_xact_lock(6513516, hashtext($1))";
constexpr char kLockSchemaSql[] = "SELECT pg_advisory_xact_lock(6513516, 0)";

constexpr auto kMinBackoff = std::chrono::milliseconds(100);
constexpr auto kMaxBackoff = std::chrono::seconds(2);
// The listener checks its connection with a query this often when idle.
constexpr auto kHeartbeat = std::chrono::seconds(1);

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

void IgnoreNotice(void* /*arg*/, const char* /*message*/) {}

std::string Trimmed(const char* message) {
  return std::string(
      absl::StripTrailingAsciiWhitespace(message != nullptr ? message : ""));
}

// Maps a SQLSTATE (may be empty) to a canonical code.
absl::StatusCode CodeForSqlState(absl::string_view state, bool connection_ok) {
  if (!connection_ok || state.empty()) return absl::StatusCode::kUnavailable;
  if (absl::StartsWith(state, "08") || absl::StartsWith(state, "53") ||
      absl::StartsWith(state, "57") || absl::StartsWith(state, "40") ||
      state == "55P03" || state == "25006") {
    return absl::StatusCode::kUnavailable;
  }
  if (state == "XX001" || state == "XX002") return absl::StatusCode::kDataLoss;
  return absl::StatusCode::kInternal;
}

// Opens a connection. Defaults the DSN may override: connect_timeout 5 s,
// TCP keepalives and a 30 s TCP user timeout, so a vanished peer (network
// partition) fails calls with UNAVAILABLE instead of hanging them; and
// server-side limits on a live but stuck database: lock_timeout 10 s (a
// write waiting for another replica's dataset lock) and statement_timeout
// 30 s, both UNAVAILABLE (SQLSTATE 55P03, 57014). A DSN that sets its own
// `options` replaces these two.
absl::StatusOr<PGconn*> Connect(const std::string& dsn) {
  const char* const keys[] = {"connect_timeout",  "keepalives",
                              "keepalives_idle",  "keepalives_interval",
                              "keepalives_count", "tcp_user_timeout",
                              "options",          "fallback_application_name",
                              "dbname",           nullptr};
  const char* const values[] = {"5",
                                "1",
                                "10",
                                "5",
                                "3",
                                "30000",
                                "-c lock_timeout=10s -c statement_timeout=30s",
                                "cbloss-server",
                                dsn.c_str(),
                                nullptr};
  PGconn* conn = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (conn == nullptr) {
    return absl::ResourceExhaustedError("cannot allocate a libpq connection");
  }
  if (PQstatus(conn) != CONNECTION_OK) {
    absl::Status status = absl::UnavailableError(absl::StrCat(
        "cannot connect to PostgreSQL: ", Trimmed(PQerrorMessage(conn))));
    PQfinish(conn);
    return status;
  }
  PQsetNoticeProcessor(conn, IgnoreNotice, nullptr);
  return conn;
}

// A query parameter: text (NUL-terminated) or binary.
struct Param {
  std::string value;
  bool binary = false;
};

// Runs `sql` with `params`; results in binary format. Any status but
// PGRES_COMMAND_OK / PGRES_TUPLES_OK is an error.
absl::StatusOr<Result> Run(PGconn* conn, const char* sql,
                           const std::vector<Param>& params,
                           absl::string_view action) {
  std::vector<const char*> values;
  std::vector<int> lengths;
  std::vector<int> formats;
  for (const Param& p : params) {
    values.push_back(p.value.c_str());
    lengths.push_back(static_cast<int>(p.value.size()));
    formats.push_back(p.binary ? 1 : 0);
  }
  Result result(PQexecParams(conn, sql, static_cast<int>(params.size()),
                             nullptr, values.data(), lengths.data(),
                             formats.data(), /*resultFormat=*/1));
  const ExecStatusType status =
      result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return result;
  const bool connection_ok = PQstatus(conn) == CONNECTION_OK;
  const char* state =
      result ? PQresultErrorField(result.get(), PG_DIAG_SQLSTATE) : nullptr;
  std::string detail = Trimmed(result ? PQresultErrorMessage(result.get())
                                      : PQerrorMessage(conn));
  if (detail.empty()) detail = Trimmed(PQerrorMessage(conn));
  return absl::Status(
      CodeForSqlState(state != nullptr ? state : "", connection_ok),
      absl::StrCat("postgresql error while ", action, ": ", detail));
}

// Text-format execution of a script (several statements, no parameters).
absl::Status RunScript(PGconn* conn, const char* sql,
                       absl::string_view action) {
  Result result(PQexec(conn, sql));
  const ExecStatusType status =
      result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
    return absl::OkStatus();
  }
  const char* state =
      result ? PQresultErrorField(result.get(), PG_DIAG_SQLSTATE) : nullptr;
  return absl::Status(CodeForSqlState(state != nullptr ? state : "",
                                      PQstatus(conn) == CONNECTION_OK),
                      absl::StrCat("postgresql error while ", action, ": ",
                                   Trimmed(PQerrorMessage(conn))));
}

int64_t GetInt64(const PGresult* r, int row, int column) {
  const unsigned char* p =
      reinterpret_cast<const unsigned char*>(PQgetvalue(r, row, column));
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return static_cast<int64_t>(v);
}

int32_t GetInt32(const PGresult* r, int row, int column) {
  const unsigned char* p =
      reinterpret_cast<const unsigned char*>(PQgetvalue(r, row, column));
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | p[i];
  return static_cast<int32_t>(v);
}

Param Int64Param(int64_t v) { return Param{std::to_string(v), false}; }
Param TextParam(absl::string_view s) { return Param{std::string(s), false}; }

class PostgresDatasetStore final : public DatasetStore {
 public:
  explicit PostgresDatasetStore(std::string dsn) : dsn_(std::move(dsn)) {}
  PostgresDatasetStore(const PostgresDatasetStore&) = delete;
  PostgresDatasetStore& operator=(const PostgresDatasetStore&) = delete;
  ~PostgresDatasetStore() override {
    StopWatching();
    if (conn_ != nullptr) PQfinish(conn_);
  }

  // Connects and migrates the schema.
  absl::Status Init();

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

  bool IsShared() const override { return true; }
  absl::Status Watch(ChangeListener* listener) override;
  void StopWatching() override;

 private:
  using Meta = RecordMeta;

  // BEGIN ... COMMIT on conn_; rolled back on destruction unless committed.
  class Transaction {
   public:
    explicit Transaction(PostgresDatasetStore* store) : store_(store) {}
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction() {
      if (active_ && store_->conn_ != nullptr) {
        Result r(PQexec(store_->conn_, "ROLLBACK"));
      }
    }
    absl::Status Begin() {
      CBLOSS_RETURN_IF_ERROR(
          store_->Exec("BEGIN", {}, "beginning a transaction").status());
      active_ = true;
      return absl::OkStatus();
    }
    // Takes the write lock of dataset `name` (until commit or rollback).
    absl::Status LockName(absl::string_view name) {
      return store_
          ->Exec(kLockNameSql, {TextParam(name)},
                 absl::StrCat("locking dataset ", Quoted(name)))
          .status();
    }
    absl::Status Commit() {
      active_ = false;
      return store_->Exec("COMMIT", {}, "committing").status();
    }

   private:
    PostgresDatasetStore* store_;
    bool active_ = false;
  };

  // Makes conn_ usable: reconnects if needed, with backoff.
  absl::Status ConnectLocked();  // requires mu_
  // Runs a statement on conn_ (ConnectLocked first); drops conn_ if the
  // connection broke.
  absl::StatusOr<Result> Exec(const char* sql, const std::vector<Param>& params,
                              absl::string_view action);  // requires mu_
  absl::Status MigrateLocked();                           // requires mu_
  // `lock` is appended to the query: "", " FOR UPDATE" or " FOR SHARE".
  absl::StatusOr<absl::optional<Meta>> ReadMetaLocked(
      absl::string_view name, const char* lock = "");  // requires mu_
  absl::StatusOr<v1::Dataset> ReadLocked(
      absl::string_view name, Meta* meta,
      const char* lock = "");  // requires mu_
  // The first run (by name) that refers to dataset `name`; "" if none.
  absl::StatusOr<std::string> FirstRunOfDatasetLocked(
      absl::string_view name);  // requires mu_
  // After a dataset write's row lock: FAILED_PRECONDITION if the change
  // would break a run (dataset_store.h). `replacement` null: a Delete.
  absl::Status CheckRunsAllowLocked(absl::string_view name,
                                    const v1::Dataset* replacement);
  absl::Status WriteLocked(const v1::Dataset& dataset,
                           const Meta& meta);  // requires mu_

  // The listener thread's body.
  void ListenLoop(PGconn* conn);
  // Connects and LISTENs; the listener's connection.
  absl::StatusOr<PGconn*> ConnectListener();
  // Sleeps for `d` unless StopWatching is called; false if it was.
  bool SleepUnlessStopped(Clock::duration d);

  const std::string dsn_;

  std::mutex mu_;
  PGconn* conn_ = nullptr;                 // guarded by mu_
  Clock::time_point next_attempt_{};       // guarded by mu_
  Clock::duration backoff_ = kMinBackoff;  // guarded by mu_
  std::string last_error_;                 // guarded by mu_

  // Listener. watch_mu_ guards stop_ (and the cv); thread_ is touched only
  // by Watch and StopWatching, which callers do not race.
  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  bool stop_ = false;  // guarded by watch_mu_
  std::atomic<bool> stop_flag_{false};
  ChangeListener* listener_ = nullptr;
  std::thread thread_;
};

absl::Status PostgresDatasetStore::ConnectLocked() {
  if (conn_ != nullptr) {
    if (PQstatus(conn_) == CONNECTION_OK) return absl::OkStatus();
    PQfinish(conn_);
    conn_ = nullptr;
  }
  const Clock::time_point now = Clock::now();
  if (now < next_attempt_) {
    return absl::UnavailableError(absl::StrCat(
        "PostgreSQL dataset store unavailable, reconnecting (last error: ",
        last_error_, ")"));
  }
  absl::StatusOr<PGconn*> conn = Connect(dsn_);
  if (!conn.ok()) {
    last_error_ = std::string(conn.status().message());
    next_attempt_ = now + backoff_;
    backoff_ = std::min<Clock::duration>(backoff_ * 2, kMaxBackoff);
    return conn.status();
  }
  conn_ = *conn;
  backoff_ = kMinBackoff;
  next_attempt_ = Clock::time_point{};
  return absl::OkStatus();
}

absl::StatusOr<Result> PostgresDatasetStore::Exec(
    const char* sql, const std::vector<Param>& params,
    absl::string_view action) {
  CBLOSS_RETURN_IF_ERROR(ConnectLocked());
  absl::StatusOr<Result> result = Run(conn_, sql, params, action);
  if (!result.ok() && PQstatus(conn_) != CONNECTION_OK) {
    // The next call reconnects (at once: the database may be back).
    last_error_ = std::string(result.status().message());
    PQfinish(conn_);
    conn_ = nullptr;
  }
  return result;
}

absl::Status PostgresDatasetStore::MigrateLocked() {
  Transaction txn(this);
  CBLOSS_RETURN_IF_ERROR(txn.Begin());
  CBLOSS_RETURN_IF_ERROR(
      Exec(kLockSchemaSql, {}, "locking the schema").status());
  CBLOSS_RETURN_IF_ERROR(
      Exec("CREATE TABLE IF NOT EXISTS cbloss_schema_version ("
           "singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton), "
           "version INTEGER NOT NULL)",
           {}, "creating cbloss_schema_version")
          .status());
  absl::StatusOr<Result> read =
      Exec("SELECT version FROM cbloss_schema_version", {},
           "reading the schema "
           "version");
  if (!read.ok()) return read.status();
  int version = 0;
  if (PQntuples(read->get()) == 0) {
    CBLOSS_RETURN_IF_ERROR(
        Exec("INSERT INTO cbloss_schema_version (version) VALUES (0)", {},
             "writing the schema version")
            .status());
  } else {
    version = GetInt32(read->get(), 0, 0);
  }
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("PostgreSQL database has cbloss schema version ", version,
                     ", newer than the newest this cbloss understands (",
                     kSchemaVersion, "); use a newer cbloss"));
  }
  if (version < 0) {
    return absl::DataLossError(absl::StrCat(
        "PostgreSQL database has invalid cbloss schema version ", version));
  }
  if (version == kSchemaVersion) return txn.Commit();
  for (int v = version; v < kSchemaVersion; ++v) {
    CBLOSS_RETURN_IF_ERROR(RunScript(
        conn_, kMigrations[v],
        absl::StrCat("migrating the schema from version ", v, " to ", v + 1)));
  }
  CBLOSS_RETURN_IF_ERROR(
      Exec("UPDATE cbloss_schema_version SET version = $1::integer",
           {TextParam(std::to_string(kSchemaVersion))},
           "writing the schema version")
          .status());
  return txn.Commit();
}

absl::Status PostgresDatasetStore::Init() {
  std::lock_guard<std::mutex> lock(mu_);
  CBLOSS_RETURN_IF_ERROR(ConnectLocked());
  return MigrateLocked();
}

absl::StatusOr<absl::optional<PostgresDatasetStore::Meta>>
PostgresDatasetStore::ReadMetaLocked(absl::string_view name, const char* lock) {
  const std::string sql = absl::StrCat(
      "SELECT version, create_time_ns, update_time_ns FROM "
      "cbloss_datasets WHERE name = $1",
      lock);
  absl::StatusOr<Result> r =
      Exec(sql.c_str(), {TextParam(name)},
           absl::StrCat("reading dataset ", Quoted(name)));
  if (!r.ok()) return r.status();
  if (PQntuples(r->get()) == 0) return absl::optional<Meta>();
  Meta meta;
  meta.version = static_cast<uint64_t>(GetInt64(r->get(), 0, 0));
  meta.create_time_ns = GetInt64(r->get(), 0, 1);
  meta.update_time_ns = GetInt64(r->get(), 0, 2);
  return absl::optional<Meta>(meta);
}

// Decodes row `row` of a (version, create_time_ns, update_time_ns, dataset,
// name) result.
absl::StatusOr<v1::Dataset> DecodeRow(const PGresult* r, int row,
                                      absl::string_view name,
                                      absl::optional<uint64_t>* version_out,
                                      int64_t* create_out,
                                      int64_t* update_out) {
  v1::Dataset dataset;
  const int size = PQgetlength(r, row, 3);
  if (!dataset.ParseFromArray(PQgetvalue(r, row, 3), size)) {
    return absl::DataLossError(
        absl::StrCat("stored record of dataset ", Quoted(name), " (", size,
                     " bytes) is corrupt and cannot be parsed"));
  }
  const uint64_t version = static_cast<uint64_t>(GetInt64(r, row, 0));
  const int64_t create = GetInt64(r, row, 1);
  const int64_t update = GetInt64(r, row, 2);
  dataset.set_name(std::string(name));
  dataset.set_version(version);
  SetTimestamp(create, dataset.mutable_create_time());
  SetTimestamp(update, dataset.mutable_update_time());
  if (version_out != nullptr) *version_out = version;
  if (create_out != nullptr) *create_out = create;
  if (update_out != nullptr) *update_out = update;
  return dataset;
}

constexpr char kSelectColumns[] =
    "SELECT version, create_time_ns, update_time_ns, dataset, name FROM "
    "cbloss_datasets ";

absl::StatusOr<v1::Dataset> PostgresDatasetStore::ReadLocked(
    absl::string_view name, Meta* meta, const char* lock) {
  const std::string sql = absl::StrCat(kSelectColumns, "WHERE name = $1", lock);
  absl::StatusOr<Result> r =
      Exec(sql.c_str(), {TextParam(name)},
           absl::StrCat("reading dataset ", Quoted(name)));
  if (!r.ok()) return r.status();
  if (PQntuples(r->get()) == 0) return NotFound(name);
  absl::optional<uint64_t> version;
  Meta m;
  absl::StatusOr<v1::Dataset> d = DecodeRow(
      r->get(), 0, name, &version, &m.create_time_ns, &m.update_time_ns);
  if (!d.ok()) return d.status();
  m.version = *version;
  if (meta != nullptr) *meta = m;
  return d;
}

absl::Status PostgresDatasetStore::WriteLocked(const v1::Dataset& dataset,
                                               const Meta& meta) {
  std::string blob;
  if (!dataset.SerializeToString(&blob)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset ", Quoted(dataset.name()), " cannot be serialized (",
        dataset.ByteSizeLong(), " bytes)"));
  }
  return Exec(
             "INSERT INTO cbloss_datasets (name, version, create_time_ns, "
             "update_time_ns, dataset) VALUES ($1, $2::bigint, $3::bigint, "
             "$4::bigint, $5::bytea) ON CONFLICT (name) DO UPDATE SET "
             "version = excluded.version, create_time_ns = "
             "excluded.create_time_ns, update_time_ns = "
             "excluded.update_time_ns, dataset = excluded.dataset",
             {TextParam(dataset.name()),
              Int64Param(static_cast<int64_t>(meta.version)),
              Int64Param(meta.create_time_ns), Int64Param(meta.update_time_ns),
              Param{std::move(blob), true}},
             absl::StrCat("writing dataset ", Quoted(dataset.name())))
      .status();
}

absl::StatusOr<v1::Dataset> PostgresDatasetStore::Put(
    const v1::Dataset& dataset, absl::optional<uint64_t> expected_version) {
  if (dataset.name().empty()) {
    return absl::InvalidArgumentError("dataset.name must not be empty");
  }
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  CBLOSS_RETURN_IF_ERROR(txn.Begin());
  CBLOSS_RETURN_IF_ERROR(txn.LockName(dataset.name()));
  // The row lock waits for CreateRuns that hold it FOR SHARE, so the runs
  // check below sees every run committed against this dataset.
  absl::StatusOr<absl::optional<Meta>> current =
      ReadMetaLocked(dataset.name(), " FOR UPDATE");
  if (!current.ok()) return current.status();
  Meta meta;
  absl::StatusOr<v1::Dataset> stored =
      RecordForPut(dataset, *current, expected_version, NowUnixNanos(), &meta);
  if (!stored.ok()) return stored.status();
  if (current->has_value()) {
    CBLOSS_RETURN_IF_ERROR(CheckRunsAllowLocked(dataset.name(), &dataset));
  }
  CBLOSS_RETURN_IF_ERROR(WriteLocked(*stored, meta));
  CBLOSS_RETURN_IF_ERROR(txn.Commit());
  return stored;
}

absl::StatusOr<v1::Dataset> PostgresDatasetStore::Get(absl::string_view name) {
  std::lock_guard<std::mutex> lock(mu_);
  return ReadLocked(name, /*meta=*/nullptr);
}

absl::StatusOr<std::vector<v1::Dataset>> PostgresDatasetStore::List(
    absl::string_view start_after, int limit) {
  if (limit <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit must be positive, got ", limit));
  }
  std::lock_guard<std::mutex> lock(mu_);
  const std::string sql = absl::StrCat(
      kSelectColumns, "WHERE name > $1 ORDER BY name LIMIT $2::integer");
  absl::StatusOr<Result> r =
      Exec(sql.c_str(), {TextParam(start_after), Int64Param(limit)},
           "listing datasets");
  if (!r.ok()) return r.status();
  std::vector<v1::Dataset> datasets;
  const int rows = PQntuples(r->get());
  datasets.reserve(static_cast<size_t>(rows));
  for (int i = 0; i < rows; ++i) {
    absl::string_view name(PQgetvalue(r->get(), i, 4),
                           static_cast<size_t>(PQgetlength(r->get(), i, 4)));
    absl::StatusOr<v1::Dataset> d =
        DecodeRow(r->get(), i, name, nullptr, nullptr, nullptr);
    if (!d.ok()) return d.status();
    datasets.push_back(*std::move(d));
  }
  return datasets;
}

absl::Status PostgresDatasetStore::Delete(
    absl::string_view name, absl::optional<uint64_t> expected_version) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  CBLOSS_RETURN_IF_ERROR(txn.Begin());
  CBLOSS_RETURN_IF_ERROR(txn.LockName(name));
  absl::StatusOr<absl::optional<Meta>> current =
      ReadMetaLocked(name, " FOR UPDATE");
  if (!current.ok()) return current.status();
  if (!current->has_value()) return NotFound(name);
  CBLOSS_RETURN_IF_ERROR(
      CheckExpectedVersion(name, (*current)->version, expected_version));
  CBLOSS_RETURN_IF_ERROR(CheckRunsAllowLocked(name, /*replacement=*/nullptr));
  CBLOSS_RETURN_IF_ERROR(Exec("DELETE FROM cbloss_datasets WHERE name = $1",
                              {TextParam(name)},
                              absl::StrCat("deleting dataset ", Quoted(name)))
                             .status());
  return txn.Commit();
}

absl::StatusOr<v1::Dataset> PostgresDatasetStore::AddClassCounts(
    absl::string_view name, absl::Span<const int64_t> deltas,
    absl::Span<const int32_t> labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  CBLOSS_RETURN_IF_ERROR(txn.Begin());
  // The lock makes read-modify-write atomic against every other replica.
  CBLOSS_RETURN_IF_ERROR(txn.LockName(name));
  Meta meta;
  absl::StatusOr<v1::Dataset> dataset = ReadLocked(name, &meta);
  if (!dataset.ok()) return dataset.status();

  CBLOSS_RETURN_IF_ERROR(UpdateClassCounts(name, deltas, labels, NowUnixNanos(),
                                           &meta, &*dataset));
  CBLOSS_RETURN_IF_ERROR(WriteLocked(*dataset, meta));
  CBLOSS_RETURN_IF_ERROR(txn.Commit());
  return *std::move(dataset);
}

// ------------------------------------------------------------------- Runs

absl::StatusOr<std::string> PostgresDatasetStore::FirstRunOfDatasetLocked(
    absl::string_view name) {
  absl::StatusOr<Result> r = Exec(
      "SELECT name FROM cbloss_runs WHERE dataset = $1 ORDER BY name LIMIT 1",
      {TextParam(name)},
      absl::StrCat("reading the runs of dataset ", Quoted(name)));
  if (!r.ok()) return r.status();
  if (PQntuples(r->get()) == 0) return std::string();
  return std::string(PQgetvalue(r->get(), 0, 0),
                     static_cast<size_t>(PQgetlength(r->get(), 0, 0)));
}

absl::Status PostgresDatasetStore::CheckRunsAllowLocked(
    absl::string_view name, const v1::Dataset* replacement) {
  absl::StatusOr<std::string> run = FirstRunOfDatasetLocked(name);
  if (!run.ok()) return run.status();
  if (run->empty()) return absl::OkStatus();
  if (replacement == nullptr) return DatasetUsedByRun(name, *run);
  absl::StatusOr<v1::Dataset> current = ReadLocked(name, /*meta=*/nullptr);
  if (!current.ok()) return current.status();
  return CheckReplacementKeepsClasses(*replacement,
                                      current->class_counts_size(), *run);
}

constexpr char kSelectRunColumns[] =
    "SELECT version, create_time_ns, update_time_ns, run, name, dataset FROM "
    "cbloss_runs ";

// Decodes row `row` of a kSelectRunColumns result into `*meta` (always,
// even if the record is corrupt) and the run.
absl::StatusOr<v1::Run> DecodeRunRow(const PGresult* r, int row,
                                     RecordMeta* meta) {
  meta->version = static_cast<uint64_t>(GetInt64(r, row, 0));
  meta->create_time_ns = GetInt64(r, row, 1);
  meta->update_time_ns = GetInt64(r, row, 2);
  const absl::string_view name(PQgetvalue(r, row, 4),
                               static_cast<size_t>(PQgetlength(r, row, 4)));
  v1::Run run;
  const int size = PQgetlength(r, row, 3);
  if (!run.ParseFromArray(PQgetvalue(r, row, 3), size)) {
    return absl::DataLossError(
        absl::StrCat("stored record of run ", Quoted(name), " (", size,
                     " bytes) is corrupt and cannot be parsed"));
  }
  run.set_name(std::string(name));
  run.set_dataset(std::string(PQgetvalue(r, row, 5),
                              static_cast<size_t>(PQgetlength(r, row, 5))));
  StampRun(*meta, &run);
  return run;
}

// Type OIDs of the array elements ApplyRunUpdates sends (pg_type.dat).
constexpr uint32_t kInt8Oid = 20;
constexpr uint32_t kTextOid = 25;
constexpr uint32_t kByteaOid = 17;

void AppendBigEndian(uint64_t v, int bytes, std::string* out) {
  for (int i = bytes - 1; i >= 0; --i) {
    out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
}

// A one-dimensional array in PostgreSQL's binary format (array_recv) of
// `elements`, each already in its type's binary form: no text escaping or
// hex, so hundreds of run records go in one parameter cheaply.
Param BinaryArray(uint32_t element_oid,
                  const std::vector<std::string>& elements) {
  std::string out;
  AppendBigEndian(1, 4, &out);  // Dimensions.
  AppendBigEndian(0, 4, &out);  // Flags: no NULLs.
  AppendBigEndian(element_oid, 4, &out);
  AppendBigEndian(elements.size(), 4, &out);
  AppendBigEndian(1, 4, &out);  // Lower bound.
  for (const std::string& e : elements) {
    AppendBigEndian(e.size(), 4, &out);
    out += e;
  }
  return Param{std::move(out), true};
}

std::string Int8Binary(int64_t v) {
  std::string out;
  AppendBigEndian(static_cast<uint64_t>(v), 8, &out);
  return out;
}

absl::StatusOr<v1::Run> PostgresDatasetStore::CreateRun(const v1::Run& run) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  CBLOSS_RETURN_IF_ERROR(txn.Begin());
  absl::optional<v1::Dataset> dataset;
  if (!run.dataset().empty()) {
    // FOR SHARE: a concurrent Delete or class-changing Put of the dataset
    // (which lock its row FOR UPDATE first) waits for this transaction and
    // then sees the run, or this waits for it and sees its outcome.
    absl::StatusOr<v1::Dataset> read =
        ReadLocked(run.dataset(), /*meta=*/nullptr, " FOR SHARE");
    if (!read.ok()) return read.status();
    dataset = *std::move(read);
  }
  Meta meta;
  absl::StatusOr<v1::Run> stored = RecordForCreateRun(
      run, dataset.has_value() ? &*dataset : nullptr, NowUnixNanos(), &meta);
  if (!stored.ok()) return stored.status();
  std::string blob;
  if (!stored->SerializeToString(&blob)) {
    return absl::InvalidArgumentError(
        absl::StrCat("run ", Quoted(run.name()), " cannot be serialized (",
                     stored->ByteSizeLong(), " bytes)"));
  }
  absl::StatusOr<Result> inserted = Exec(
      "INSERT INTO cbloss_runs (name, dataset, version, create_time_ns, "
      "update_time_ns, run) VALUES ($1, $2, $3::bigint, $4::bigint, "
      "$5::bigint, $6::bytea) ON CONFLICT (name) DO NOTHING",
      {TextParam(stored->name()), TextParam(stored->dataset()),
       Int64Param(static_cast<int64_t>(meta.version)),
       Int64Param(meta.create_time_ns), Int64Param(meta.update_time_ns),
       Param{std::move(blob), true}},
      absl::StrCat("writing run ", Quoted(run.name())));
  if (!inserted.ok()) return inserted.status();
  if (std::strcmp(PQcmdTuples(inserted->get()), "1") != 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("run ", Quoted(run.name()), " already exists"));
  }
  CBLOSS_RETURN_IF_ERROR(txn.Commit());
  return stored;
}

absl::StatusOr<v1::Run> PostgresDatasetStore::GetRun(absl::string_view name) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string sql = absl::StrCat(kSelectRunColumns, "WHERE name = $1");
  absl::StatusOr<Result> r = Exec(sql.c_str(), {TextParam(name)},
                                  absl::StrCat("reading run ", Quoted(name)));
  if (!r.ok()) return r.status();
  if (PQntuples(r->get()) == 0) return RunNotFound(name);
  Meta meta;
  return DecodeRunRow(r->get(), 0, &meta);
}

absl::StatusOr<std::vector<v1::Run>> PostgresDatasetStore::ListRuns(
    absl::string_view start_after, int limit, absl::string_view dataset) {
  if (limit <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit must be positive, got ", limit));
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Param> params = {TextParam(start_after), Int64Param(limit)};
  std::string sql = absl::StrCat(kSelectRunColumns, "WHERE name > $1 ");
  if (!dataset.empty()) {
    absl::StrAppend(&sql, "AND dataset = $3 ");
    params.push_back(TextParam(dataset));
  }
  absl::StrAppend(&sql, "ORDER BY name LIMIT $2::integer");
  absl::StatusOr<Result> r = Exec(sql.c_str(), params, "listing runs");
  if (!r.ok()) return r.status();
  std::vector<v1::Run> runs;
  const int rows = PQntuples(r->get());
  runs.reserve(static_cast<size_t>(rows));
  for (int i = 0; i < rows; ++i) {
    Meta meta;
    absl::StatusOr<v1::Run> run = DecodeRunRow(r->get(), i, &meta);
    if (!run.ok()) return run.status();
    runs.push_back(*std::move(run));
  }
  return runs;
}

absl::Status PostgresDatasetStore::DeleteRun(
    absl::string_view name, absl::optional<uint64_t> expected_version) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  CBLOSS_RETURN_IF_ERROR(txn.Begin());
  absl::StatusOr<Result> r =
      Exec("SELECT version FROM cbloss_runs WHERE name = $1 FOR UPDATE",
           {TextParam(name)}, absl::StrCat("reading run ", Quoted(name)));
  if (!r.ok()) return r.status();
  if (PQntuples(r->get()) == 0) return RunNotFound(name);
  CBLOSS_RETURN_IF_ERROR(CheckRunExpectedVersion(
      name, static_cast<uint64_t>(GetInt64(r->get(), 0, 0)), expected_version));
  CBLOSS_RETURN_IF_ERROR(Exec("DELETE FROM cbloss_runs WHERE name = $1",
                              {TextParam(name)},
                              absl::StrCat("deleting run ", Quoted(name)))
                             .status());
  return txn.Commit();
}

absl::StatusOr<std::vector<absl::StatusOr<v1::Run>>>
PostgresDatasetStore::ApplyRunUpdates(absl::Span<const RunUpdate> updates) {
  std::vector<absl::StatusOr<v1::Run>> results;
  results.reserve(updates.size());
  if (updates.empty()) return results;
  // Each run is read once and written once, however often it appears.
  struct Working {
    absl::StatusOr<v1::Run> run;
    Meta meta;
    bool changed = false;
  };
  std::map<std::string, Working, std::less<>> working;
  for (const RunUpdate& update : updates) {
    working.emplace(update.name, Working{RunNotFound(update.name), Meta{}});
  }
  std::vector<std::string> names;
  names.reserve(working.size());
  for (const auto& entry : working) names.push_back(entry.first);

  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  CBLOSS_RETURN_IF_ERROR(txn.Begin());
  // One query locks every run, in name order: two replicas flushing the
  // same runs queue up instead of deadlocking. A run deleted meanwhile is
  // not returned (NOT_FOUND below).
  const std::string select =
      absl::StrCat(kSelectRunColumns,
                   "WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE");
  absl::StatusOr<Result> r = Exec(
      select.c_str(), {BinaryArray(kTextOid, names)}, "reading runs to update");
  if (!r.ok()) return r.status();
  for (int i = 0; i < PQntuples(r->get()); ++i) {
    const std::string name(PQgetvalue(r->get(), i, 4),
                           static_cast<size_t>(PQgetlength(r->get(), i, 4)));
    auto it = working.find(name);
    if (it == working.end()) continue;
    it->second.run = DecodeRunRow(r->get(), i, &it->second.meta);
  }

  const int64_t now = NowUnixNanos();
  for (const RunUpdate& update : updates) {
    Working& w = working.find(update.name)->second;
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

  // One statement writes every changed run.
  std::vector<std::string> changed_names;
  std::vector<std::string> versions;
  std::vector<std::string> updated;
  std::vector<std::string> records;
  for (const auto& [name, w] : working) {
    if (!w.changed) continue;
    std::string blob;
    if (!w.run->SerializeToString(&blob)) {
      return absl::InternalError(
          absl::StrCat("run ", Quoted(name), " cannot be serialized (",
                       w.run->ByteSizeLong(), " bytes)"));
    }
    changed_names.push_back(name);
    versions.push_back(Int8Binary(static_cast<int64_t>(w.meta.version)));
    updated.push_back(Int8Binary(w.meta.update_time_ns));
    records.push_back(std::move(blob));
  }
  if (!changed_names.empty()) {
    CBLOSS_RETURN_IF_ERROR(
        Exec("UPDATE cbloss_runs AS r SET version = u.version, "
             "update_time_ns = u.update_time_ns, run = u.run FROM "
             "unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[]) "
             "AS u(name, version, update_time_ns, run) WHERE r.name = u.name",
             {BinaryArray(kTextOid, changed_names),
              BinaryArray(kInt8Oid, versions), BinaryArray(kInt8Oid, updated),
              BinaryArray(kByteaOid, records)},
             "writing runs")
            .status());
  }
  CBLOSS_RETURN_IF_ERROR(txn.Commit());
  return results;
}

// ------------------------------------------------------------------ Watch

absl::StatusOr<PGconn*> PostgresDatasetStore::ConnectListener() {
  absl::StatusOr<PGconn*> conn = Connect(dsn_);
  if (!conn.ok()) return conn.status();
  absl::Status listen =
      RunScript(*conn, "LISTEN cbloss_datasets; LISTEN cbloss_runs",
                "subscribing to changes");
  if (!listen.ok()) {
    PQfinish(*conn);
    return listen;
  }
  return conn;
}

absl::Status PostgresDatasetStore::Watch(ChangeListener* listener) {
  if (thread_.joinable()) {
    return absl::FailedPreconditionError("the store is already watched");
  }
  absl::StatusOr<PGconn*> conn = ConnectListener();
  if (!conn.ok()) return conn.status();
  listener_ = listener;
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    stop_ = false;
  }
  stop_flag_ = false;
  thread_ = std::thread([this, c = *conn] { ListenLoop(c); });
  return absl::OkStatus();
}

void PostgresDatasetStore::StopWatching() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    stop_ = true;
  }
  stop_flag_ = true;
  watch_cv_.notify_all();
  thread_.join();
}

bool PostgresDatasetStore::SleepUnlessStopped(Clock::duration d) {
  std::unique_lock<std::mutex> lock(watch_mu_);
  return !watch_cv_.wait_for(lock, d, [this] { return stop_; });
}

void PostgresDatasetStore::ListenLoop(PGconn* conn) {
  Clock::duration backoff = kMinBackoff;
  Clock::time_point last_heartbeat = Clock::now();
  // Drops the subscription after a failure: the listener learns first.
  auto lose = [&](const absl::Status& why) {
    listener_->OnWatchLost(why);
    if (conn != nullptr) PQfinish(conn);
    conn = nullptr;
  };
  while (!stop_flag_) {
    if (conn == nullptr) {
      if (!SleepUnlessStopped(backoff)) break;
      backoff = std::min<Clock::duration>(backoff * 2, kMaxBackoff);
      absl::StatusOr<PGconn*> fresh = ConnectListener();
      if (!fresh.ok()) continue;
      conn = *fresh;
      {
        // The database is back: let the next call reconnect at once.
        std::lock_guard<std::mutex> lock(mu_);
        next_attempt_ = Clock::time_point{};
      }
      // Changes made while disconnected were not notified.
      if (absl::Status s = listener_->OnResync(); !s.ok()) {
        lose(s);
        continue;
      }
      backoff = kMinBackoff;
      last_heartbeat = Clock::now();
    }
    pollfd pfd{PQsocket(conn), POLLIN, 0};
    const int ready = poll(&pfd, 1, /*timeout_ms=*/100);
    if (ready < 0 && errno != EINTR) {
      lose(absl::UnavailableError(absl::StrCat(
          "poll on the listener connection failed: ", std::strerror(errno))));
      continue;
    }
    if (PQconsumeInput(conn) == 0 || PQstatus(conn) != CONNECTION_OK) {
      lose(absl::UnavailableError(
          absl::StrCat("lost the PostgreSQL change subscription: ",
                       Trimmed(PQerrorMessage(conn)))));
      continue;
    }
    absl::Status handled = absl::OkStatus();
    while (PGnotify* n = PQnotifies(conn)) {
      const std::string name = n->extra != nullptr ? n->extra : "";
      const bool run =
          n->relname != nullptr && std::strcmp(n->relname, "cbloss_runs") == 0;
      PQfreemem(n);
      if (!handled.ok()) continue;  // Drain; a resync follows.
      if (name.empty()) {
        handled = listener_->OnResync();
      } else {
        handled = run ? listener_->OnRunChanged(name)
                      : listener_->OnDatasetChanged(name);
      }
    }
    if (!handled.ok()) {
      lose(handled);
      continue;
    }
    // A silent peer (network partition) is noticed by a query.
    if (Clock::now() - last_heartbeat >= kHeartbeat) {
      last_heartbeat = Clock::now();
      if (absl::Status s = RunScript(conn, "SELECT 1",
                                     "checking the "
                                     "subscription");
          !s.ok()) {
        lose(s);
      }
    }
  }
  if (conn != nullptr) PQfinish(conn);
}

}  // namespace

bool IsPostgresDsn(absl::string_view store) {
  return absl::StartsWith(store, "postgresql://") ||
         absl::StartsWith(store, "postgres://");
}

std::string RedactDsn(absl::string_view dsn) {
  std::string out(dsn);
  // URI: scheme://user:password@host...
  const size_t scheme = out.find("://");
  if (scheme != std::string::npos) {
    const size_t start = scheme + 3;
    const size_t at = out.find('@', start);
    const size_t slash = out.find('/', start);
    if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
      const size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) {
        out.replace(colon + 1, at - colon - 1, "***");
      }
    }
  }
  // password=... as a URI query parameter or a key=value pair.
  for (size_t pos = out.find("password="); pos != std::string::npos;
       pos = out.find("password=", pos + 1)) {
    const size_t value = pos + std::strlen("password=");
    size_t end = out.find_first_of("& ", value);
    if (end == std::string::npos) end = out.size();
    out.replace(value, end - value, "***");
  }
  return out;
}

absl::StatusOr<std::unique_ptr<DatasetStore>> OpenPostgresDatasetStore(
    const std::string& dsn) {
  if (dsn.empty()) {
    return absl::InvalidArgumentError("PostgreSQL DSN must not be empty");
  }
  auto store = std::make_unique<PostgresDatasetStore>(dsn);
  CBLOSS_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<DatasetStore>(std::move(store));
}

}  // namespace cbloss
