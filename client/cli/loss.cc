// Copyright 2026 The cbloss Authors.
//
// `cbloss loss`: one batch's loss (and gradient), from .npy / .csv files.
// With --run (and --accumulate) it reads (and updates) a run of LOSS.md
// section 11.

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "arrays.h"
#include "command.h"
#include "core/half.h"
#include "loss_config.h"

namespace cbloss::cli {
namespace {

struct LossFlags {
  SourceFlags source;
  LossConfigFlags config;
  std::string logits, labels, targets, sample_weights, gradient_out,
      gradient_dtype;
  bool per_sample = false;
  int epoch = 0;
  std::string run;
  bool accumulate = false;
  CLI::Option* labels_option = nullptr;
  CLI::Option* epoch_option = nullptr;
};

// The batch read from the files: logits, labels or targets, sample weights.
struct Batch {
  LogitsMatrix z;
  std::vector<int32_t> labels;
  std::vector<float> targets, sample_weights;
};

absl::StatusOr<Batch> LoadBatch(const LossFlags& f) {
  Batch b;
  absl::StatusOr<LogitsMatrix> z = LoadLogits(f.logits);
  if (!z.ok()) return z.status();
  b.z = *std::move(z);
  if (f.labels_option->count() > 0) {
    absl::StatusOr<std::vector<int32_t>> l = LoadLabels(f.labels);
    if (!l.ok()) return l.status();
    b.labels = *std::move(l);
  } else {
    absl::StatusOr<std::vector<float>> t =
        LoadFloatMatrix(f.targets, b.z.rows, b.z.cols);
    if (!t.ok()) return t.status();
    b.targets = *std::move(t);
  }
  if (!f.sample_weights.empty()) {
    absl::StatusOr<std::vector<float>> s = LoadFloats(f.sample_weights);
    if (!s.ok()) return s.status();
    b.sample_weights = *std::move(s);
  }
  return b;
}

// float16 goes to .npy as float16; bfloat16 (which NumPy lacks) and CSV as
// the float32 values of the rounded gradient.
absl::Status WriteGradient(const std::string& path, v1::DType dtype,
                           const client::LossResult& r, int64_t rows,
                           int64_t cols) {
  if (dtype == v1::DTYPE_FLOAT16 && !absl::EndsWithIgnoreCase(path, ".csv")) {
    return WriteFloat16Npy(path, r.gradient_half, rows, cols);
  }
  if (r.gradient_half.empty()) return WriteMatrix(path, r.gradient, rows, cols);
  std::vector<float> decoded(r.gradient_half.size());
  DecodeHalf(dtype == v1::DTYPE_FLOAT16 ? DType::kFloat16 : DType::kBFloat16,
             r.gradient_half, absl::MakeSpan(decoded));
  return WriteMatrix(path, decoded, rows, cols);
}

void PrintResult(const LossFlags& f, const client::LossResult& r,
                 bool as_json) {
  if (as_json) {
    json j{{"loss", r.loss},
           {"num_samples", r.num_samples},
           {"class_weights", r.class_weights},
           {"resolved_config", ProtoJson(r.resolved_config)}};
    if (r.dataset_version) j["dataset_version"] = r.dataset_version;
    if (!f.run.empty()) j["run_version"] = r.run_version;
    if (!r.per_sample_losses.empty()) {
      j["per_sample_losses"] = r.per_sample_losses;
    }
    if (!f.gradient_out.empty()) j["gradient_out"] = f.gradient_out;
    PrintJson(j);
    return;
  }
  std::cout << absl::StrFormat("loss         %.9g\n", r.loss) << "num_samples  "
            << r.num_samples << "\n"
            << "config       " << LossConfigText(r.resolved_config) << "\n";
  if (!f.run.empty()) {
    std::cout << "run_version  " << r.run_version
              << (f.accumulate ? " (accumulated)" : "") << "\n";
  }
  if (!r.per_sample_losses.empty()) {
    std::cout << "per_sample   " << absl::StrJoin(r.per_sample_losses, " ")
              << "\n";
  }
  if (!f.gradient_out.empty()) {
    std::cout << "gradient     written to " << f.gradient_out << "\n";
  }
}

// The counts' source; with --run, neither --dataset nor --counts is needed
// (the run's dataset is used).
absl::StatusOr<client::LossSource> SourceOf(const LossFlags& f) {
  if (!f.run.empty() && f.source.dataset.empty() && f.source.counts.empty()) {
    return client::LossSource();
  }
  return f.source.Source();
}

int RunLoss(const LossFlags& f, const Context& context) {
  absl::StatusOr<client::LossSource> source = SourceOf(f);
  if (!source.ok()) return Fail(source.status());
  client::LossOptions lo;
  lo.run = f.run;
  lo.accumulate = f.accumulate;
  absl::StatusOr<v1::LossConfig> config = f.config.Config();
  if (!config.ok()) return Fail(config.status());
  lo.config = *std::move(config);
  absl::StatusOr<Batch> b = LoadBatch(f);
  if (!b.ok()) return Fail(b.status());
  lo.sample_weights = b->sample_weights;
  lo.want_gradient = !f.gradient_out.empty();
  lo.want_per_sample_losses = f.per_sample;
  if (f.epoch_option->count() > 0) lo.epoch = f.epoch;
  if (!f.gradient_dtype.empty()) {
    absl::StatusOr<v1::DType> d = ParseDType(f.gradient_dtype);
    if (!d.ok()) return Fail(d.status());
    lo.gradient_dtype = *d;
  }
  const LogitsMatrix& z = b->z;
  const client::Logits logits =
      z.float16 ? client::Logits::Half(v1::DTYPE_FLOAT16, z.f16, z.rows, z.cols)
                : client::Logits::Float32(z.f32, z.rows, z.cols);
  const client::Target target = b->labels.empty() && !b->targets.empty()
                                    ? client::Targets(b->targets)
                                    : client::Labels(b->labels);
  absl::StatusOr<client::LossResult> r =
      context.client->ComputeLoss(*source, logits, target, lo);
  if (!r.ok()) return Fail(r.status());
  if (!f.gradient_out.empty()) {
    absl::Status s =
        WriteGradient(f.gradient_out, lo.gradient_dtype, *r, z.rows, z.cols);
    if (!s.ok()) return Fail(s);
  }
  PrintResult(f, *r, context.json);
  return 0;
}

}  // namespace

void AddLossCommand(CLI::App* app, Handler* chosen) {
  auto f = std::make_shared<LossFlags>();
  CLI::App* loss =
      app->add_subcommand("loss", "compute a batch's loss (and gradient)");
  f->source.AddTo(loss);
  f->config.AddTo(loss, LossConfigFlags::kAllFields);
  loss->add_option("--logits", f->logits,
                   "logits [B, C]: .npy (float32/float16) or .csv")
      ->required();
  f->labels_option = loss->add_option(
      "--labels", f->labels, "labels: .npy (int32/int64), .csv, or a list");
  CLI::Option* targets =
      loss->add_option("--targets", f->targets,
                       "targets [B, C] in [0, 1]: .npy (float32) or .csv");
  f->labels_option->excludes(targets);
  loss->add_option("--sample-weights", f->sample_weights,
                   "per-sample weights: file or list");
  loss->add_option("--gradient-out", f->gradient_out,
                   "write dL/dlogits here (.npy, or .csv)");
  loss->add_option("--gradient-dtype", f->gradient_dtype,
                   "f32 (default), f16 or bf16");
  loss->add_flag("--per-sample", f->per_sample, "also print per-sample losses");
  f->epoch_option = loss->add_option(
      "--epoch", f->epoch, "training epoch, for deferred re-weighting");
  loss->add_option(
      "--run", f->run,
      "a run whose statistics the loss reads (LOSS.md section 11)");
  loss->add_flag("--accumulate", f->accumulate,
                 "also add this batch to the run's statistics (never retried)");
  loss->callback([f, targets, chosen] {
    if (!*f->labels_option && !*targets) {
      throw CLI::ValidationError("give --labels or --targets");
    }
    *chosen = [f](const Context& context) { return RunLoss(*f, context); };
  });
}

}  // namespace cbloss::cli
