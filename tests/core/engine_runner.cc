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
  run.class_weights.resize(c.counts.size());
  run.status = ClassWeights(c.counts, c.params.weighting, c.params.beta,
                            absl::MakeSpan(run.class_weights));
  if (!run.status.ok()) return run;
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
      ComputeLoss(c.params, run.class_weights, batch, out, options);
  if (!r.ok()) {
    run.status = r.status();
    return run;
  }
  run.result = *r;
  return run;
}

}  // namespace cbloss::testing
