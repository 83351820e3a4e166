// Copyright 2026 The cbloss Authors.

#include "core/loss.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/half.h"
#include "core/internal/loss_kernels.h"
#include "core/status_macros.h"

namespace cbloss {
namespace {

// About this many elements per chunk: large enough to amortise scheduling,
// small enough to spread a 256 x 1000 batch over a few threads.
constexpr int64_t kElementsPerChunk = 16384;

bool IsLabelsMode(const LossBatch& batch) { return !batch.labels.empty(); }

bool IsIgnored(int32_t label, int32_t ignore_index) {
  return label == ignore_index;
}

// "NaN", "inf" or "-inf" for a non-finite value.
const char* NonFiniteName(double v) {
  if (std::isnan(v)) return "NaN";
  return v > 0 ? "inf" : "-inf";
}

absl::Status CheckLength(absl::string_view field, size_t actual,
                         int64_t expected, absl::string_view what) {
  if (static_cast<int64_t>(actual) != expected) {
    return absl::InvalidArgumentError(absl::StrCat(field, " has ", actual,
                                                   " entries, expected ",
                                                   expected, " (", what, ")"));
  }
  return absl::OkStatus();
}

// Counts behind the denominators of section 5, for a range of rows.
struct Tally {
  int64_t samples = 0;     // N
  int64_t foreground = 0;  // N without background rows (label C)
  double positives = 0;    // P
  double weighted = 0;     // sum_i s_i w_{y_i}
};

Tally TallyRows(const LossParams& params, absl::Span<const double> w,
                const LossBatch& batch, int64_t begin, int64_t end,
                bool need_positives) {
  Tally tally;
  const bool labels_mode = IsLabelsMode(batch);
  for (int64_t i = begin; i < end; ++i) {
    const double s =
        batch.sample_weights.empty() ? 1.0 : batch.sample_weights[i];
    if (labels_mode) {
      const int32_t y = batch.labels[i];
      if (IsIgnored(y, params.ignore_index)) continue;
      ++tally.samples;
      if (y == batch.cols) continue;  // background (LOSS.md section 10)
      ++tally.foreground;
      tally.positives += 1.0;
      tally.weighted += s * w[y];
    } else {
      ++tally.samples;
      if (need_positives) {
        const float* t = batch.targets.data() + i * batch.cols;
        for (int64_t j = 0; j < batch.cols; ++j) tally.positives += t[j];
      }
    }
  }
  return tally;
}

double Denominator(const LossParams& params, const LossBatch& batch,
                   const Tally& tally) {
  switch (params.reduction) {
    case Reduction::kMean:
      // LOSS.md section 10: SEESAW divides by its foreground rows, EQL and
      // EQL_V2 by every row not ignored, as the references do.
      if (params.loss_type == LossType::kSeesaw) {
        return static_cast<double>(tally.foreground);
      }
      if (IsSoftmaxFamily(params.loss_type) ||
          IsDetectionLoss(params.loss_type)) {
        return static_cast<double>(tally.samples);
      }
      return tally.positives;
    case Reduction::kElementMean:
      return static_cast<double>(tally.samples) *
             static_cast<double>(batch.cols);
    case Reduction::kWeightedMean:
      return tally.weighted;
    case Reduction::kSum:
    case Reduction::kNone:
      return 1.0;
  }
  return 1.0;
}

// The lengths of section 7 and which inputs go together.
absl::Status CheckShapes(const LossParams& params, const LossBatch& batch) {
  const int64_t B = batch.rows;
  const int64_t C = batch.cols;
  if (B < 1 || C < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "logits.shape = [", B, ", ", C, "]: both dimensions must be >= 1"));
  }
  if (B > std::numeric_limits<int64_t>::max() / C) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits.shape = [", B, ", ", C, "] overflows"));
  }
  if (batch.half_logits != nullptr) {
    if (!batch.logits.empty()) {
      return absl::InvalidArgumentError(
          "logits are given both as float32 values and as 16-bit bytes");
    }
    if (batch.half_logits_dtype == DType::kFloat32) {
      return absl::InvalidArgumentError("half_logits_dtype is not 16-bit");
    }
  } else {
    CBLOSS_RETURN_IF_ERROR(
        CheckLength("logits", batch.logits.size(), B * C,
                    absl::StrCat("shape [", B, ", ", C, "]")));
  }
  const bool has_labels = !batch.labels.empty();
  if (has_labels == !batch.targets.empty()) {
    return absl::InvalidArgumentError(
        has_labels ? "both labels and targets are given; give exactly one"
                   : "neither labels nor targets is given; give exactly one");
  }
  if (has_labels) {
    CBLOSS_RETURN_IF_ERROR(
        CheckLength("labels", batch.labels.size(), B, "one per row of logits"));
  } else {
    CBLOSS_RETURN_IF_ERROR(
        CheckLength("targets", batch.targets.size(), B * C,
                    absl::StrCat("shape [", B, ", ", C, "] as logits")));
    if (IsLabelsOnly(params.loss_type)) {
      return absl::InvalidArgumentError(
          absl::StrCat("targets are not allowed with loss type ",
                       LossTypeName(params.loss_type),
                       "; use labels, or loss type sigmoid or focal"));
    }
    if (params.reduction == Reduction::kWeightedMean) {
      return absl::InvalidArgumentError(
          "reduction weighted_mean needs labels, not targets");
    }
  }
  if (!batch.sample_weights.empty()) {
    CBLOSS_RETURN_IF_ERROR(CheckLength("sample_weights",
                                       batch.sample_weights.size(), B,
                                       "one per row of logits, or none"));
  }
  if (!batch.upstream.empty()) {
    if (params.reduction != Reduction::kNone) {
      return absl::InvalidArgumentError(
          absl::StrCat("upstream is only allowed with reduction none, not ",
                       ReductionName(params.reduction)));
    }
    CBLOSS_RETURN_IF_ERROR(CheckLength("upstream", batch.upstream.size(), B,
                                       "one per row of logits, or none"));
  }
  return absl::OkStatus();
}

