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
#include "core/status_macros.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"
#include "server/dataset_registry.h"
#include "server/loss_config.h"
#include "server/shared_memory.h"

namespace cbloss::server {
namespace {

static_assert(sizeof(float) == 4, "float32 on the wire");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the wire is little-endian; this build assumes a little-endian host"
#endif

// A [rows, cols] float32 view of a wire Tensor. Points into the request (or
// the shared memory of `shm`) when it can; otherwise into `owned`
// (half-precision input, unaligned bytes).
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
  // The bytes Tensor.shm names (data null: the tensor is in the request).
  SharedMemorySpan shm;
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
// Matrix::half_bytes); otherwise they are decoded into `owned`. Tensor.shm
// resolves through `shm` (null: shared memory is off) to bytes read exactly
// as Tensor.data's.
absl::Status DecodeMatrix(const v1::Tensor& t, absl::string_view field,
                          bool keep_half, const SharedMemoryView* shm,
                          Matrix* out) {
  CBLOSS_RETURN_IF_ERROR(CheckShape2D(t, field));
  absl::StatusOr<DType> dtype =
      ToDType(t.dtype(), absl::StrCat(field, ".dtype"));
  if (!dtype.ok()) return dtype.status();
  out->rows = t.shape(0);
  out->cols = t.shape(1);
  const int64_t n = out->rows * out->cols;
  const bool has_data = !t.data().empty();
  const bool has_floats = t.float_data_size() > 0;
  if (t.has_shm()) {
    if (has_data || has_floats) {
      return absl::InvalidArgumentError(
          absl::StrCat(field,
                       ": exactly one of data, float_data and shm must be set "
                       "(shm and ",
                       has_data ? "data" : "float_data", " are set)"));
    }
  } else if (has_data == has_floats) {
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
  const char* bytes = t.data().data();
  if (t.has_shm()) {
    if (shm == nullptr) return SharedMemoryOffError();
    absl::StatusOr<SharedMemorySpan> span =
        shm->Find(t.shm(), absl::StrCat(field, ".shm"));
    if (!span.ok()) return span.status();
    if (span->size != static_cast<uint64_t>(n * width)) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".shm.byte_size is ", span->size, " bytes; shape ",
          ShapeString(t), " of ", v1::DType_Name(ToWireDType(*dtype)),
          " needs ", n * width));
    }
    bytes = span->data;
    out->shm = *std::move(span);
  } else if (static_cast<int64_t>(t.data().size()) != n * width) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".data has ", t.data().size(), " bytes; shape ", ShapeString(t),
        " of ", v1::DType_Name(ToWireDType(*dtype)), " needs ", n * width));
  }
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

template <typename Request>
absl::StatusOr<RequestSource> ResolveSource(
    const Request& request, std::shared_ptr<const v1::Dataset> dataset) {
  RequestSource src;
  if (dataset != nullptr) {
    src.counts = dataset->class_counts();
    src.version = dataset->version();
    src.description = absl::StrCat("dataset '", dataset->name(), "'");
    src.dataset = std::move(dataset);
    return src;
  }
  if (request.source_case() != Request::kClassCounts) {
    return absl::InvalidArgumentError(
        "give either dataset (a stored dataset's name) or class_counts");
  }
  src.counts = request.class_counts().counts();
  src.description = "class_counts";
  CBLOSS_RETURN_IF_ERROR(ValidateClassCounts(src.counts));
  return src;
}

// ResolveSource for a request naming `run`: its class_counts (C entries),
// else the run's dataset (`dataset`), else zeros that only losses without
// static counts accept (LOSS.md section 11).
absl::StatusOr<RequestSource> ResolveRunSource(
    const v1::ComputeLossRequest& request,
    std::shared_ptr<const v1::Dataset> dataset, const RunView& run,
    std::vector<int64_t>* zeros) {
  const std::string run_name = absl::StrCat("run '", run.name, "'");
  if (request.source_case() == v1::ComputeLossRequest::kClassCounts) {
    const int classes = request.class_counts().counts_size();
    if (classes != run.num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("class_counts has ", classes, " classes but ", run_name,
                       " has ", run.num_classes));
    }
    return ResolveSource(request, nullptr);
  }
  if (dataset != nullptr) {
    if (dataset->class_counts_size() != run.num_classes) {
      return absl::FailedPreconditionError(absl::StrCat(
          "dataset '", dataset->name(), "' has ", dataset->class_counts_size(),
          " classes but ", run_name, " has ", run.num_classes));
    }
    return ResolveSource(request, std::move(dataset));
  }
  RequestSource src;
  zeros->assign(static_cast<size_t>(run.num_classes), 0);
  src.counts = *zeros;
  src.description = run_name;
  src.no_static_counts = true;
  return src;
}

