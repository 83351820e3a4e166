// Copyright 2026 The cbloss Authors.

#include "tests/core/engine_runner.h"

#include "core/class_weights.h"
#include "core/half.h"

namespace cbloss::testing {

EngineRun RunEngine(const EngineCase& c, ThreadPool* pool) {
  EngineRun run;
  LossBatch batch;
  batch.rows = c.rows;
  batch.cols = c.cols;
  if (c.half_logits.empty()) {
    batch.logits = c.logits;
  } else {
    batch.half_logits = reinterpret_cast<const char*>(c.half_logits.data());
    batch.half_logits_dtype = c.half_logits_dtype;
  }
  batch.labels = c.labels;
  batch.targets = c.targets;
  batch.sample_weights = c.sample_weights;
  batch.upstream = c.upstream;
  // The edge's checks, as a caller of the engine makes them.
  run.status = ValidateLossBatch(c.params, batch);
  if (run.status.ok()) run.status = ValidateLossParams(c.params);
  if (run.status.ok()) run.status = ValidateClassCounts(c.counts);
  if (!run.status.ok()) return run;
  EqlV2Statistics eqlv2{c.eqlv2_positive, c.eqlv2_negative, c.eqlv2_updates};
  absl::StatusOr<ClassTerms> terms = MakeClassTerms(c.params, c.counts, &eqlv2);
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
  LossOutputs out;
  out.per_sample_losses = absl::MakeSpan(run.per_sample_losses);
  out.gradient = absl::MakeSpan(run.gradient);
  if (c.want_eqlv2_deltas) {
    run.eqlv2_positive_delta.assign(c.cols, -1.0);
    run.eqlv2_negative_delta.assign(c.cols, -1.0);
    out.eqlv2_positive_delta = absl::MakeSpan(run.eqlv2_positive_delta);
    out.eqlv2_negative_delta = absl::MakeSpan(run.eqlv2_negative_delta);
  }
  const bool half_gradient = c.gradient_dtype != DType::kFloat32;
  if (half_gradient) {
    run.gradient_bits.assign(c.rows * c.cols, 0xffff);  // a NaN pattern
    out.gradient = {};
    out.half_gradient = reinterpret_cast<char*>(run.gradient_bits.data());
    out.half_gradient_dtype = c.gradient_dtype;
  }
  ComputeOptions options;
  options.pool = pool;
  absl::StatusOr<LossResult> r =
      ComputeLoss(c.params, *terms, batch, out, options);
  if (!r.ok()) {
    run.status = r.status();
    return run;
  }
  run.result = *r;
  if (half_gradient) {
    DecodeHalf(c.gradient_dtype, run.gradient_bits,
               absl::MakeSpan(run.gradient));
  }
  return run;
}

}  // namespace cbloss::testing
