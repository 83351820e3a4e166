// StoreBackend for PostgreSQL: a fresh database per test on the server the
// ctest fixture `postgres` started; dropped afterwards.

#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/store/postgres_dataset_store.h"
#include "tests/store/store_backend.h"

namespace cbloss {

absl::Status PgExec(const std::string& dsn, const std::string& sql) {
  PGconn* conn = PQconnectdb(dsn.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    absl::Status s = absl::UnavailableError(
        absl::StrCat("connect ", dsn, ": ", PQerrorMessage(conn)));
    PQfinish(conn);
    return s;
  }
  PGresult* r = PQexec(conn, sql.c_str());
  const ExecStatusType status = PQresultStatus(r);
  absl::Status s = absl::OkStatus();
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    s = absl::InternalError(absl::StrCat(sql, ": ", PQresultErrorMessage(r)));
  }
  PQclear(r);
  PQfinish(conn);
  return s;
}

namespace {

absl::StatusOr<std::string> DsnPrefix() {
  const char* file = std::getenv("CBLOSS_PG_DSN_PREFIX_FILE");
  if (file == nullptr || *file == '\0') {
    return absl::FailedPreconditionError(
        "CBLOSS_PG_DSN_PREFIX_FILE is not set: run through ctest, whose "
        "fixture `postgres` starts the PostgreSQL server");
  }
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  std::string prefix(absl::StripAsciiWhitespace(text.str()));
  if (prefix.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no PostgreSQL DSN in ", file,
                     " (did the fixture test store.postgres_start fail?)"));
  }
  return prefix;
}

class PostgresBackend final : public StoreBackend {
 public:
  absl::Status SetUp() override {
    absl::StatusOr<std::string> prefix = DsnPrefix();
    if (!prefix.ok()) return prefix.status();
    prefix_ = *prefix;
    std::random_device rd;
    db_ = absl::StrCat("cbloss_test_", getpid(), "_", rd() % 1000000);
    return PgExec(prefix_ + "postgres", "CREATE DATABASE " + db_);
  }
  absl::StatusOr<std::unique_ptr<DatasetStore>> Open() override {
    return OpenPostgresDatasetStore(location());
  }
  void TearDown() override {
    if (!db_.empty()) {
      (void)PgExec(prefix_ + "postgres",
                   "DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)");
    }
  }
  std::string location() const override { return prefix_ + db_; }

 private:
  std::string prefix_;
  std::string db_;
};

}  // namespace

std::unique_ptr<StoreBackend> MakeStoreBackend() {
  return std::make_unique<PostgresBackend>();
}

}  // namespace cbloss
