// Copyright 2026 The cbloss Authors.
//
// Process and gRPC server settings chosen by measurement; the numbers behind
// each are in docs/PERFORMANCE.md ("gRPC and allocator tuning"). Call once,
// before BuildAndStart.
//
// Example:
//   grpc::ServerBuilder builder;
//   ApplyServerTuning(&builder);

#ifndef CBLOSS_SERVER_GRPC_TUNING_H_
#define CBLOSS_SERVER_GRPC_TUNING_H_

#include "grpcpp/server_builder.h"

namespace cbloss {

// Keeps the pages of large buffers (request and response messages, decoded
// half-precision tensors) mapped between calls instead of returning them to
// the kernel and faulting them in again on the next call.
void ApplyServerTuning(grpc::ServerBuilder* builder);

}  // namespace cbloss

#endif  // CBLOSS_SERVER_GRPC_TUNING_H_
