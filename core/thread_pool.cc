// Copyright 2026 The cbloss Authors.

#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <utility>

namespace cbloss {

ThreadPool::ThreadPool(int num_threads)
    : num_threads_(std::max(1, num_threads)) {
  workers_.reserve(num_threads_);
  for (int i = 0; i < num_threads_; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_available_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::Schedule(absl::AnyInvocable<void() &&> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(task));
  }
  work_available_.notify_one();
}

void ThreadPool::WorkerLoop() {
  while (true) {
    absl::AnyInvocable<void() &&> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_available_.wait(lock,
                           [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left to run
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    std::move(task)();
  }
}

namespace {

// Shared by the caller of ParallelFor and the helpers it scheduled. A helper
// that starts after all indices were claimed touches only this state, never
// `fn`, so the caller may return as soon as every claimed call has finished.
struct ParallelForState {
  ParallelForState(int64_t n, absl::FunctionRef<void(int64_t)> fn)
      : n(n), fn(fn) {}

  // Claims and runs indices until none are left.
  void Drain() {
    int64_t ran = 0;
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
      fn(i);
      ++ran;
    }
    if (ran > 0) {
      std::lock_guard<std::mutex> lock(mu);
      done += ran;
      // Notify under the lock: the caller may return and free this state
      // only after it has seen done == n, which needs the lock we hold.
      if (done == n) all_done.notify_one();
    }
  }

  const int64_t n;
  const absl::FunctionRef<void(int64_t)> fn;
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::condition_variable all_done;
  int64_t done = 0;  // guarded by mu
};

}  // namespace

void ThreadPool::ParallelFor(int64_t n, absl::FunctionRef<void(int64_t)> fn) {
  if (n <= 0) return;
  const int64_t helpers = std::min<int64_t>(n, num_threads_) - 1;
  if (helpers <= 0) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  auto state = std::make_shared<ParallelForState>(n, fn);
  for (int64_t h = 0; h < helpers; ++h) {
    Schedule([state] { state->Drain(); });
  }
  state->Drain();
  std::unique_lock<std::mutex> lock(state->mu);
  state->all_done.wait(lock, [&state] { return state->done == state->n; });
}

}  // namespace cbloss
