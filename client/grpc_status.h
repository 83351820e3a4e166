// Copyright 2026 The cbloss Authors.
//
// grpc::Status to absl::Status at the client's RPC edge (private to the
// client library and its tests). The canonical codes are the same numbers.

#ifndef CBLOSS_CLIENT_GRPC_STATUS_H_
#define CBLOSS_CLIENT_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace cbloss::client {

// Same code and message; OK stays OK.
inline absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace cbloss::client

#endif  // CBLOSS_CLIENT_GRPC_STATUS_H_
