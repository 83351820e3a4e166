// Copyright 2026 The cbloss Authors.
//
// DatasetRegistry under concurrent writers and readers: every acknowledged
// increment lands exactly once, and a reader never sees a snapshot whose
// counts disagree with its version.

#include "server/dataset_registry.h"

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/store/sqlite_dataset_store.h"

namespace cbloss::server {
namespace {

class DatasetRegistryConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat(
               "cbloss-registry-test-", getpid(), "-",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    absl::StatusOr<std::unique_ptr<DatasetStore>> store =
        OpenSqliteDatasetStore(dir_.string());
    ASSERT_TRUE(store.ok()) << store.status();
    absl::StatusOr<std::unique_ptr<DatasetRegistry>> registry =
        DatasetRegistry::Create(*std::move(store));
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = *std::move(registry);
  }
  void TearDown() override {
    registry_.reset();
    std::filesystem::remove_all(dir_);
  }

  static v1::Dataset MakeDataset(const std::string& name,
                                 std::vector<int64_t> counts) {
    v1::Dataset d;
    d.set_name(name);
    for (int64_t c : counts) d.add_class_counts(c);
    return d;
  }

  std::filesystem::path dir_;
  std::unique_ptr<DatasetRegistry> registry_;
};

TEST_F(DatasetRegistryConcurrencyTest, AddsFromManyThreadsAllLandOnce) {
  ASSERT_TRUE(registry_->Put(MakeDataset("d", {0, 0}), absl::nullopt).ok());
  constexpr int kWriters = 4;
  constexpr int kReaders = 3;
  constexpr int kAddsPerWriter = 40;
  std::atomic<int> writers_left{kWriters};
  std::atomic<int> failed_adds{0};
  std::atomic<int> inconsistent_reads{0};
  std::atomic<int64_t> reads{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&] {
      const std::vector<int64_t> deltas = {1, 2};
      for (int i = 0; i < kAddsPerWriter; ++i) {
        if (!registry_->AddClassCounts("d", deltas, {}).ok()) ++failed_adds;
      }
      --writers_left;
    });
  }
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&] {
      while (writers_left.load() > 0) {
        absl::StatusOr<std::shared_ptr<const v1::Dataset>> d =
            registry_->Get("d");
        // Version 1 is the Put; every add is +1 version, +1 and +2 counts.
        if (!d.ok() ||
            (*d)->class_counts(0) !=
                static_cast<int64_t>((*d)->version()) - 1 ||
            (*d)->class_counts(1) != 2 * (*d)->class_counts(0)) {
          ++inconsistent_reads;
        }
        for (const auto& listed : registry_->List("", 10)) {
          if (listed->class_counts(1) != 2 * listed->class_counts(0)) {
            ++inconsistent_reads;
          }
        }
        ++reads;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failed_adds.load(), 0);
  EXPECT_EQ(inconsistent_reads.load(), 0);
  EXPECT_GT(reads.load(), 0);
  absl::StatusOr<std::shared_ptr<const v1::Dataset>> d = registry_->Get("d");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*d)->class_counts(0), kWriters * kAddsPerWriter);
  EXPECT_EQ((*d)->class_counts(1), 2 * kWriters * kAddsPerWriter);
  EXPECT_EQ((*d)->version(), 1u + kWriters * kAddsPerWriter);
}

TEST_F(DatasetRegistryConcurrencyTest, PutsAndDeletesRaceWithReaders) {
  constexpr int kNames = 8;
  constexpr int kRounds = 20;
  std::atomic<bool> done{false};
  std::atomic<int> unexpected{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      for (int round = 0; round < kRounds; ++round) {
        for (int n = w; n < kNames; n += 2) {
          const std::string name = absl::StrCat("n", n);
          if (!registry_->Put(MakeDataset(name, {round, 1}), absl::nullopt)
                   .ok()) {
            ++unexpected;
          }
          if (round % 3 == 2 && !registry_->Delete(name, absl::nullopt).ok()) {
            ++unexpected;
          }
        }
      }
    });
  }
  threads.emplace_back([&] {
    while (!done.load()) {
      for (int n = 0; n < kNames; ++n) {
        absl::StatusOr<std::shared_ptr<const v1::Dataset>> d =
            registry_->Get(absl::StrCat("n", n));
        if (!d.ok() && d.status().code() != absl::StatusCode::kNotFound) {
          ++unexpected;
        }
        if (d.ok() && (*d)->class_counts(1) != 1) ++unexpected;
      }
      if (registry_->size() > kNames) ++unexpected;
    }
  });
  for (int i = 0; i < 2; ++i) threads[i].join();
  done = true;
  threads[2].join();
  EXPECT_EQ(unexpected.load(), 0);
  // kRounds - 1 = 19 is not 2 mod 3: every name was put last, not deleted.
  EXPECT_EQ(registry_->size(), kNames);
  for (int n = 0; n < kNames; ++n) {
    absl::StatusOr<std::shared_ptr<const v1::Dataset>> d =
        registry_->Get(absl::StrCat("n", n));
    ASSERT_TRUE(d.ok()) << n;
    EXPECT_EQ((*d)->class_counts(0), kRounds - 1);
  }
}

}  // namespace
}  // namespace cbloss::server
