// Copyright 2026 The cbloss Authors.

#include "core/loss.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"

namespace cbloss {
namespace {

// About this many elements per chunk: large enough to amortise scheduling,
// small enough to spread a 256 x 1000 batch over a few threads.
constexpr int64_t kElementsPerChunk = 16384;

bool IsLabelsMode(const LossBatch& batch) { return !batch.labels.empty(); }

// float64 -> float32, saturating at +-FLT_MAX: LOSS.md section 7 wants every
// result finite for finite input, and huge but finite sample weights or
// upstream values can push a float64 result past float32's range.
inline float ToFloat(double v) {
  constexpr double kMax = std::numeric_limits<float>::max();
  return static_cast<float>(std::clamp(v, -kMax, kMax));
}

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

// sp(x) = log(1 + e^x) and sp(-x), sharing log1p(exp(-|x|)) (section 4).
struct Softplus {
  double pos;    // sp(x)
  double neg;    // sp(-x)
  double sigma;  // 1 / (1 + e^-x)
};

inline Softplus SoftplusPair(double x) {
  const double e = std::exp(-std::fabs(x));
  const double tail = std::log1p(e);
  Softplus s;
  s.pos = std::max(x, 0.0) + tail;
  s.neg = std::max(-x, 0.0) + tail;
  s.sigma = x >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
  return s;
}

// Per-row arguments shared by the row kernels.
struct Row {
  const float* z;        // C logits
  const float* targets;  // C targets (targets mode) or null
  int32_t label;         // labels mode
  double sample_weight;  // s_i
  double grad_scale;     // 1/D, or u_i for NONE, or 0
  float* grad;           // C outputs, or null
};

// The logits a softmax-family loss actually uses, z'_ij, in float64 (LOSS.md
// section 9 shifts them by up to |log n| or scales them by 30: float32 would
// lose the digits section 7 asks for), and dz'/dz.
struct PlainLogits {
  double operator()(const float* z, int64_t j, int32_t /*y*/) const {
    return z[j];
  }
  double chain() const { return 1.0; }
};

// BALANCED_SOFTMAX and LOGIT_ADJUSTED: z + offset_j.
struct OffsetLogits {
  const double* offsets;
  double operator()(const float* z, int64_t j, int32_t /*y*/) const {
    return z[j] + offsets[j];
  }
  double chain() const { return 1.0; }
};

// LDAM: scale * (z - [j == y] Delta_j).
struct MarginLogits {
  const double* margins;
  double scale;
  double operator()(const float* z, int64_t j, int32_t y) const {
    return scale * (j == y ? z[j] - margins[j] : double{z[j]});
  }
  double chain() const { return scale; }
};

// Max and log-sum-exp of a row's z'.
template <typename Logit>
void RowLogSumExp(const Row& r, int64_t cols, const Logit& logit, double* max,
                  double* log_sum) {
  double m = logit(r.z, 0, r.label);
  for (int64_t j = 1; j < cols; ++j) m = std::max(m, logit(r.z, j, r.label));
  double sum = 0.0;
  for (int64_t j = 0; j < cols; ++j)
    sum += std::exp(logit(r.z, j, r.label) - m);
  *max = m;
  *log_sum = std::log(sum);
}

// Cross-entropy on z': s_i w_y (lse' - z'_y); gradient
// (s_i w_y / D) (dz'/dz) (softmax(z')_j - [j == y]). SOFTMAX is z' = z.
template <typename Logit>
double SoftmaxRow(const Row& r, int64_t cols, double row_weight,
                  const Logit& logit) {
  double m, log_sum;
  RowLogSumExp(r, cols, logit, &m, &log_sum);
  // (m - z'_y) + log_sum rather than lse - z'_y: exact when z'_y is the max.
  const double loss =
      row_weight * ((m - logit(r.z, r.label, r.label)) + log_sum);
  if (r.grad != nullptr) {
    const double f = row_weight * r.grad_scale * logit.chain();
    const double lse = m + log_sum;
    for (int64_t j = 0; j < cols; ++j) {
      const double p = std::exp(logit(r.z, j, r.label) - lse);
      r.grad[j] = ToFloat(f * (p - (j == r.label ? 1.0 : 0.0)));
    }
  }
  return loss;
}

// SOFTMAX_FOCAL: s_i w_y (1 - p_t)^gamma (-log p_t), from log p_t = lp.
// With x = 1 - p_t = -expm1(lp) and q = lp / expm1(lp) (1 at lp = 0):
//   dl/dz_j = s_i w_y x^gamma (1 + gamma p_t q) (p_j - [j == y]),
// which is 0, not NaN, where p_t rounds to 1.
double SoftmaxFocalRow(const Row& r, int64_t cols, double row_weight,
                       double gamma) {
  const PlainLogits logit;
  double m, log_sum;
  RowLogSumExp(r, cols, logit, &m, &log_sum);
  const double lp = (r.z[r.label] - m) - log_sum;
  const double x = -std::expm1(lp);
  const double modulator = std::pow(x, gamma);
  const double loss = row_weight * modulator * -lp;
  if (r.grad != nullptr) {
    const double p_t = std::exp(lp);
    const double q = lp == 0.0 ? 1.0 : lp / std::expm1(lp);
    const double f =
        row_weight * r.grad_scale * modulator * (1.0 + gamma * p_t * q);
    const double lse = m + log_sum;
    for (int64_t j = 0; j < cols; ++j) {
      const double p = std::exp(r.z[j] - lse);
      r.grad[j] = ToFloat(f * (p - (j == r.label ? 1.0 : 0.0)));
    }
  }
  return loss;
}

// SIGMOID and FOCAL (gamma = 0 is SIGMOID): section 4 and 6, with
//   t z + sp(-z) = t sp(z) + (1 - t) sp(-z)   (the modulator's exponent)
//   sp(z) - t z  = (1 - t) sp(z) + t sp(-z)   (b)
// which add non-negative terms and so never cancel, even at |z| = 1e4.
template <bool kFocal>
double BinaryRow(const Row& r, int64_t cols, absl::Span<const double> w,
                 double gamma, double labels_omega) {
  double loss = 0.0;
  for (int64_t j = 0; j < cols; ++j) {
    double t, omega;
    if (r.targets != nullptr) {
      t = r.targets[j];
      omega = r.sample_weight * w[j];
    } else {
      t = j == r.label ? 1.0 : 0.0;
      omega = labels_omega;
    }
    const Softplus s = SoftplusPair(r.z[j]);
    const double b = (1.0 - t) * s.pos + t * s.neg;
    if constexpr (kFocal) {
      const double m = std::exp(-gamma * (t * s.pos + (1.0 - t) * s.neg));
      loss += omega * m * b;
      if (r.grad != nullptr) {
        const double d = (s.sigma - t) - gamma * (s.sigma + t - 1.0) * b;
        r.grad[j] = ToFloat(omega * r.grad_scale * m * d);
      }
    } else {
      loss += omega * b;
      if (r.grad != nullptr) {
        r.grad[j] = ToFloat(omega * r.grad_scale * (s.sigma - t));
      }
    }
  }
  return loss;
}

// SOFTMAX_BCE: the PyTorch port's BCE on softmax probabilities, with
// PyTorch's clamped logs and its backward (LOSS.md sections 4 and 6).
double SoftmaxBceRow(const Row& r, int64_t cols, double omega) {
  constexpr double kLogFloor = -100.0;
  constexpr double kEpsilon = 1e-12;  // PyTorch's BCE backward guard
  double m = r.z[0];
  for (int64_t j = 1; j < cols; ++j) m = std::max(m, double{r.z[j]});
  double sum = 0.0;
  for (int64_t j = 0; j < cols; ++j) sum += std::exp(r.z[j] - m);
  double loss = 0.0;
  double dot = 0.0;  // sum_k p_k * dL/dp_k
  const double f = omega * r.grad_scale;
  for (int64_t j = 0; j < cols; ++j) {
    const double p = std::exp(r.z[j] - m) / sum;
    const double t = j == r.label ? 1.0 : 0.0;
    const double log_p = std::max(std::log(p), kLogFloor);
    const double log_1mp = std::max(std::log(1.0 - p), kLogFloor);
    loss += omega * ((t - 1.0) * log_1mp - t * log_p);
    if (r.grad != nullptr) {
      dot += p * (f * (p - t) / std::max((1.0 - p) * p, kEpsilon));
    }
  }
  if (r.grad != nullptr) {
    for (int64_t j = 0; j < cols; ++j) {
      const double p = std::exp(r.z[j] - m) / sum;
      const double t = j == r.label ? 1.0 : 0.0;
      const double dp = f * (p - t) / std::max((1.0 - p) * p, kEpsilon);
      r.grad[j] = ToFloat(p * (dp - dot));
    }
  }
  return loss;
}

// Counts behind the denominators of section 5, for a range of rows.
struct Tally {
  int64_t samples = 0;   // N
  double positives = 0;  // P
  double weighted = 0;   // sum_i s_i w_{y_i}
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
      if (IsSoftmaxFamily(params.loss_type)) {
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

}  // namespace

int64_t RowsPerChunk(int64_t cols) {
  return std::max<int64_t>(1, kElementsPerChunk / std::max<int64_t>(1, cols));
}

absl::Status ValidateLossBatch(const LossParams& params,
                               const LossBatch& batch) {
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
  if (absl::Status s = CheckLength("logits", batch.logits.size(), B * C,
                                   absl::StrCat("shape [", B, ", ", C, "]"));
      !s.ok()) {
    return s;
  }
  const bool has_labels = !batch.labels.empty();
  const bool has_targets = !batch.targets.empty();
  if (has_labels == has_targets) {
    return absl::InvalidArgumentError(
        has_labels ? "both labels and targets are given; give exactly one"
                   : "neither labels nor targets is given; give exactly one");
  }
  if (has_labels) {
    if (absl::Status s = CheckLength("labels", batch.labels.size(), B,
                                     "one per row of logits");
        !s.ok()) {
      return s;
    }
  } else {
    if (absl::Status s =
            CheckLength("targets", batch.targets.size(), B * C,
                        absl::StrCat("shape [", B, ", ", C, "] as logits"));
        !s.ok()) {
      return s;
    }
    if (IsSoftmaxFamily(params.loss_type)) {
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
    if (absl::Status s =
            CheckLength("sample_weights", batch.sample_weights.size(), B,
                        "one per row of logits, or none");
        !s.ok()) {
      return s;
    }
  }
  if (!batch.upstream.empty()) {
    if (params.reduction != Reduction::kNone) {
      return absl::InvalidArgumentError(
          absl::StrCat("upstream is only allowed with reduction none, not ",
                       ReductionName(params.reduction)));
    }
    if (absl::Status s = CheckLength("upstream", batch.upstream.size(), B,
                                     "one per row of logits, or none");
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = ValidateBeta(params.beta); !s.ok()) return s;
  if (!std::isfinite(params.gamma) || params.gamma < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.gamma = ", params.gamma, " must be finite and >= 0"));
  }
  if (!(params.tau >= 0 && params.tau <= kMaxTau)) {  // NaN fails too
    return absl::InvalidArgumentError(absl::StrCat(
        "config.tau = ", params.tau, " must be in [0, ", kMaxTau, "]"));
  }
  if (!(params.max_margin > 0 && params.max_margin <= kMaxMargin)) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.max_margin = ", params.max_margin,
                     " must be in (0, ", kMaxMargin, "]"));
  }
  if (!(params.scale > 0 && params.scale <= kMaxScale)) {  // NaN fails too
    return absl::InvalidArgumentError(absl::StrCat(
        "config.scale = ", params.scale, " must be in (0, ", kMaxScale, "]"));
  }

