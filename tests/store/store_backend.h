// The storage a store test runs on: a fresh SQLite data_dir or a fresh
// PostgreSQL database per test (tests/store/store_backend_*.cc; each test
// binary links exactly one of them).
//
// The PostgreSQL backend needs the server that the ctest fixture `postgres`
// starts (tests/store/pg_server.py): it reads the DSN prefix
// ("postgresql://postgres@127.0.0.1:PORT/") from the file named by
// $CBLOSS_PG_DSN_PREFIX_FILE. A missing server fails the test.
//
// Thread-safety: Open may be called from any thread (and a forked child);
// SetUp and TearDown from the test's thread only.

#ifndef CBLOSS_TESTS_STORE_STORE_BACKEND_H_
#define CBLOSS_TESTS_STORE_STORE_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/store/dataset_store.h"

namespace cbloss {

class StoreBackend {
 public:
  virtual ~StoreBackend() = default;
  // Creates empty storage for one test.
  virtual absl::Status SetUp() = 0;
  // Opens a new store (new handle or connection) on that storage.
  virtual absl::StatusOr<std::unique_ptr<DatasetStore>> Open() = 0;
  // Removes the storage.
  virtual void TearDown() = 0;
  // Where the storage is: the data_dir, or the database's DSN.
  virtual std::string location() const = 0;
};

std::unique_ptr<StoreBackend> MakeStoreBackend();

// PostgreSQL backend only: runs `sql` on the test's database (or on the
// server's `postgres` database if `admin`), bypassing the store.
absl::Status PgExec(const std::string& dsn, const std::string& sql);

}  // namespace cbloss

#endif  // CBLOSS_TESTS_STORE_STORE_BACKEND_H_
