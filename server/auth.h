// Copyright 2026 The cbloss Authors.
//
// Bearer-token authorization of cbloss.v1.LossService (docs/DEPLOY.md).
//
// Two optional tokens, each read from a file (--admin_token_file,
// --compute_token_file):
//   - admin:   PutDataset, DeleteDataset, AddClassCounts (dataset writes)
//              need `authorization: Bearer <admin token>`.
//   - compute: when set, every other LossService method (ComputeLoss,
//              StreamLoss, GetClassWeights, GetDataset, ListDatasets) needs
//              `authorization: Bearer <compute or admin token>`.
//   - shared memory: RegisterSharedMemory, UnregisterSharedMemory and
//              ListSharedMemory are like ComputeLoss (API.md section 5.3).
//   - runs:    CreateRun and DeleteRun need the admin token; GetRun and
//              ListRuns are like GetDataset; a ComputeLoss or StreamLoss
//              request with `accumulate` needs the compute or admin token
//              whenever a token file is configured (it changes state).
// A missing, malformed or unknown token is UNAUTHENTICATED; the compute
// token on a dataset or run write is PERMISSION_DENIED (known caller, not
// allowed).
// Health and reflection are other services and stay open.
//
// Each method's access level is data (LossServiceAccess below), checked in
// the one place calls enter LossServiceImpl, before the request is decoded
// (a gRPC 1.51 server interceptor cannot refuse a call before its handler
// runs, so the check is not an interceptor). Tokens are compared in
// constant time and never logged.
//
// Thread-safety: TokenAuthorizer is immutable after construction and safe
// for concurrent calls.

#ifndef CBLOSS_SERVER_AUTH_H_
#define CBLOSS_SERVER_AUTH_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "grpcpp/grpcpp.h"

namespace cbloss::server {

// The token in `path`: the file's text without trailing whitespace (a final
// newline). Empty or unreadable is an error that does not quote the file.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// True iff a == b; the time taken depends only on the lengths.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

class TokenAuthorizer {
 public:
  // kAccumulate: a computation that changes a run (LOSS.md section 11):
  // the compute or admin token whenever any token is configured.
  enum class Access { kRead, kCompute, kAccumulate, kAdmin };

  // Empty tokens are "not required".
  TokenAuthorizer(std::string admin_token, std::string compute_token);

  bool enabled() const {
    return !admin_token_.empty() || !compute_token_.empty();
  }

  // OK, UNAUTHENTICATED or PERMISSION_DENIED for a call needing `access`
  // whose `authorization` metadata values are `authorization` (nullptr: none).
  absl::Status Check(Access access, const std::string* authorization) const;
  // Same, from the call's client metadata.
  absl::Status Check(Access access,
                     const grpc::CallbackServerContext& context) const;

 private:
  const std::string admin_token_;
  const std::string compute_token_;
};

// The access each LossService method needs, by method name (the last part
// of its gRPC path, "/cbloss.v1.LossService/<method>"): the one list of who
// may call what. LossServiceImpl checks it where every call enters.
struct MethodAccess {
  absl::string_view method;
  TokenAuthorizer::Access access;
};
absl::Span<const MethodAccess> LossServiceAccess();

// The access `method` needs: its row, or kAdmin for a method without one
// (a method added to the service but not to the table stays closed).
TokenAuthorizer::Access AccessFor(absl::string_view method);

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_AUTH_H_
