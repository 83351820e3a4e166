// Copyright 2026 The cbloss Authors.

#include "server/compute_request.h"

#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "core/class_weights.h"
#include "core/half.h"
#include "core/loss.h"
#include "server/loss_config.h"

namespace cbloss {
namespace {

static_assert(sizeof(float) == 4, "float32 on the wire");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the wire is little-endian; this build assumes a little-endian host"
#endif

// A [rows, cols] float32 view of a wire Tensor. Points into the request when
// it can; otherwise into `owned` (half-precision input, unaligned bytes).
struct Matrix {
  int64_t rows = 0;
  int64_t cols = 0;
  absl::Span<const float> values;
  // Uninitialised (every element is written before use): no zero-fill of
  // a buffer that is overwritten at once (docs/PERFORMANCE.md).
  std::unique_ptr<float[]> owned;
  // Left as wire bytes (values empty) when DecodeMatrix may keep 16-bit
  // values: the engine decodes them chunk by chunk (core/loss.h).
  const char* half_bytes = nullptr;
  DType half_dtype = DType::kBFloat16;
};

std::string ShapeString(const v1::Tensor& t) {
  std::string s = "[";
  for (int i = 0; i < t.shape_size(); ++i) {
    absl::StrAppend(&s, i ? ", " : "", t.shape(i));
  }
  return s + "]";
}

absl::Status CheckShape2D(const v1::Tensor& t, absl::string_view field) {
  if (t.shape_size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".shape = ", ShapeString(t), " has ",
                     t.shape_size(), " dimensions; expected 2 ([B, C])"));
  }
  const int64_t rows = t.shape(0), cols = t.shape(1);
  if (rows < 1 || cols < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".shape = ", ShapeString(t), ": both dimensions must be >= 1"));
  }
  // Elements and their bytes must fit in int64 (and in practice in memory,
  // which the data byte count then checks).
  if (rows > std::numeric_limits<int64_t>::max() / 4 / cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".shape = ", ShapeString(t), " is too large"));
  }
  return absl::OkStatus();
}

// With `keep_half`, 16-bit values stay in the message's bytes (see
// Matrix::half_bytes); otherwise they are decoded into `owned`.
absl::Status DecodeMatrix(const v1::Tensor& t, absl::string_view field,
                          bool keep_half, Matrix* out) {
  if (absl::Status s = CheckShape2D(t, field); !s.ok()) return s;
  absl::StatusOr<DType> dtype =
      ToDType(t.dtype(), absl::StrCat(field, ".dtype"));
  if (!dtype.ok()) return dtype.status();
  out->rows = t.shape(0);
  out->cols = t.shape(1);
  const int64_t n = out->rows * out->cols;
  const bool has_data = !t.data().empty();
  const bool has_floats = t.float_data_size() > 0;
  if (has_data == has_floats) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": exactly one of data and float_data must be non-empty (",
        has_data ? "both are set" : "neither is set", ")"));
  }
  if (has_floats) {
    if (*dtype != DType::kFloat32) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".float_data holds float32 values, but ", field,
                       ".dtype is ", v1::DType_Name(t.dtype()),
                       "; send 16-bit values in ", field, ".data"));
    }
    if (t.float_data_size() != n) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".float_data has ", t.float_data_size(),
                       " values; shape ", ShapeString(t), " needs ", n));
    }
    out->values = absl::MakeConstSpan(t.float_data().data(), n);
    return absl::OkStatus();
  }
  const int64_t width = DTypeSize(*dtype);
  if (static_cast<int64_t>(t.data().size()) != n * width) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".data has ", t.data().size(), " bytes; shape ", ShapeString(t),
        " of ", v1::DType_Name(ToWireDType(*dtype)), " needs ", n * width));
  }
  const char* bytes = t.data().data();
  if (*dtype == DType::kFloat32) {
    if (reinterpret_cast<uintptr_t>(bytes) % alignof(float) == 0) {
      out->values =
          absl::MakeConstSpan(reinterpret_cast<const float*>(bytes), n);
    } else {
      out->owned.reset(new float[n]);
      std::memcpy(out->owned.get(), bytes, n * sizeof(float));
      out->values = absl::MakeConstSpan(out->owned.get(), n);
    }
    return absl::OkStatus();
  }
  if (keep_half) {
    out->half_bytes = bytes;
    out->half_dtype = *dtype;
    return absl::OkStatus();
  }
  // Decoded straight from the request's bytes (docs/PERFORMANCE.md).
  out->owned.reset(new float[n]);
  DecodeHalfBytes(*dtype, bytes, n, out->owned.get());
  out->values = absl::MakeConstSpan(out->owned.get(), n);
  return absl::OkStatus();
}