// The parameter combinations of LOSS.md section 10: SEESAW, EQL and EQL_V2
// carry their own re-weighting and reduce by MEAN, SUM or NONE.
absl::Status CheckCombination(const LossParams& params) {
  if (!IsDetectionLoss(params.loss_type)) return absl::OkStatus();
  if (params.weighting != WeightingScheme::kNone) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.weighting = ", WeightingSchemeName(params.weighting),
        " is not allowed with loss type ", LossTypeName(params.loss_type),
        ", which carries its own re-weighting; leave it unset or none"));
  }
  if (params.reduction == Reduction::kElementMean ||
      params.reduction == Reduction::kWeightedMean) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.reduction = ", ReductionName(params.reduction),
        " is not allowed with loss type ", LossTypeName(params.loss_type),
        "; use mean, sum or none"));
  }
  return absl::OkStatus();
}

// The values of section 7: finite logits, labels in range, targets in
// [0, 1], finite non-negative sample weights, finite upstream.
absl::Status CheckValues(const LossParams& params, const LossBatch& batch) {
  const int64_t B = batch.rows;
  const int64_t C = batch.cols;
  const bool half_logits = batch.half_logits != nullptr;
  const int64_t k = half_logits
                        ? FindNonFiniteHalfBytes(batch.half_logits_dtype,
                                                 batch.half_logits, B * C)
                        : kernels::FindNonFinite(batch.logits.data(), B * C);
  if (k >= 0) {
    const float bad = half_logits ? HalfBytesValue(batch.half_logits_dtype,
                                                   batch.half_logits, k)
                                  : batch.logits[k];
    return absl::InvalidArgumentError(absl::StrCat(
        "logits[", k / C, "][", k % C, "] is ", NonFiniteName(bad)));
  }
  // LOSS.md section 10: label C marks a background row for SEESAW, EQL and
  // EQL_V2.
  const bool background = IsDetectionLoss(params.loss_type);
  const int64_t limit = background ? C + 1 : C;
  for (int64_t i = 0; i < static_cast<int64_t>(batch.labels.size()); ++i) {
    const int32_t y = batch.labels[i];
    if ((y < 0 || y >= limit) && !IsIgnored(y, params.ignore_index)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "labels[", i, "] = ", y, " is outside [0, ", C,
          background ? absl::StrCat("] (", C, " = background)") : ")",
          " and is not ignore_index ", params.ignore_index));
    }
  }
  for (int64_t k = 0; k < static_cast<int64_t>(batch.targets.size()); ++k) {
    const float t = batch.targets[k];
    if (!(t >= 0.0f && t <= 1.0f)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "targets[", k / C, "][", k % C, "] = ", t, " is outside [0, 1]"));
    }
  }
  for (size_t i = 0; i < batch.sample_weights.size(); ++i) {
    const float s = batch.sample_weights[i];
    if (!std::isfinite(s)) {
      return absl::InvalidArgumentError(
          absl::StrCat("sample_weights[", i, "] is ", NonFiniteName(s)));
    }
    if (s < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("sample_weights[", i, "] = ", s, " is negative"));
    }
  }
  for (size_t i = 0; i < batch.upstream.size(); ++i) {
    if (!std::isfinite(batch.upstream[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "upstream[", i, "] is ", NonFiniteName(batch.upstream[i])));
    }
  }
  return absl::OkStatus();
}

