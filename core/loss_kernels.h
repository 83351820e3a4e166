// Copyright 2026 The cbloss Authors.
//
// Forwarding header, kept only while bench/kernels_bench.cc includes this
// path: the row kernels are private to core/ and live in
// core/internal/loss_kernels.h. Delete this file once the benchmark
// includes that header instead; nothing else may include it (the layering
// check in core/CMakeLists.txt enforces both).

#ifndef CBLOSS_CORE_LOSS_KERNELS_H_
#define CBLOSS_CORE_LOSS_KERNELS_H_

#include "core/internal/loss_kernels.h"

#endif  // CBLOSS_CORE_LOSS_KERNELS_H_
