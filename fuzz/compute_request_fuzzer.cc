// Copyright 2026 The cbloss Authors.
//
// Fuzzes the ComputeLoss pipeline (server/compute_request.h) with arbitrary
// request bytes, as the service would receive them: every input that parses
// as a cbloss.v1.ComputeLossRequest runs through ComputeLossResponseFor, with
// inline class counts and, when the request names a dataset, against a fixed
// in-memory dataset. GetClassWeights runs on the same source and config.
// A request naming a run also runs against a run view made up from the
// input (LOSS.md section 11), and its accumulated update is checked.
//
// Besides ASan/UBSan, it aborts when an OK response breaks the contract of
// LOSS.md section 7 and API.md: a non-finite loss or gradient, wrong output
// sizes, or a different result when the batch is split across threads.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cbloss/v1/cbloss.pb.h"
#include "core/half.h"
#include "core/thread_pool.h"
#include "server/compute_request.h"

namespace {

using cbloss::v1::ComputeLossRequest;
using cbloss::v1::ComputeLossResponse;

// The service's own bound on work per request is the gRPC message size limit
// (a request can only claim as many elements as its bytes carry). Here the
// claim itself is capped so that one input costs at most a few milliseconds
// and a few hundred KiB, whatever libFuzzer's -max_len.
constexpr int64_t kMaxClaimedElements = int64_t{1} << 16;

[[noreturn]] void Fail(const ComputeLossRequest& request, const char* what) {
  std::fprintf(stderr, "compute_request_fuzzer: %s\nrequest:\n%s\n", what,
               request.DebugString().c_str());
  std::abort();
}

// Two datasets a request may name: one with a zero count and its own
// defaults (focal, effective number), one with plain counts and no defaults.
const cbloss::v1::Dataset& DatasetFor(const std::string& name) {
  static const cbloss::v1::Dataset* const kDatasets = [] {
    auto* d = new cbloss::v1::Dataset[2];
    d[0].set_name("fuzz-a");
    for (int64_t c : {5, 3, 0, 2}) d[0].add_class_counts(c);
    d[0].set_version(7);
    d[0].mutable_defaults()->set_loss_type(cbloss::v1::LOSS_TYPE_FOCAL);
    d[0].mutable_defaults()->set_weighting(
        cbloss::v1::WEIGHTING_SCHEME_EFFECTIVE_NUMBER);
    d[0].mutable_defaults()->set_beta(0.99);
    d[0].mutable_defaults()->set_gamma(1.5);
    d[1].set_name("fuzz-b");
    for (int64_t c : {100, 10, 1}) d[1].add_class_counts(c);
    d[1].set_version(1);
    return d;
  }();
  return kDatasets[name.size() % 2];
}

void CheckResponse(const ComputeLossRequest& request,
                   const ComputeLossResponse& response,
                   const cbloss::v1::Dataset* dataset) {
  if (!std::isfinite(response.loss())) Fail(request, "loss is not finite");
  const int64_t B = request.logits().shape(0);
  const int64_t C = request.logits().shape(1);
  if (response.num_samples() < 0 || response.num_samples() > B) {
    Fail(request, "num_samples outside [0, B]");
  }
  if (response.class_weights_size() != C) {
    Fail(request, "class_weights does not have C entries");
  }
  for (double w : response.class_weights()) {
    if (!std::isfinite(w) || w < 0) Fail(request, "class weight not finite");
  }
  if (response.dataset_version() !=
      (dataset != nullptr ? dataset->version() : 0)) {
    Fail(request, "dataset_version is not the dataset's");
  }
  if (request.want_per_sample_losses() &&
      response.per_sample_losses_size() != B) {
    Fail(request, "per_sample_losses does not have B entries");
  }
  if (response.per_sample_losses_size() != 0 &&
      response.per_sample_losses_size() != B) {
    Fail(request, "per_sample_losses has neither 0 nor B entries");
  }
  for (float l : response.per_sample_losses()) {
    if (!std::isfinite(l)) {
      Fail(request, "per-sample loss not finite");
    }
  }
  if (!request.want_gradient()) {
    if (response.has_gradient()) Fail(request, "unrequested gradient");
    return;
  }
  const cbloss::v1::Tensor& g = response.gradient();
  if (g.shape_size() != 2 || g.shape(0) != B || g.shape(1) != C) {
    Fail(request, "gradient shape is not [B, C]");
  }
  const cbloss::v1::DType want =
      request.gradient_dtype() == cbloss::v1::DTYPE_UNSPECIFIED
          ? cbloss::v1::DTYPE_FLOAT32
          : request.gradient_dtype();
  if (g.dtype() != want) Fail(request, "gradient dtype is not the requested");
  const int64_t n = B * C;
  if (want == cbloss::v1::DTYPE_FLOAT32) {
    const bool as_floats = g.float_data_size() > 0;
    if (as_floats ? (g.float_data_size() != n || !g.data().empty())
                  : static_cast<int64_t>(g.data().size()) != 4 * n) {
      Fail(request, "float32 gradient does not have B * C values");
    }
    for (int64_t i = 0; i < n; ++i) {
      float v;
      if (as_floats) {
        v = g.float_data(static_cast<int>(i));
      } else {
        std::memcpy(&v, g.data().data() + 4 * i, 4);
      }
      if (!std::isfinite(v)) {
        Fail(request, "gradient element not finite");
      }
    }
    return;
  }
  if (static_cast<int64_t>(g.data().size()) != 2 * n ||
      g.float_data_size() != 0) {
    Fail(request, "16-bit gradient does not have B * C values");
  }
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, g.data().data() + 2 * i, 2);
    const bool bf16 = want == cbloss::v1::DTYPE_BFLOAT16;
    const float v =
        bf16 ? cbloss::BFloat16ToFloat(h) : cbloss::Float16ToFloat(h);
    if (!std::isfinite(v)) {
      Fail(request, "16-bit gradient element not finite");
    }
  }
}

