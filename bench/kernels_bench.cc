// Copyright 2026 The cbloss Authors.
//
// The engine (ComputeLoss with gradient, labels mode, MEAN) per element,
// beside a memcpy of the same bytes (logits in, gradient out) on the same
// threads, so the ratio says how far the kernels are from the memory limit.
// The LOSS.md section 10 losses run at 4096x1000 and at the LVIS-shaped
// 8192x1204, outside --quick (whose record set tests/bench/ checks).

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
#include "core/internal/loss_kernels.h"
#include "core/loss.h"
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
  while (
      static_cast<int>(times.size()) < min_reps ||
      std::chrono::duration<double, std::milli>(Clock::now() - start).count() <
          min_ms) {
    const auto t0 = Clock::now();
    fn();
    times.push_back(
        std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
    if (times.size() >= 10000) break;
  }
  std::sort(times.begin(), times.end());
  return {times.front(), times[times.size() / 2]};
}

// One shape's inputs (random logits, labels and counts) and buffers.
struct Inputs {
  Shape shape;
  std::vector<float> logits;
  std::vector<int32_t> labels;
  std::vector<int64_t> counts;
  // EQL_V2's run statistics P_j and Q_j, as after one update.
  std::vector<double> eqlv2_positive, eqlv2_negative;
  std::vector<float> gradient, copy_in, copy_out;
  LossBatch batch;
};

std::unique_ptr<Inputs> MakeInputs(const Shape& shape, std::mt19937& rng) {
  auto in = std::make_unique<Inputs>();
  in->shape = shape;
  const int64_t n = shape.batch * shape.classes;
  std::normal_distribution<float> normal(0.0f, 3.0f);
  in->logits.resize(n);
  for (float& v : in->logits) v = normal(rng);
  in->labels.resize(shape.batch);
  std::uniform_int_distribution<int32_t> label(
      0, static_cast<int32_t>(shape.classes - 1));
  for (int32_t& y : in->labels) y = label(rng);
  in->counts.resize(shape.classes);
  std::uniform_int_distribution<int64_t> count(1, 5000);
  for (int64_t& c : in->counts) c = count(rng);
  std::uniform_real_distribution<double> gradient_sum(1.0, 100.0);
  in->eqlv2_positive.resize(shape.classes);
  in->eqlv2_negative.resize(shape.classes);
  for (double& p : in->eqlv2_positive) p = gradient_sum(rng);
  for (double& q : in->eqlv2_negative) q = 10.0 * gradient_sum(rng);
  in->gradient.resize(n);
  in->copy_in.resize(n);
  in->copy_out.resize(n);
  in->batch.rows = shape.batch;
  in->batch.cols = shape.classes;
  in->batch.logits = in->logits;
  in->batch.labels = in->labels;
  return in;
}

// One benchmarked loss: its record name and parameters (defaults otherwise).
struct LossCase {
  std::string name;
  LossType type;
  double focal_alpha = kNoFocalAlpha;
};

LossParams CaseParams(const LossCase& loss) {
  LossParams params;
  params.loss_type = loss.type;
  params.focal_alpha = loss.focal_alpha;
  // SEESAW, EQL and EQL_V2 do their own re-weighting (LOSS.md section 10).
  if (loss.type == LossType::kSeesaw || loss.type == LossType::kEql ||
      loss.type == LossType::kEqlV2) {
    params.weighting = WeightingScheme::kNone;
  }
  return params;
}

// The memcpy of the same bytes (logits in, gradient out), on the same
// threads, in the engine's row chunks.
Timing TimeMemcpy(Inputs& in, ThreadPool* pool, int min_reps, double min_ms) {
  const Shape& shape = in.shape;
  const int64_t rows_per_chunk = RowsPerChunk(shape.classes);
  const int64_t chunks = (shape.batch + rows_per_chunk - 1) / rows_per_chunk;
  auto copy_chunk = [&](int64_t c) {
    const int64_t begin = c * rows_per_chunk * shape.classes;
    const int64_t end =
        std::min(shape.batch, (c + 1) * rows_per_chunk) * shape.classes;
    const size_t bytes = (end - begin) * sizeof(float);
    std::memcpy(in.copy_in.data() + begin, in.logits.data() + begin, bytes);
    std::memcpy(in.copy_out.data() + begin, in.gradient.data() + begin, bytes);
  };
  return TimeNs(
      [&] {
        if (pool) {
          pool->ParallelFor(chunks, copy_chunk);
        } else {
          for (int64_t c = 0; c < chunks; ++c) copy_chunk(c);
        }
      },
      min_reps, min_ms);
}

