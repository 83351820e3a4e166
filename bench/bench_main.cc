// Copyright 2026 The cbloss Authors.

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "bench/bench.h"

ABSL_FLAG(bool, json, false, "Print a JSON array of records.");
ABSL_FLAG(bool, quick, false,
          "Few iterations (a smoke test of the bench, not a measurement).");
ABSL_FLAG(std::string, server, "",
          "cbloss-server binary for `service` (default: beside cbloss-bench).");

ABSL_FLAG(std::string, grpc_args, "",
          "service: extra integer channel arguments name=value,... for the "
          "bench's client channels and echo server (gRPC tuning runs).");
ABSL_FLAG(std::string, sizes, "",
          "service: sizes to run, e.g. 256x1000,4096x1000 (default: all but "
          "8192x1204, which runs only when named); transports: any BxC list "
          "(default 32x10,256x1000,4096x1000).");
ABSL_FLAG(std::string, loss, "",
          "service: loss type of the requests, e.g. seesaw (default: the "
          "server's default, softmax).");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "cbloss-bench kernels|service|runs|http|transports [--json] [--quick] "
      "[--server=PATH]");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(stderr,
                 "usage: %s kernels|service|runs|http|transports [--json] "
                 "[--quick]\n",
                 argv[0]);
    return 2;
  }
  cbloss::bench::BenchOptions options;
  options.json = absl::GetFlag(FLAGS_json);
  options.quick = absl::GetFlag(FLAGS_quick);
  options.server_path = absl::GetFlag(FLAGS_server);
  options.grpc_args = absl::GetFlag(FLAGS_grpc_args);
  options.sizes = absl::GetFlag(FLAGS_sizes);
  options.loss = absl::GetFlag(FLAGS_loss);
  const std::string what = args[1];
  if (what == "kernels") return cbloss::bench::RunKernels(options);
  if (what == "service") return cbloss::bench::RunService(options);
  if (what == "runs") return cbloss::bench::RunRuns(options);
  if (what == "http") return cbloss::bench::RunHttp(options);
  if (what == "transports") return cbloss::bench::RunTransports(options);
  std::fprintf(stderr,
               "unknown benchmark '%s': kernels, service, runs, http or "
               "transports\n",
               what.c_str());
  return 2;
}
