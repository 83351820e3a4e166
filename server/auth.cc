// Copyright 2026 The cbloss Authors.

#include "server/auth.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cbloss::server {

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) {
    return absl::NotFoundError(absl::StrCat("cannot read token file ", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string token(absl::StripTrailingAsciiWhitespace(text.str()));
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, " is empty"));
  }
  for (char c : token) {
    // Metadata values are printable ASCII; a token that is not cannot be
    // sent, so say so now (without quoting it).
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file ", path,
          " holds whitespace or non-printable characters inside the token"));
    }
  }
  return token;
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Every byte of the longer string is visited whatever the contents; only
  // the lengths (not secret: tokens have a fixed format) shape the loop.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = a.size() > b.size() ? a.size() : b.size();
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

TokenAuthorizer::TokenAuthorizer(std::string admin_token,
                                 std::string compute_token)
    : admin_token_(std::move(admin_token)),
      compute_token_(std::move(compute_token)) {}

absl::Status TokenAuthorizer::Check(Access access,
                                    const std::string* authorization) const {
  const bool need_token = access == Access::kAdmin ? !admin_token_.empty()
                          : access == Access::kAccumulate
                              ? enabled()
                              : !compute_token_.empty();
  if (!need_token) return absl::OkStatus();
  if (authorization == nullptr) {
    return absl::UnauthenticatedError(
        "this method needs an 'authorization: Bearer <token>' header");
  }
  constexpr absl::string_view kScheme = "Bearer ";
  if (authorization->size() <= kScheme.size() ||
      !absl::StartsWithIgnoreCase(*authorization, kScheme)) {
    return absl::UnauthenticatedError(
        "the authorization header is not 'Bearer <token>'");
  }
  const absl::string_view token =
      absl::string_view(*authorization).substr(kScheme.size());
  // Both comparisons always run, so timing does not tell which matched.
  const bool is_admin =
      !admin_token_.empty() && ConstantTimeEquals(token, admin_token_);
  const bool is_compute =
      !compute_token_.empty() && ConstantTimeEquals(token, compute_token_);
  if (is_admin) return absl::OkStatus();
  if (is_compute) {
    if (access == Access::kAdmin) {
      return absl::PermissionDeniedError(
          "the compute token cannot write datasets; use the admin token");
    }
    return absl::OkStatus();
  }
  return absl::UnauthenticatedError("the bearer token is not valid");
}

absl::Status TokenAuthorizer::Check(
    Access access, const grpc::CallbackServerContext& context) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return Check(access, nullptr);
  const std::string value(it->second.data(), it->second.size());
  return Check(access, &value);
}

namespace {

using Access = TokenAuthorizer::Access;

// Dataset and run writes need the admin token; everything else the compute
// token (if one is set) or the admin token. Accumulating computations are
// checked again once decoded (LossServiceImpl::HandleComputeLoss).
constexpr MethodAccess kLossServiceAccess[] = {
    {"PutDataset", Access::kAdmin},
    {"GetDataset", Access::kRead},
    {"ListDatasets", Access::kRead},
    {"DeleteDataset", Access::kAdmin},
    {"AddClassCounts", Access::kAdmin},
    {"GetClassWeights", Access::kCompute},
    {"ComputeLoss", Access::kCompute},
    {"StreamLoss", Access::kCompute},
    {"CreateRun", Access::kAdmin},
    {"GetRun", Access::kRead},
    {"ListRuns", Access::kRead},
    {"DeleteRun", Access::kAdmin},
    // API.md section 5.3: like ComputeLoss.
    {"RegisterSharedMemory", Access::kCompute},
    {"UnregisterSharedMemory", Access::kCompute},
    {"ListSharedMemory", Access::kCompute},
};

}  // namespace

absl::Span<const MethodAccess> LossServiceAccess() {
  return kLossServiceAccess;
}

Access AccessFor(absl::string_view method) {
  for (const MethodAccess& m : kLossServiceAccess) {
    if (m.method == method) return m.access;
  }
  return Access::kAdmin;
}

}  // namespace cbloss::server