// Runs a body over the row chunks of a batch: chunk c always covers the same
// rows, on the pool or not, so results do not depend on the thread count.
// Polls options.should_stop between chunks.
class ChunkRunner {
 public:
  ChunkRunner(int64_t rows, int64_t rows_per_chunk,
              const ComputeOptions& options)
      : rows_(rows),
        rows_per_chunk_(rows_per_chunk),
        num_chunks_((rows + rows_per_chunk - 1) / rows_per_chunk),
        options_(options) {}

  int64_t num_chunks() const { return num_chunks_; }
  bool stopped() const { return stopped_.load(); }

  // body(chunk, begin_row, end_row), on the pool if `parallel` and there is
  // one.
  template <typename Body>
  void Run(bool parallel, Body&& body) {
    auto guarded = [&](int64_t chunk) {
      if (stopped_.load(std::memory_order_relaxed)) return;
      if (options_.should_stop && options_.should_stop()) {
        stopped_.store(true, std::memory_order_relaxed);
        return;
      }
      body(chunk, chunk * rows_per_chunk_,
           std::min(rows_, (chunk + 1) * rows_per_chunk_));
    };
    if (parallel && options_.pool != nullptr) {
      options_.pool->ParallelFor(num_chunks_, guarded);
    } else {
      for (int64_t c = 0; c < num_chunks_; ++c) guarded(c);
    }
  }

 private:
  const int64_t rows_;
  const int64_t rows_per_chunk_;
  const int64_t num_chunks_;
  const ComputeOptions& options_;
  std::atomic<bool> stopped_{false};
};

// Rows [begin, end) through the row kernels; returns their sum of l_i.
// 16-bit logits are decoded, and a 16-bit gradient encoded, here, in a
// chunk-sized buffer, so they stay in cache and use every thread.
double ComputeChunk(const kernels::RowsArgs& args, const LossBatch& batch,
                    const LossOutputs& out, int64_t begin, int64_t end) {
  const int64_t C = batch.cols;
  const int64_t n = (end - begin) * C;  // elements of this chunk
  const int64_t first = begin * C;
  const bool half_in = batch.half_logits != nullptr;
  const bool half_out = out.half_gradient != nullptr;
  std::unique_ptr<float[]> buffer;  // decoded logits, then the gradient
  if (half_in || half_out) {
    buffer.reset(new float[(half_in ? n : 0) + (half_out ? n : 0)]);
  }
  kernels::RowsArgs a = args;
  if (half_in) {
    DecodeHalfBytes(batch.half_logits_dtype, batch.half_logits + 2 * first, n,
                    buffer.get());
    a.logits = buffer.get();
  } else {
    a.logits = batch.logits.data() + first;
  }
  if (half_out) {
    a.gradient = buffer.get() + (half_in ? n : 0);
  } else {
    a.gradient = out.gradient.empty() ? nullptr : out.gradient.data() + first;
  }
  const bool labels_mode = IsLabelsMode(batch);
  a.labels = labels_mode ? batch.labels.data() + begin : nullptr;
  a.targets = labels_mode ? nullptr : batch.targets.data() + first;
  a.sample_weights = batch.sample_weights.empty()
                         ? nullptr
                         : batch.sample_weights.data() + begin;
  a.upstream = batch.upstream.empty() ? nullptr : batch.upstream.data() + begin;
  a.per_sample_losses = out.per_sample_losses.empty()
                            ? nullptr
                            : out.per_sample_losses.data() + begin;
  const double sum = kernels::LossRows(a, 0, end - begin);
  if (half_out) {
    EncodeHalfBytes(out.half_gradient_dtype, a.gradient, n,
                    out.half_gradient + 2 * first, HalfOverflow::kSaturate);
  }
  return sum;
}

