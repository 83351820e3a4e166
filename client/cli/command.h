// Copyright 2026 The cbloss Authors.
//
// What the `cbloss` subcommands share (API.md section 4): the global flags
// (target, deadline, TLS, token), the client they make, the context a
// command's handler runs with, output (one JSON document with --json, else
// a table) and the exit codes (the gRPC status code + 1).
//
// Each subcommand lives in a file of its own (health.cc, datasets.cc,
// runs.cc, weights.cc, loss.cc, bench.cc) with one Add...Command function that
// adds its flags to the app and, from its CLI11 callback (run once the command
// line has parsed), chooses its handler. main.cc connects and runs it.
//
// Example (a command "ping"):
//   void AddPingCommand(CLI::App* app, Handler* chosen) {
//     CLI::App* ping = app->add_subcommand("ping", "...");
//     ping->callback([chosen] {
//       *chosen = [](const Context& context) {
//         absl::Status s = context.client->CheckHealth();
//         return s.ok() ? 0 : Fail(s);
//       };
//     });
//   }

#ifndef CBLOSS_CLIENT_CLI_COMMAND_H_
#define CBLOSS_CLIENT_CLI_COMMAND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "cbloss/client.h"
#include "cbloss/v1/cbloss.pb.h"
#include "google/protobuf/message.h"
#include "nlohmann/json.hpp"

namespace cbloss::cli {

using json = nlohmann::json;

// The flags before the command: where and how to connect.
struct GlobalFlags {
  // HOST:PORT, unix:/path, or any gRPC target; default: $CBLOSS_TARGET,
  // else 127.0.0.1:50051.
  std::string target;
  bool json = false;
  double timeout_s = 30;
  CLI::Option* timeout = nullptr;  // given if count() > 0
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key, tls_server_name, token_file;
};

void AddGlobalFlags(CLI::App* app, GlobalFlags* flags);

// The client the global flags describe (TLS files and the token read).
absl::StatusOr<std::unique_ptr<client::Client>> Connect(
    const GlobalFlags& flags);

// What a command's handler runs with.
struct Context {
  client::Client* client;
  bool json;  // --json
  // --timeout, if given on the command line.
  absl::optional<absl::Duration> timeout;
};

// Runs a command; returns the exit code.
using Handler = std::function<int(const Context&)>;

// Each adds one command (and its subcommands) to `app`; when it is chosen,
// its callback sets `*chosen`.
void AddHealthCommand(CLI::App* app, Handler* chosen);
void AddDatasetsCommand(CLI::App* app, Handler* chosen);
void AddRunsCommand(CLI::App* app, Handler* chosen);
void AddWeightsCommand(CLI::App* app, Handler* chosen);
void AddLossCommand(CLI::App* app, Handler* chosen);
void AddBenchCommand(CLI::App* app, Handler* chosen);

// --dataset NAME or --counts N1,N2,... (each excludes the other).
struct SourceFlags {
  std::string dataset;
  std::vector<int64_t> counts;

  void AddTo(CLI::App* command);
  // INVALID_ARGUMENT "give --dataset or --counts" if neither was given.
  absl::StatusOr<client::LossSource> Source() const;
};

// "f32" / "float32", "f16" / "float16", "bf16" / "bfloat16", or a DType
// name; INVALID_ARGUMENT "--dtype 'x' is not known" otherwise.
absl::StatusOr<v1::DType> ParseDType(const std::string& text);

// Prints `cbloss: CODE: message` on stderr; returns the exit code, the
// status code + 1.
int Fail(const absl::Status& status);

// Prints one JSON document (a line) on stdout.
void PrintJson(const json& document);

// A message as protobuf JSON with the proto field names.
json ProtoJson(const google::protobuf::Message& message);

// Prints a dataset (put, get, add-counts) as a table or JSON; returns 0.
int ShowDataset(const v1::Dataset& dataset, bool as_json);

// A dataset as JSON with counts as numbers (protobuf JSON writes int64 as
// strings).
json DatasetJson(const v1::Dataset& dataset);

}  // namespace cbloss::cli

#endif  // CBLOSS_CLIENT_CLI_COMMAND_H_
