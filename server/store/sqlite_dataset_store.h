// The embedded DatasetStore: one SQLite database, `<data_dir>/cbloss.sqlite3`.
//
// Thread-safety: the returned store is safe for concurrent use from many
// threads. It owns a single SQLite connection guarded by a mutex, so calls
// are serialised; each call is one short transaction (BEGIN IMMEDIATE for
// every read-check-write, ApplyRunUpdates included: one transaction for the
// whole batch, each run read and written once), which keeps the store
// simple and is ample for dataset metadata and run flush traffic. Several
// processes may open the same data_dir: SQLite's file locks plus a busy timeout
// serialise them.
//
// Durability: WAL journal with synchronous=FULL, so a write that returned OK
// survives a process crash or power loss.
//
// Schema: versioned with PRAGMA user_version; older schemas are migrated in
// one transaction at open, a newer schema (written by a newer cbloss) is
// refused with FAILED_PRECONDITION. Schema 1 holds the datasets; schema 2
// adds the runs (a database of schema 1 opens unchanged and gains them).
//
// Errors: SQLite's busy/locked, full-disk, read-only and I/O errors map to
// UNAVAILABLE, a corrupt database or stored record to DATA_LOSS, anything
// else to INTERNAL; messages carry SQLite's own text.

#ifndef CBLOSS_SERVER_STORE_SQLITE_DATASET_STORE_H_
#define CBLOSS_SERVER_STORE_SQLITE_DATASET_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/store/dataset_store.h"

namespace cbloss {

// File name of the database inside data_dir.
inline constexpr char kSqliteDatabaseFileName[] = "cbloss.sqlite3";

// Opens (creating if needed) the store in `data_dir`; creates the directory
// and its parents if they do not exist. FAILED_PRECONDITION if data_dir is
// not a directory or cannot be created or written, or if the database has a
// newer schema; DATA_LOSS if the file is not a usable SQLite database;
// UNAVAILABLE on I/O errors.
absl::StatusOr<std::unique_ptr<DatasetStore>> OpenSqliteDatasetStore(
    const std::string& data_dir);

}  // namespace cbloss

#endif  // CBLOSS_SERVER_STORE_SQLITE_DATASET_STORE_H_