// True if `params` read static class counts: a weighting other than NONE,
// or a loss whose terms use them (LOSS.md sections 9-10). SEESAW with a run
// reads the run's seen counts instead; EQL_V2 reads the run's P and Q.
bool NeedsStaticCounts(const LossParams& params) {
  if (params.weighting != WeightingScheme::kNone) return true;
  switch (params.loss_type) {
    case LossType::kBalancedSoftmax:
    case LossType::kLogitAdjusted:
    case LossType::kLdam:
    case LossType::kEql:
    case LossType::kVs:
      return true;
    default:
      return false;
  }
}

// The request's config over the source's defaults over LOSS.md's, checked
// once, as resolved: a value the request sets is reported as it sent it
// ("config.beta = 2 is outside [0, 1]"), and defaults stored before a range
// was tightened cannot slip through.
absl::StatusOr<v1::LossConfig> ResolveConfig(const RequestSource& src,
                                             const v1::LossConfig& request,
                                             const RunView* run = nullptr) {
  v1::LossConfig defaults =
      src.dataset != nullptr ? src.dataset->defaults() : v1::LossConfig();
  // A run's defaults sit over its dataset's (set fields only).
  if (run != nullptr) defaults.MergeFrom(run->defaults);
  v1::LossConfig resolved = ResolveLossConfig(defaults, request);
  CBLOSS_RETURN_IF_ERROR(ValidateLossConfig(resolved, "config"));
  return resolved;
}

// The logits and targets of `request` as the batch of `c`, checked against
// the source's classes and by ValidateLossBatch.
absl::Status ResolveTensors(const v1::ComputeLossRequest& request,
                            const SharedMemoryView* shm, Computation* c) {
  Matrix logits;
  CBLOSS_RETURN_IF_ERROR(DecodeMatrix(request.logits(), "logits",
                                      /*keep_half=*/true, shm, &logits));
  const int64_t B = logits.rows, C = logits.cols;
  if (C != static_cast<int64_t>(c->source.counts.size())) {
    // With a run, the counts have the run's C: name the run.
    const std::string owner = c->run.empty()
                                  ? c->source.description
                                  : absl::StrCat("run '", c->run, "'");
    return absl::InvalidArgumentError(
        absl::StrCat("logits.shape[1] = ", C, " but ", owner, " has ",
                     c->source.counts.size(), " classes"));
  }
  Matrix targets;
  if (request.has_targets()) {
    CBLOSS_RETURN_IF_ERROR(DecodeMatrix(request.targets(), "targets",
                                        /*keep_half=*/false, shm, &targets));
    if (targets.rows != B || targets.cols != C) {
      return absl::InvalidArgumentError(absl::StrCat(
          "targets.shape = ", ShapeString(request.targets()),
          " must equal logits.shape = ", ShapeString(request.logits())));
    }
  }
  LossBatch& batch = c->batch;
  batch.rows = B;
  batch.cols = C;
  batch.logits = logits.values;
  batch.half_logits = logits.half_bytes;
  batch.half_logits_dtype = logits.half_dtype;
  batch.labels = request.labels();
  batch.targets = targets.values;
  batch.sample_weights = request.sample_weights();
  batch.upstream = request.upstream();
  c->owned_logits = std::move(logits.owned);
  c->owned_targets = std::move(targets.owned);
  if (logits.shm.data != nullptr) {
    c->shm_spans.push_back({"logits.shm", std::move(logits.shm)});
  }
  if (targets.shm.data != nullptr) {
    c->shm_spans.push_back({"targets.shm", std::move(targets.shm)});
  }
  absl::Status valid = ValidateLossBatch(c->params, batch);
  if (!valid.ok()) {
    // Zeros the SIGBUS guard mapped over a shrunk object are not the
    // caller's values: report the shrinking, not them.
    for (const NamedSharedMemorySpan& s : c->shm_spans) {
      CBLOSS_RETURN_IF_ERROR(CheckIntact(s.span, s.field));
    }
  }
  return valid;
}