// EQL_V2's statistics update (LOSS.md section 10) into out's deltas: at
// most 16 groups of rows, each summed into its own C-vectors on the pool and
// added in group order, so the sums do not depend on the thread count.
void EqlV2Deltas(const kernels::RowsArgs& args, const LossBatch& batch,
                 const ComputeOptions& options, const LossOutputs& out) {
  const int64_t C = batch.cols;
  constexpr int64_t kGroups = 16;
  const int64_t rows_per_group =
      std::max<int64_t>(RowsPerChunk(C), (batch.rows + kGroups - 1) / kGroups);
  ChunkRunner groups(batch.rows, rows_per_group, options);
  std::vector<double> sums(2 * C * groups.num_chunks(), 0.0);
  groups.Run(/*parallel=*/true, [&](int64_t g, int64_t begin, int64_t end) {
    double* positive = sums.data() + 2 * C * g;
    kernels::RowsArgs a = args;
    std::vector<float> decoded;  // 16-bit logits, decoded for this group
    if (batch.half_logits != nullptr) {
      decoded.resize((end - begin) * C);
      DecodeHalfBytes(batch.half_logits_dtype,
                      batch.half_logits + 2 * begin * C, decoded.size(),
                      decoded.data());
      a.logits = decoded.data();
    } else {
      a.logits = batch.logits.data() + begin * C;
    }
    a.labels = batch.labels.data() + begin;
    a.sample_weights = batch.sample_weights.empty()
                           ? nullptr
                           : batch.sample_weights.data() + begin;
    kernels::EqlV2StatisticsRows(a, 0, end - begin, positive, positive + C);
  });
  std::fill(out.eqlv2_positive_delta.begin(), out.eqlv2_positive_delta.end(),
            0.0);
  std::fill(out.eqlv2_negative_delta.begin(), out.eqlv2_negative_delta.end(),
            0.0);
  for (int64_t g = 0; g < groups.num_chunks(); ++g) {
    const double* positive = sums.data() + 2 * C * g;
    for (int64_t j = 0; j < C; ++j) {
      out.eqlv2_positive_delta[j] += positive[j];
      out.eqlv2_negative_delta[j] += positive[C + j];
    }
  }
}

}  // namespace

int64_t RowsPerChunk(int64_t cols) {
  return std::max<int64_t>(1, kElementsPerChunk / std::max<int64_t>(1, cols));
}

absl::Status ValidateLossBatch(const LossParams& params,
                               const LossBatch& batch) {
  CBLOSS_RETURN_IF_ERROR(CheckCombination(params));
  CBLOSS_RETURN_IF_ERROR(CheckShapes(params, batch));
  return CheckValues(params, batch);
}

absl::StatusOr<LossResult> ComputeLoss(const LossParams& params,
                                       const ClassTerms& terms,
                                       const LossBatch& batch,
                                       const LossOutputs& out,
                                       const ComputeOptions& options) {
  const bool labels_mode = IsLabelsMode(batch);
  const bool need_positives =
      !labels_mode && params.reduction == Reduction::kMean;
  ChunkRunner chunks(batch.rows, RowsPerChunk(batch.cols), options);

  // Pass 1: the denominator (section 5), from per-chunk tallies combined in
  // chunk order. Only summing targets (MEAN in targets mode) reads B x C
  // values; otherwise it reads B and waking a pool thread costs more.
  std::vector<Tally> tallies(chunks.num_chunks());
  chunks.Run(need_positives, [&](int64_t chunk, int64_t begin, int64_t end) {
    tallies[chunk] =
        TallyRows(params, terms.weights, batch, begin, end, need_positives);
  });
  Tally total;
  for (const Tally& t : tallies) {
    total.samples += t.samples;
    total.foreground += t.foreground;
    total.positives += t.positives;
    total.weighted += t.weighted;
  }
  LossResult result;
  result.num_samples = total.samples;
  result.denominator = Denominator(params, batch, total);
  const bool reduce_by_upstream = params.reduction == Reduction::kNone;
  const bool zero_denominator = result.denominator == 0.0;

  // Pass 2: per-sample losses and gradient rows, by the SIMD row kernels
  // (core/internal/loss_kernels.h), each chunk with its own rows' slices.
  std::vector<float> weights_f32;
  if (!labels_mode)
    weights_f32.assign(terms.weights.begin(), terms.weights.end());
  kernels::RowsArgs args;
  args.params = &params;
  args.terms = &terms;
  args.cols = batch.cols;
  args.weights_f32 = weights_f32.data();
  args.reduce_by_upstream = reduce_by_upstream;
  args.inv_denominator = zero_denominator ? 0.0 : 1.0 / result.denominator;
  std::vector<double> partial(chunks.num_chunks(), 0.0);
  chunks.Run(/*parallel=*/true, [&](int64_t chunk, int64_t begin, int64_t end) {
    partial[chunk] = ComputeChunk(args, batch, out, begin, end);
  });
  if (!out.eqlv2_positive_delta.empty()) {
    EqlV2Deltas(args, batch, options, out);
  }
  if (chunks.stopped()) {
    return absl::CancelledError("the computation was stopped between chunks");
  }

  double sum = 0.0;
  for (double p : partial) sum += p;
  // Section 5: D = 0 gives loss 0 and, through grad_scale = 0, gradient 0.
  if (reduce_by_upstream) {
    result.loss = sum;
  } else {
    result.loss = zero_denominator ? 0.0 : sum / result.denominator;
  }
  return result;
}

}  // namespace cbloss
