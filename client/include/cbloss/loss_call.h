// Copyright 2026 The cbloss Authors.
//
// The arguments and result of one ComputeLoss call (docs/spec/API.md), as
// views of the caller's buffers: where the class counts come from
// (LossSource), the logits (Logits), the labels or targets (Target), the
// per-call options (LossOptions) and what comes back (LossResult). Used by
// Client::ComputeLoss and LossStream::Compute (cbloss/client.h). The spans
// must stay valid for the duration of the call.
//
// Example:
//   std::vector<float> grad(rows * cols);
//   cbloss::client::LossOptions options;
//   options.config.set_loss_type(cbloss::v1::LOSS_TYPE_FOCAL);
//   options.gradient_out = absl::MakeSpan(grad);
//   absl::StatusOr<cbloss::v1::ComputeLossRequest> request =
//       cbloss::client::MakeComputeLossRequest(
//           cbloss::client::LossSource::Counts({500, 120, 30}),
//           cbloss::client::Logits::Float32(logits, rows, cols),
//           cbloss::client::Labels(labels), options);

#ifndef CBLOSS_CLIENT_INCLUDE_CBLOSS_LOSS_CALL_H_
#define CBLOSS_CLIENT_INCLUDE_CBLOSS_LOSS_CALL_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "absl/types/span.h"
#include "cbloss/v1/cbloss.pb.h"

namespace cbloss::client {

// Where the class counts come from: a stored dataset, or counts given inline.
// With LossOptions::run set, a LossSource{} (neither) means the run's
// dataset (or no static counts for a run without one).
struct LossSource {
  static LossSource Dataset(std::string name) {
    LossSource s;
    s.dataset = std::move(name);
    return s;
  }
  static LossSource Counts(std::vector<int64_t> counts) {
    LossSource s;
    s.counts = std::move(counts);
    return s;
  }
  std::string dataset;          // non-empty: a stored dataset
  std::vector<int64_t> counts;  // otherwise: inline counts
};

// A [rows, cols] matrix of logits in float32, or as raw float16 / bfloat16
// bit patterns (sent as such: half the bytes), or already in a registered
// shared-memory region (Client::RegisterSharedMemory; API.md section 5.3):
// then only the reference travels, and the server checks that it holds
// exactly rows * cols elements of `dtype`.
struct Logits {
  static Logits Float32(absl::Span<const float> values, int64_t rows,
                        int64_t cols) {
    Logits l;
    l.f32 = values;
    l.rows = rows;
    l.cols = cols;
    return l;
  }
  static Logits Half(v1::DType dtype, absl::Span<const uint16_t> bits,
                     int64_t rows, int64_t cols) {
    Logits l;
    l.dtype = dtype;
    l.half = bits;
    l.rows = rows;
    l.cols = cols;
    return l;
  }
  static Logits SharedMemory(v1::SharedMemoryRef ref, v1::DType dtype,
                             int64_t rows, int64_t cols) {
    Logits l;
    l.dtype = dtype;
    l.shm = std::move(ref);
    l.rows = rows;
    l.cols = cols;
    return l;
  }
  v1::DType dtype = v1::DTYPE_FLOAT32;
  absl::Span<const float> f32;
  absl::Span<const uint16_t> half;
  // Set: the logits are these bytes of a region (f32 and half unused).
  absl::optional<v1::SharedMemoryRef> shm;
  int64_t rows = 0;
  int64_t cols = 0;
};

// Labels (one class index per row) or targets (float32, same shape as the
// logits: multi-label or soft targets).
struct Target {
  absl::Span<const int32_t> labels;
  absl::Span<const float> targets;
};
inline Target Labels(absl::Span<const int32_t> labels) { return {labels, {}}; }
inline Target Targets(absl::Span<const float> targets) { return {{}, targets}; }

struct LossOptions {
  // Overrides of the dataset's defaults (set fields only).
  v1::LossConfig config;
  absl::Span<const float> sample_weights;  // empty: all 1
  absl::Span<const float> upstream;        // reduction NONE only
  bool want_gradient = true;
  bool want_per_sample_losses = false;
  // FLOAT32 by default; FLOAT16 / BFLOAT16 return 16-bit patterns.
  v1::DType gradient_dtype = v1::DTYPE_FLOAT32;
  // If non-empty (rows * cols floats), a float32 gradient is written here
  // instead of into LossResult::gradient.
  absl::Span<float> gradient_out;
  // Set: the server writes the gradient (rows * cols elements of
  // gradient_dtype) into these bytes of a registered shared-memory region
  // instead of the response, and LossResult's gradient fields stay empty.
  // Implies want_gradient; excludes gradient_out.
  absl::optional<v1::SharedMemoryRef> gradient_shm;
  absl::optional<uint64_t> expected_dataset_version;
  absl::optional<int32_t> epoch;
  absl::optional<absl::Duration> deadline;
  // A run (LOSS.md section 11) whose statistics the call reads (SEESAW's
  // seen counts, EQL_V2's P and Q); empty: none.
  std::string run;
  // Also add this call to the run's statistics. Not idempotent: such a call
  // is never retried (cbloss/client.h).
  bool accumulate = false;
};

// What one ComputeLoss call returned.
struct LossResult {
  double loss = 0.0;
  int64_t num_samples = 0;
  uint64_t dataset_version = 0;  // 0 for inline counts
  uint64_t run_version = 0;      // with a run: its version after this call
  // float32, unless gradient_out or gradient_shm given
  std::vector<float> gradient;
  std::vector<uint16_t> gradient_half;  // FLOAT16 / BFLOAT16 gradient bits
  std::vector<float> per_sample_losses;
  std::vector<double> class_weights;
  v1::LossConfig resolved_config;  // every field set: what was used
};

// Builds the wire request of ComputeLoss (shared by unary and stream calls;
// handy for tools that want the raw message). INVALID_ARGUMENT if the logits
// do not fill their shape, or for gradient_out together with gradient_shm.
absl::StatusOr<v1::ComputeLossRequest> MakeComputeLossRequest(
    const LossSource& source, const Logits& logits, const Target& target,
    const LossOptions& options);

// Unpacks a response into a LossResult (writing into options.gradient_out).
// A response carrying `error_code` becomes that status.
absl::StatusOr<LossResult> ReadComputeLossResponse(
    const v1::ComputeLossResponse& response, const LossOptions& options);

}  // namespace cbloss::client

#endif  // CBLOSS_CLIENT_INCLUDE_CBLOSS_LOSS_CALL_H_
