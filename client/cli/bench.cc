// Copyright 2026 The cbloss Authors.

#include "bench.h"

#include <algorithm>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/half.h"

namespace cbloss::cli {
namespace {

double Percentile(std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t at = std::min(
      sorted.size() - 1, static_cast<size_t>(q * (sorted.size() - 1) + 0.5));
  return sorted[at];
}

}  // namespace

absl::StatusOr<BenchReport> RunBench(Client* client,
                                     const BenchOptions& options) {
  if (options.concurrency < 1 || options.batch < 1) {
    return absl::InvalidArgumentError("--concurrency and --batch must be >= 1");
  }
  LossSource source = options.dataset.empty()
                          ? LossSource::Counts(options.counts)
                          : LossSource::Dataset(options.dataset);
  int64_t classes = options.classes;
  if (classes == 0) {
    if (!options.dataset.empty()) {
      absl::StatusOr<v1::Dataset> d = client->GetDataset(options.dataset);
      if (!d.ok()) return d.status();
      classes = d->class_counts_size();
    } else {
      classes = static_cast<int64_t>(options.counts.size());
    }
  }
  if (classes < 1) {
    return absl::InvalidArgumentError("give --dataset, --counts or --classes");
  }
  if (source.dataset.empty() && source.counts.empty()) {
    source.counts.assign(classes, 1);  // --classes alone: uniform counts
  }

  absl::Mutex mu;
  BenchReport report;
  std::vector<double> latencies;
  const absl::Time start = absl::Now();
  const absl::Time end = start + options.duration;
  std::vector<std::thread> threads;
  for (int t = 0; t < options.concurrency; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1234 + t);
      std::normal_distribution<float> normal(0.0f, 2.0f);
      std::uniform_int_distribution<int32_t> label(
          0, static_cast<int32_t>(classes - 1));
      std::vector<float> z(options.batch * classes);
      for (float& v : z) v = normal(rng);
      std::vector<uint16_t> half(z.size());
      if (options.dtype == v1::DTYPE_BFLOAT16 ||
          options.dtype == v1::DTYPE_FLOAT16) {
        EncodeHalf(options.dtype == v1::DTYPE_BFLOAT16 ? DType::kBFloat16
                                                       : DType::kFloat16,
                   z, absl::MakeSpan(half));
      }
      std::vector<int32_t> labels(options.batch);
      for (int32_t& y : labels) y = label(rng);
      const Logits logits =
          options.dtype == v1::DTYPE_FLOAT32 ||
                  options.dtype == v1::DTYPE_UNSPECIFIED
              ? Logits::Float32(z, options.batch, classes)
              : Logits::Half(options.dtype, half, options.batch, classes);
      LossOptions loss_options;
      loss_options.config.set_loss_type(options.loss);
      loss_options.gradient_dtype = options.dtype == v1::DTYPE_UNSPECIFIED
                                        ? v1::DTYPE_FLOAT32
                                        : options.dtype;
      std::vector<double> mine;
      int64_t requests = 0, errors = 0;
      std::vector<std::string> samples;
      while (true) {
        const absl::Time now = absl::Now();
        if (now >= end) break;
        // Never wait past the end of the run by more than one deadline.
        loss_options.deadline = options.call_deadline;
        const absl::Time t0 = absl::Now();
        absl::StatusOr<LossResult> r =
            client->ComputeLoss(source, logits, Labels(labels), loss_options);
        const double us = absl::ToDoubleMicroseconds(absl::Now() - t0);
        ++requests;
        if (r.ok()) {
          mine.push_back(us);
        } else {
          ++errors;
          if (samples.size() < 3) samples.push_back(r.status().ToString());
          // A failing server answers fast; do not spin on it.
          absl::SleepFor(absl::Milliseconds(10));
        }
      }
      absl::MutexLock lock(&mu);
      report.requests += requests;
      report.errors += errors;
      latencies.insert(latencies.end(), mine.begin(), mine.end());
      for (std::string& s : samples) {
        if (report.error_samples.size() < 5 &&
            std::find(report.error_samples.begin(), report.error_samples.end(),
                      s) == report.error_samples.end()) {
          report.error_samples.push_back(std::move(s));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  report.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  report.rps = report.seconds > 0 ? report.requests / report.seconds : 0;
  std::sort(latencies.begin(), latencies.end());
  report.p50_us = Percentile(latencies, 0.50);
  report.p90_us = Percentile(latencies, 0.90);
  report.p99_us = Percentile(latencies, 0.99);
  return report;
}

}  // namespace cbloss::cli
