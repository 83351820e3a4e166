// Copyright 2026 The cbloss Authors.
//
// A fixed set of worker threads. The engine splits a batch into row chunks
// and runs them with ParallelFor; the server schedules whole requests with
// Schedule. Both may nest: ParallelFor called from a worker makes progress on
// the calling thread, so it never waits on a pool that is busy with its own
// caller.
//
// Thread-safety: every method may be called concurrently from any thread.
//
// Example:
//   ThreadPool pool(4);
//   pool.ParallelFor(num_chunks, [&](int64_t c) { RunChunk(c); });

#ifndef CBLOSS_CORE_THREAD_POOL_H_
#define CBLOSS_CORE_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"

namespace cbloss {

class ThreadPool {
 public:
  // `num_threads` >= 1 is the parallelism of ParallelFor (the caller counts as
  // one); the pool starts num_threads worker threads for Schedule and helpers.
  explicit ThreadPool(int num_threads);
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  // Runs everything already scheduled, then joins the workers.
  ~ThreadPool();

  int num_threads() const { return num_threads_; }

  // Runs `task` on a worker, some time later.
  void Schedule(absl::AnyInvocable<void() &&> task);

  // Calls fn(i) once for every i in [0, n), on the calling thread and at most
  // num_threads() - 1 workers, and returns when all calls have returned.
  void ParallelFor(int64_t n, absl::FunctionRef<void(int64_t)> fn);

 private:
  void WorkerLoop();

  const int num_threads_;
  // std::mutex rather than absl::Mutex: Debian's Abseil is not built with
  // ThreadSanitizer, which then cannot see absl::Mutex's happens-before edges
  // (docs/RELIABILITY.md). The locks the TSan run checks (this pool, the
  // dataset registry, the stores, the in-flight call counter) are all
  // std::mutex for that reason; ServerMetrics (server/metrics.h) is the one
  // absl::Mutex, and no TSan test exercises it.
  std::mutex mu_;
  std::condition_variable work_available_;
  std::deque<absl::AnyInvocable<void() &&>> queue_;  // guarded by mu_
  bool stopping_ = false;                            // guarded by mu_
  std::vector<std::thread> workers_;
};

}  // namespace cbloss

#endif  // CBLOSS_CORE_THREAD_POOL_H_