// gradient_shm (API.md section 5.3): B * C elements of the gradient's dtype,
// sharing no byte with a tensor the engine reads.
absl::Status ResolveGradientShm(const v1::ComputeLossRequest& request,
                                const SharedMemoryView* shm, Computation* c) {
  if (!request.has_gradient_shm()) return absl::OkStatus();
  if (shm == nullptr) return SharedMemoryOffError();
  absl::StatusOr<SharedMemorySpan> span =
      shm->Find(request.gradient_shm(), "gradient_shm");
  if (!span.ok()) return span.status();
  const int64_t B = c->batch.rows, C = c->batch.cols;
  const int64_t needed = B * C * DTypeSize(c->gradient_dtype);
  if (span->size != static_cast<uint64_t>(needed)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gradient_shm.byte_size is ", span->size, " bytes; a [", B, ", ", C,
        "] gradient of ", v1::DType_Name(ToWireDType(c->gradient_dtype)),
        " needs ", needed));
  }
  for (const NamedSharedMemorySpan& input : c->shm_spans) {
    if (Overlaps(*span, input.span)) {
      return absl::InvalidArgumentError(
          absl::StrCat("gradient_shm overlaps ", input.field));
    }
  }
  c->gradient_shm = span->data;
  c->shm_spans.push_back({"gradient_shm", *std::move(span)});
  return absl::OkStatus();
}

// Class weights (LOSS.md section 2), or all 1 before the deferred
// re-weighting epoch (section 9), which is the NONE scheme's w; and the
// section 9 terms. Errors name the source.
absl::StatusOr<ClassTerms> ResolveClassTerms(
    const v1::ComputeLossRequest& request, const Computation& c,
    const EqlV2Statistics* eqlv2) {
  const v1::LossConfig& resolved = c.resolved_config;
  const bool before_drw = resolved.has_drw_start_epoch() &&
                          request.has_epoch() &&
                          request.epoch() < resolved.drw_start_epoch();
  LossParams term_params = c.params;
  if (before_drw) term_params.weighting = WeightingScheme::kNone;
  absl::StatusOr<ClassTerms> terms =
      MakeClassTerms(term_params, c.source.counts, eqlv2);
  if (!terms.ok()) {
    return absl::Status(
        terms.status().code(),
        absl::StrCat(c.source.description, ": ", terms.status().message()));
  }
  return terms;
}

absl::Status AccumulateWithoutRun() {
  return absl::InvalidArgumentError(
      "accumulate needs run: name the run whose statistics this request "
      "updates");
}

// What an accumulating request adds to its run (LOSS.md section 11): one
// seen sample per foreground label not ignored, one background sample per
// label C of a detection loss; EQL_V2's increments are the engine's.
void LabelsUpdate(const Computation& c, RunUpdate* update) {
  update->name = c.run;
  update->requests = 1;
  const int64_t C = c.batch.cols;
  if (c.batch.labels.empty()) return;
  update->seen_counts.assign(static_cast<size_t>(C), 0);
  for (int32_t label : c.batch.labels) {
    if (label == c.params.ignore_index) continue;
    if (label >= 0 && label < C) {
      ++update->seen_counts[static_cast<size_t>(label)];
    } else if (label == C) {
      ++update->background_seen;  // validated: a detection loss
    }
  }
}

}  // namespace

int64_t ClaimedElements(const v1::ComputeLossRequest& request) {
  if (!CheckShape2D(request.logits(), "logits").ok()) return -1;
  return request.logits().shape(0) * request.logits().shape(1);
}

