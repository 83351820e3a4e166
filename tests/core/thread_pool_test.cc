// Copyright 2026 The cbloss Authors.
//
// The pool runs every index once, nests without deadlock, and the engine's
// results are the same bits for any thread count.

#include "core/thread_pool.h"

#include <atomic>
#include <cstring>
#include <random>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "core/loss.h"
#include "gtest/gtest.h"
#include "tests/core/engine_runner.h"

namespace cbloss {
namespace {

using ::cbloss::testing::EngineCase;
using ::cbloss::testing::EngineRun;
using ::cbloss::testing::RunEngine;

TEST(ThreadPool, ParallelForRunsEveryIndexOnce) {
  ThreadPool pool(4);
  std::vector<std::atomic<int>> hits(1000);
  pool.ParallelFor(1000, [&](int64_t i) { hits[i].fetch_add(1); });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
}

TEST(ThreadPool, NestedParallelForFromEveryWorkerCompletes) {
  // Every worker is busy with a task that itself calls ParallelFor: progress
  // must come from the calling threads.
  ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  absl::BlockingCounter done(6);
  for (int t = 0; t < 6; ++t) {
    pool.Schedule([&] {
      pool.ParallelFor(100, [&](int64_t i) { total.fetch_add(i); });
      done.DecrementCount();
    });
  }
  done.Wait();
  EXPECT_EQ(total.load(), 6 * 4950);
}

EngineCase BigCase(LossType type, bool targets_mode, Reduction reduction) {
  EngineCase c;
  c.params.loss_type = type;
  c.params.reduction = reduction;
  c.rows = 3001;  // not a multiple of the chunk size
  c.cols = 37;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_int_distribution<int> label(0, 36);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (int j = 0; j < c.cols; ++j) c.counts.push_back(1 + 13 * j);
  for (int64_t k = 0; k < c.rows * c.cols; ++k) c.logits.push_back(normal(rng));
  for (int64_t i = 0; i < c.rows; ++i) {
    c.sample_weights.push_back(unit(rng));
    if (!targets_mode) c.labels.push_back(i % 11 == 0 ? -100 : label(rng));
  }
  if (targets_mode) {
    for (int64_t k = 0; k < c.rows * c.cols; ++k)
      c.targets.push_back(unit(rng));
  }
  return c;
}

void ExpectSameBits(const EngineRun& a, const EngineRun& b) {
  ASSERT_TRUE(a.status.ok()) << a.status;
  ASSERT_TRUE(b.status.ok()) << b.status;
  EXPECT_EQ(std::memcmp(&a.result.loss, &b.result.loss, sizeof(double)), 0)
      << a.result.loss << " vs " << b.result.loss;
  ASSERT_EQ(a.gradient.size(), b.gradient.size());
  EXPECT_EQ(std::memcmp(a.gradient.data(), b.gradient.data(),
                        a.gradient.size() * sizeof(float)),
            0);
  EXPECT_EQ(std::memcmp(a.per_sample_losses.data(), b.per_sample_losses.data(),
                        a.per_sample_losses.size() * sizeof(float)),
            0);
}

TEST(ThreadCountInvariance, SameBitsFor1_2_7Threads) {
  ThreadPool one(1), two(2), seven(7);
  struct Config {
    LossType type;
    bool targets;
    Reduction reduction;
  };
  for (const Config& cfg :
       {Config{LossType::kSoftmax, false, Reduction::kMean},
        Config{LossType::kSoftmaxBce, false, Reduction::kWeightedMean},
        Config{LossType::kSigmoid, true, Reduction::kMean},
        Config{LossType::kFocal, false, Reduction::kElementMean},
        Config{LossType::kFocal, true, Reduction::kSum}}) {
    SCOPED_TRACE(std::string(LossTypeName(cfg.type)));
    const EngineCase c = BigCase(cfg.type, cfg.targets, cfg.reduction);
    const EngineRun inline_run = RunEngine(c, nullptr);
    ExpectSameBits(inline_run, RunEngine(c, &one));
    ExpectSameBits(inline_run, RunEngine(c, &two));
    ExpectSameBits(inline_run, RunEngine(c, &seven));
  }
}

TEST(Cancellation, StopBetweenChunksReturnsCancelled) {
  const EngineCase c = BigCase(LossType::kSoftmax, false, Reduction::kMean);
  ClassTerms terms;
  terms.weights.assign(c.cols, 1.0);
  std::vector<float> grad(c.rows * c.cols);
  LossBatch batch{c.rows, c.cols, c.logits, c.labels, {}, {}, {}};
  ComputeOptions options;
  int polls = 0;
  options.should_stop = [&] { return ++polls > 2; };
  absl::StatusOr<LossResult> r =
      ComputeLoss(c.params, terms, batch, {{}, absl::MakeSpan(grad)}, options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace cbloss
