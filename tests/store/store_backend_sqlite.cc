// StoreBackend for SQLite: a fresh data_dir under $TMPDIR per test.

#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/store/sqlite_dataset_store.h"
#include "tests/store/store_backend.h"

namespace cbloss {
namespace {

class SqliteBackend final : public StoreBackend {
 public:
  absl::Status SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        absl::StrCat((tmp != nullptr && *tmp != '\0') ? tmp : "/tmp",
                     "/cbloss-store-test-XXXXXX");
    if (mkdtemp(pattern.data()) == nullptr) {
      return absl::InternalError(
          absl::StrCat("mkdtemp: ", std::strerror(errno)));
    }
    root_ = pattern;
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<DatasetStore>> Open() override {
    return OpenSqliteDatasetStore(location());
  }
  void TearDown() override {
    std::error_code ec;
    if (!root_.empty()) std::filesystem::remove_all(root_, ec);
  }
  std::string location() const override { return root_ + "/data"; }

 private:
  std::string root_;
};

}  // namespace

std::unique_ptr<StoreBackend> MakeStoreBackend() {
  return std::make_unique<SqliteBackend>();
}

}  // namespace cbloss
