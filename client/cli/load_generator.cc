// Copyright 2026 The cbloss Authors.

#include "load_generator.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/half.h"

namespace cbloss::cli {
namespace {

using ::cbloss::client::Client;
using ::cbloss::client::Labels;
using ::cbloss::client::Logits;
using ::cbloss::client::LossOptions;
using ::cbloss::client::LossResult;
using ::cbloss::client::LossSource;

double Percentile(std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t at =
      std::min(sorted.size() - 1,
               static_cast<size_t>(std::llround(q * (sorted.size() - 1))));
  return sorted[at];
}

bool IsFloat32(v1::DType dtype) {
  return dtype == v1::DTYPE_FLOAT32 || dtype == v1::DTYPE_UNSPECIFIED;
}

// What the callers send: the counts' source and the number of classes.
struct Workload {
  LossSource source;
  int64_t classes = 0;
};

absl::StatusOr<Workload> ResolveWorkload(Client* client,
                                         const BenchOptions& options) {
  Workload w;
  w.source = options.dataset.empty() ? LossSource::Counts(options.counts)
                                     : LossSource::Dataset(options.dataset);
  w.classes = options.classes;
  if (w.classes == 0) {
    if (!options.dataset.empty()) {
      absl::StatusOr<v1::Dataset> d = client->GetDataset(options.dataset);
      if (!d.ok()) return d.status();
      w.classes = d->class_counts_size();
    } else {
      w.classes = static_cast<int64_t>(options.counts.size());
    }
  }
  if (w.classes < 1) {
    return absl::InvalidArgumentError("give --dataset, --counts or --classes");
  }
  if (w.source.dataset.empty() && w.source.counts.empty()) {
    w.source.counts.assign(w.classes, 1);  // --classes alone: uniform counts
  }
  return w;
}

// One caller's random batch: N(0, 2) logits (also as 16-bit patterns) and
// uniform labels, from a seed of its own.
struct CallerBatch {
  std::vector<float> z;
  std::vector<uint16_t> half;
  std::vector<int32_t> labels;
};

CallerBatch MakeBatch(const BenchOptions& options, int64_t classes, int seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::uniform_int_distribution<int32_t> label(
      0, static_cast<int32_t>(classes - 1));
  CallerBatch b;
  b.z.resize(options.batch * classes);
  for (float& v : b.z) v = normal(rng);
  b.half.resize(b.z.size());
  if (options.dtype == v1::DTYPE_BFLOAT16 ||
      options.dtype == v1::DTYPE_FLOAT16) {
    EncodeHalf(options.dtype == v1::DTYPE_BFLOAT16 ? DType::kBFloat16
                                                   : DType::kFloat16,
               b.z, absl::MakeSpan(b.half));
  }
  b.labels.resize(options.batch);
  for (int32_t& y : b.labels) y = label(rng);
  return b;
}

// What one caller saw.
struct CallerTally {
  std::vector<double> latencies_us;  // successful calls
  int64_t requests = 0, errors = 0;
  std::vector<std::string> error_samples;
};

// Calls ComputeLoss back to back until `end`.
CallerTally RunCaller(Client* client, const BenchOptions& options,
                      const Workload& work, int seed, absl::Time end) {
  const CallerBatch b = MakeBatch(options, work.classes, seed);
  const Logits logits =
      IsFloat32(options.dtype)
          ? Logits::Float32(b.z, options.batch, work.classes)
          : Logits::Half(options.dtype, b.half, options.batch, work.classes);
  LossOptions loss_options;
  loss_options.config.set_loss_type(options.loss);
  loss_options.gradient_dtype = options.dtype == v1::DTYPE_UNSPECIFIED
                                    ? v1::DTYPE_FLOAT32
                                    : options.dtype;
  // Never wait past the end of the run by more than one deadline.
  loss_options.deadline = options.call_deadline;
  CallerTally tally;
  while (absl::Now() < end) {
    const absl::Time t0 = absl::Now();
    absl::StatusOr<LossResult> r = client->ComputeLoss(
        work.source, logits, Labels(b.labels), loss_options);
    const double us = absl::ToDoubleMicroseconds(absl::Now() - t0);
    ++tally.requests;
    if (r.ok()) {
      tally.latencies_us.push_back(us);
    } else {
      ++tally.errors;
      if (tally.error_samples.size() < 3) {
        tally.error_samples.push_back(r.status().ToString());
      }
      // A failing server answers fast; do not spin on it.
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  return tally;
}

// Adds a caller's tally to the report (the first 5 distinct errors).
void Merge(CallerTally tally, BenchReport* report,
           std::vector<double>* latencies) {
  report->requests += tally.requests;
  report->errors += tally.errors;
  latencies->insert(latencies->end(), tally.latencies_us.begin(),
                    tally.latencies_us.end());
  std::vector<std::string>& samples = report->error_samples;
  for (std::string& s : tally.error_samples) {
    if (samples.size() < 5 &&
        std::find(samples.begin(), samples.end(), s) == samples.end()) {
      samples.push_back(std::move(s));
    }
  }
}

}  // namespace

absl::StatusOr<BenchReport> RunBench(Client* client,
                                     const BenchOptions& options) {
  if (options.concurrency < 1 || options.batch < 1) {
    return absl::InvalidArgumentError("--concurrency and --batch must be >= 1");
  }
  absl::StatusOr<Workload> work = ResolveWorkload(client, options);
  if (!work.ok()) return work.status();

  absl::Mutex mu;
  BenchReport report;
  std::vector<double> latencies;
  const absl::Time start = absl::Now();
  const absl::Time end = start + options.duration;
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(options.concurrency));
  for (int t = 0; t < options.concurrency; ++t) {
    threads.emplace_back([&, t] {
      CallerTally tally = RunCaller(client, options, *work, 1234 + t, end);
      absl::MutexLock lock(&mu);
      Merge(std::move(tally), &report, &latencies);
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