absl::StatusOr<Computation> ResolveComputation(
    const v1::ComputeLossRequest& request, const DatasetRegistry& registry,
    RunRegistry* runs, const SharedMemoryView* shm) {
  if (request.accumulate() && request.run().empty()) {
    return AccumulateWithoutRun();
  }
  absl::optional<RunView> run;
  std::string dataset_name;
  if (request.source_case() == v1::ComputeLossRequest::kDataset) {
    dataset_name = request.dataset();
  }
  if (!request.run().empty()) {
    absl::StatusOr<RunView> view =
        runs != nullptr
            ? runs->View(request.run(), "run")
            : absl::StatusOr<RunView>(absl::NotFoundError(
                  absl::StrCat("run '", request.run(), "' not found")));
    if (!view.ok()) return view.status();
    run = *std::move(view);
    if (request.source_case() == v1::ComputeLossRequest::kDataset &&
        request.dataset() != run->dataset) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dataset = '", request.dataset(), "' but run '", run->name, "' ",
          run->dataset.empty()
              ? "has no dataset"
              : absl::StrCat("uses dataset '", run->dataset, "'")));
    }
    if (request.source_case() == v1::ComputeLossRequest::SOURCE_NOT_SET) {
      dataset_name = run->dataset;
    }
  }
  std::shared_ptr<const v1::Dataset> dataset;
  if (!dataset_name.empty()) {
    absl::StatusOr<std::shared_ptr<const v1::Dataset>> d =
        registry.Lookup(dataset_name, "dataset");
    if (!d.ok()) return d.status();
    dataset = *std::move(d);
  }
  return ResolveComputation(request, std::move(dataset),
                            run.has_value() ? &*run : nullptr, shm);
}

