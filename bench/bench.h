// Copyright 2026 The cbloss Authors.
//
// cbloss-bench: the benchmarks of docs/PERFORMANCE.md and docs/RUNS.md.
//
//   cbloss-bench kernels --json   loss + gradient engine vs memcpy
//   cbloss-bench service --json   ComputeLoss through cbloss-server vs a
//                                 bare gRPC echo of the same byte sizes
//   cbloss-bench runs --json      accumulating ComputeLoss on a run vs the
//                                 same request without it (docs/RUNS.md)
//   cbloss-bench http --json      ComputeLoss over HTTP/JSON beside gRPC,
//                                 32x10 and 256x1000 (docs/HTTP.md)
//   cbloss-bench transports --json ComputeLoss over TCP, a Unix socket and
//                                 the socket + shared memory, beside an
//                                 echo and the engine alone
//                                 (docs/SHARED_MEMORY.md)
//
// Each prints one JSON array of records (or a table without --json).

#ifndef CBLOSS_BENCH_BENCH_H_
#define CBLOSS_BENCH_BENCH_H_

#include <string>

namespace cbloss::bench {

struct BenchOptions {
  bool json = false;
  bool quick = false;       // few iterations: a smoke test, not a measurement
  std::string server_path;  // cbloss-server; empty = beside cbloss-bench
  // Extra integer channel arguments ("name=value,...") for the bench's
  // client channels and its echo server: to measure gRPC tuning.
  std::string grpc_args;
  // Service sizes to run ("BxC,..."); empty = all but the opt-in ones.
  std::string sizes;
  // Service loss type, a LossType wire name without its prefix ("seesaw");
  // empty = the default (SOFTMAX).
  std::string loss;
};

int RunKernels(const BenchOptions& options);
int RunService(const BenchOptions& options);
int RunRuns(const BenchOptions& options);
int RunHttp(const BenchOptions& options);
int RunTransports(const BenchOptions& options);

}  // namespace cbloss::bench

#endif  // CBLOSS_BENCH_BENCH_H_