  for (int64_t k = 0; k < B * C; ++k) {
    if (!std::isfinite(batch.logits[k])) {
      return absl::InvalidArgumentError(
          absl::StrCat("logits[", k / C, "][", k % C, "] is ",
                       NonFiniteName(batch.logits[k])));
    }
  }
  for (int64_t i = 0; i < static_cast<int64_t>(batch.labels.size()); ++i) {
    const int32_t y = batch.labels[i];
    if ((y < 0 || y >= C) && !IsIgnored(y, params.ignore_index)) {
      return absl::InvalidArgumentError(
          absl::StrCat("labels[", i, "] = ", y, " is outside [0, ", C,
                       ") and is not ignore_index ", params.ignore_index));
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

absl::StatusOr<LossResult> ComputeLoss(const LossParams& params,
                                       const ClassTerms& terms,
                                       const LossBatch& batch,
                                       const LossOutputs& out,
                                       const ComputeOptions& options) {
  const int64_t B = batch.rows;
  const int64_t C = batch.cols;
  const absl::Span<const double> w = terms.weights;
  const int64_t rows_per_chunk = RowsPerChunk(C);
  const int64_t num_chunks = (B + rows_per_chunk - 1) / rows_per_chunk;
  const bool labels_mode = IsLabelsMode(batch);
  const bool need_positives =
      !labels_mode && params.reduction == Reduction::kMean;

  std::atomic<bool> stopped{false};
  auto run_chunks = [&](auto&& body) {
    auto guarded = [&](int64_t chunk) {
      if (stopped.load(std::memory_order_relaxed)) return;
      if (options.should_stop && options.should_stop()) {
        stopped.store(true, std::memory_order_relaxed);
        return;
      }
      body(chunk, chunk * rows_per_chunk,
           std::min(B, (chunk + 1) * rows_per_chunk));
    };
    if (options.pool != nullptr) {
      options.pool->ParallelFor(num_chunks, guarded);
    } else {
      for (int64_t c = 0; c < num_chunks; ++c) guarded(c);
    }
  };

  // Pass 1: the denominator (section 5), from per-chunk tallies combined in
  // chunk order.
  std::vector<Tally> tallies(num_chunks);
  run_chunks([&](int64_t chunk, int64_t begin, int64_t end) {
    tallies[chunk] = TallyRows(params, w, batch, begin, end, need_positives);
  });
  Tally total;
  for (const Tally& t : tallies) {
    total.samples += t.samples;
    total.positives += t.positives;
    total.weighted += t.weighted;
  }
  LossResult result;
  result.num_samples = total.samples;
  result.denominator = Denominator(params, batch, total);
  const bool reduce_by_upstream = params.reduction == Reduction::kNone;
  const bool zero_denominator = result.denominator == 0.0;
  const double inv_denominator =
      zero_denominator ? 0.0 : 1.0 / result.denominator;

  // Pass 2: per-sample losses and gradient rows.
  std::vector<double> partial(num_chunks, 0.0);
  run_chunks([&](int64_t chunk, int64_t begin, int64_t end) {
    double sum = 0.0;
    for (int64_t i = begin; i < end; ++i) {
      Row r;
      r.z = batch.logits.data() + i * C;
      r.targets = labels_mode ? nullptr : batch.targets.data() + i * C;
      r.label = labels_mode ? batch.labels[i] : 0;
      r.sample_weight =
          batch.sample_weights.empty() ? 1.0 : batch.sample_weights[i];
      const double upstream = batch.upstream.empty() ? 1.0 : batch.upstream[i];
      r.grad_scale = reduce_by_upstream ? upstream : inv_denominator;
      r.grad = out.gradient.empty() ? nullptr : out.gradient.data() + i * C;

      double loss = 0.0;
      if (labels_mode && IsIgnored(r.label, params.ignore_index)) {
        if (r.grad != nullptr) std::fill(r.grad, r.grad + C, 0.0f);
      } else {
        const double row_weight =
            labels_mode ? r.sample_weight * w[r.label] : 0.0;
        switch (params.loss_type) {
          case LossType::kSoftmax:
            loss = SoftmaxRow(r, C, row_weight, PlainLogits{});
            break;
          case LossType::kBalancedSoftmax:
          case LossType::kLogitAdjusted:
            loss = SoftmaxRow(r, C, row_weight,
                              OffsetLogits{terms.logit_offsets.data()});
            break;
          case LossType::kLdam:
            loss = SoftmaxRow(r, C, row_weight,
                              MarginLogits{terms.margins.data(), params.scale});
            break;
          case LossType::kSoftmaxFocal:
            loss = SoftmaxFocalRow(r, C, row_weight, params.gamma);
            break;
          case LossType::kSigmoid:
            loss = BinaryRow<false>(r, C, w, 0.0, row_weight);
            break;
          case LossType::kFocal:
            loss = BinaryRow<true>(r, C, w, params.gamma, row_weight);
            break;
          case LossType::kSoftmaxBce:
            loss = SoftmaxBceRow(r, C, row_weight);
            break;
        }
      }
      if (!out.per_sample_losses.empty()) {
        out.per_sample_losses[i] = ToFloat(loss);
      }
      sum += reduce_by_upstream ? upstream * loss : loss;
    }
    partial[chunk] = sum;
  });
  if (stopped.load()) {
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
