// Copyright 2026 The cbloss Authors.
//
// Test helper: validate, weigh and compute one batch with owned buffers.

#ifndef CBLOSS_TESTS_CORE_ENGINE_RUNNER_H_
#define CBLOSS_TESTS_CORE_ENGINE_RUNNER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "core/loss.h"
#include "core/thread_pool.h"

namespace cbloss::testing {

struct EngineCase {
  LossParams params;
  std::vector<int64_t> counts;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> logits;
  // When non-empty, the logits are given to the engine as these 16-bit
  // values of half_logits_dtype instead (LossBatch::half_logits).
  std::vector<uint16_t> half_logits;
  DType half_logits_dtype = DType::kBFloat16;
  // kFloat16 / kBFloat16: the gradient is asked for in that type
  // (LossOutputs::half_gradient) and decoded into EngineRun::gradient.
  DType gradient_dtype = DType::kFloat32;
  std::vector<int32_t> labels;
  std::vector<float> targets;
  std::vector<float> sample_weights;
  std::vector<float> upstream;
  // Deferred re-weighting before its epoch: every class weight 1.
  bool unit_weights = false;
  // EQL_V2: the run's statistics before the request (LOSS.md section 10);
  // with want_eqlv2_deltas the engine also computes what it adds to them.
  std::vector<double> eqlv2_positive;
  std::vector<double> eqlv2_negative;
  int64_t eqlv2_updates = 0;
  bool want_eqlv2_deltas = false;
};

struct EngineRun {
  absl::Status status;  // first failure of validate / weights / compute
  LossResult result;
  std::vector<double> class_weights;
  std::vector<float> per_sample_losses;
  std::vector<float> gradient;
  std::vector<uint16_t> gradient_bits;       // with a 16-bit gradient_dtype
  std::vector<double> eqlv2_positive_delta;  // with want_eqlv2_deltas
  std::vector<double> eqlv2_negative_delta;
};

EngineRun RunEngine(const EngineCase& c, ThreadPool* pool = nullptr);

}  // namespace cbloss::testing

#endif  // CBLOSS_TESTS_CORE_ENGINE_RUNNER_H_
