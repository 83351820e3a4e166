// Copyright 2026 The cbloss Authors.
//
// The project's one error-propagation macro, for functions returning
// absl::Status or absl::StatusOr<T>. Debian's Abseil 20220623 has no
// ABSL_RETURN_IF_ERROR, so cbloss has its own; core/, server/ (including
// server/store/) and client/ use this one and no other spelling.
//
// Example:
//   absl::Status PutAll(Store& store, absl::Span<const Dataset> datasets) {
//     for (const Dataset& d : datasets) CBLOSS_RETURN_IF_ERROR(store.Put(d));
//     return absl::OkStatus();
//   }

#ifndef CBLOSS_CORE_STATUS_MACROS_H_
#define CBLOSS_CORE_STATUS_MACROS_H_

#include "absl/status/status.h"

// Evaluates `expr` (an absl::Status) once and returns it if it is not OK.
#define CBLOSS_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    absl::Status cbloss_status_ = (expr);            \
    if (!cbloss_status_.ok()) return cbloss_status_; \
  } while (0)

#endif  // CBLOSS_CORE_STATUS_MACROS_H_
