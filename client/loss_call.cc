// Copyright 2026 The cbloss Authors.

#include "cbloss/loss_call.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace cbloss::client {
namespace {

void SetSource(const LossSource& source, bool has_run,
               v1::ComputeLossRequest* request) {
  if (!source.dataset.empty()) {
    request->set_dataset(source.dataset);
  } else if (!source.counts.empty() || !has_run) {
    request->mutable_class_counts()->mutable_counts()->Assign(
        source.counts.begin(), source.counts.end());
  }  // else neither: the run's dataset
}

// A [rows, cols] tensor of raw little-endian bytes: one memcpy, no
// per-element encoding.
template <typename T>
void SetTensor(v1::DType dtype, absl::Span<const T> values, int64_t rows,
               int64_t cols, v1::Tensor* tensor) {
  tensor->set_dtype(dtype);
  tensor->add_shape(rows);
  tensor->add_shape(cols);
  tensor->set_data(reinterpret_cast<const char*>(values.data()),
                   values.size() * sizeof(T));
}

// Copies a float32 gradient into options.gradient_out, or into `r`.
absl::Status ReadFloatGradient(const v1::Tensor& g, size_t n,
                               const LossOptions& options, LossResult* r) {
  float* out = nullptr;
  if (!options.gradient_out.empty()) {
    if (options.gradient_out.size() != n) {
      return absl::InvalidArgumentError(
          absl::StrCat("gradient_out has ", options.gradient_out.size(),
                       " floats; the gradient has ", n));
    }
    out = options.gradient_out.data();
  } else {
    r->gradient.resize(n);
    out = r->gradient.data();
  }
  if (g.float_data_size() > 0) {
    std::memcpy(out, g.float_data().data(), n * sizeof(float));
  } else {
    std::memcpy(out, g.data().data(), n * sizeof(float));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::ComputeLossRequest> MakeComputeLossRequest(
    const LossSource& source, const Logits& logits, const Target& target,
    const LossOptions& options) {
  const bool f32 = logits.dtype == v1::DTYPE_FLOAT32 ||
                   logits.dtype == v1::DTYPE_UNSPECIFIED;
  // Logits in shared memory: the server checks the reference's size.
  const size_t elements = f32 ? logits.f32.size() : logits.half.size();
  if (!logits.shm.has_value() &&
      (logits.rows < 1 || logits.cols < 1 ||
       elements != static_cast<size_t>(logits.rows * logits.cols))) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits: ", elements, " values do not fill shape [",
                     logits.rows, ", ", logits.cols, "]"));
  }
  if (options.gradient_shm.has_value() && !options.gradient_out.empty()) {
    return absl::InvalidArgumentError(
        "give gradient_out or gradient_shm, not both");
  }
  v1::ComputeLossRequest request;
  SetSource(source, !options.run.empty(), &request);
  *request.mutable_config() = options.config;
  if (logits.shm.has_value()) {
    v1::Tensor* tensor = request.mutable_logits();
    tensor->set_dtype(logits.dtype);
    tensor->add_shape(logits.rows);
    tensor->add_shape(logits.cols);
    *tensor->mutable_shm() = *logits.shm;
  } else if (f32) {
    SetTensor(logits.dtype, logits.f32, logits.rows, logits.cols,
              request.mutable_logits());
  } else {
    SetTensor(logits.dtype, logits.half, logits.rows, logits.cols,
              request.mutable_logits());
  }
  request.mutable_labels()->Assign(target.labels.begin(), target.labels.end());
  if (!target.targets.empty()) {
    SetTensor(v1::DTYPE_FLOAT32, target.targets, logits.rows, logits.cols,
              request.mutable_targets());
  }
  request.mutable_sample_weights()->Assign(options.sample_weights.begin(),
                                           options.sample_weights.end());
  request.mutable_upstream()->Assign(options.upstream.begin(),
                                     options.upstream.end());
  request.set_want_gradient(options.want_gradient ||
                            options.gradient_shm.has_value());
  if (options.gradient_shm.has_value()) {
    *request.mutable_gradient_shm() = *options.gradient_shm;
  }
  request.set_want_per_sample_losses(options.want_per_sample_losses);
  request.set_gradient_dtype(options.gradient_dtype);
  if (options.expected_dataset_version) {
    request.set_expected_dataset_version(*options.expected_dataset_version);
  }
  if (options.epoch) request.set_epoch(*options.epoch);
  request.set_run(options.run);
  request.set_accumulate(options.accumulate);
  return request;
}

absl::StatusOr<LossResult> ReadComputeLossResponse(
    const v1::ComputeLossResponse& response, const LossOptions& options) {
  if (response.error_code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(response.error_code()),
                        response.error_message());
  }
  LossResult r;
  r.loss = response.loss();
  r.num_samples = response.num_samples();
  r.dataset_version = response.dataset_version();
  r.run_version = response.run_version();
  r.per_sample_losses.assign(response.per_sample_losses().begin(),
                             response.per_sample_losses().end());
  r.class_weights.assign(response.class_weights().begin(),
                         response.class_weights().end());
  r.resolved_config = response.resolved_config();
  if (!response.has_gradient()) return r;
  const v1::Tensor& g = response.gradient();
  const bool half =
      g.dtype() == v1::DTYPE_FLOAT16 || g.dtype() == v1::DTYPE_BFLOAT16;
  const size_t width = half ? sizeof(uint16_t) : sizeof(float);
  const size_t n =
      g.float_data_size() > 0 ? g.float_data_size() : g.data().size() / width;
  if (half) {
    r.gradient_half.resize(n);
    std::memcpy(r.gradient_half.data(), g.data().data(), n * width);
    return r;
  }
  if (absl::Status s = ReadFloatGradient(g, n, options, &r); !s.ok()) return s;
  return r;
}

}  // namespace cbloss::client
