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
#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cbloss/v1/cbloss.pb.h"
#include "core/thread_pool.h"

namespace cbloss {

// Number of logits elements the request claims (B * C), or -1 if its shape
// is not a valid 2-D shape. Cheap; used to decide where to run a request.
int64_t ClaimedElements(const v1::ComputeLossRequest& request);

// `dataset` is the snapshot named by request.dataset(), or null when the
// request carries inline class_counts.
absl::Status ComputeLossResponseFor(const v1::ComputeLossRequest& request,
                                    const v1::Dataset* dataset,
                                    ThreadPool* pool,
                                    std::function<bool()> should_stop,
                                    v1::ComputeLossResponse* response);

absl::Status ClassWeightsFor(const v1::GetClassWeightsRequest& request,
                             const v1::Dataset* dataset,
                             v1::ClassWeights* response);

}  // namespace cbloss

#endif  // CBLOSS_SERVER_COMPUTE_REQUEST_H_
