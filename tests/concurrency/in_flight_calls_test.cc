// Copyright 2026 The cbloss Authors.
//
// InFlightCalls, which the drain on SIGTERM waits on: counts from many
// threads, and AwaitIdle wakes when the last call finishes.

#include "server/in_flight_calls.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace cbloss::server {
namespace {

TEST(InFlightCalls, CountsStartsAndFinishesFromManyThreads) {
  InFlightCalls calls;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        calls.Started();
        calls.Finished();
      }
      calls.Started();  // one call per thread stays in flight
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(calls.count(), 4);
  // Nothing finishes them: AwaitIdle gives up and reports what is left.
  EXPECT_EQ(calls.AwaitIdle(absl::Milliseconds(10)), 4);
}

TEST(InFlightCalls, AwaitIdleWakesWhenTheLastCallFinishes) {
  InFlightCalls calls;
  constexpr int kCalls = 8;
  for (int i = 0; i < kCalls; ++i) calls.Started();
  std::atomic<int> finished{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&] {
      calls.Finished();
      ++finished;
    });
  }
  // A generous timeout: the call returns when the count reaches 0, and the
  // count it returns says which happened.
  EXPECT_EQ(calls.AwaitIdle(absl::Minutes(2)), 0);
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(finished.load(), kCalls);
}

}  // namespace
}  // namespace cbloss::server
