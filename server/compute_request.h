// Copyright 2026 The cbloss Authors.
//
// One ComputeLoss / GetClassWeights request, start to finish and without
// gRPC, in one pass and one direction:
//
//   ResolveComputation: source (dataset snapshot or inline class_counts) and
//     version -> resolved parameters (request over dataset defaults over
//     LOSS.md defaults, validated once; deferred re-weighting decided) ->
//     tensor views of the wire tensors or of shared memory (validated once)
//     -> the gradient's shared-memory destination, if any -> class terms.
//   RunComputation: GradientSink chooses where the gradient goes -> engine
//     (core/loss.h) -> shared memory still intact? -> response.
//
// Every check of the request is in ResolveComputation; RunComputation fails
// only for memory, cancellation, a deadline, or a shared-memory object that
// shrank during the call (API.md section 5.3). The service calls these from
// its reactors; tests and fuzzers can call them directly.
//
// Example:
//   absl::StatusOr<Computation> c = ResolveComputation(request, registry);
//   if (!c.ok()) return c.status();
//   return RunComputation(*c, {pool, should_stop}, &response);
//
// Thread-safety: reentrant.

#ifndef CBLOSS_SERVER_COMPUTE_REQUEST_H_
#define CBLOSS_SERVER_COMPUTE_REQUEST_H_

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cbloss/v1/cbloss.pb.h"
#include "core/class_weights.h"
#include "core/loss.h"
#include "core/thread_pool.h"
#include "server/run_registry.h"
#include "server/shared_memory.h"
#include "server/store/dataset_store.h"

namespace cbloss::server {

class DatasetRegistry;

// Number of logits elements the request claims (B * C), or -1 if its shape
// is not a valid 2-D shape. Cheap; used to decide where to run a request.
int64_t ClaimedElements(const v1::ComputeLossRequest& request);

// Where a request's class counts come from.
struct RequestSource {
  std::shared_ptr<const v1::Dataset> dataset;  // null: inline class_counts
  absl::Span<const int64_t> counts;  // into *dataset or into the request
  uint64_t version = 0;              // the dataset's; 0 for class_counts
  std::string description;           // "dataset 'x'" or "class_counts"
  // A run without a dataset and a request without class_counts: `counts`
  // are zeros, fine only for losses that do not read them.
  bool no_static_counts = false;
};

// A shared-memory span a computation uses, with the field that named it
// ("logits.shm", "targets.shm", "gradient_shm").
struct NamedSharedMemorySpan {
  std::string field;
  SharedMemorySpan span;
};

// A ComputeLoss request, resolved and validated: what the engine needs and
// what the response reports. Views point into the request (which must
// outlive this), into buffers owned here, or into shared memory that
// `shm_spans` keeps mapped. Move-only.
struct Computation {
  RequestSource source;
  v1::LossConfig resolved_config;  // every field set but drw_start_epoch
  LossParams params;
  ClassTerms terms;  // weights all 1 before drw_start_epoch (LOSS.md s. 9)
  LossBatch batch;
  bool want_per_sample_losses = false;  // asked for, or reduction NONE
  bool want_gradient = false;
  DType gradient_dtype = DType::kFloat32;
  // The request sent float32 logits as float_data: a float32 gradient goes
  // back as float_data too (API.md section 1).
  bool gradient_as_float_data = false;
  // Decoded copies, when the wire bytes cannot be viewed in place.
  std::unique_ptr<float[]> owned_logits;
  std::unique_ptr<float[]> owned_targets;
  // LOSS.md section 11: the run the request names (empty: none), the
  // version it saw, and whether the request adds itself to it.
  std::string run;
  uint64_t run_version = 0;
  bool accumulate = false;
  // Counts `source.counts` points to when they are not the wire's: a run's
  // seen counts for SEESAW, zeros without static counts.
  std::vector<int64_t> owned_counts;
  // Every shared-memory span the tensors use (API.md section 5.3), held for
  // the computation's lifetime and checked intact after the engine.
  std::vector<NamedSharedMemorySpan> shm_spans;
  // gradient_shm's bytes (in shm_spans): the gradient is written there, and
  // the response's gradient stays unset. Null: the response carries it.
  char* gradient_shm = nullptr;
};

// Resolves `request` against the registries (NOT_FOUND, UNAVAILABLE, or
// INVALID_ARGUMENT for a bad dataset or run name). `runs` may be null for
// a caller without runs (a request naming one is then NOT_FOUND). `shm` is
// the caller's view of its shared-memory regions, null when the server has
// shared memory off (a request using it is then FAILED_PRECONDITION).
absl::StatusOr<Computation> ResolveComputation(
    const v1::ComputeLossRequest& request, const DatasetRegistry& registry,
    RunRegistry* runs = nullptr, const SharedMemoryView* shm = nullptr);
// Resolves `request` with `dataset` as the snapshot of the dataset it uses
// (request.dataset(), or its run's), or null when it carries inline
// class_counts or its run has no dataset; `run` is the view of the run it
// names (null: none); `shm` as above.
absl::StatusOr<Computation> ResolveComputation(
    const v1::ComputeLossRequest& request,
    std::shared_ptr<const v1::Dataset> dataset, const RunView* run = nullptr,
    const SharedMemoryView* shm = nullptr);

// A gradient's wire bytes kept outside the response message: one malloc'ed
// buffer the engine writes once, which the service then hands to gRPC as a
// slice of its own (no zero-fill, no serialisation copy). Not thread-safe.
class DetachedGradient {
 public:
  DetachedGradient() = default;
  DetachedGradient(const DetachedGradient&) = delete;
  DetachedGradient& operator=(const DetachedGradient&) = delete;
  ~DetachedGradient() { std::free(data_); }

