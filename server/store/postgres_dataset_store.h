// The shared DatasetStore: one PostgreSQL database that every replica of the
// service uses (`cbloss-server --store=postgresql://...`).
//
// Thread-safety: the returned store is safe for concurrent use from many
// threads. It owns one connection for reads and writes, guarded by a mutex
// (calls are serialised per process, as with SQLite), and, once Watch is
// called, a second connection owned by a listener thread.
//
// Consistency between processes: every read-check-write of a dataset runs
// in one transaction that first takes a transaction-scoped advisory lock on
// the dataset's name, so expected_version checks and count increments from
// different replicas serialise and never lose an update. Runs use row
// locks: ApplyRunUpdates locks all its runs (SELECT ... FOR UPDATE, in name
// order, so two replicas' flushes queue instead of deadlocking), DeleteRun
// its run; CreateRun holds its dataset's row FOR SHARE while a dataset
// Delete or Put locks it FOR UPDATE before looking for runs, so the
// dataset/run rules of dataset_store.h hold between replicas too. Triggers
// NOTIFY channel `cbloss_datasets` (datasets) and `cbloss_runs` (runs) with
// the name on every committed change; Watch LISTENs to both and calls
// OnDatasetChanged / OnRunChanged.
//
// Outages: when the database goes away (restart, network), calls fail with
// UNAVAILABLE and the store reconnects on a later call, at most once per
// backoff interval (100 ms doubling to 2 s, reset by a success); calls in
// between fail fast with UNAVAILABLE. A write whose COMMIT was cut off is
// reported UNAVAILABLE although it may have committed (check its version).
// The listener reconnects with the same backoff and then asks for a resync.
//
// Schema: table cbloss_schema_version holds the schema version; older
// schemas are migrated in one transaction at open (serialised between
// replicas by an advisory lock), a newer schema is refused with
// FAILED_PRECONDITION.
//
// Errors: connection failures, shutdowns, resource and serialisation errors
// map to UNAVAILABLE, a stored record that does not parse to DATA_LOSS,
// anything else to INTERNAL. Messages never contain the password.

#ifndef CBLOSS_SERVER_STORE_POSTGRES_DATASET_STORE_H_
#define CBLOSS_SERVER_STORE_POSTGRES_DATASET_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/store/dataset_store.h"

namespace cbloss {

// True if `store` names a PostgreSQL database: a postgresql:// or
// postgres:// URI.
bool IsPostgresDsn(absl::string_view store);

// `dsn` with any password replaced by "***", fit for logs.
std::string RedactDsn(absl::string_view dsn);

// Connects to the database `dsn` (a libpq connection URI or key=value
// string), creates or migrates the schema. UNAVAILABLE if the database
// cannot be reached, FAILED_PRECONDITION if its schema is newer than this
// cbloss understands.
absl::StatusOr<std::unique_ptr<DatasetStore>> OpenPostgresDatasetStore(
    const std::string& dsn);

}  // namespace cbloss

#endif  // CBLOSS_SERVER_STORE_POSTGRES_DATASET_STORE_H_