// Runs the request serially and on a pool; both must succeed or fail alike
// and give the same bytes (results do not depend on the thread count).
void Run(const ComputeLossRequest& request,
         const cbloss::v1::Dataset* dataset) {
  static cbloss::ThreadPool* const pool = new cbloss::ThreadPool(2);
  ComputeLossResponse serial;
  const absl::Status s = cbloss::server::ComputeLossResponseFor(
      request, dataset, /*pool=*/nullptr, /*should_stop=*/nullptr, &serial);
  if (s.ok()) {
    CheckResponse(request, serial, dataset);
  } else if (s.message().empty()) {
    Fail(request, "error without a message");
  }
  ComputeLossResponse parallel;
  const absl::Status p = cbloss::server::ComputeLossResponseFor(
      request, dataset, pool, [] { return false; }, &parallel);
  if (p.code() != s.code()) Fail(request, "pool changes the status code");
  if (s.ok() && serial.SerializeAsString() != parallel.SerializeAsString()) {
    Fail(request, "pool changes the response");
  }

  cbloss::v1::GetClassWeightsRequest weights_request;
  if (dataset == nullptr) {
    *weights_request.mutable_class_counts() = request.class_counts();
  } else {
    weights_request.set_dataset(request.dataset());
  }
  *weights_request.mutable_config() = request.config();
  cbloss::v1::ClassWeights weights;
  if (cbloss::server::ClassWeightsFor(weights_request, dataset, &weights)
          .ok()) {
    for (double w : weights.weights()) {
      if (!std::isfinite(w) || w < 0) Fail(request, "class weight not finite");
    }
  }
}

// With a run: statistics derived from the request (C from its logits), the
// run's dataset the request's if it names one. An OK accumulating request
// must give an update of the right sizes with finite, non-negative P and Q
// increments and no more seen samples than rows.
void RunOnRun(const ComputeLossRequest& request) {
  const int64_t claimed = cbloss::server::ClaimedElements(request);
  if (claimed < 0) return;
  const int classes = static_cast<int>(request.logits().shape(1));
  cbloss::server::RunView run;
  run.name = request.run();
  run.num_classes = classes;
  run.version = 1 + request.run().size();
  for (int j = 0; j < classes; ++j) {
    run.seen_counts.push_back((j * 7 + static_cast<int>(run.version)) % 5);
    run.positive_gradient.push_back(0.37 * j);
    run.negative_gradient.push_back(1.0 / (1 + j));
  }
  run.eqlv2_updates = static_cast<int64_t>(run.version % 3);
  std::shared_ptr<const cbloss::v1::Dataset> dataset;
  if (request.source_case() == ComputeLossRequest::kDataset) {
    const cbloss::v1::Dataset& d = DatasetFor(request.dataset());
    run.dataset = d.name();
    dataset =
        std::shared_ptr<const cbloss::v1::Dataset>(std::shared_ptr<void>(), &d);
  }
  absl::StatusOr<cbloss::server::Computation> c =
      cbloss::server::ResolveComputation(request, dataset, &run);
  if (!c.ok()) {
    if (c.status().message().empty()) Fail(request, "error without a message");
    return;
  }
  ComputeLossResponse response;
  cbloss::RunUpdate update;
  const absl::Status s = cbloss::server::RunComputation(
      *c, {}, &response, /*detached=*/nullptr, &update);
  if (!s.ok()) return;
  if (response.run_version() != run.version) Fail(request, "run_version");
  if (!request.accumulate()) return;
  if (update.requests != 1 || update.name != run.name) {
    Fail(request, "update without its request");
  }
  int64_t seen = update.background_seen;
  for (int64_t n : update.seen_counts) {
    if (n < 0) Fail(request, "negative seen count");
    seen += n;
  }
  if (seen > request.labels_size()) Fail(request, "more seen than rows");
  for (const auto* v : {&update.positive_gradient, &update.negative_gradient}) {
    if (!v->empty() && static_cast<int>(v->size()) != classes) {
      Fail(request, "P/Q increment without C entries");
    }
    for (double x : *v) {
      if (!std::isfinite(x) || x < 0) Fail(request, "P/Q increment");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ComputeLossRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (cbloss::server::ClaimedElements(request) > kMaxClaimedElements) return 0;
  // Inline counts (or no source at all, which must be INVALID_ARGUMENT).
  Run(request, nullptr);
  if (request.source_case() == ComputeLossRequest::kDataset) {
    Run(request, &DatasetFor(request.dataset()));
  }
  if (!request.run().empty()) RunOnRun(request);
  return 0;
}
