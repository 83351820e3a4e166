// Copyright 2026 The cbloss Authors.
//
// The loss engine: batched class-balanced losses and their analytic gradients
// w.r.t. the logits, exactly as docs/spec/LOSS.md sections 1-8 define them.
// Pure functions over spans: no I/O, no gRPC, and no allocation per row or per
// element (only a few per call: one partial sum per row chunk, and with
// 16-bit logits or gradient one chunk-sized buffer per chunk).
//
// The flow is validate -> weights -> compute. Validation happens once, at the
// edge: the parameters' ranges by their table (core/loss_parameters.h; the
// server checks the wire config, other callers ValidateLossParams), the
// counts by ValidateClassCounts, the batch by ValidateLossBatch. After that
// MakeClassTerms and ComputeLoss trust their inputs.
//
// Rows are split into chunks whose size depends only on the batch shape, and
// per-chunk partial sums are combined in chunk order, so results are
// bit-identical for any number of threads.
//
// Thread-safety: the functions are reentrant; ComputeLoss may run many
// computations concurrently on one ThreadPool.
//
// Example:
//   LossParams params;                      // softmax, beta 0.9999, mean
//   LossBatch batch{B, C, logits, labels};
//   CHECK_OK(ValidateLossParams(params));
//   CHECK_OK(ValidateClassCounts(counts));
//   CHECK_OK(ValidateLossBatch(params, batch));
//   absl::StatusOr<ClassTerms> terms = MakeClassTerms(params, counts);
//   std::vector<float> grad(B * C);
//   absl::StatusOr<LossResult> r = ComputeLoss(
//       params, *terms, batch, {{}, absl::MakeSpan(grad)}, {});

#ifndef CBLOSS_CORE_LOSS_H_
#define CBLOSS_CORE_LOSS_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/class_weights.h"
#include "core/loss_parameters.h"
#include "core/loss_types.h"
#include "core/thread_pool.h"

namespace cbloss {

// The inputs of one computation (LOSS.md section 1). Exactly one of `labels`
// and `targets` is non-empty.
struct LossBatch {
  int64_t rows = 0;                        // B >= 1
  int64_t cols = 0;                        // C >= 1
  absl::Span<const float> logits;          // B x C, row-major
  absl::Span<const int32_t> labels;        // B, labels mode
  absl::Span<const float> targets;         // B x C, targets mode
  absl::Span<const float> sample_weights;  // empty (all 1) or B
  absl::Span<const float> upstream;        // empty (all 1) or B; NONE only
  // Instead of `logits` (which is then empty), 16-bit logits: B x C values
  // of `half_logits_dtype` (kFloat16 or kBFloat16) as little-endian wire
  // bytes, any alignment; the caller guarantees 2 * B * C of them. Each row
  // chunk is decoded in cache just before it is computed, so there is no
  // float32 copy of the batch.
  const char* half_logits = nullptr;
  DType half_logits_dtype = DType::kBFloat16;
};

// Where results go. An empty span means "not wanted".
struct LossOutputs {
  absl::Span<float> per_sample_losses;  // B: the unreduced l_i of section 4
  absl::Span<float> gradient;           // B x C: dL/dz of section 6
  // Instead of `gradient` (which is then empty): 2 * B * C bytes receiving
  // the gradient as `half_gradient_dtype` values (kFloat16 or kBFloat16),
  // rounded to nearest even and saturating at the type's largest finite
  // value (core/half.h HalfOverflow::kSaturate), encoded chunk by chunk.
  char* half_gradient = nullptr;
  DType half_gradient_dtype = DType::kBFloat16;
  // EQL_V2 only: what an accumulating request adds to its run's P_j and Q_j
  // (LOSS.md section 10), C entries each; empty = not wanted.
  absl::Span<double> eqlv2_positive_delta = {};
  absl::Span<double> eqlv2_negative_delta = {};
};

struct LossResult {
  double loss = 0.0;         // the reduced scalar L of section 5
  int64_t num_samples = 0;   // N: samples not ignored
  double denominator = 0.0;  // D of section 5 (1 for SUM and NONE)
};

struct ComputeOptions {
  // Splits row chunks across this pool; null runs on the calling thread.
  ThreadPool* pool = nullptr;
  // Polled between row chunks; when it returns true the computation stops
  // and ComputeLoss returns CANCELLED (outputs are then unspecified).
  std::function<bool()> should_stop;
};

// Checks every rule of LOSS.md section 7 that concerns the batch (shapes,
// finite logits, labels in range, targets in [0, 1], sample weights,
// upstream, mode/loss/reduction combinations). INVALID_ARGUMENT with a
// message naming the field and the first bad index. The parameters' ranges
// are not checked here (ValidateLossParams).
absl::Status ValidateLossBatch(const LossParams& params,
                               const LossBatch& batch);

// Computes the loss of a validated batch. `terms` come from MakeClassTerms
// for the same params and batch.cols classes (a caller may replace the
// weights, e.g. with 1s before a deferred re-weighting epoch); outputs must
// be empty or of the documented sizes.
absl::StatusOr<LossResult> ComputeLoss(const LossParams& params,
                                       const ClassTerms& terms,
                                       const LossBatch& batch,
                                       const LossOutputs& outputs,
                                       const ComputeOptions& options);

// Rows per chunk for a batch with `cols` classes: a function of the shape
// only, which is what makes results independent of the thread count.
int64_t RowsPerChunk(int64_t cols);

}  // namespace cbloss

#endif  // CBLOSS_CORE_LOSS_H_
