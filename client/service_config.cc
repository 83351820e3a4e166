// Copyright 2026 The cbloss Authors.

#include "service_config.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "retry_service_config.h"  // generated: kRetryServiceConfigJson

namespace cbloss::client {

std::string ServiceConfigJson(const ClientOptions& options) {
  const std::string balancing =
      absl::StrCat("\"loadBalancingConfig\": [{\"",
                   options.load_balancing_policy, "\": {}}]");
  if (!options.retry_unavailable) return absl::StrCat("{", balancing, "}");
  // The shared file is one JSON object (CMake checks that it opens with
  // '{'): the balancing policy goes in as its first member. Writes are never
  // retried there: a retried AddClassCounts could count twice.
  absl::string_view retry =
      absl::StripAsciiWhitespace(absl::string_view(kRetryServiceConfigJson));
  retry.remove_prefix(1);
  return absl::StrCat("{", balancing, ", ", retry);
}

}  // namespace cbloss::client
