// Copyright 2026 The cbloss Authors.
//
// The engine (ComputeLoss with gradient, labels mode, MEAN) per element,
// beside a memcpy of the same bytes (logits in, gradient out) on the same
// threads, so the ratio says how far the kernels are from the memory limit.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/bench.h"
#include "core/class_weights.h"
#include "core/loss.h"
#include "core/loss_kernels.h"
#include "core/thread_pool.h"

namespace cbloss::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  int64_t batch, classes;
};

// Fastest and median wall time of `fn`, in ns, over enough repetitions for
// ~min_ms. The fastest is the one reported: on a shared machine the median
// mostly measures other processes (docs/PERFORMANCE.md).
struct Timing {
  double fastest_ns, median_ns;
};

template <typename Fn>
Timing TimeNs(Fn&& fn, int min_reps, double min_ms) {
  fn();  // warm up caches and the pool
  std::vector<double> times;
  const auto start = Clock::now();
  while (static_cast<int>(times.size()) < min_reps ||
         std::chrono::duration<double, std::milli>(Clock::now() - start)
                 .count() < min_ms) {
    const auto t0 = Clock::now();
    fn();
    times.push_back(
        std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
    if (times.size() >= 10000) break;
  }
  std::sort(times.begin(), times.end());
  return {times.front(), times[times.size() / 2]};
}

}  // namespace

int RunKernels(const BenchOptions& options) {
  const std::vector<Shape> shapes = {
      {256, 1000}, {4096, 1000}, {1024, 100}, {32, 10}};
  const std::vector<std::pair<std::string, LossType>> losses = {
      {"softmax", LossType::kSoftmax},
      {"sigmoid", LossType::kSigmoid},
      {"focal", LossType::kFocal}};
  const int min_reps = options.quick ? 2 : 15;
  const double min_ms = options.quick ? 1.0 : 300.0;
  std::mt19937 rng(5);
  std::string json = "[";
  if (!options.json) {
    std::printf("kernels on %s\n%-8s %6s %6s %3s %10s %10s %7s\n",
                kernels::ActiveTargetName(), "loss", "batch", "classes", "thr",
                "ns/elem", "memcpy", "ratio");
  }
  bool first = true;
  for (const Shape& shape : shapes) {
    const int64_t n = shape.batch * shape.classes;
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::vector<float> logits(n);
    for (float& v : logits) v = normal(rng);
    std::vector<int32_t> labels(shape.batch);
    std::uniform_int_distribution<int32_t> label(
        0, static_cast<int32_t>(shape.classes - 1));
    for (int32_t& y : labels) y = label(rng);
    std::vector<int64_t> counts(shape.classes);
    std::uniform_int_distribution<int64_t> count(1, 5000);
    for (int64_t& c : counts) c = count(rng);
    std::vector<float> gradient(n), copy_in(n), copy_out(n);
    LossBatch batch;
    batch.rows = shape.batch;
    batch.cols = shape.classes;
    batch.logits = logits;
    batch.labels = labels;

    for (int threads : {1, 2}) {
      std::unique_ptr<ThreadPool> pool;
      if (threads > 1) pool = std::make_unique<ThreadPool>(threads);
      // The copy runs on the same threads, in the engine's row chunks.
      const int64_t rows_per_chunk = RowsPerChunk(shape.classes);
      const int64_t chunks = (shape.batch + rows_per_chunk - 1) / rows_per_chunk;
      auto copy_chunk = [&](int64_t c) {
        const int64_t begin = c * rows_per_chunk * shape.classes;
        const int64_t end =
            std::min(shape.batch, (c + 1) * rows_per_chunk) * shape.classes;
        const size_t bytes = (end - begin) * sizeof(float);
        std::memcpy(copy_in.data() + begin, logits.data() + begin, bytes);
        std::memcpy(copy_out.data() + begin, gradient.data() + begin, bytes);
      };
      const Timing memcpy_ns = TimeNs(
          [&] {
            if (pool) {
              pool->ParallelFor(chunks, copy_chunk);
            } else {
              for (int64_t c = 0; c < chunks; ++c) copy_chunk(c);
            }
          },
          min_reps, min_ms);
      for (const auto& [name, type] : losses) {
        LossParams params;
        params.loss_type = type;
        absl::StatusOr<ClassTerms> terms = MakeClassTerms(params, counts);
        if (!terms.ok() || !ValidateLossBatch(params, batch).ok()) {
          std::fprintf(stderr, "bench setup failed\n");
          return 1;
        }
        LossOutputs outputs;
        outputs.gradient = absl::MakeSpan(gradient);
        ComputeOptions compute;
        compute.pool = pool.get();
        bool ok = true;
        const Timing ns = TimeNs(
            [&] {
              ok &= ComputeLoss(params, *terms, batch, outputs, compute).ok();
            },
            min_reps, min_ms);
        if (!ok) return 1;
        const double per = ns.fastest_ns / static_cast<double>(n);
        const double copy_per = memcpy_ns.fastest_ns / static_cast<double>(n);
        if (options.json) {
          absl::StrAppend(&json, first ? "\n" : ",\n", "  {\"loss\": \"", name,
                          "\", \"batch\": ", shape.batch,
                          ", \"classes\": ", shape.classes,
                          ", \"threads\": ", threads,
                          ", \"ns_per_element\": ", per,
                          ", \"memcpy_ns_per_element\": ", copy_per,
                          ", \"median_ns_per_element\": ",
                          ns.median_ns / static_cast<double>(n),
                          ", \"memcpy_median_ns_per_element\": ",
                          memcpy_ns.median_ns / static_cast<double>(n),
                          ", \"target\": \"", kernels::ActiveTargetName(),
                          "\"}");
        } else {
          std::printf("%-8s %6lld %6lld %3d %10.3f %10.3f %7.2f\n",
                      name.c_str(), static_cast<long long>(shape.batch),
                      static_cast<long long>(shape.classes), threads, per,
                      copy_per, per / copy_per);
        }
        first = false;
      }
    }
  }
  if (options.json) std::printf("%s\n]\n", json.c_str());
  return 0;
}

}  // namespace cbloss::bench
