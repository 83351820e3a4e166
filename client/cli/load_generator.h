// Copyright 2026 The cbloss Authors.
//
// The load generator of `cbloss bench` (bench.cc), closed-loop, for operators.
// `concurrency` threads share one Client and call ComputeLoss back to back for
// `duration`, each call with its own deadline, so a dead server costs errors,
// never a hang.

#ifndef CBLOSS_CLIENT_CLI_LOAD_GENERATOR_H_
#define CBLOSS_CLIENT_CLI_LOAD_GENERATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cbloss/client.h"

namespace cbloss::cli {

struct BenchOptions {
  absl::Duration duration = absl::Seconds(10);
  int concurrency = 4;
  std::string dataset;          // or
  std::vector<int64_t> counts;  // inline counts
  int64_t batch = 256;
  int64_t classes = 0;  // 0: from the dataset or counts
  v1::DType dtype = v1::DTYPE_FLOAT32;
  v1::LossType loss = v1::LOSS_TYPE_UNSPECIFIED;
  absl::Duration call_deadline = absl::Seconds(5);
};

struct BenchReport {
  int64_t requests = 0;  // completed calls, successful or not
  int64_t errors = 0;
  double seconds = 0;
  double rps = 0;
  double p50_us = 0, p90_us = 0, p99_us = 0;  // successful calls
  std::vector<std::string> error_samples;     // first few distinct errors
};

absl::StatusOr<BenchReport> RunBench(client::Client* client,
                                     const BenchOptions& options);

}  // namespace cbloss::cli

#endif  // CBLOSS_CLIENT_CLI_LOAD_GENERATOR_H_
