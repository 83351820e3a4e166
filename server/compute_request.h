// Copyright 2026 The cbloss Authors.
//
// One ComputeLoss / GetClassWeights request, start to finish and without
// gRPC: decode and validate the wire tensors, resolve the configuration
// (request over dataset defaults over LOSS.md defaults), weigh the classes,
// run the engine, and fill the response. The service calls these from its
// reactors; tests and fuzzers can call them directly.
//
// Thread-safety: reentrant.

#ifndef CBLOSS_SERVER_COMPUTE_REQUEST_H_
#define CBLOSS_SERVER_COMPUTE_REQUEST_H_

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cbloss/v1/cbloss.pb.h"
#include "core/thread_pool.h"

namespace cbloss {

// Number of logits elements the request claims (B * C), or -1 if its shape
// is not a valid 2-D shape. Cheap; used to decide where to run a request.
int64_t ClaimedElements(const v1::ComputeLossRequest& request);

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

// `dataset` is the snapshot named by request.dataset(), or null when the
// request carries inline class_counts. With `detached`, a gradient sent as
// Tensor.data bytes is written there instead of into the response, whose
// gradient then carries dtype and shape only; the wire message is the
// response followed by the bytes as one more `gradient { data }` field
// (protobuf merges the two; see AppendDetachedGradient).
absl::Status ComputeLossResponseFor(const v1::ComputeLossRequest& request,
                                    const v1::Dataset* dataset,
                                    ThreadPool* pool,
                                    std::function<bool()> should_stop,
                                    v1::ComputeLossResponse* response,
                                    DetachedGradient* detached = nullptr);

// The wire bytes that complete a response: field 3 (gradient, a Tensor)
// holding field 3 (data) of `size` bytes, up to the data itself.
std::string DetachedGradientPrefix(size_t size);

absl::Status ClassWeightsFor(const v1::GetClassWeightsRequest& request,
                             const v1::Dataset* dataset,
                             v1::ClassWeights* response);

}  // namespace cbloss

#endif  // CBLOSS_SERVER_COMPUTE_REQUEST_H_