// Class counts, defaults and version of the request's source.
struct Source {
  absl::Span<const int64_t> counts;
  v1::LossConfig defaults;
  uint64_t version = 0;
  std::string description;  // "dataset 'x'" or "class_counts"
};

template <typename Request>
absl::StatusOr<Source> ResolveSource(const Request& request,
                                     const v1::Dataset* dataset) {
  Source src;
  if (dataset != nullptr) {
    src.counts = dataset->class_counts();
    src.defaults = dataset->defaults();
    src.version = dataset->version();
    src.description = absl::StrCat("dataset '", dataset->name(), "'");
    return src;
  }
  if (request.source_case() != Request::kClassCounts) {
    return absl::InvalidArgumentError(
        "give either dataset (a stored dataset's name) or class_counts");
  }
  src.counts = request.class_counts().counts();
  src.description = "class_counts";
  if (absl::Status s = ValidateClassCounts(src.counts); !s.ok()) return s;
  return src;
}

}  // namespace

int64_t ClaimedElements(const v1::ComputeLossRequest& request) {
  if (!CheckShape2D(request.logits(), "logits").ok()) return -1;
  return request.logits().shape(0) * request.logits().shape(1);
}

char* DetachedGradient::Allocate(size_t size) {
  std::free(data_);
  data_ = static_cast<char*>(std::malloc(size));
  size_ = data_ != nullptr ? size : 0;
  return data_;
}

char* DetachedGradient::Release() {
  char* data = data_;
  data_ = nullptr;
  size_ = 0;
  return data;
}