  // Uninitialised; null if the memory is not there.
  char* Allocate(size_t size);
  char* data() const { return data_; }
  size_t size() const { return size_; }
  // Hands the buffer over; the new owner frees it with std::free.
  char* Release();

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
};

// The wire bytes that complete a response whose gradient is detached:
// ComputeLossResponse.gradient (a Tensor) holding Tensor.data of `size`
// bytes, up to the data itself. Protobuf merges this second `gradient`
// field into the first (which carries dtype and shape).
std::string DetachedGradientPrefix(size_t size);

// Where the engine writes a computation's gradient and how it reaches the
// wire: as the response's Tensor.float_data, as its Tensor.data bytes, as
// bytes in a DetachedGradient, or not at all: into the request's
// gradient_shm; float32 or 16-bit (encoded by the engine). Move-only.
class GradientSink {
 public:
  // No gradient.
  GradientSink() = default;

  // The sink for `c` (no gradient unless c.want_gradient); sets the dtype
  // and shape of response->gradient, unless the gradient goes to
  // c.gradient_shm. With `detached`, bytes go there instead of into the
  // response. RESOURCE_EXHAUSTED if that buffer cannot be allocated.
  static absl::StatusOr<GradientSink> Open(const Computation& c,
                                           v1::ComputeLossResponse* response,
                                           DetachedGradient* detached);

  // Points `outputs` at the sink (gradient or half_gradient).
  void AttachTo(LossOutputs* outputs) const;
  // After the engine: moves a float32 gradient computed beside unaligned
  // bytes into them.
  void Close();

 private:
  absl::Span<float> floats_;    // float32 values the engine writes
  char* half_bytes_ = nullptr;  // or 16-bit values it encodes
  DType half_dtype_ = DType::kBFloat16;
  std::unique_ptr<float[]> scratch_;  // floats_ when copy_to_ is unaligned
  char* copy_to_ = nullptr;
};

// Runs `c` and fills `response` (loss, outputs, versions, resolved config,
// class weights); FAILED_PRECONDITION, naming the field, if a shared-memory
// object `c` uses shrank during the call (CheckIntact). With `detached`, a
// gradient sent as Tensor.data bytes is written there instead of into the
// response (see DetachedGradient). When `c.accumulate`, `*update` (not null
// then) receives what the request adds to its run (LOSS.md section 11): its
// labels, and for EQL_V2 its P and Q increments; the caller applies it, since
// only a computation that succeeded may change the run.
absl::Status RunComputation(const Computation& c, const ComputeOptions& options,
                            v1::ComputeLossResponse* response,
                            DetachedGradient* detached = nullptr,
                            RunUpdate* update = nullptr);

// ResolveComputation with `dataset` (null for inline class_counts), then
// RunComputation on `pool`, stopping when `should_stop` says so.
absl::Status ComputeLossResponseFor(const v1::ComputeLossRequest& request,
                                    const v1::Dataset* dataset,
                                    ThreadPool* pool,
                                    std::function<bool()> should_stop,
                                    v1::ComputeLossResponse* response,
                                    DetachedGradient* detached = nullptr);

// GetClassWeights: the weights of section 2 for the request's source and
// resolved weighting and beta, whatever the loss type. `dataset` as above.
absl::Status ClassWeightsFor(const v1::GetClassWeightsRequest& request,
                             const v1::Dataset* dataset,
                             v1::ClassWeights* response);

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_COMPUTE_REQUEST_H_
