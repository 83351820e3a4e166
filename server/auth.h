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
// A missing, malformed or unknown token is UNAUTHENTICATED; the compute
// token on a dataset write is PERMISSION_DENIED (known caller, not allowed).
// Health and reflection are other services and stay open.
//
// The check runs before the request is decoded, in AuthorizedLossService, a
// decorator over LossServiceImpl: the methods are raw callback methods, and a
// gRPC server interceptor cannot stop a call before its handler runs.
// Tokens are compared in constant time and never logged.
//
// Thread-safety: TokenAuthorizer and AuthorizedLossService are immutable
// after construction and safe for concurrent calls.

#ifndef CBLOSS_SERVER_AUTH_H_
#define CBLOSS_SERVER_AUTH_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"
#include "server/loss_service.h"

namespace cbloss {

// The token in `path`: the file's text without trailing whitespace (a final
// newline). Empty or unreadable is an error that does not quote the file.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// True iff a == b; the time taken depends only on the lengths.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

class TokenAuthorizer {
 public:
  enum class Access { kRead, kCompute, kAdmin };

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

// LossServiceImpl behind TokenAuthorizer: register this instead of `impl`.
class AuthorizedLossService final : public internal::RawLossService {
 public:
  AuthorizedLossService(LossServiceImpl* impl, const TokenAuthorizer* auth)
      : impl_(impl), auth_(auth) {}

  grpc::ServerUnaryReactor* PutDataset(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetDataset(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListDatasets(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeleteDataset(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* AddClassCounts(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetClassWeights(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ComputeLoss(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StreamLoss(
      grpc::CallbackServerContext* context) override;

 private:
  // Null if the call may go on; else a reactor already finished with the
  // refusal.
  grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* context,
                                   TokenAuthorizer::Access access,
                                   absl::string_view method) const;

  LossServiceImpl* const impl_;
  const TokenAuthorizer* const auth_;
};

}  // namespace cbloss

#endif  // CBLOSS_SERVER_AUTH_H_