absl::StatusOr<Computation> ResolveComputation(
    const v1::ComputeLossRequest& request,
    std::shared_ptr<const v1::Dataset> dataset, const RunView* run,
    const SharedMemoryView* shm) {
  if (request.accumulate() && run == nullptr) return AccumulateWithoutRun();
  Computation c;
  absl::StatusOr<RequestSource> src =
      run != nullptr
          ? ResolveRunSource(request, std::move(dataset), *run, &c.owned_counts)
          : ResolveSource(request, std::move(dataset));
  if (!src.ok()) return src.status();
  c.source = *std::move(src);
  if (run != nullptr) {
    c.run = run->name;
    c.run_version = run->version;
    c.accumulate = request.accumulate();
  }
  if (c.source.dataset != nullptr && request.has_expected_dataset_version() &&
      request.expected_dataset_version() != c.source.version) {
    return absl::AbortedError(absl::StrCat(
        c.source.description, " is at version ", c.source.version,
        ", not expected_dataset_version ", request.expected_dataset_version()));
  }
  absl::StatusOr<v1::LossConfig> resolved =
      ResolveConfig(c.source, request.config(), run);
  if (!resolved.ok()) return resolved.status();
  c.resolved_config = *std::move(resolved);
  absl::StatusOr<LossParams> params = ToLossParams(c.resolved_config);
  if (!params.ok()) return params.status();
  c.params = *params;
  absl::StatusOr<DType> gradient_dtype =
      ToDType(request.gradient_dtype(), "gradient_dtype");
  if (!gradient_dtype.ok()) return gradient_dtype.status();
  c.gradient_dtype = *gradient_dtype;
  c.want_gradient = request.want_gradient() || request.has_gradient_shm();
  c.want_per_sample_losses = request.want_per_sample_losses() ||
                             c.params.reduction == Reduction::kNone;
  c.gradient_as_float_data = c.gradient_dtype == DType::kFloat32 &&
                             request.logits().float_data_size() > 0 &&
                             !request.has_gradient_shm();
  CBLOSS_RETURN_IF_ERROR(ResolveTensors(request, shm, &c));
  CBLOSS_RETURN_IF_ERROR(ResolveGradientShm(request, shm, &c));
  if (c.params.loss_type == LossType::kEqlV2 && run == nullptr) {
    // LOSS.md section 10: EQL_V2's weights come from a run's statistics.
    return absl::InvalidArgumentError(
        "config.loss_type = eql_v2 needs a run (LOSS.md section 11): name "
        "one in run");
  }
  if (c.source.no_static_counts && NeedsStaticCounts(c.params)) {
    return absl::FailedPreconditionError(absl::StrCat(
        c.source.description,
        " has no dataset and the request gives no class_counts; loss type ",
        LossTypeName(c.params.loss_type), " with weighting ",
        WeightingSchemeName(c.params.weighting), " needs class counts"));
  }
  EqlV2Statistics eqlv2;
  if (run != nullptr && c.params.loss_type == LossType::kSeesaw) {
    // LOSS.md section 10: the run's seen counts, including this request's
    // own labels when it accumulates (the reference counts them first).
    c.owned_counts = run->seen_counts;
    if (c.accumulate) {
      for (int32_t label : c.batch.labels) {
        if (label >= 0 && label < c.batch.cols &&
            label != c.params.ignore_index) {
          ++c.owned_counts[static_cast<size_t>(label)];
        }
      }
    }
    c.source.counts = c.owned_counts;
  } else if (run != nullptr && c.params.loss_type == LossType::kEqlV2) {
    eqlv2.positive = run->positive_gradient;
    eqlv2.negative = run->negative_gradient;
    eqlv2.updates = run->eqlv2_updates;
  }
  absl::StatusOr<ClassTerms> terms =
      ResolveClassTerms(request, c, run != nullptr ? &eqlv2 : nullptr);
  if (!terms.ok()) return terms.status();
  c.terms = *std::move(terms);
  return c;
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
  using google::protobuf::internal::WireFormatLite;
  using google::protobuf::io::CodedOutputStream;
  const uint32_t gradient_tag =
      WireFormatLite::MakeTag(v1::ComputeLossResponse::kGradientFieldNumber,
                              WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
  const uint32_t data_tag = WireFormatLite::MakeTag(
      v1::Tensor::kDataFieldNumber, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
  const size_t tensor_size = CodedOutputStream::VarintSize32(data_tag) +
                             CodedOutputStream::VarintSize64(size) + size;
  std::string prefix;
  {
    google::protobuf::io::StringOutputStream stream(&prefix);
    CodedOutputStream out(&stream);
    out.WriteTag(gradient_tag);
    out.WriteVarint64(tensor_size);
    out.WriteTag(data_tag);
    out.WriteVarint64(size);
  }  // `out` trims `prefix` to what was written
  return prefix;
}

absl::StatusOr<GradientSink> GradientSink::Open(
    const Computation& c, v1::ComputeLossResponse* response,
    DetachedGradient* detached) {
  GradientSink sink;
  if (!c.want_gradient) return sink;
  const int64_t n = c.batch.rows * c.batch.cols;
  char* bytes = c.gradient_shm;  // sized by ResolveGradientShm
  if (bytes == nullptr) {
    v1::Tensor* gradient = response->mutable_gradient();
    gradient->set_dtype(ToWireDType(c.gradient_dtype));
    gradient->add_shape(c.batch.rows);
    gradient->add_shape(c.batch.cols);
    if (c.gradient_as_float_data) {
      gradient->mutable_float_data()->Resize(static_cast<int>(n), 0.0f);
      sink.floats_ =
          absl::MakeSpan(gradient->mutable_float_data()->mutable_data(), n);
      return sink;
    }
    const size_t size = n * DTypeSize(c.gradient_dtype);
    if (detached != nullptr) {
      bytes = detached->Allocate(size);
      if (bytes == nullptr) {
        return absl::ResourceExhaustedError(
            absl::StrCat("no memory for a gradient of ", size, " bytes"));
      }
    } else {
      std::string* data = gradient->mutable_data();
      data->resize(size);
      bytes = data->data();
    }
  }
  if (c.gradient_dtype != DType::kFloat32) {
    sink.half_bytes_ = bytes;  // encoded by the engine, chunk by chunk
    sink.half_dtype_ = c.gradient_dtype;
  } else if (reinterpret_cast<uintptr_t>(bytes) % alignof(float) == 0) {
    sink.floats_ = absl::MakeSpan(reinterpret_cast<float*>(bytes), n);
  } else {
    // Uninitialised, as Matrix::owned; copied into `bytes` by Close().
    sink.scratch_.reset(new float[n]);
    sink.floats_ = absl::MakeSpan(sink.scratch_.get(), n);
    sink.copy_to_ = bytes;
  }
  return sink;
}

void GradientSink::AttachTo(LossOutputs* outputs) const {
  outputs->gradient = floats_;
  outputs->half_gradient = half_bytes_;
  outputs->half_gradient_dtype = half_dtype_;
}

void GradientSink::Close() {
  if (copy_to_ == nullptr) return;
  std::memcpy(copy_to_, scratch_.get(), floats_.size() * sizeof(float));
  copy_to_ = nullptr;
}

absl::Status RunComputation(const Computation& c, const ComputeOptions& options,
                            v1::ComputeLossResponse* response,
                            DetachedGradient* detached, RunUpdate* update) {
  // Outputs go straight into the response where the layout allows.
  LossOutputs outputs;
  if (c.want_per_sample_losses) {
    auto* losses = response->mutable_per_sample_losses();
    losses->Resize(static_cast<int>(c.batch.rows), 0.0f);
    outputs.per_sample_losses =
        absl::MakeSpan(losses->mutable_data(), c.batch.rows);
  }
  absl::StatusOr<GradientSink> gradient =
      GradientSink::Open(c, response, detached);
  if (!gradient.ok()) return gradient.status();
  gradient->AttachTo(&outputs);
  RunUpdate added;
  const bool eqlv2_update =
      c.accumulate && c.params.loss_type == LossType::kEqlV2;
  if (eqlv2_update) {
    const size_t C = static_cast<size_t>(c.batch.cols);
    added.positive_gradient.assign(C, 0.0);
    added.negative_gradient.assign(C, 0.0);
    added.eqlv2_updates = 1;
    outputs.eqlv2_positive_delta = absl::MakeSpan(added.positive_gradient);
    outputs.eqlv2_negative_delta = absl::MakeSpan(added.negative_gradient);
  }
  absl::StatusOr<LossResult> result =
      ComputeLoss(c.params, c.terms, c.batch, outputs, options);
  if (!result.ok()) return result.status();
  gradient->Close();
  // API.md section 5.3: an object shrunk under the engine gave it zeros.
  for (const NamedSharedMemorySpan& s : c.shm_spans) {
    CBLOSS_RETURN_IF_ERROR(CheckIntact(s.span, s.field));
  }
  if (c.accumulate && update != nullptr) {
    LabelsUpdate(c, &added);
    *update = std::move(added);
  }
  response->set_run_version(c.run_version);
  response->set_loss(result->loss);
  response->set_num_samples(result->num_samples);
  response->set_dataset_version(c.source.version);
  *response->mutable_resolved_config() = c.resolved_config;
  response->mutable_class_weights()->Assign(c.terms.weights.begin(),
                                            c.terms.weights.end());
  return absl::OkStatus();
}

absl::Status ComputeLossResponseFor(const v1::ComputeLossRequest& request,
                                    const v1::Dataset* dataset,
                                    ThreadPool* pool,
                                    std::function<bool()> should_stop,
                                    v1::ComputeLossResponse* response,
                                    DetachedGradient* detached) {
  // Not owned: the caller keeps `dataset` alive for the call.
  std::shared_ptr<const v1::Dataset> unowned(std::shared_ptr<void>(), dataset);
  absl::StatusOr<Computation> c =
      ResolveComputation(request, dataset != nullptr ? unowned : nullptr);
  if (!c.ok()) return c.status();
  ComputeOptions options;
  options.pool = pool;
  options.should_stop = std::move(should_stop);
  return RunComputation(*c, options, response, detached);
}

absl::Status ClassWeightsFor(const v1::GetClassWeightsRequest& request,
                             const v1::Dataset* dataset,
                             v1::ClassWeights* response) {
  std::shared_ptr<const v1::Dataset> unowned(std::shared_ptr<void>(), dataset);
  absl::StatusOr<RequestSource> src =
      ResolveSource(request, dataset != nullptr ? unowned : nullptr);
  if (!src.ok()) return src.status();
  absl::StatusOr<v1::LossConfig> resolved =
      ResolveConfig(*src, request.config());
  if (!resolved.ok()) return resolved.status();
  // Weights depend only on the weighting and beta, whatever the loss type:
  // no section 9 terms (LossParams' default loss type has none).
  LossParams weights_only;
  weights_only.weighting = ToWeightingScheme(resolved->weighting());
  weights_only.beta = resolved->beta();
  absl::StatusOr<ClassTerms> terms = MakeClassTerms(weights_only, src->counts);
  if (!terms.ok()) {
    return absl::Status(
        terms.status().code(),
        absl::StrCat(src->description, ": ", terms.status().message()));
  }
  response->mutable_weights()->Assign(terms->weights.begin(),
                                      terms->weights.end());
  response->set_dataset_version(src->version);
  return absl::OkStatus();
}

}  // namespace cbloss::server