// Times one loss on `in`; appends a JSON record or prints a row. False on
// failure.
bool RunLoss(const BenchOptions& options, const LossCase& loss, Inputs& in,
             ThreadPool* pool, int threads, const Timing& memcpy_ns,
             std::string* json) {
  const int min_reps = options.quick ? 2 : 15;
  const double min_ms = options.quick ? 1.0 : 300.0;
  const LossParams params = CaseParams(loss);
  const EqlV2Statistics eqlv2{in.eqlv2_positive, in.eqlv2_negative, 1};
  absl::StatusOr<ClassTerms> terms = MakeClassTerms(params, in.counts, &eqlv2);
  if (!terms.ok() || !ValidateLossBatch(params, in.batch).ok()) {
    std::fprintf(stderr, "bench setup failed\n");
    return false;
  }
  LossOutputs outputs;
  outputs.gradient = absl::MakeSpan(in.gradient);
  ComputeOptions compute;
  compute.pool = pool;
  bool ok = true;
  const Timing ns = TimeNs(
      [&] {
        ok &= ComputeLoss(params, *terms, in.batch, outputs, compute).ok();
      },
      min_reps, min_ms);
  if (!ok) {
    std::fprintf(stderr, "%s failed\n", loss.name.c_str());
    return false;
  }
  const std::string& name = loss.name;
  const double n = static_cast<double>(in.shape.batch * in.shape.classes);
  const double per = ns.fastest_ns / n;
  const double copy_per = memcpy_ns.fastest_ns / n;
  if (options.json) {
    absl::StrAppend(
        json, json->size() > 1 ? ",\n" : "\n", "  {\"loss\": \"", name,
        "\", \"batch\": ", in.shape.batch, ", \"classes\": ", in.shape.classes,
        ", \"threads\": ", threads, ", \"ns_per_element\": ", per,
        ", \"memcpy_ns_per_element\": ", copy_per,
        ", \"median_ns_per_element\": ", ns.median_ns / n,
        ", \"memcpy_median_ns_per_element\": ", memcpy_ns.median_ns / n,
        ", \"target\": \"", kernels::ActiveTargetName(), "\"}");
  } else {
    std::printf("%-11s %6lld %6lld %3d %10.3f %10.3f %7.2f\n", name.c_str(),
                static_cast<long long>(in.shape.batch),
                static_cast<long long>(in.shape.classes), threads, per,
                copy_per, per / copy_per);
  }
  return true;
}

// Shapes and the losses timed on each of them.
struct LossGroup {
  std::vector<Shape> shapes;
  std::vector<LossCase> losses;
};

std::vector<LossGroup> LossGroups(bool quick) {
  std::vector<LossGroup> groups = {
      {{{256, 1000}, {4096, 1000}, {1024, 100}, {32, 10}},
       {{"softmax", LossType::kSoftmax},
        {"sigmoid", LossType::kSigmoid},
        {"focal", LossType::kFocal}}}};
  if (!quick) {
    // LOSS.md section 10; 8192x1204 is an LVIS batch (1203 classes and
    // background, 8192 regions).
    groups.push_back({{{4096, 1000}, {8192, 1204}},
                      {{"seesaw", LossType::kSeesaw},
                       {"eql", LossType::kEql},
                       {"eql_v2", LossType::kEqlV2},
                       {"vs", LossType::kVs},
                       {"focal_a0.25", LossType::kFocal, 0.25}}});
  }
  return groups;
}

}  // namespace

int RunKernels(const BenchOptions& options) {
  const int min_reps = options.quick ? 2 : 15;
  const double min_ms = options.quick ? 1.0 : 300.0;
  std::mt19937 rng(5);
  std::string json = "[";
  if (!options.json) {
    std::printf("kernels on %s\n%-11s %6s %6s %3s %10s %10s %7s\n",
                kernels::ActiveTargetName(), "loss", "batch", "classes", "thr",
                "ns/elem", "memcpy", "ratio");
  }
  for (const LossGroup& group : LossGroups(options.quick)) {
    for (const Shape& shape : group.shapes) {
      std::unique_ptr<Inputs> in = MakeInputs(shape, rng);
      for (int threads : {1, 2}) {
        std::unique_ptr<ThreadPool> pool;
        if (threads > 1) pool = std::make_unique<ThreadPool>(threads);
        const Timing memcpy_ns = TimeMemcpy(*in, pool.get(), min_reps, min_ms);
        for (const LossCase& loss : group.losses) {
          if (!RunLoss(options, loss, *in, pool.get(), threads, memcpy_ns,
                       &json)) {
            return 1;
          }
        }
      }
    }
  }
  if (options.json) std::printf("%s\n]\n", json.c_str());
  return 0;
}

}  // namespace cbloss::bench
