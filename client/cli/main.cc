// Copyright 2026 The cbloss Authors.
//
// cbloss: the command-line client (API.md section 4). Every command prints a
// readable table, or one JSON document on stdout with --json. Errors go to
// stderr as one line; the exit code is the gRPC status code + 1 (usage
// errors: CLI11's codes, also non-zero). The commands are in health.cc,
// datasets.cc, runs.cc, weights.cc, loss.cc and bench.cc; command.h says
// what they share.

#include <memory>

#include "CLI/CLI.hpp"
#include "command.h"

namespace cbloss::cli {

int Main(int argc, char** argv) {
  CLI::App app{"cbloss: command-line client of the cbloss loss service"};
  app.require_subcommand(1);
  GlobalFlags flags;
  AddGlobalFlags(&app, &flags);
  Handler chosen;
  AddHealthCommand(&app, &chosen);
  AddDatasetsCommand(&app, &chosen);
  AddRunsCommand(&app, &chosen);
  AddWeightsCommand(&app, &chosen);
  AddLossCommand(&app, &chosen);
  AddBenchCommand(&app, &chosen);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  absl::StatusOr<std::unique_ptr<client::Client>> client = Connect(flags);
  if (!client.ok()) return Fail(client.status());
  Context context{client->get(), flags.json, absl::nullopt};
  if (flags.timeout->count() > 0)
    context.timeout = absl::Seconds(flags.timeout_s);
  return chosen ? chosen(context) : 0;
}

}  // namespace cbloss::cli

// CLI11 throws outside parse() only for a malformed command table, a
// programming error that should terminate.
int main(int argc, char** argv) {  // NOLINT(bugprone-exception-escape)
  return cbloss::cli::Main(argc, argv);
}