std::string DetachedGradientPrefix(size_t size) {
  auto varint = [](uint64_t v, std::string* out) {
    while (v >= 0x80) {
      out->push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out->push_back(static_cast<char>(v));
  };
  constexpr char kField3Bytes = (3 << 3) | 2;  // field 3, length-delimited
  std::string inner(1, kField3Bytes);          // Tensor.data
  varint(size, &inner);
  std::string prefix(1, kField3Bytes);  // ComputeLossResponse.gradient
  varint(inner.size() + size, &prefix);
  return prefix + inner;
}

absl::Status ComputeLossResponseFor(const v1::ComputeLossRequest& request,
                                    const v1::Dataset* dataset,
                                    ThreadPool* pool,
                                    std::function<bool()> should_stop,
                                    v1::ComputeLossResponse* response,
                                    DetachedGradient* detached) {
  absl::StatusOr<Source> src = ResolveSource(request, dataset);
  if (!src.ok()) return src.status();
  if (dataset != nullptr && request.has_expected_dataset_version() &&
      request.expected_dataset_version() != dataset->version()) {
    return absl::AbortedError(absl::StrCat(
        src->description, " is at version ", dataset->version(),
        ", not expected_dataset_version ", request.expected_dataset_version()));
  }
  if (absl::Status s = ValidateLossConfig(request.config(), "config");
      !s.ok()) {
    return s;
  }
  const v1::LossConfig resolved =
      ResolveLossConfig(src->defaults, request.config());
  absl::StatusOr<LossParams> params = ToLossParams(resolved);
  if (!params.ok()) return params.status();
  absl::StatusOr<DType> gradient_dtype =
      ToDType(request.gradient_dtype(), "gradient_dtype");
  if (!gradient_dtype.ok()) return gradient_dtype.status();

  Matrix logits;
  if (absl::Status s = DecodeMatrix(request.logits(), "logits",
                                    /*keep_half=*/true, &logits);
      !s.ok()) {
    return s;
  }
  const int64_t B = logits.rows, C = logits.cols;
  if (C != static_cast<int64_t>(src->counts.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits.shape[1] = ", C, " but ", src->description,
                     " has ", src->counts.size(), " classes"));
  }
  Matrix targets;
  if (request.has_targets()) {
    if (absl::Status s = DecodeMatrix(request.targets(), "targets",
                                      /*keep_half=*/false, &targets);
        !s.ok()) {
      return s;
    }
    if (targets.rows != B || targets.cols != C) {
      return absl::InvalidArgumentError(absl::StrCat(
          "targets.shape = ", ShapeString(request.targets()),
          " must equal logits.shape = ", ShapeString(request.logits())));
    }
  }

  LossBatch batch;
  batch.rows = B;
  batch.cols = C;
  batch.logits = logits.values;
  batch.half_logits = logits.half_bytes;
  batch.half_logits_dtype = logits.half_dtype;
  batch.labels = request.labels();
  batch.targets = targets.values;
  batch.sample_weights = request.sample_weights();
  batch.upstream = request.upstream();
  if (absl::Status s = ValidateLossBatch(*params, batch); !s.ok()) return s;

  // Class weights (LOSS.md section 2), or all 1 before the deferred
  // re-weighting epoch (section 9), which is the NONE scheme's w.
  const bool before_drw = resolved.has_drw_start_epoch() &&
                          request.has_epoch() &&
                          request.epoch() < resolved.drw_start_epoch();
  LossParams term_params = *params;
  if (before_drw) term_params.weighting = WeightingScheme::kNone;
  absl::StatusOr<ClassTerms> terms = MakeClassTerms(term_params, src->counts);
  if (!terms.ok()) {
    return absl::Status(
        terms.status().code(),
        absl::StrCat(src->description, ": ", terms.status().message()));
  }

  // Outputs go straight into the response where the layout allows.
  LossOutputs outputs;
  if (request.want_per_sample_losses() ||
      params->reduction == Reduction::kNone) {
    response->mutable_per_sample_losses()->Resize(static_cast<int>(B), 0.0f);
    outputs.per_sample_losses = absl::MakeSpan(
        response->mutable_per_sample_losses()->mutable_data(), B);
  }
  std::unique_ptr<float[]> gradient_scratch;  // uninitialised, as `owned`
  char* gradient_bytes = nullptr;  // float32 bytes to fill from the scratch
  v1::Tensor* gradient = nullptr;
  if (request.want_gradient()) {
    gradient = response->mutable_gradient();
    gradient->set_dtype(ToWireDType(*gradient_dtype));
    gradient->add_shape(B);
    gradient->add_shape(C);
    const bool as_float_data = *gradient_dtype == DType::kFloat32 &&
                               request.logits().float_data_size() > 0;
    if (as_float_data) {
      gradient->mutable_float_data()->Resize(static_cast<int>(B * C), 0.0f);
      outputs.gradient =
          absl::MakeSpan(gradient->mutable_float_data()->mutable_data(), B * C);
    } else {
      const size_t size = B * C * DTypeSize(*gradient_dtype);
      if (detached != nullptr) {
        gradient_bytes = detached->Allocate(size);
        if (gradient_bytes == nullptr) {
          return absl::ResourceExhaustedError(
              absl::StrCat("no memory for a gradient of ", size, " bytes"));
        }
      } else {
        std::string* data = gradient->mutable_data();
        data->resize(size);
        gradient_bytes = data->data();
      }
      if (*gradient_dtype != DType::kFloat32) {
        outputs.half_gradient = gradient_bytes;  // encoded by the engine
        outputs.half_gradient_dtype = *gradient_dtype;
        gradient_bytes = nullptr;
      } else if (reinterpret_cast<uintptr_t>(gradient_bytes) % alignof(float) ==
                 0) {
        outputs.gradient =
            absl::MakeSpan(reinterpret_cast<float*>(gradient_bytes), B * C);
        gradient_bytes = nullptr;  // written in place
      } else {
        gradient_scratch.reset(new float[B * C]);
        outputs.gradient = absl::MakeSpan(gradient_scratch.get(), B * C);
      }
    }
  }

  ComputeOptions options;
  options.pool = pool;
  options.should_stop = std::move(should_stop);
  absl::StatusOr<LossResult> result =
      ComputeLoss(*params, *terms, batch, outputs, options);
  if (!result.ok()) return result.status();

  if (gradient_bytes != nullptr) {
    std::memcpy(gradient_bytes, gradient_scratch.get(), B * C * sizeof(float));
  }
  response->set_loss(result->loss);
  response->set_num_samples(result->num_samples);
  response->set_dataset_version(src->version);
  *response->mutable_resolved_config() = resolved;
  response->mutable_class_weights()->Assign(terms->weights.begin(),
                                            terms->weights.end());
  return absl::OkStatus();
}

absl::Status ClassWeightsFor(const v1::GetClassWeightsRequest& request,
                             const v1::Dataset* dataset,
                             v1::ClassWeights* response) {
  absl::StatusOr<Source> src = ResolveSource(request, dataset);
  if (!src.ok()) return src.status();
  if (absl::Status s = ValidateLossConfig(request.config(), "config");
      !s.ok()) {
    return s;
  }
  const v1::LossConfig resolved =
      ResolveLossConfig(src->defaults, request.config());
  // Weights depend only on the weighting and beta, whatever the loss type.
  std::vector<double> weights(src->counts.size());
  if (absl::Status s =
          ClassWeights(src->counts, ToWeightingScheme(resolved.weighting()),
                       resolved.beta(), absl::MakeSpan(weights));
      !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat(src->description, ": ", s.message()));
  }
  response->mutable_weights()->Assign(weights.begin(), weights.end());
  response->set_dataset_version(src->version);
  return absl::OkStatus();
}

}  // namespace cbloss
