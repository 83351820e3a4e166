// Copyright 2026 The cbloss Authors.

#include "tests/core/engine_runner.h"

#include "core/class_weights.h"

namespace cbloss::testing {

EngineRun RunEngine(const EngineCase& c, ThreadPool* pool) {
  EngineRun run;
  LossBatch batch;
  batch.rows = c.rows;
  batch.cols = c.cols;
  batch.logits = c.logits;
  batch.labels = c.labels;
  batch.targets = c.targets;
  batch.sample_weights = c.sample_weights;
  batch.upstream = c.upstream;
  run.status = ValidateLossBatch(c.params, batch);
  if (!run.status.ok()) return run;
  absl::StatusOr<ClassTerms> terms = MakeClassTerms(c.params, c.counts);
  if (!terms.ok()) {
    run.status = terms.status();
    return run;
  }
  if (c.unit_weights) terms->weights.assign(terms->weights.size(), 1.0);
  run.class_weights = terms->weights;
  if (static_cast<int64_t>(c.counts.size()) != c.cols) {
    run.status = absl::InvalidArgumentError("counts/cols mismatch in test");
    return run;
  }
  run.per_sample_losses.assign(c.rows, -1.0f);
  run.gradient.assign(c.rows * c.cols, -1.0f);
  LossOutputs out{absl::MakeSpan(run.per_sample_losses),
                  absl::MakeSpan(run.gradient)};
  ComputeOptions options;
  options.pool = pool;
  absl::StatusOr<LossResult> r =
      ComputeLoss(c.params, *terms, batch, out, options);
  if (!r.ok()) {
    run.status = r.status();
    return run;
  }
  run.result = *r;
  return run;
}

}  // namespace cbloss::testing
